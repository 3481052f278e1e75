"""Write-side operations on identity: workflows, agents, tokens, status, trajectory events."""

from __future__ import annotations

import re
import secrets
from datetime import timedelta
from decimal import Decimal, InvalidOperation

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from agents.models import Agent, AgentEvent, AgentToken, Workflow
from agents.selectors import hash_token
from omoi_site.domain import DomainError, NotFound, require_text, task_public_id
from omoi_site.events import publish_on_commit

TOKEN_PREFIX = "omoi_"
SLUG_PATTERN = re.compile(r"^[a-z0-9][a-z0-9-]{0,99}$")


@transaction.atomic
def workflow_get_or_create(*, slug: str, name: str = "") -> Workflow:
    """Return the workflow with this slug, creating it if needed."""
    if not isinstance(slug, str) or not SLUG_PATTERN.match(slug):
        raise DomainError(f"workflow slug must be lowercase letters, digits and dashes (e.g. 'my-project'); got {slug!r}.")
    workflow, _ = Workflow.objects.get_or_create(slug=slug, defaults={"name": name or slug})
    return workflow


@transaction.atomic
def workflow_update(*, actor, workflow_id: int, updates: dict) -> Workflow:
    """Edit a workflow's name, description, sandbox limit or auto-spawn rules (the slug is permanent)."""
    editable = {"name", "description", "max_concurrent_sandboxes", "auto_spawn_rules", "monthly_budget_usd"}
    unknown = sorted(set(updates) - editable)
    if unknown:
        raise DomainError(f"workflow: unknown or read-only field(s) {', '.join(unknown)}; editable: {', '.join(sorted(editable))}.")
    workflow = Workflow.objects.select_for_update().filter(pk=workflow_id).first()
    if workflow is None:
        raise NotFound(f"No workflow with id {workflow_id}.")
    if "name" in updates:
        updates["name"] = require_text(updates["name"], argument="name", min_length=1, max_length=200)
    if "max_concurrent_sandboxes" in updates:
        value = updates["max_concurrent_sandboxes"]
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 1000:
            raise DomainError(f"max_concurrent_sandboxes must be a whole number from 0 to 1000; got {value!r}.")
    if "monthly_budget_usd" in updates and updates["monthly_budget_usd"] is not None:
        try:
            budget = Decimal(str(updates["monthly_budget_usd"]))
        except (InvalidOperation, ValueError):
            budget = None
        if budget is None or not budget.is_finite() or not 0 <= budget < 10**8:
            raise DomainError(f"monthly_budget_usd must be an amount in dollars from 0 to 99999999.99, or empty for no limit; got {updates['monthly_budget_usd']!r}.")
        updates["monthly_budget_usd"] = budget.quantize(Decimal("0.01"))
    if "auto_spawn_rules" in updates and not isinstance(updates["auto_spawn_rules"], dict):
        raise DomainError('auto_spawn_rules must be an object mapping ticket_type to an agent template, e.g. {"bug": "worker"}.')
    for field, value in updates.items():
        setattr(workflow, field, value)
    if updates:
        workflow.save(update_fields=list(updates))
    return workflow


@transaction.atomic
def agent_create_or_update(
    *, agent_id: str, workflows: list[Workflow], agent_type: str = Agent.AgentType.IMPLEMENTER, template: str = ""
) -> Agent:
    """Create the agent (or update its type) and add it to the given workflows."""
    if agent_type not in Agent.AgentType.values:
        raise DomainError(f"agent type must be one of {', '.join(Agent.AgentType.values)}; got '{agent_type}'.")
    agent, created = Agent.objects.select_for_update().get_or_create(
        agent_id=agent_id, defaults={"agent_type": agent_type, "template": template}
    )
    if not created and (agent.agent_type != agent_type or (template and agent.template != template)):
        agent.agent_type = agent_type
        agent.template = template or agent.template
        agent.save(update_fields=["agent_type", "template"])
    if agent.status == Agent.Status.TERMINATED:
        agent.status = Agent.Status.IDLE
        agent.save(update_fields=["status"])
    agent.workflows.add(*workflows)
    return agent


