"""Realtime event publishing shared by every app's services.

Services call `publish_on_commit(...)` inside their transaction; the event goes to the Channels groups
only after the transaction commits (nothing is published if it rolls back). Group names:
`workflow.<slug>`, `ticket.<TKT-n>`, `agent.<agent_id>`. Every message has the same envelope:
`{"type": "omoi.event", "id": n, "event": "<name>", "workflow": slug, "ticket": id|None, "agents": [...],
"payload": {...}, "at": iso8601}`. Consumers forward it to their sockets after filtering.

`id` is monotonic: each event is also written as a row of the event log model (`settings.EVENT_LOG_MODEL`,
`collaboration.EventRecord`; the kernel names no app) in the publishing
transaction (so a rolled-back change leaves neither a row nor an event), and `events_since()` replays
what a socket missed. Ids are allocated at insert time, so two transactions committing out of order can
deliver a lower id after a higher one; clients keep the highest id seen and de-duplicate by id.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import threading

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from omoi_site.outages import redis_publish

logger = logging.getLogger(__name__)

EVENT_NAMES = {
    "ticket.created",
    "ticket.updated",
    "ticket.status_changed",
    "ticket.resolved",
    "ticket.unblocked",
    "ticket.blocked",
    "ticket.commented",
    "task.created",
    "task.status_changed",
    "task.claimed",
    "task.released",
    "discovery.recorded",
    "message.sent",
    "handoff.requested",
    "handoff.accepted",
    "handoff.declined",
    "sandbox.started",
    "sandbox.finished",
    "agent.event",
}
_GROUP_SAFE = re.compile(r"[^A-Za-z0-9_.-]")


def event_log():
    """The model that keeps the event log: `settings.EVENT_LOG_MODEL`, looked up like AUTH_USER_MODEL, so
    this kernel module names no app (collaboration owns the table and its retention job)."""
    from django.apps import apps

    return apps.get_model(settings.EVENT_LOG_MODEL)


def group_name(kind: str, key: str) -> str:
    """Channels group names allow only ASCII alphanumerics, hyphens, underscores and periods."""
    return f"{kind}.{_GROUP_SAFE.sub('_', str(key))}"[:99]


def workflow_group(slug: str) -> str:
    return group_name("workflow", slug)


def ticket_group(public_id: str) -> str:
    return group_name("ticket", public_id)


def agent_group(agent_id: str) -> str:
    return group_name("agent", agent_id)


def event_groups(message: dict) -> list[str]:
    """The groups an event envelope goes to: its workflow's, its ticket's (if any) and each named agent's.
    Publishing and the websocket fan-out (collaboration.fanout) both route by this."""
    groups = [workflow_group(message["workflow"])]
    if message.get("ticket"):
        groups.append(ticket_group(message["ticket"]))
    groups.extend(agent_group(agent_id) for agent_id in dict.fromkeys(message.get("agents") or ()))
    return groups


def publish_on_commit(
    event: str,
    *,
    workflow: str,
    payload: dict,
    ticket: str | None = None,
    agents: list[str] | tuple[str, ...] = (),
) -> None:
    """Queue one event for the workflow group, the ticket group (if any) and each listed agent's group."""
    if event not in EVENT_NAMES:
        raise ValueError(f"unknown event name {event}")
    EventRecord = event_log()  # noqa: N806

    message = {
        "type": "omoi.event",
        "id": None,
        "event": event,
        "workflow": workflow,
        "ticket": ticket,
        "agents": list(agents),
        "payload": payload,
        "text": event_sentence(event, ticket, payload),
        "at": timezone.now().isoformat(),
    }
    groups = event_groups(message)
    record = EventRecord.objects.create(event=event, workflow=workflow, ticket=ticket or "", groups=groups, envelope=message)
    message["id"] = record.id  # the stored envelope carries no id; replays add the row's id
    if settings.CHANNEL_LAYER_KIND == "in-memory":
        # No shared layer: the web processes' relays pick the row up (NOTIFY is delivered at commit only).
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_notify(%s, %s)", [RELAY_CHANNEL, str(record.id)])
        return
    transaction.on_commit(lambda: _send(groups, message))


