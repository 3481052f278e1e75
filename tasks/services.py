"""Write-side operations on tasks: creation (with discovery spawns), leased claims, heartbeats, status.

Claims are atomic: `SELECT … FOR UPDATE SKIP LOCKED` over ready tasks (pending, every dependency
completed), so two agents never hold the same task. Each claim increments the task's fencing token;
writes that carry an older token (a holder whose lease expired and was reclaimed) are refused.
"""

from __future__ import annotations

from datetime import timedelta
from typing import NamedTuple

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from agents.services import agent_event_record, agent_heartbeat
from omoi_site.constants import DESCRIPTION_MAX, DESCRIPTION_MIN, priority_normalize, priority_raised
from omoi_site.domain import (
    Conflict,
    DomainError,
    PermissionDenied,
    actor_fields,
    is_agent,
    require_choice,
    require_text,
    task_public_id,
    ticket_public_id,
)
from omoi_site.events import publish_on_commit
from tasks import hooks, payloads, selectors
from tasks.models import Discovery, Task, TaskEvent
from tickets import selectors as ticket_selectors
from tickets.models import Phase, Ticket

MAX_RESULT_BYTES = 32_000


class TaskCreated(NamedTuple):
    """A new task, and the discovery that spawned it when it is a follow-up (else None)."""

    task: Task
    discovery: Discovery | None


def _record(task: Task, actor, event_type: str, *, old_status: str = "", new_status: str = "", details: dict | None = None):
    TaskEvent.objects.create(
        task=task, event_type=event_type, old_status=old_status, new_status=new_status, details=details or {},
        **actor_fields(actor),
    )


def _trajectory(actor, event_type: str, task: Task, payload: dict | None = None) -> None:
    if is_agent(actor):
        agent_event_record(agent=actor, event_type=event_type, task=task, ticket_id=task.ticket_id, payload=payload)


def _publish(event: str, task: Task, extra: dict | None = None, agents: list[str] | None = None) -> None:
    publish_on_commit(
        event, workflow=task.workflow.slug, ticket=ticket_public_id(task.ticket_id),
        payload={**payloads.task_payload(task), **(extra or {})},
        agents=[a for a in (agents or [task.claimed_by_id, task.assigned_agent_id]) if a],
    )


def _lapse_handoffs(task: Task, reason: str) -> None:
    hooks.task_lost_holder.send(task_id=task.pk, reason=reason)


def lease_seconds() -> int:
    return settings.TASK_LEASE_SECONDS


