"""Compact JSON shapes of messages and hand-offs."""

from __future__ import annotations

from omoi_site.domain import task_public_id, ticket_public_id
from omoi_site.payloads import compact, iso


def message_payload(message, *, read_at=None, include_read: bool = False) -> dict:
    data = compact(
        {
            "message_id": message.id,
            "thread_id": message.thread_id,
            "from": message.sender_id,
            "to": message.recipient_id or "*",
            "message_type": message.message_type,
            "message": message.body,
            "ticket_id": ticket_public_id(message.ticket_id),
            "task_id": task_public_id(message.task_id),
            "created_at": iso(message.created_at),
        }
    )
    if include_read:
        data["read"] = read_at is not None
    return data


def handoff_payload(handoff) -> dict:
    return compact(
        {
            "handoff_id": handoff.public_id,
            "task_id": task_public_id(handoff.task_id),
            "from_agent_id": handoff.from_agent_id,
            "to_agent_id": handoff.to_agent_id,
            "status": handoff.status,
            "reason": handoff.reason,
            "context": handoff.context,
            "response_note": handoff.response_note,
            "created_at": iso(handoff.created_at),
            "responded_at": iso(handoff.responded_at),
        }
    )


# --- results of the write services, the same JSON through MCP and REST -------------------------------------


def message_sent_payload(message) -> dict:
    return {"message_id": message.id, "thread_id": message.thread_id, "to": message.recipient_id}


def broadcast_sent_payload(sent) -> dict:
    """collaboration.services.BroadcastSent: the message and how many agents received it."""
    return {"message_id": sent.message.id, "thread_id": sent.message.thread_id, "recipients": sent.recipients}


def inbox_payload(items) -> dict:
    """selectors.inbox: (message, read_at) pairs, newest first, each with its read state."""
    return {"messages": [message_payload(m, read_at=read_at, include_read=True) for m, read_at in items]}


def handoff_accepted_payload(handoff) -> dict:
    """An accepted hand-off, with the fencing token the new holder sends with its writes."""
    return {**handoff_payload(handoff), "fencing_token": handoff.task.fencing_token}
