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


def sandbox_run_payload(run) -> dict:
    """A sandbox run in full (REST, and MCP launch_worker compacted): status, timings, cost, log tail."""
    return {
        "run_id": f"RUN-{run.id}",
        "agent_id": run.agent_id,
        "workflow_id": run.workflow.slug,
        "task_id": task_public_id(run.task_id),
        "ticket_id": ticket_public_id(run.ticket_id),
        "template": run.template,
        "provider": run.provider,
        "sandbox_id": run.sandbox_id or None,
        "status": run.status,
        "created_at": iso(run.created_at),
        "started_at": iso(run.started_at),
        "ended_at": iso(run.ended_at),
        "exit_code": run.exit_code,
        "sandbox_seconds": run.sandbox_seconds,
        "llm_prompt_tokens": run.llm_prompt_tokens,
        "llm_completion_tokens": run.llm_completion_tokens,
        "llm_cost_usd": str(run.llm_cost_usd),
        "log_tail": run.log_tail,
        "error": run.error,
    }


def sandbox_run_event_payload(run) -> dict:
    """The compact run summary that sandbox.started / sandbox.finished events carry to dashboards."""
    return {
        "run_id": run.pk, "agent_id": run.agent_id, "task_id": task_public_id(run.task_id),
        "provider": run.provider, "status": run.status, "sandbox_id": run.sandbox_id or None,
        "sandbox_seconds": round(run.sandbox_seconds, 1), "llm_tokens": run.llm_prompt_tokens + run.llm_completion_tokens,
    }