@transaction.atomic
def task_create(
    *,
    actor,
    ticket_id,
    phase_id: str,
    description: str,
    task_type: str = Task.TaskType.IMPLEMENTATION,
    priority: str = Task.Priority.MEDIUM,
    dependencies: list | None = None,
    discovery_type: str | None = None,
    discovery_description: str | None = None,
    source_task_id=None,
    priority_boost: bool = False,
    claim: bool = False,
) -> TaskCreated:
    """Create a task under a ticket. With `discovery_type` + `source_task_id` it records a Discovery on the
    source task that spawns exactly this one task (optionally one priority level higher). `claim=True` (an
    agent only) makes the creator its lease holder in the same transaction, so nobody can take it between."""
    if claim and not is_agent(actor):
        raise DomainError("claim=true is for agents: a lease needs an agent to hold it.")
    description = require_text(description, argument="description", min_length=DESCRIPTION_MIN, max_length=DESCRIPTION_MAX)
    require_choice(phase_id, Phase.values, argument="phase_id")
    require_choice(task_type, Task.TaskType.values, argument="task_type")
    priority = priority_normalize(priority)
    ticket = ticket_selectors.ticket_get(ticket_id=ticket_id, actor=actor)
    if ticket.status == Ticket.Status.DONE:
        raise Conflict(f"ticket {ticket.public_id} is done; create a new ticket for further work.")
    source_task = None
    if discovery_type is not None or source_task_id is not None:
        if discovery_type is None or source_task_id is None:
            raise DomainError("a discovery needs both discovery_type and source_task_id (the task that found it).")
        require_choice(discovery_type, Discovery.DiscoveryType.values, argument="discovery_type")
        source_task = selectors.task_get(task_id=source_task_id, actor=actor, argument="source_task_id")
        if source_task.workflow_id != ticket.workflow_id:
            raise DomainError(f"source_task_id {source_task.public_id} belongs to another workflow.")
    elif priority_boost:
        raise DomainError("priority_boost applies only to discovery spawns (give discovery_type and source_task_id).")
    depends_on = []
    for dependency_id in dict.fromkeys(dependencies or []):
        dependency = selectors.task_get(task_id=dependency_id, actor=actor, argument="dependencies")
        if dependency.workflow_id != ticket.workflow_id:
            raise DomainError(f"dependencies: {dependency.public_id} belongs to another workflow.")
        depends_on.append(dependency)
    effective_priority = priority_raised(priority) if priority_boost else priority
    task = Task.objects.create(
        ticket=ticket,
        workflow_id=ticket.workflow_id,
        phase_id=phase_id,
        task_type=task_type,
        description=description,
        priority=effective_priority,
        priority_rank=Task.PRIORITY_RANK[Task.Priority(effective_priority)],
        created_by_agent=actor if is_agent(actor) else None,
    )
    task.workflow = ticket.workflow
    if depends_on:
        task.depends_on.add(*depends_on)
    _record(task, actor, "created", new_status=task.status, details={"depends_on": [d.public_id for d in depends_on]})
    discovery = None
    if source_task is not None:
        discovery = Discovery.objects.create(
            source_task=source_task,
            discovery_type=discovery_type,
            description=require_text(discovery_description or description, argument="discovery_description", min_length=DESCRIPTION_MIN, max_length=DESCRIPTION_MAX),
            priority_boost=priority_boost,
            spawned_task=task,
            recorded_by_agent=actor if is_agent(actor) else None,
        )
        _record(source_task, actor, "discovery_recorded", details={"discovery_type": discovery_type, "spawned_task_id": task.public_id})
        from tasks.blockers import schedule_discovery_embedding

        schedule_discovery_embedding(discovery.id)
        publish_on_commit(
            "discovery.recorded", workflow=ticket.workflow.slug, ticket=ticket.public_id,
            payload=payloads.discovery_payload(discovery),
        )
    _trajectory(actor, "task_created", task, {"task_id": task.public_id})
    _publish("task.created", task)
    if claim:
        task = task_update_status(actor=actor, task_id=task.pk, status=Task.Status.CLAIMED)
    return TaskCreated(task, discovery)


_claim_sql: str | None = None


def _claim_statement() -> str:
    """The claim: the highest-priority ready task of a workflow, locked, skipping rows other claims hold.

    Ready = pending, unassigned or assigned to the claimer, its ticket not blocked, every dependency
    completed (and, when task types are given, one of them). Hand-written and built once per process: it
    is the hottest statement under a swarm, and the ORM spent more CPU compiling it than PostgreSQL spent
    running it. It also reads the ticket's title (for the claim's warnings) in the same round trip."""
    global _claim_sql
    if _claim_sql is None:
        task_table, ticket_table = Task._meta.db_table, Ticket._meta.db_table
        links = Task.depends_on.through._meta.db_table
        columns = ", ".join(f't."{field.column}"' for field in Task._meta.concrete_fields)
        _claim_sql = f"""
            SELECT {columns}, k.title AS claimed_ticket_title
              FROM {task_table} t JOIN {ticket_table} k ON k.id = t.ticket_id
             WHERE t.workflow_id = %(workflow)s AND t.status = %(pending)s
               AND (t.assigned_agent_id IS NULL OR t.assigned_agent_id = %(agent)s)
               AND NOT k.is_blocked
               AND NOT EXISTS (SELECT 1 FROM {links} d JOIN {task_table} p ON p.id = d.to_task_id
                                WHERE d.from_task_id = t.id AND p.status <> %(completed)s)
               AND (%(types)s::text[] IS NULL OR t.task_type = ANY(%(types)s::text[]))
             ORDER BY t.priority_rank DESC, t.created_at, t.id
             LIMIT 1
               FOR UPDATE OF t SKIP LOCKED"""
    return _claim_sql


def task_lock(*, task_pk: int) -> Task:
    """Lock one task row (FOR UPDATE). The one lock order for leases and hand-offs is: the task first,
    then its open hand-off. Every service that touches both takes them in that order, so a release, a
    completion, the lease reaper and a hand-off answer can race without deadlocking."""
    return Task.objects.select_for_update(of=("self",)).select_related("workflow").get(pk=task_pk)


