"""Read-side queries on messages and hand-offs."""

from __future__ import annotations

from django.db.models import Q

from agents.models import SandboxRun
from agents.selectors import agent_list
from collaboration.models import Handoff, Message, MessageReceipt
from omoi_site.domain import (
    HANDOFF_PREFIX,
    NotFound,
    handoff_public_id,
    parse_public_id,
    recorded_actor_label,
    task_public_id,
    ticket_public_id,
)
from tasks.models import Discovery, Task, TaskEvent
from tasks.payloads import discovery_payload
from tasks.selectors import workflow_graph
from tickets.models import Ticket, TicketEvent, Workflow
from tickets.selectors import (
    can_access_workflow,
    phase_history,
    ticket_blockers,
    ticket_dependents,
    ticket_history,
    workflow_ids_for,
)


def inbox(*, agent, thread_id: str | None = None, limit: int = 50, unread_only: bool = False) -> list[tuple[Message, object]]:
    """The agent's received messages (direct and broadcast), newest first, with their read time.

    With `thread_id`, the whole thread as the agent can see it (received and sent), oldest first.
    """
    if thread_id:
        messages = (
            Message.objects.filter(thread_id=thread_id)
            .filter(Q(sender=agent) | Q(receipts__agent=agent))
            .distinct()
            .order_by("created_at", "id")[:limit]
        )
        reads = dict(MessageReceipt.objects.filter(agent=agent, message__thread_id=thread_id).values_list("message_id", "read_at"))
        return [(m, reads.get(m.id)) for m in messages]
    receipts = MessageReceipt.objects.filter(agent=agent).select_related("message")
    if unread_only:
        receipts = receipts.filter(read_at__isnull=True)
    receipts = receipts.order_by("-message__created_at", "-message_id")[:limit]
    return [(r.message, r.read_at) for r in receipts]


def handoff_get(*, handoff_id, actor, for_update: bool = False) -> Handoff:
    pk = parse_public_id(handoff_id, HANDOFF_PREFIX, argument="handoff_id")
    queryset = Handoff.objects.select_for_update(of=("self",)) if for_update else Handoff.objects.all()
    handoff = queryset.select_related("workflow").filter(pk=pk).first()
    if handoff is None or not can_access_workflow(actor, handoff.workflow_id):
        raise NotFound(f"No hand-off {handoff_public_id(pk)} in your workflows (handoff_id).")
    return handoff


def handoffs_for(*, agent, status: str | None = None) -> list[Handoff]:
    queryset = Handoff.objects.filter(Q(to_agent=agent) | Q(from_agent=agent))
    if status:
        queryset = queryset.filter(status=status)
    return list(queryset[:50])


# --- dashboard read models -------------------------------------------------------------------------
# Read-only queries behind the dashboard pages and the dashboard websocket; each is scoped by the
# caller's visible workflows (tickets.selectors.workflow_ids_for: staff see all).


def visible_workflow_slugs(*, actor) -> set[str] | None:
    """Slugs of the workflows the actor may see; None means every workflow (staff)."""
    allowed = workflow_ids_for(actor)
    if allowed is None:
        return None
    return set(Workflow.objects.filter(id__in=allowed).values_list("slug", flat=True))


def dashboard_workflows(*, actor) -> list:
    """The actor's workflows with per-status ticket counts (`status_counts`), blocked and agent counts."""
    from django.db.models import Count, Q

    queryset = Workflow.objects.all()
    allowed = workflow_ids_for(actor)
    if allowed is not None:
        queryset = queryset.filter(id__in=allowed)
    counts = {
        status: Count("tickets", filter=Q(tickets__status=status), distinct=True) for status in Ticket.Status.values
    }
    queryset = queryset.annotate(
        blocked_count=Count("tickets", filter=Q(tickets__is_blocked=True), distinct=True),
        agent_count=Count("agents", distinct=True),
        **{f"count_{status.replace('-', '_')}": expression for status, expression in counts.items()},
    ).order_by("slug")
    workflows = list(queryset)
    for workflow in workflows:
        workflow.status_counts = [(s, getattr(workflow, f"count_{s.replace('-', '_')}")) for s in Ticket.Status.values]
        workflow.open_count = sum(n for s, n in workflow.status_counts if s != Ticket.Status.DONE)
    return workflows


