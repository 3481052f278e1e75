"""Background jobs of the tasks app (Django Tasks API)."""

from django.tasks import task

from tasks import services


@task
def reap_expired_leases() -> int:
    """Return every task whose lease expired to the queue."""
    return services.task_reap_expired_leases()


@task
def embed_discovery(discovery_id: int) -> int:
    """Embed one discovery (for similar-discovery search and blocker prediction)."""
    from tasks.blockers import discovery_embeddings_refresh

    return discovery_embeddings_refresh(discovery_ids=[discovery_id])


@task
def retrain_blocker_model() -> str | None:
    """Retrain the blocker model when due (N newly finished tickets, or daily); grade the ledger either
    way. Idempotent: unchanged training data returns the existing model. Returns the model version."""
    from tasks.blockers import blocker_model_retrain_if_due

    model = blocker_model_retrain_if_due()
    return model.version if model is not None else None


@task
def train_blocker_model_now() -> str:
    """Train the blocker model now (queued by the admin's "Retrain now"); unchanged training data returns
    the existing model. Returns the version serving afterwards."""
    from tasks.blockers import blocker_model_train

    model, _ = blocker_model_train()
    return model.version