def lease_grant(task: Task, agent, *, now=None, event_type: str, details: dict | None = None,
                new_attempt: bool = True) -> None:
    """Give `agent` the lease on a locked task: holder + assignee, a fresh expiry, a new fencing token
    (the previous holder's writes are refused from now on) and a history row. The only place a lease is
    granted: claims, direct starts and accepted hand-offs all come here."""
    now = now or timezone.now()
    old_status = task.status
    if task.status not in Task.ACTIVE_STATUSES:
        task.status = Task.Status.CLAIMED
    task.claimed_by = agent
    task.assigned_agent = agent
    task.lease_expires_at = now + timedelta(seconds=lease_seconds())
    task.fencing_token += 1
    fields = ["status", "claimed_by", "assigned_agent", "lease_expires_at", "fencing_token", "updated_at"]
    if new_attempt:
        task.attempts += 1
        fields.append("attempts")
    task.save(update_fields=fields)
    _record(task, agent, event_type, old_status=old_status, new_status=task.status,
            details={**(details or {}), "fencing_token": task.fencing_token})


def lease_return_to_queue(task: Task, actor, *, event_type: str, details: dict | None = None, reason: str) -> str | None:
    """Put a locked task back in the queue (pending, no holder, no assignee, no lease), record it and
    expire its open hand-off. Returns the previous holder's id."""
    previous_holder = task.claimed_by_id
    old_status = task.status
    task.status = Task.Status.PENDING
    task.claimed_by = None
    task.assigned_agent = None
    task.lease_expires_at = None
    task.save(update_fields=["status", "claimed_by", "assigned_agent", "lease_expires_at", "updated_at"])
    _record(task, actor, event_type, old_status=old_status, new_status=task.status, details=details)
    _lapse_handoffs(task, reason)
    return previous_holder


def task_is_held_by(task: Task, agent_id: str, *, fencing_token: int | None = None) -> bool:
    """Whether `agent_id` holds the task: it has the lease (claimed/running), or the task is pending and
    assigned to it; and, when a fencing token is given, the task has not been re-claimed since."""
    if fencing_token is not None and fencing_token != task.fencing_token:
        return False
    if task.status in Task.ACTIVE_STATUSES:
        return task.claimed_by_id == agent_id
    return task.status == Task.Status.PENDING and task.assigned_agent_id == agent_id


@transaction.atomic
def task_claim_next(*, agent, workflow, task_types: list[str] | None = None) -> Task | None:
    """Atomically claim the highest-priority ready task of the workflow (oldest first among equals).

    Ready = pending, every dependency completed, ticket not blocked, unassigned or assigned to this
    agent. Expired leases in the workflow are returned to the queue first. Returns None when nothing
    is ready.
    """
    for task_type in task_types or []:
        require_choice(task_type, Task.TaskType.values, argument="task_types")
    now = timezone.now()
    task_reap_expired_leases(workflow_id=workflow.id, now=now)
    parameters = {"workflow": workflow.id, "agent": agent.agent_id, "types": list(task_types) if task_types else None,
                  "pending": str(Task.Status.PENDING), "completed": str(Task.Status.COMPLETED)}
    task = next(iter(Task.objects.raw(_claim_statement(), parameters)), None)
    if task is None:
        return None
    task.workflow = workflow
    # Its ticket as far as the claim read it (the title, for warnings); other fields load on first use.
    task.ticket = Ticket.from_db(Task.objects.db, ["id", "workflow_id", "title"], [task.ticket_id, task.workflow_id, task.claimed_ticket_title])
    lease_grant(task, agent, now=now, event_type="claimed")
    _trajectory(agent, "task_claimed", task, {"task_id": task.public_id, "fencing_token": task.fencing_token})
    _publish("task.claimed", task)
    return task


