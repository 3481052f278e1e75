"""Background jobs of the collaboration app (Django Tasks API)."""

from django.tasks import task

from collaboration import services


@task
def expire_stale_handoffs() -> int:
    """Expire hand-offs nobody answered in time."""
    return services.handoffs_expire_stale()


@task
def prune_event_records() -> int:
    """Forget realtime event records older than EVENT_RETENTION_DAYS (replay and the feed reach back that far)."""
    from datetime import timedelta

    from django.conf import settings
    from django.utils import timezone

    return services.event_records_prune(older_than=timezone.now() - timedelta(days=settings.EVENT_RETENTION_DAYS))
