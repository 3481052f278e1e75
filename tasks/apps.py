from django.apps import AppConfig


class TasksConfig(AppConfig):
    name = "tasks"
    verbose_name = "Tasks"

    def ready(self):
        # Imported here, not at the top: services and models may load only once the app registry is ready.
        from tasks import blockers, selectors
        from tickets import hooks as ticket_hooks

        ticket_hooks.ticket_resolved.connect(blockers.blocker_ticket_finished)
        ticket_hooks.related_tasks_resolve.connect(selectors.related_tasks_public_ids)
