"""MCP tools about agents: trajectories and self-reported events."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field

from agents import selectors, services
from agents.payloads import sandbox_run_payload, trajectory_payload
from omoi_site.mcp_endpoint import ActingAgentId, AgentId, act_as, mcp_tool
from omoi_site.payloads import compact
from tasks.selectors import task_get


@mcp_tool(read_only=True)
def get_agent_trajectory(caller, agent_id: AgentId, include_full_history: bool = False) -> dict:
    """What an agent of your workflows did, oldest first (last 50 steps unless include_full_history)."""
    agent = selectors.agent_get_visible(agent_id=agent_id, actor=caller)
    events = selectors.agent_trajectory(agent=agent, viewer=caller, include_full_history=include_full_history)
    return trajectory_payload(agent, events)


@mcp_tool()
def report_agent_event(
    caller, event_type: Annotated[str, Field(min_length=1, max_length=60)],
    payload: dict[str, Any] | None = None, task_id: str | None = None, agent_id: ActingAgentId = None,
) -> dict:
    """Record a step of your own trajectory (e.g. tool_call, thought, error) and refresh your heartbeat."""
    act_as(caller, agent_id)
    task = None
    if task_id:
        task = task_get(task_id=task_id, actor=caller)
    event = services.agent_report_event(agent=caller, event_type=event_type, payload=payload, task=task)
    return {"recorded": True, "event_id": event.id}


@mcp_tool()
def launch_worker(
    caller,
    template: Annotated[str, Field(description="researcher | implementer | reviewer | db-specialist | coordinator")],
    task_id: str | None = None, ticket_id: str | None = None, agent_id: ActingAgentId = None,
) -> dict:
    """Coordinator only: start a sandboxed worker of `template` on a pending task (or on a ticket's next task)."""
    act_as(caller, agent_id)
    from agents.launcher import launch_worker_requested

    run = launch_worker_requested(actor=caller, template=template, task_id=task_id, ticket_id=ticket_id)
    return compact(sandbox_run_payload(run))
