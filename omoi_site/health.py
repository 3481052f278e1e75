"""`GET /healthz`: database, pgvector, channel layer and background-worker heartbeat, as JSON."""

import asyncio
import time

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import connection
from django.http import JsonResponse
from django.views.decorators.http import require_GET


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
    channel = await layer.new_channel("healthz.")
    await layer.send(channel, {"type": "healthz.ping"})
    message = await asyncio.wait_for(layer.receive(channel), timeout=2)
    return message.get("type") == "healthz.ping"


def _channel_layer_status() -> str:
    try:
        return "ok" if async_to_sync(_channel_layer_roundtrip)() else "error: no round-trip"
    except Exception as error:
        return f"error: {error.__class__.__name__}: {error}"[:200]


def _worker_status() -> dict:
    from agents.selectors import worker_heartbeat_age_seconds

    age = worker_heartbeat_age_seconds()
    if age is None:
        return {"status": "never seen", "last_heartbeat_seconds_ago": None}
    return {"status": "ok" if age < 120 else "stale", "last_heartbeat_seconds_ago": round(age, 1)}


@require_GET
def healthz(request):
    started = time.monotonic()
    database, pgvector_version = _database_status()
    channel_layer = _channel_layer_status()
    worker = _worker_status() if database == "ok" else {"status": "unknown"}
    healthy = database == "ok" and pgvector_version is not None and channel_layer == "ok"
    body = {
        "status": "ok" if healthy else "degraded",
        "database": database,
        "database_kind": settings.DATABASE_KIND,
        "pgvector": pgvector_version,
        "channel_layer": {"kind": settings.CHANNEL_LAYER_KIND, "status": channel_layer},
        "worker": worker,
        "elapsed_ms": round((time.monotonic() - started) * 1000, 1),
    }
    return JsonResponse(body, status=200 if healthy else 503)
