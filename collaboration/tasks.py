"""Background jobs of the collaboration app (Django Tasks API)."""

from django.tasks import task

from collaboration import services


@task
def expire_stale_handoffs() -> int:
    """Expire hand-offs nobody answered in time."""
    return services.handoffs_expire_stale()
