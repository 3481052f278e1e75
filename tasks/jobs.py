"""Background jobs of the tasks app (Django Tasks API)."""

from django.tasks import task

from tasks import blockers, services
from tasks.blockers import embed_discovery, train_blocker_model_now  # noqa: F401  (jobs defined beside what they run)


@task
def reap_expired_leases() -> int:
    """Return every task whose lease expired to the queue."""
    return services.task_reap_expired_leases()


@task
def retrain_blocker_model() -> str | None:
    """Retrain the blocker model when due (N newly finished tickets, or daily); grade the ledger either
    way. Idempotent: unchanged training data returns the existing model. Returns the model version."""
    model = blockers.blocker_model_retrain_if_due()
    return model.version if model is not None else None