def workflow_activity(*, workflow, limit: int = 60) -> list[dict]:
    """The workflow's recent activity, newest first, in the shape of live events:
    {"event", "at" (datetime), "ticket", "payload"} — messages, hand-offs, discoveries and ticket history."""
    from collaboration import payloads

    items: list[dict] = []
    for message in Message.objects.filter(workflow=workflow).exclude(
        message_type__in=[Message.MessageType.HANDOFF_REQUEST, Message.MessageType.HANDOFF_ACCEPTED, Message.MessageType.HANDOFF_DECLINED]
    ).order_by("-created_at", "-id")[:limit]:
        items.append({"event": "message.sent", "at": message.created_at, "ticket": ticket_public_id(message.ticket_id),
                      "payload": payloads.message_payload(message)})
    for handoff in Handoff.objects.filter(workflow=workflow).select_related("task").order_by("-created_at", "-id")[:limit]:
        event = {"requested": "handoff.requested", "accepted": "handoff.accepted", "declined": "handoff.declined"}.get(handoff.status, "handoff.requested")
        items.append({"event": event, "at": handoff.responded_at or handoff.created_at, "ticket": ticket_public_id(handoff.task.ticket_id),
                      "payload": payloads.handoff_payload(handoff)})
    for discovery in Discovery.objects.filter(source_task__workflow=workflow).select_related("source_task").order_by("-created_at", "-id")[:limit]:
        items.append({"event": "discovery.recorded", "at": discovery.created_at, "ticket": ticket_public_id(discovery.source_task.ticket_id),
                      "payload": discovery_payload(discovery)})
    history_kinds = {"created": "ticket.created", "status_changed": "ticket.status_changed", "unblocked": "ticket.unblocked",
                     "blocked": "ticket.blocked"}
    for row in TicketEvent.objects.filter(ticket__workflow=workflow, event_type__in=history_kinds).select_related(
        "ticket", "actor_agent", "actor_user"
    ).order_by("-created_at", "-id")[:limit]:
        ticket = row.ticket
        new = row.new_value
        status = new.get("status") if isinstance(new, dict) else (new if row.event_type == "status_changed" else ticket.status)
        event = "ticket.resolved" if row.event_type == "status_changed" and new == "done" else history_kinds[row.event_type]
        by = recorded_actor_label(row.actor_agent_id, row.actor_user if row.actor_user_id else None)
        items.append({"event": event, "at": row.created_at, "ticket": ticket.public_id,
                      "payload": {"ticket_id": ticket.public_id, "title": ticket.title, "status": status,
                                  "old_status": row.old_value if row.event_type == "status_changed" else None, "by": by}})
    items.sort(key=lambda item: item["at"], reverse=True)
    return items[:limit]


def workflow_agents_overview(*, workflow) -> list:
    """Agents of the workflow, each with `current_tasks` (claimed/running) and `runs` (its sandbox runs in
    this workflow, newest first), `total_cost_usd` and `last_seen`."""
    from decimal import Decimal

    from django.db.models import Max

    agents = list(agent_list(workflow_id=workflow.id).annotate(token_last_used=Max("tokens__last_used_at")).order_by("agent_id"))
    active = {}
    for task in Task.objects.filter(workflow=workflow, status__in=Task.ACTIVE_STATUSES).order_by("id"):
        active.setdefault(task.claimed_by_id, []).append(task)
    runs = {}
    for run in SandboxRun.objects.filter(workflow=workflow).select_related("task").order_by("-created_at", "-id")[:500]:
        runs.setdefault(run.agent_id, []).append(run)
    for agent in agents:
        agent.current_tasks = active.get(agent.agent_id, [])
        agent.runs = runs.get(agent.agent_id, [])
        agent.total_cost_usd = sum((run.llm_cost_usd for run in agent.runs), Decimal("0"))
        # last seen: the latest heartbeat or the latest call made with one of its tokens (MCP, REST, socket)
        agent.last_seen = max((t for t in (agent.last_heartbeat, agent.token_last_used) if t), default=None)
    return agents


def ticket_page(*, ticket) -> dict:
    """Everything the ticket dashboard page shows besides the ticket itself."""
    return {
        "history": ticket_history(ticket=ticket),
        "phases": phase_history(ticket=ticket),
        "comments": list(ticket.comments.select_related("author_agent", "author_user").order_by("created_at", "id")),
        "commits": list(ticket.commits.order_by("created_at", "id")),
        "blockers": ticket_blockers(ticket=ticket),
        "dependents": ticket_dependents(ticket=ticket),
        "graph": workflow_graph(ticket=ticket),
    }


def task_timeline(*, task: Task) -> list[dict]:
    """Everything that happened to a task, oldest first: its events, discoveries and hand-offs."""
    entries = []
    for event in TaskEvent.objects.filter(task=task).select_related("actor_agent", "actor_user"):
        entries.append(
            (event.created_at, event.id, {
                "kind": "event", "event": event.event_type, "actor": event.actor_agent_id or (event.actor_user.get_username() if event.actor_user_id else None),
                "old_status": event.old_status or None, "new_status": event.new_status or None, "details": event.details or None,
            })
        )
    for discovery in Discovery.objects.filter(source_task=task):
        entries.append(
            (discovery.created_at, discovery.id, {
                "kind": "discovery", "discovery_type": discovery.discovery_type, "description": discovery.description,
                "spawned_task_id": task_public_id(discovery.spawned_task_id),
            })
        )
    for handoff in Handoff.objects.filter(task=task):
        entries.append(
            (handoff.created_at, handoff.id, {
                "kind": "handoff", "handoff_id": handoff.public_id, "from": handoff.from_agent_id, "to": handoff.to_agent_id,
                "status": handoff.status, "reason": handoff.reason,
            })
        )
    entries.sort(key=lambda item: (item[0], item[1]))
    return [{"at": at.isoformat(timespec="seconds"), **{k: v for k, v in body.items() if v is not None}} for at, _, body in entries]
