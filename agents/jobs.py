"""Background jobs of the agents app (Django Tasks API)."""

from django.tasks import task

from agents.launcher import auto_spawn_worker, run_sandbox_worker  # noqa: F401  (the fleet's jobs live beside what they run)


@task
def prune_idempotency_records() -> int:
    """Forget idempotency keys older than a day (clients retry within seconds; the table must not grow forever)."""
    from datetime import timedelta

    from django.utils import timezone
    from django_tasks_db.models import DBTaskResult

    from agents.services import idempotency_records_prune

    cutoff = timezone.now() - timedelta(days=1)
    DBTaskResult.objects.filter(finished_at__lt=cutoff).delete()  # finished job rows of the queue itself
    return idempotency_records_prune(older_than=cutoff)
