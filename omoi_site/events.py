"""Realtime event publishing shared by every app's services.

Services call `publish_on_commit(...)` inside their transaction; the event goes to the Channels groups
only after the transaction commits (nothing is published if it rolls back). Group names:
`workflow.<slug>`, `ticket.<TKT-n>`, `agent.<agent_id>`. Every message has the same envelope:
`{"type": "omoi.event", "event": "<name>", "workflow": slug, "ticket": id|None, "agents": [...],
"payload": {...}, "at": iso8601}`. Consumers forward it to their sockets after filtering.
"""

from __future__ import annotations

import logging
import re

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction
from django.utils import timezone

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


def group_name(kind: str, key: str) -> str:
    """Channels group names allow only ASCII alphanumerics, hyphens, underscores and periods."""
    return f"{kind}.{_GROUP_SAFE.sub('_', str(key))}"[:99]


def workflow_group(slug: str) -> str:
    return group_name("workflow", slug)


def ticket_group(public_id: str) -> str:
    return group_name("ticket", public_id)


def agent_group(agent_id: str) -> str:
    return group_name("agent", agent_id)


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
    message = {
        "type": "omoi.event",
        "event": event,
        "workflow": workflow,
        "ticket": ticket,
        "agents": list(agents),
        "payload": payload,
        "at": timezone.now().isoformat(),
    }
    groups = [workflow_group(workflow)]
    if ticket:
        groups.append(ticket_group(ticket))
    groups.extend(agent_group(agent_id) for agent_id in dict.fromkeys(agents))
    transaction.on_commit(lambda: _send(groups, message))


def _send(groups: list[str], message: dict) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        async_to_sync(_send_all)(layer, groups, message)
    except Exception:  # a realtime hiccup must never undo or fail a committed write
        logger.exception("publishing %s failed", message.get("event"))


async def _send_all(layer, groups: list[str], message: dict) -> None:
    for group in groups:
        await layer.group_send(group, message)