@transaction.atomic
def agent_token_issue(*, agent: Agent, label: str = "", ttl_seconds: int | None = None) -> str:
    """Issue a new bearer token for the agent and return it (the only time the raw value exists)."""
    raw_token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    expires_at = timezone.now() + timedelta(seconds=ttl_seconds) if ttl_seconds else None
    AgentToken.objects.create(
        agent=agent, token_hash=hash_token(raw_token), prefix=raw_token[:12], label=label, expires_at=expires_at
    )
    return raw_token


@transaction.atomic
def agent_tokens_revoke(*, agent: Agent, label: str | None = None) -> int:
    """Revoke every live token of the agent (only those with this label when given); returns how many."""
    tokens = AgentToken.objects.filter(agent=agent, revoked_at__isnull=True)
    if label is not None:
        tokens = tokens.filter(label=label)
    return tokens.update(revoked_at=timezone.now())


def agent_heartbeat(*, agent_id: str, status: str | None = None) -> None:
    """The one write of an agent's liveness: `last_heartbeat` now (and its status when given). Called in the
    caller's transaction by whatever proves the agent alive (a lease renewal, a reported event, a run start)."""
    fields = {"last_heartbeat": timezone.now()}
    if status is not None:
        fields["status"] = status
    Agent.objects.filter(pk=agent_id).update(**fields)


def agent_status_set(*, agent_id: str, status: str) -> None:
    """Set an agent's status (spawning, running, idle …) as the sandbox runner sees it; no heartbeat."""
    Agent.objects.filter(pk=agent_id).update(status=status)


TOKEN_LAST_USED_RESOLUTION = timedelta(seconds=60)


def agent_token_mark_used(*, raw_token: str) -> bool:
    """Record when a token was last used, at most once a minute per token (one conditional UPDATE, so a
    busy agent does not write on every request). Returns whether a row was written."""
    now = timezone.now()
    return bool(
        AgentToken.objects.filter(token_hash=hash_token(raw_token))
        .filter(Q(last_used_at__isnull=True) | Q(last_used_at__lt=now - TOKEN_LAST_USED_RESOLUTION))
        .update(last_used_at=now)
    )


def agent_event_record(
    *, agent: Agent, event_type: str, payload: dict | None = None, task=None, ticket=None, ticket_id: int | None = None
) -> AgentEvent:
    """Append one step to the agent's trajectory (called inside the caller's transaction)."""
    return AgentEvent.objects.create(
        agent=agent, event_type=event_type[:60], payload=payload or {}, task=task, ticket=ticket,
        **({"ticket_id": ticket_id} if ticket_id and ticket is None else {}),
    )


@transaction.atomic
def agent_report_event(*, agent: Agent, event_type: str, payload: dict | None = None, task=None) -> AgentEvent:
    """An event the agent reports about itself (thought, action, tool result, error …) for its trajectory."""
    if not isinstance(event_type, str) or not (1 <= len(event_type.strip()) <= 60):
        raise DomainError("event_type must be 1-60 characters, e.g. 'tool_call', 'thought', 'error'.")
    agent_heartbeat(agent_id=agent.pk)
    event = agent_event_record(agent=agent, event_type=event_type.strip(), payload=payload, task=task,
                               ticket_id=task.ticket_id if task is not None else None)

    for workflow in agent.workflows.all():
        publish_on_commit("agent.event", workflow=workflow.slug, payload={"agent_id": agent.agent_id, "event_type": event.event_type,
                          "task_id": task_public_id(task.pk) if task is not None else None}, agents=[agent.agent_id])
    return event


def idempotency_records_prune(*, older_than) -> int:
    """Delete idempotency records created before `older_than`; returns how many."""
    from agents.models import IdempotencyRecord

    deleted, _ = IdempotencyRecord.objects.filter(created_at__lt=older_than).delete()
    return deleted
