"""Read-side queries about agents: token lookup, listings, trajectories."""

from __future__ import annotations

import hashlib

from django.db.models import Q
from django.utils import timezone

from agents.models import Agent, AgentEvent, AgentToken, SandboxRun
from omoi_site.domain import NotFound


def hash_token(raw_token: str) -> str:
    return hashlib.sha256(raw_token.encode()).hexdigest()


def agent_for_token(*, raw_token: str) -> Agent | None:
    """The agent owning a live (not revoked, not expired) token, or None."""
    now = timezone.now()
    token = (
        AgentToken.objects.select_related("agent")
        .filter(token_hash=hash_token(raw_token), revoked_at__isnull=True)
        .filter(Q(expires_at__isnull=True) | Q(expires_at__gt=now))
        .first()
    )
    if token is None or token.agent.status == Agent.Status.TERMINATED:
        return None
    return token.agent


def agent_get(*, agent_id: str, argument: str = "agent_id") -> Agent:
    if not isinstance(agent_id, str) or not agent_id.strip():
        raise NotFound(f"{argument} must be an agent id such as 'worker-1'.")
    agent = Agent.objects.filter(agent_id=agent_id.strip()).first()
    if agent is None:
        raise NotFound(f"No agent '{agent_id}' exists ({argument}); check the id with your coordinator.")
    return agent


def agent_workflow_ids(*, agent: Agent) -> set[int]:
    return set(agent.workflows.values_list("id", flat=True))


def agent_get_visible(*, agent_id: str, actor, argument: str = "agent_id") -> Agent:
    """An agent the actor may see: itself, an agent sharing one of its workflows, or any agent for staff.
    Anything else is reported as missing, so other workflows' agents do not leak."""
    from omoi_site.domain import is_agent
    from tickets.selectors import workflow_ids_for

    agent = agent_get(agent_id=agent_id, argument=argument)
    if is_agent(actor) and agent.agent_id == actor.agent_id:
        return agent
    allowed = workflow_ids_for(actor)
    if allowed is None or agent_workflow_ids(agent=agent) & allowed:
        return agent
    raise NotFound(f"No agent '{agent_id}' in your workflows ({argument}).")


def agent_list(*, workflow_id: int | None = None):
    queryset = Agent.objects.all().prefetch_related("workflows")
    if workflow_id is not None:
        queryset = queryset.filter(workflows__id=workflow_id)
    return queryset


def agent_workflow_ids_visible_to(*, agent: Agent, viewer) -> set[int] | None:
    """Which of `agent`'s workflows `viewer` may see: None = all of them (the agent itself, or staff)."""
    from omoi_site.domain import is_agent
    from tickets.selectors import workflow_ids_for

    if is_agent(viewer) and viewer.agent_id == agent.agent_id:
        return None
    allowed = workflow_ids_for(viewer)
    return None if allowed is None else agent_workflow_ids(agent=agent) & allowed


def agent_trajectory(*, agent: Agent, viewer, include_full_history: bool = False, limit: int = 50) -> list[AgentEvent]:
    """The agent's steps that `viewer` may see, oldest first (the newest `limit` unless full history).

    A step about a ticket or task is visible to viewers of that ticket's workflow. A step tied to neither
    (a thought, a tool call) is visible only when the viewer sees every workflow the agent belongs to:
    nothing of a workflow leaks to an agent outside it because the two share another workflow."""
    events = AgentEvent.objects.filter(agent=agent)
    visible = agent_workflow_ids_visible_to(agent=agent, viewer=viewer)
    if visible is not None:
        scoped = Q(ticket__workflow_id__in=visible) | Q(ticket__isnull=True, task__workflow_id__in=visible)
        if visible >= agent_workflow_ids(agent=agent):
            scoped |= Q(ticket__isnull=True, task__isnull=True)
        events = events.filter(scoped)
    events = events.order_by("-created_at", "-id")
    if not include_full_history:
        events = events[:limit]
    return list(reversed(list(events)))


def sandbox_run_list(*, workflow_id: int | None = None, status: str | None = None):
    queryset = SandboxRun.objects.select_related("agent", "task", "workflow")
    if workflow_id is not None:
        queryset = queryset.filter(workflow_id=workflow_id)
    if status:
        queryset = queryset.filter(status=status)
    return queryset


def sandbox_run_get(*, run_id, actor) -> SandboxRun:
    """One sandbox run by id, if it belongs to one of the actor's workflows."""
    from omoi_site.domain import parse_public_id
    from tickets.selectors import can_access_workflow

    pk = parse_public_id(run_id, "RUN", argument="run_id")
    run = SandboxRun.objects.select_related("agent", "task", "workflow").filter(pk=pk).first()
    if run is None or not can_access_workflow(actor, run.workflow_id):
        raise NotFound(f"No sandbox run RUN-{pk} in your workflows (run_id).")
    return run


def worker_heartbeat_age_seconds() -> float | None:
    """Seconds since the freshest background-worker heartbeat (`manage.py worker` upserts one), or None."""
    from agents.models import WorkerHeartbeat

    beat = WorkerHeartbeat.objects.order_by("-beat_at").first()
    if beat is None:
        return None
    return (timezone.now() - beat.beat_at).total_seconds()
