"""`GET /healthz`: database, pgvector, channel layer and background-worker heartbeat, as JSON."""

import asyncio
import time

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import connection
from django.http import JsonResponse
from django.views.decorators.http import require_GET

from agents.selectors import worker_heartbeat_age_seconds


def _database_status() -> tuple[str, str | None]:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
            row = cursor.fetchone()
        return "ok", (row[0] if row else None)
    except Exception as error:  # health must report, not raise
        return f"error: {error.__class__.__name__}", None


async def _channel_layer_roundtrip() -> bool:
    layer = get_channel_layer()

    async def roundtrip():
        channel = await layer.new_channel("healthz.")
        await layer.send(channel, {"type": "healthz.ping"})
        return await layer.receive(channel)

    message = await asyncio.wait_for(roundtrip(), timeout=2)
    return message.get("type") == "healthz.ping"


def _channel_layer_status() -> str:
    try:
        return "ok" if async_to_sync(_channel_layer_roundtrip)() else "error: no round-trip"
    except Exception as error:
        return f"error: {error.__class__.__name__}: {error}"[:200]


def _worker_status() -> dict:
    age = worker_heartbeat_age_seconds()
    stale_after = settings.MAINTENANCE_INTERVAL_SECONDS * settings.WORKER_STALE_AFTER_INTERVALS
    if age is None:
        return {"status": "never seen", "last_heartbeat_seconds_ago": None, "stale_after_seconds": stale_after}
    return {"status": "ok" if age <= stale_after else "stale", "last_heartbeat_seconds_ago": round(age, 1),
            "stale_after_seconds": stale_after}


@require_GET
def healthz(request):
    """`ok` when everything answers; `degraded` (HTTP 200: the web still serves) with `reasons` when Redis or
    the background worker is missing; HTTP 503 only when the database cannot serve (restart or wait)."""
    from omoi_site.outages import open_outages

    started = time.monotonic()
    database, pgvector_version = _database_status()
    channel_layer = _channel_layer_status()
    worker = _worker_status() if database == "ok" else {"status": "unknown"}
    reasons = []
    if database != "ok":
        reasons.append(f"database {database}")
    elif pgvector_version is None:
        reasons.append("pgvector extension missing")
    if channel_layer != "ok":
        reasons.append(f"channel layer ({settings.CHANNEL_LAYER_KIND}) {channel_layer}; live events are dropped")
    if worker["status"] in ("stale", "never seen"):
        ago = worker.get("last_heartbeat_seconds_ago")
        reasons.append("background worker " + (f"silent for {ago} s" if ago is not None else "never seen")
                       + "; leases and hand-offs are not expired")
    reasons += [f"{outage.name}: {outage.reason}; {outage.consequence}" for outage in open_outages()
                if not (outage.name.endswith("(channel layer)") and channel_layer != "ok")]
    serving = database == "ok" and pgvector_version is not None
    body = {
        "status": "ok" if not reasons else ("degraded" if serving else "down"),
        "reasons": reasons,
        "database": database,
        "database_kind": settings.DATABASE_KIND,
        "pgvector": pgvector_version,
        "channel_layer": {"kind": settings.CHANNEL_LAYER_KIND, "status": channel_layer},
        "worker": worker,
        "elapsed_ms": round((time.monotonic() - started) * 1000, 1),
    }
    return JsonResponse(body, status=200 if serving else 503)
