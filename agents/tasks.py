"""Background jobs of the agents app (Django Tasks API)."""

from django.tasks import task


@task
def run_sandbox_worker(run_id: int) -> str:
    """Provision a sandbox, run the worker agent for the run's task, tear the sandbox down."""
    from agents.launcher import execute_run

    return execute_run(run_id).status


@task
def auto_spawn_worker(ticket_id: int) -> str:
    """Launch a worker for a newly ready ticket whose type the workflow maps to a template."""
    from agents.launcher import auto_spawn

    return auto_spawn(ticket_id)


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
