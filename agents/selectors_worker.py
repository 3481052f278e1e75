"""Background-worker liveness: the worker command upserts a heartbeat row every few seconds."""

from __future__ import annotations

from django.utils import timezone


def worker_heartbeat_age_seconds() -> float | None:
    from agents.models import WorkerHeartbeat

    beat = WorkerHeartbeat.objects.order_by("-beat_at").first()
    if beat is None:
        return None
    return (timezone.now() - beat.beat_at).total_seconds()
