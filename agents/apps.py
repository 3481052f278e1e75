from django.apps import AppConfig


class AgentsConfig(AppConfig):
    name = "agents"
    verbose_name = "Agents"

    def ready(self):
        # Imported here, not at the top: services and models may load only once the app registry is ready.
        from agents import launcher
        from tickets import hooks as ticket_hooks

        ticket_hooks.ticket_ready.connect(launcher.auto_spawn_on_ready)