def event_sentence(event: str, ticket: str | None, payload: dict) -> str:
    """The event as one sentence for people (dashboard feeds). Computed once, at publish, and stored in the
    envelope, so a page's first render and its live updates read the same words."""
    p = payload or {}
    by = f" by {p['by']}" if p.get("by") else ""
    if event == "message.sent":
        verb = {"question": "asked", "warning": "warned", "discovery": "shared a discovery with"}.get(p.get("message_type"), "told")
        to = "everyone" if p.get("to") == "*" else p.get("to")
        return f"{p.get('from')} {verb} {to}: “{p.get('message', '')}”"
    if event == "handoff.requested":
        return f"{p.get('from_agent_id')} asked {p.get('to_agent_id')} to take over {p.get('task_id')}: {p.get('reason', '')}"
    if event in ("handoff.accepted", "handoff.declined"):
        return f"{p.get('to_agent_id')} {event.split('.')[1]} the hand-off of {p.get('task_id')} from {p.get('from_agent_id')}."
    if event == "discovery.recorded":
        return f"{p.get('recorded_by') or 'An agent'} found a {str(p.get('discovery_type', '')).replace('_', ' ')}: {p.get('description', '')}"
    if event == "ticket.created":
        return f"{ticket} was created{by}: {p.get('title', '')}"
    if event == "ticket.status_changed":
        return f"{ticket} moved from {p.get('old_status') or '?'} to {p.get('status')}{by}."
    if event == "ticket.resolved":
        return f"{ticket} was resolved{by}."
    if event == "ticket.unblocked":
        return f"{ticket} is no longer blocked" + (f" ({p['unblocked_by']} is done)." if p.get("unblocked_by") else ".")
    if event == "ticket.blocked":
        return f"{ticket} is blocked" + (f" by {p['blocked_by']}." if p.get("blocked_by") else ".")
    if event == "ticket.commented":
        return f"{p.get('author') or 'Someone'} commented on {ticket}: {p.get('text', '')}"
    if event == "ticket.updated":
        changed = ", ".join(p.get("changed") or []) or "details"
        return f"{ticket} was updated ({changed})" + (f"; blocked by {p['blocked_by']}." if p.get("blocked_by") else ".")
    if event.startswith("task."):
        verb = {"task.created": "was created", "task.claimed": "was claimed", "task.released": "was released",
                "task.status_changed": f"is now {p.get('status')}"}.get(event, event.split(".")[1])
        who = f" by {p['claimed_by']}" if event == "task.claimed" and p.get("claimed_by") else ""
        return f"{p.get('task_id')} on {ticket} {verb}{who}."
    if event == "sandbox.started":
        return f"A {p.get('provider', '')} sandbox started for {p.get('agent_id', '?')}" + (f" on {p['task_id']}." if p.get("task_id") else ".")
    if event == "sandbox.finished":
        return (f"The sandbox of {p.get('agent_id', '?')} finished: {p.get('status')} after {p.get('sandbox_seconds', 0)} s, "
                f"{p.get('llm_tokens', 0)} tokens.")
    if event == "agent.event":
        return f"{p.get('agent_id')} reported {str(p.get('event_type', '')).replace('_', ' ')}" + (f" on {p['task_id']}." if p.get("task_id") else ".")
    return f"{event} {ticket or ''}".strip()


