from django.apps import AppConfig


class CollaborationConfig(AppConfig):
    name = "collaboration"
    verbose_name = "Collaboration"

    def ready(self):
        # Imported here, not at the top: services and models may load only once the app registry is ready.
        from collaboration import services
        from tasks import hooks as task_hooks

        task_hooks.task_lost_holder.connect(services.handoffs_expire_for_task)
