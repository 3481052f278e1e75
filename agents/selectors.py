"""Identity, read side: who may see what (workflow membership and staff scoping), token lookup, agents,
trajectories and sandbox runs."""

from __future__ import annotations

import hashlib

from django.db.models import Q, QuerySet
from django.utils import timezone

from agents.models import Agent, AgentEvent, AgentToken, SandboxRun, Workflow
from omoi_site.domain import DomainError, NotFound, first_of, is_agent, parse_public_id

STAFF_WORKFLOW_GROUP_PREFIX = "workflow:"
# Attribute on an Agent instance holding its workflow ids as read when its token was looked up (see
# agent_with_membership): the MCP door caches that instance for a few seconds, so a call needs no
# membership query of its own.
MEMBERSHIP_SNAPSHOT = "_workflow_ids_snapshot"


def workflow_ids_for(actor) -> set[int] | None:
    """Workflows the actor may see; None means all: superusers, staff users not limited to workflows, and
    the system itself (actor=None, used only by background jobs — every door passes an authenticated agent
    or user).

    A non-superuser staff user who belongs to one or more auth groups named `workflow:<slug>` is limited
    to those workflows in every door (admin, dashboards, REST). Non-staff users see nothing.
    """
    if actor is None:
        return None
    if is_agent(actor):
        snapshot = getattr(actor, MEMBERSHIP_SNAPSHOT, None)
        if snapshot is not None:
            return set(snapshot)
        return set(actor.workflows.values_list("id", flat=True))
    if not getattr(actor, "is_staff", False):
        return set()
    if getattr(actor, "is_superuser", False):
        return None
    slugs = [name[len(STAFF_WORKFLOW_GROUP_PREFIX):] for name in actor.groups.filter(
        name__startswith=STAFF_WORKFLOW_GROUP_PREFIX).values_list("name", flat=True)]
    if not slugs:
        return None
    return set(Workflow.objects.filter(slug__in=slugs).values_list("id", flat=True))


def scoped_to_actor(queryset: QuerySet, *, actor, workflow_lookup: str | None) -> QuerySet:
    """`queryset` narrowed to the workflows the actor may see, following `workflow_lookup` (e.g.
    "workflow", "ticket__workflow", "workflows", "pk" for workflows themselves); None = not scoped."""
    allowed = workflow_ids_for(actor)
    if allowed is None or workflow_lookup is None:
        return queryset
    lookup = "pk__in" if workflow_lookup == "pk" else f"{workflow_lookup}__in"
    return queryset.filter(**{lookup: allowed}).distinct()


def can_access_workflow(actor, workflow_id: int) -> bool:
    allowed = workflow_ids_for(actor)
    return allowed is None or workflow_id in allowed


def workflow_get(*, slug, actor) -> Workflow:
    """The workflow with this slug, if the actor belongs to it."""
    if not isinstance(slug, str) or not slug.strip():
        raise DomainError("workflow_id must be a workflow slug such as 'my-project'.")
    workflow = first_of(Workflow.objects.filter(slug=slug.strip()))
    if workflow is None or not can_access_workflow(actor, workflow.id):
        # Same message for 'missing' and 'not yours': do not reveal other workflows.
        raise NotFound(f"No workflow '{slug}' that you belong to. Check workflow_id (your token is scoped to its workflows).")
    return workflow


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


def agent_with_membership(agent: Agent) -> Agent:
    """`agent` carrying a snapshot of its workflow ids (one query), which `workflow_ids_for` then uses
    instead of asking again. Only for an instance whose life is bounded: the MCP door keeps it as long
    as its token cache entry (MCP_TOKEN_CACHE_SECONDS, at most 10 s), the same bound as a revoked token."""
    setattr(agent, MEMBERSHIP_SNAPSHOT, frozenset(agent.workflows.values_list("id", flat=True)))
    return agent


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


# --- cost: usage and budget ---------------------------------------------------------------------------


def month_start(now=None):
    """The first instant of the current calendar month (UTC): budgets reset then."""
    from datetime import UTC

    now = now or timezone.now()
    return now.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def workflow_month_spend(*, workflow, now=None):
    """LLM dollars the workflow's sandbox runs have cost since the start of this month."""
    from decimal import Decimal

    from django.db.models import Sum

    total = SandboxRun.objects.filter(workflow=workflow, created_at__gte=month_start(now)).aggregate(total=Sum("llm_cost_usd"))["total"]
    return total or Decimal("0")


def workflow_budget_refusal(*, workflow, now=None) -> str | None:
    """Why a new launch would break the workflow's monthly budget, or None when it may go ahead."""
    if workflow.monthly_budget_usd is None:
        return None
    spent = workflow_month_spend(workflow=workflow, now=now)
    if spent < workflow.monthly_budget_usd:
        return None
    return (f"workflow '{workflow.slug}' has spent ${spent:.2f} of its ${workflow.monthly_budget_usd:.2f} monthly budget; "
            "no new sandbox until next month unless a staff user raises monthly_budget_usd in the admin.")


def workflow_usage(*, workflow, days: int = 30, now=None) -> dict:
    """Sandbox usage of the workflow per day and per agent template over the last `days` days (UTC):
    {"days": [{"day", "sandbox_seconds", "tokens", "cost_usd", "runs"}], "templates": [... same + "template"],
    "totals": {...}, "month_spent_usd", "budget_usd"} — sums of the SandboxRun rows, nothing estimated."""
    from datetime import timedelta
    from decimal import Decimal

    from django.db.models import Count, F, Sum
    from django.db.models.functions import TruncDate

    now = now or timezone.now()
    start = (now - timedelta(days=days - 1)).replace(hour=0, minute=0, second=0, microsecond=0)
    runs = SandboxRun.objects.filter(workflow=workflow, created_at__gte=start)
    sums = {"sandbox_seconds": Sum("sandbox_seconds"), "tokens": Sum(F("llm_prompt_tokens") + F("llm_completion_tokens")),
            "cost_usd": Sum("llm_cost_usd"), "runs": Count("id")}

    def clean(row: dict) -> dict:
        return {**row, "sandbox_seconds": round(row["sandbox_seconds"] or 0, 1), "tokens": row["tokens"] or 0,
                "cost_usd": row["cost_usd"] or Decimal("0")}

    per_day = {row["day"]: clean(row) for row in runs.annotate(day=TruncDate("created_at")).values("day").annotate(**sums)}
    day_list = []
    for offset in range(days):
        day = (start + timedelta(days=offset)).date()
        day_list.append(per_day.get(day, {"day": day, "sandbox_seconds": 0, "tokens": 0, "cost_usd": Decimal("0"), "runs": 0}))
    templates = [clean(row) for row in runs.values("template").annotate(**sums).order_by("-cost_usd", "template")]
    totals = clean(runs.aggregate(**sums))
    return {"days": day_list, "templates": templates, "totals": totals,
            "month_spent_usd": workflow_month_spend(workflow=workflow, now=now), "budget_usd": workflow.monthly_budget_usd}