def event_feed(*, workflow: str | None = None, ticket: str | None = None, events: tuple[str, ...] = (), limit: int = 60) -> list[dict]:
    """The newest events of a workflow (or of one ticket) as the envelopes sockets carry, newest first:
    the feed's first render, so a reload shows exactly what was shown live."""
    EventRecord = event_log()  # noqa: N806

    rows = EventRecord.objects.all()
    if workflow:
        rows = rows.filter(workflow=workflow)
    if ticket:
        rows = rows.filter(ticket=ticket)
    if events:
        from django.db.models import Q

        query = Q()
        for prefix in events:  # 'sandbox.' matches every sandbox event
            query |= Q(event__startswith=prefix)
        rows = rows.filter(query)
    return [{**row.envelope, "id": row.id} for row in rows.order_by("-id").only("id", "envelope")[:limit]]


REPLAY_LIMIT = 1000
RELAY_CHANNEL = "omoi_events"


def events_since(*, groups: list[str], since_id: int, limit: int = REPLAY_LIMIT) -> list[dict]:
    """The envelopes of events after `since_id` that went to any of `groups`, oldest first (at most
    `limit`; a client further behind reloads the page)."""
    EventRecord = event_log()  # noqa: N806

    rows = EventRecord.objects.filter(id__gt=since_id, groups__overlap=list(groups)).order_by("id")[:limit]
    return [{**row.envelope, "id": row.id} for row in rows.only("id", "envelope")]


def latest_event_id() -> int:
    """The highest event id so far (0 when none): a page rendered now continues from here."""
    EventRecord = event_log()  # noqa: N806

    return EventRecord.objects.order_by("-id").values_list("id", flat=True).first() or 0


