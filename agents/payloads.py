"""Compact JSON shapes of agents' trajectories (shared by the MCP tool and the REST endpoint)."""

from __future__ import annotations


def trajectory_payload(agent, events) -> dict:
    return {
        "agent_id": agent.agent_id,
        "status": agent.status,
        "steps": [
            {
                key: value
                for key, value in {
                    "at": event.created_at.isoformat(timespec="seconds"),
                    "event": event.event_type,
                    "task_id": f"TSK-{event.task_id}" if event.task_id else None,
                    "ticket_id": f"TKT-{event.ticket_id}" if event.ticket_id else None,
                    "payload": event.payload or None,
                }.items()
                if value is not None
            }
            for event in events
        ],
    }