def require_holder(task: Task, agent, fencing_token: int | None, *, action: str, live_lease: bool = False) -> None:
    """Refuse unless `agent` holds the task's lease (under `fencing_token` when given; with
    `live_lease`, also unexpired). The one holder check: every write by a holder goes through it."""
    if task.status not in Task.ACTIVE_STATUSES or task.claimed_by_id != agent.agent_id:
        holder = f"held by {task.claimed_by_id}" if task.status in Task.ACTIVE_STATUSES else f"'{task.status}'"
        raise Conflict(
            f"you do not hold {task.public_id} (it is {holder}); cannot {action}. "
            "Your lease may have expired — claim new work with claim_next_task."
        )
    if fencing_token is not None and fencing_token != task.fencing_token:
        raise Conflict(
            f"stale fencing_token {fencing_token} for {task.public_id} (current {task.fencing_token}): the task was "
            f"re-claimed after your lease expired; drop this work and claim again."
        )
    if live_lease and task.lease_expires_at is not None and task.lease_expires_at <= timezone.now():
        raise Conflict(
            f"your lease on {task.public_id} expired at {task.lease_expires_at.isoformat(timespec='seconds')}; "
            f"cannot {action}. Claim it again with update_task_status(task_id=\"{task.public_id}\", status=\"claimed\") "
            "once it is back in the queue, or take other work with claim_next_task."
        )


@transaction.atomic
def task_assign(*, actor, task_id, agent) -> Task:
    """Reserve a pending task for one agent (the launcher's worker): only that agent may claim it now. A
    history row records who reserved it for whom."""
    task = selectors.task_get(task_id=task_id, actor=actor, for_update=True)
    if task.status != Task.Status.PENDING:
        raise Conflict(f"task {task.public_id} is '{task.status}'; only a pending task can be reserved for an agent.")
    if task.assigned_agent_id != agent.agent_id:
        _record(task, actor, "assigned", details={"from": task.assigned_agent_id, "to": agent.agent_id})
        task.assigned_agent = agent
        task.save(update_fields=["assigned_agent", "updated_at"])
    return task


@transaction.atomic
def task_heartbeat(*, agent, task_id, fencing_token: int | None = None) -> Task:
    """Renew the caller's lease on a task it holds."""
    task = selectors.task_get(task_id=task_id, actor=agent, for_update=True)
    require_holder(task, agent, fencing_token, action="renew the lease", live_lease=True)
    task.lease_expires_at = timezone.now() + timedelta(seconds=lease_seconds())
    task.save(update_fields=["lease_expires_at", "updated_at"])
    agent_heartbeat(agent_id=agent.pk)
    return task


@transaction.atomic
def task_release(*, agent, task_id, fencing_token: int | None = None, reason: str = "") -> Task:
    """Give a held task back to the queue (pending, unassigned)."""
    task = selectors.task_get(task_id=task_id, actor=agent, for_update=True)
    require_holder(task, agent, fencing_token, action="release it")
    lease_return_to_queue(task, agent, event_type="released", details={"reason": reason[:500]},
                          reason=f"{agent.agent_id} released the task")
    _trajectory(agent, "task_released", task, {"task_id": task.public_id})
    _publish("task.released", task, {"released_by": agent.agent_id}, agents=[agent.agent_id])
    return task