class _PublisherLoop:
    """One long-lived event loop thread per process for publishing to Redis.

    channels-redis keeps its connection pools per event loop; `async_to_sync` from a plain thread makes a
    fresh loop — and so fresh Redis connections — for every event, which caps publishing at a few dozen
    events per second. Publishing through one persistent loop reuses the pool.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._loop = None
        self._pid = None

    def loop(self):
        with self._lock:
            if self._loop is None or self._pid != os.getpid():  # new process (fork): new loop
                self._loop = asyncio.new_event_loop()
                self._pid = os.getpid()
                threading.Thread(target=self._loop.run_forever, name="omoi-event-publisher", daemon=True).start()
            return self._loop


_publisher = _PublisherLoop()


PUBLISH_TIMEOUT_SECONDS = 3


def _send(groups: list[str], message: dict) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    if settings.CHANNEL_LAYER_KIND not in ("redis", "postgres"):  # the in-memory layer's queues belong to
        try:                                                       # the server's own loop
            async_to_sync(_send_all)(layer, groups, message)
        except Exception:  # a realtime hiccup must never undo or fail a committed write
            logger.exception("publishing %s failed", message.get("event"))
        return
    # Redis down: the write has committed and its EventRecord is stored, so the event is dropped (counted,
    # one warning per outage) and sockets catch up with ?since=<id> once Redis is back. While the outage is
    # open, publishes skip Redis instead of each paying a connection timeout.
    if redis_publish.should_skip():
        return
    future = asyncio.run_coroutine_threadsafe(_send_with_fresh_retry(layer, groups, message), _publisher.loop())
    try:
        future.result(timeout=PUBLISH_TIMEOUT_SECONDS)
    except Exception as error:
        future.cancel()
        redis_publish.failed(error)
    else:
        redis_publish.succeeded()


async def _send_with_fresh_retry(layer, groups: list[str], message: dict) -> None:
    """Connections pooled before a Redis restart fail once each ("Connection closed by server"; redis-py
    then drops that connection): try once more before calling Redis unavailable. (Closing the layer's pools
    instead breaks publishes running beside it on the same loop.)"""
    try:
        await _send_all(layer, groups, message)
    except Exception:
        await _send_all(layer, groups, message)


async def _send_all(layer, groups: list[str], message: dict) -> None:
    # A broadcast names every agent of the workflow: send to the groups concurrently, not one by one.
    await asyncio.gather(*(layer.group_send(group, message) for group in groups))


class EventRelay:
    """Without Redis: delivers every EventRecord — whichever process wrote it (web, background worker,
    a management command) — to this process's in-memory channel layer.

    One asyncio task per web process, started by the first websocket: LISTEN on `omoi_events`, and on
    each notification (or every few seconds, in case one was missed while reconnecting) send the rows after
    the last relayed id to their groups. A lost database connection is retried; nothing is skipped because
    the position is an event id, not a notification.

    Ids are allocated at insert and rows become visible at commit, so a transaction holding a lower id can
    commit after a higher id was relayed. Every id skipped over is therefore watched for `GAP_SECONDS`
    and relayed if its row appears (an id that stays missing belonged to a rolled-back transaction).
    """

    POLL_SECONDS = 5
    GAP_SECONDS = 60
    GAP_LIMIT = 1000  # skipped ids watched per jump (a burst of rollbacks can skip many)

    def __init__(self):
        self._task = None
        self._loop = None
        self._started = None
        self._gaps: dict[int, float] = {}  # skipped id -> loop time after which it is given up

    async def ensure_started(self) -> None:
        """Start the relay on this event loop (once) and wait until it knows its starting position, so an
        event committed after the caller's socket joined is relayed, not taken for history."""
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done() or self._loop is not loop:
            self._loop = loop
            self._started = loop.create_future()
            self._gaps = {}
            self._task = loop.create_task(self._run(), name="omoi-event-relay")
        await asyncio.shield(self._started)

    async def _run(self) -> None:
        import psycopg
        from asgiref.sync import sync_to_async

        try:
            last_id = await sync_to_async(latest_event_id)()
        except BaseException as error:
            self._started.set_exception(error)
            raise
        self._started.set_result(last_id)
        while True:
            try:
                conninfo = await sync_to_async(_conninfo)()
                async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as listener:
                    await listener.execute(f"LISTEN {RELAY_CHANNEL}")
                    while True:
                        last_id = await self._relay_after(last_id)
                        async for _ in listener.notifies(timeout=self.POLL_SECONDS, stop_after=1):
                            pass
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.warning("event relay lost its database connection; retrying", exc_info=True)
                await asyncio.sleep(1)

    async def _relay_after(self, last_id: int) -> int:
        from asgiref.sync import sync_to_async

        layer = get_channel_layer()
        now = asyncio.get_running_loop().time()
        self._gaps = {gap: until for gap, until in self._gaps.items() if until > now}
        if self._gaps:
            for record_id, groups, envelope in await sync_to_async(_records_with_ids)(list(self._gaps)):
                await _send_all(layer, groups, {**envelope, "id": record_id})
                self._gaps.pop(record_id, None)
        while True:
            rows = await sync_to_async(_records_after)(last_id)
            if not rows:
                return last_id
            for record_id, groups, envelope in rows:
                for skipped in range(max(last_id + 1, record_id - self.GAP_LIMIT), record_id):
                    self._gaps[skipped] = now + self.GAP_SECONDS
                await _send_all(layer, groups, {**envelope, "id": record_id})
                last_id = record_id


def _records_after(last_id: int) -> list[tuple[int, list[str], dict]]:
    EventRecord = event_log()  # noqa: N806

    try:
        return list(EventRecord.objects.filter(id__gt=last_id).order_by("id").values_list("id", "groups", "envelope")[:500])
    finally:
        connection.close()


def _records_with_ids(ids: list[int]) -> list[tuple[int, list[str], dict]]:
    EventRecord = event_log()  # noqa: N806

    try:
        return list(EventRecord.objects.filter(id__in=ids).order_by("id").values_list("id", "groups", "envelope"))
    finally:
        connection.close()


def _conninfo() -> str:
    import psycopg

    params = dict(connection.get_connection_params())
    for key in ("cursor_factory", "context", "prepare_threshold"):
        params.pop(key, None)
    connection.close()
    return psycopg.conninfo.make_conninfo("", **{k: v for k, v in params.items() if v is not None})


relay = EventRelay()
