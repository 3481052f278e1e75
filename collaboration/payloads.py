"""Compact JSON shapes of messages and hand-offs."""

from __future__ import annotations


def _iso(value):
    return value.isoformat(timespec="seconds") if value else None


def _compact(data: dict) -> dict:
    return {k: v for k, v in data.items() if v not in (None, "", [], {})}


def message_payload(message, *, read_at=None, include_read: bool = False) -> dict:
    data = _compact(
        {
            "message_id": message.id,
            "thread_id": message.thread_id,
            "from": message.sender_id,
            "to": message.recipient_id or "*",
            "message_type": message.message_type,
            "message": message.body,
            "ticket_id": f"TKT-{message.ticket_id}" if message.ticket_id else None,
            "task_id": f"TSK-{message.task_id}" if message.task_id else None,
            "created_at": _iso(message.created_at),
        }
    )
    if include_read:
        data["read"] = read_at is not None
    return data


def handoff_payload(handoff) -> dict:
    return _compact(
        {
            "handoff_id": handoff.public_id,
            "task_id": f"TSK-{handoff.task_id}",
            "from_agent_id": handoff.from_agent_id,
            "to_agent_id": handoff.to_agent_id,
            "status": handoff.status,
            "reason": handoff.reason,
            "context": handoff.context,
            "response_note": handoff.response_note,
            "created_at": _iso(handoff.created_at),
            "responded_at": _iso(handoff.responded_at),
        }
    )