@transaction.atomic
def task_update_status(
    *, actor, task_id, status: str, result: dict | None = None, error_message: str | None = None,
    fencing_token: int | None = None,
) -> Task:
    """Move a task: pending→running (claims it for the caller), claimed→running, →completed/failed by the
    holder, failed→pending (retry), →cancelled. A stale holder (expired lease, re-claimed) is refused."""
    require_choice(status, Task.Status.values, argument="status")
    task = selectors.task_get(task_id=task_id, actor=actor, for_update=True)
    if not task.can_transition_to(status):
        allowed = ", ".join(task.allowed_next_statuses()) or "none (final)"
        raise Conflict(f"task {task.public_id} is '{task.status}'; allowed next: {allowed}.")
    now = timezone.now()
    old_status = task.status
    if is_agent(actor):
        if task.status in Task.ACTIVE_STATUSES:
            require_holder(task, actor, fencing_token, action=f"set it to '{status}'")
        elif task.status == Task.Status.PENDING and status in Task.ACTIVE_STATUSES:
            if task.assigned_agent_id not in (None, actor.agent_id):
                raise PermissionDenied(f"task {task.public_id} is assigned to {task.assigned_agent_id}; claim other work. Call claim_next_task.")
            waiting = list(task.depends_on.exclude(status=Task.Status.COMPLETED).order_by("id").values_list("id", "status"))
            if waiting:
                listed = ", ".join(f"{task_public_id(pk)} ({state})" for pk, state in waiting)
                raise Conflict(f"task {task.public_id} waits for {listed}; use claim_next_task to get ready work.")
            lease_grant(task, actor, now=now, event_type="claimed", details={"via": "update_task_status"})
            old_status = task.status
        elif fencing_token is not None and fencing_token != task.fencing_token:
            raise Conflict(f"stale fencing_token {fencing_token} for {task.public_id} (current {task.fencing_token}). "
                           "Drop this work and take new work with claim_next_task.")
    elif status in Task.ACTIVE_STATUSES and task.status not in Task.ACTIVE_STATUSES:
        raise DomainError(f"only an agent can hold a task; ask an agent to claim {task.public_id}.")
    if result is not None and len(str(result)) > MAX_RESULT_BYTES:
        raise DomainError(f"result is larger than {MAX_RESULT_BYTES} bytes; store a summary and link to details.")
    task.status = status
    fields = ["status", "updated_at"]
    if status == Task.Status.RUNNING and not task.started_at:
        task.started_at = now
        fields.append("started_at")
    if status in (Task.Status.COMPLETED, Task.Status.FAILED, Task.Status.CANCELLED):
        task.completed_at = now
        task.lease_expires_at = None
        fields += ["completed_at", "lease_expires_at"]
    if status == Task.Status.PENDING:
        task.claimed_by = None
        task.lease_expires_at = None
        task.error = ""
        fields += ["claimed_by", "lease_expires_at", "error"]
    if result is not None:
        task.result = result
        fields.append("result")
    if error_message:
        task.error = error_message[:10_000]
        fields.append("error")
    task.save(update_fields=list(dict.fromkeys(fields)))
    if status not in Task.ACTIVE_STATUSES:
        _lapse_handoffs(task, f"the task became '{status}'")
    _record(task, actor, "status_changed", old_status=old_status, new_status=status,
            details={k: v for k, v in {"error": error_message and error_message[:500]}.items() if v})
    _trajectory(actor, f"task_{status}", task, {"task_id": task.public_id})
    _publish("task.status_changed", task, {"old_status": old_status})
    return task


def task_reap_expired_leases(*, workflow_id: int | None = None, now=None) -> int:
    """Return tasks whose lease expired to the queue (skipping rows another transaction holds)."""
    now = now or timezone.now()
    if not _any_lease_expired(workflow_id, now):
        return 0  # the common case, answered by one index probe (no ORM compile, no savepoint)
    with transaction.atomic():
        queryset = Task.objects.filter(status__in=Task.ACTIVE_STATUSES, lease_expires_at__lt=now)
        if workflow_id is not None:
            queryset = queryset.filter(workflow_id=workflow_id)
        expired = list(queryset.select_for_update(skip_locked=True, of=("self",)).select_related("workflow")[:500])
        for task in expired:
            previous_holder = task.claimed_by_id
            lease_return_to_queue(task, None, event_type="lease_expired", details={"previous_holder": previous_holder},
                                  reason=f"the lease of {previous_holder} expired")
            _publish("task.released", task, {"lease_expired_for": previous_holder}, agents=[previous_holder])
        return len(expired)


def _any_lease_expired(workflow_id: int | None, now) -> bool:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            f"""SELECT EXISTS (SELECT 1 FROM {Task._meta.db_table}
                                WHERE status = ANY(%s) AND lease_expires_at < %s
                                  AND (%s::bigint IS NULL OR workflow_id = %s::bigint))""",
            [[str(status) for status in Task.ACTIVE_STATUSES], now, workflow_id, workflow_id],
        )
        return cursor.fetchone()[0]


@transaction.atomic
def task_register_conversation(*, agent, task_id, conversation_id: str, sandbox_id: str | None = None) -> Task:
    """Attach the agent's conversation (and sandbox) id to a task it holds or is assigned."""
    conversation_id = require_text(conversation_id, argument="conversation_id", min_length=1, max_length=200)
    task = selectors.task_get(task_id=task_id, actor=agent, for_update=True)
    if agent.agent_id not in (task.claimed_by_id, task.assigned_agent_id):
        raise PermissionDenied(f"task {task.public_id} is not held by or assigned to you. Claim it with "
                               f'update_task_status(task_id="{task.public_id}", status="claimed") or take other work with claim_next_task.')
    task.conversation_id = conversation_id
    fields = ["conversation_id", "updated_at"]
    if sandbox_id:
        task.sandbox_id = sandbox_id[:200]
        fields.append("sandbox_id")
    task.save(update_fields=fields)
    _record(task, agent, "conversation_registered", details={"conversation_id": conversation_id, "sandbox_id": sandbox_id})
    return task
