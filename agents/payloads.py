"""Compact JSON shapes of agents and their trajectories (shared by the MCP tools and the REST endpoints)."""

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


def _iso(value):
    return value.isoformat(timespec="seconds") if value else None


def agent_payload(agent, *, visible_workflow_ids: set[int] | None = None) -> dict:
    """One agent; `workflows` lists only the workflows the viewer may see (None = all)."""
    return {
        "agent_id": agent.agent_id,
        "agent_type": agent.agent_type,
        "template": agent.template or None,
        "capabilities": list(agent.capabilities),
        "status": agent.status,
        "workflows": sorted(
            w.slug for w in agent.workflows.all() if visible_workflow_ids is None or w.id in visible_workflow_ids
        ),
        "last_heartbeat": _iso(agent.last_heartbeat),
        "created_at": _iso(agent.created_at),
    }
