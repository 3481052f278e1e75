"""Compact JSON shapes of agents and their trajectories (shared by the MCP tools and the REST endpoints)."""

from __future__ import annotations

from omoi_site.domain import task_public_id, ticket_public_id
from omoi_site.payloads import iso


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
                    "task_id": task_public_id(event.task_id),
                    "ticket_id": ticket_public_id(event.ticket_id),
                    "payload": event.payload or None,
                }.items()
                if value is not None
            }
            for event in events
        ],
    }



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
        "last_heartbeat": iso(agent.last_heartbeat),
        "created_at": iso(agent.created_at),
    }
