"""Background jobs of the tasks app (Django Tasks API)."""

from django.tasks import task

from tasks import services


@task
def reap_expired_leases() -> int:
    """Return every task whose lease expired to the queue."""
    return services.task_reap_expired_leases()
