"""Write-side operations on messages (direct, broadcast, read receipts) and hand-offs.

A broadcast writes one receipt per other agent of the workflow at send time, so every recipient sees it
in `get_messages` with its own read state. Accepting a hand-off moves the task's assignment and lease to
the accepting agent in the same transaction (new fencing token: the previous holder's writes are refused).
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import NamedTuple

from django.db import IntegrityError, transaction
from django.utils import timezone

from agents.models import Agent
from agents.services import agent_event_record
from collaboration import payloads, selectors
from collaboration.models import Handoff, Message, MessageReceipt
from omoi_site.domain import (
    Conflict,
    DomainError,
    NotFound,
    PermissionDenied,
    require_choice,
    require_text,
    ticket_public_id,
)
from omoi_site.events import publish_on_commit
from tasks.models import Task, TaskEvent
from tasks.selectors import task_get
from tasks.services import lease_grant, task_is_held_by, task_lock
from tickets.models import Workflow
from tickets.selectors import ticket_get

MESSAGE_MAX = 20_000
HANDOFF_TTL = timedelta(hours=1)



class BroadcastSent(NamedTuple):
    """A broadcast message and how many agents received it."""

    message: Message
    recipients: int

def _resolve_context(sender: Agent, ticket_id, task_id) -> tuple[Workflow, object, object]:
    ticket = ticket_get(ticket_id=ticket_id, actor=sender) if ticket_id else None
    task = task_get(task_id=task_id, actor=sender) if task_id else None
    if ticket and task and task.ticket_id != ticket.id:
        raise DomainError(f"task_id {task.public_id} does not belong to ticket_id {ticket.public_id}.")
    if task:
        return task.workflow, ticket or task.ticket, task
    if ticket:
        return ticket.workflow, ticket, None
    workflows = list(sender.workflows.order_by("slug"))
    if not workflows:
        raise PermissionDenied(f"agent {sender.agent_id} belongs to no workflow.")
    return workflows[0], None, None


def _thread_for(thread_id: str | None, sender: Agent) -> str:
    if thread_id is None:
        return uuid.uuid4().hex
    if not Message.objects.filter(thread_id=thread_id, receipts__agent=sender).exists() and not Message.objects.filter(
        thread_id=thread_id, sender=sender
    ).exists():
        raise NotFound(f"No thread '{thread_id}' that you are part of (thread_id).")
    return thread_id


@transaction.atomic
def message_send(
    *, sender: Agent, recipient_agent_id: str, message: str, message_type: str = Message.MessageType.INFO,
    ticket_id=None, task_id=None, thread_id: str | None = None,
) -> Message:
    """Send a direct message to another agent of a shared workflow."""
    body = require_text(message, argument="message", min_length=1, max_length=MESSAGE_MAX)
    require_choice(message_type, Message.MessageType.values, argument="message_type")
    workflow, ticket, task = _resolve_context(sender, ticket_id, task_id)
    if recipient_agent_id == sender.agent_id:
        raise DomainError("recipient_agent_id is yourself; send to another agent (or use broadcast_message).")
    recipient = Agent.objects.filter(agent_id=recipient_agent_id, workflows=workflow).first() if isinstance(recipient_agent_id, str) else None
    if recipient is None:
        shared = Workflow.objects.filter(agents=sender).filter(agents__agent_id=recipient_agent_id).order_by("slug").first()
        if shared is None or ticket or task:
            raise NotFound(f"No agent '{recipient_agent_id}' in workflow '{workflow.slug}' (recipient_agent_id).")
        workflow = shared
        recipient = Agent.objects.get(agent_id=recipient_agent_id)
    record = Message.objects.create(
        workflow=workflow, sender=sender, recipient=recipient, message_type=message_type, body=body,
        ticket=ticket, task=task, thread_id=_thread_for(thread_id, sender),
    )
    MessageReceipt.objects.create(message=record, agent=recipient)
    publish_on_commit("message.sent", workflow=workflow.slug, ticket=ticket_public_id(ticket.id) if ticket else None,
                      payload=payloads.message_payload(record), agents=[recipient.agent_id])
    return record


@transaction.atomic
def message_broadcast(
    *, sender: Agent, message: str, message_type: str = Message.MessageType.INFO, ticket_id=None, task_id=None
) -> BroadcastSent:
    """Send a message to every other agent of the workflow; returns it and how many agents received it."""
    body = require_text(message, argument="message", min_length=1, max_length=MESSAGE_MAX)
    require_choice(message_type, Message.MessageType.values, argument="message_type")
    workflow, ticket, task = _resolve_context(sender, ticket_id, task_id)
    record = Message.objects.create(
        workflow=workflow, sender=sender, recipient=None, message_type=message_type, body=body,
        ticket=ticket, task=task, thread_id=uuid.uuid4().hex,
    )
    recipients = list(workflow.agents.exclude(agent_id=sender.agent_id).exclude(status=Agent.Status.TERMINATED)
                      .values_list("agent_id", flat=True))
    MessageReceipt.objects.bulk_create([MessageReceipt(message=record, agent_id=agent_id) for agent_id in recipients])
    publish_on_commit("message.sent", workflow=workflow.slug, ticket=ticket_public_id(ticket.id) if ticket else None,
                      payload={**payloads.message_payload(record), "recipients": len(recipients)}, agents=recipients)
    return BroadcastSent(record, len(recipients))


@transaction.atomic
def messages_mark_read(*, agent: Agent, message_ids: list[int]) -> int:
    """Mark the agent's receipts for these messages as read; returns how many changed."""
    return MessageReceipt.objects.filter(agent=agent, message_id__in=message_ids, read_at__isnull=True).update(read_at=timezone.now())


def _system_message(handoff: Handoff, sender: Agent, recipient: Agent, message_type: str, body: str) -> Message:
    thread = handoff.request_message.thread_id if handoff.request_message_id else uuid.uuid4().hex
    record = Message.objects.create(
        workflow=handoff.workflow, sender=sender, recipient=recipient, message_type=message_type, body=body,
        ticket_id=handoff.task.ticket_id, task=handoff.task, thread_id=thread,
    )
    MessageReceipt.objects.create(message=record, agent=recipient)
    return record


@transaction.atomic
def handoff_request(*, from_agent: Agent, to_agent_id: str, task_id, reason: str, context: dict | None = None) -> Handoff:
    """Ask another agent of the workflow to take over a task the caller holds (or is assigned)."""
    reason = require_text(reason, argument="reason", min_length=10, max_length=5000)
    if context is not None and not isinstance(context, dict):
        raise DomainError("context must be an object (e.g. {\"findings\": \"…\", \"files\": [\"…\"]}).")
    task = task_get(task_id=task_id, actor=from_agent, for_update=True)
    if to_agent_id == from_agent.agent_id:
        raise DomainError("to_agent_id is yourself; hand the task to another agent.")
    to_agent = Agent.objects.filter(agent_id=to_agent_id, workflows=task.workflow_id).first() if isinstance(to_agent_id, str) else None
    if to_agent is None:
        raise NotFound(f"No agent '{to_agent_id}' in workflow '{task.workflow.slug}' (to_agent_id).")
    if not task_is_held_by(task, from_agent.agent_id):
        how = (f'claim it first with update_task_status(task_id="{task.public_id}", status="claimed")'
               if task.status == Task.Status.PENDING and task.assigned_agent_id in (None, from_agent.agent_id)
               else "only its current holder can hand it off"
               + (f' (ask {task.claimed_by_id} with send_message(recipient_agent_id="{task.claimed_by_id}", …)'
                  " or take other work with claim_next_task)" if task.claimed_by_id else " (take other work with claim_next_task)"))
        raise Conflict(f"you do not hold {task.public_id} (status '{task.status}', holder {task.claimed_by_id or 'none'}); "
                       f"{how}.")
    try:
        with transaction.atomic():
            handoff = Handoff.objects.create(
                workflow=task.workflow, from_agent=from_agent, to_agent=to_agent, task=task, reason=reason,
                context=context or {}, expires_at=timezone.now() + HANDOFF_TTL, fencing_token=task.fencing_token,
            )
    except IntegrityError:
        open_handoff = Handoff.objects.filter(task=task, status=Handoff.Status.REQUESTED).first()
        raise Conflict(f"{task.public_id} already has an open hand-off ({open_handoff.public_id if open_handoff else 'pending'}) "
                       "awaiting an answer.") from None
    handoff.task = task
    request = Message.objects.create(
        workflow=task.workflow, sender=from_agent, recipient=to_agent, message_type=Message.MessageType.HANDOFF_REQUEST,
        body=f"Hand-off {handoff.public_id} of {task.public_id}: {reason}", ticket_id=task.ticket_id, task=task,
        thread_id=uuid.uuid4().hex,
    )
    MessageReceipt.objects.create(message=request, agent=to_agent)
    handoff.request_message = request
    handoff.save(update_fields=["request_message"])
    TaskEvent.objects.create(task=task, actor_agent=from_agent, event_type="handoff_requested",
                             details={"handoff_id": handoff.public_id, "to": to_agent.agent_id})
    publish_on_commit("handoff.requested", workflow=task.workflow.slug, ticket=ticket_public_id(task.ticket_id),
                      payload=payloads.handoff_payload(handoff), agents=[to_agent.agent_id, from_agent.agent_id])
    return handoff


def _lock_task_then_handoff(agent: Agent, handoff_id) -> tuple[Handoff, Task]:
    """Lock in the one order every lease service uses: the task first, then its hand-off."""
    task_pk = selectors.handoff_get(handoff_id=handoff_id, actor=agent).task_id
    task = task_lock(task_pk=task_pk)
    handoff = selectors.handoff_get(handoff_id=handoff_id, actor=agent, for_update=True)
    handoff.task = task
    if handoff.to_agent_id != agent.agent_id:
        raise PermissionDenied(f"hand-off {handoff.public_id} is addressed to {handoff.to_agent_id}, not you.")
    if handoff.status == Handoff.Status.EXPIRED:
        raise Conflict(f"hand-off {handoff.public_id} lapsed ({handoff.response_note or 'nobody answered in time'}); "
                       "nothing to answer.")
    if handoff.status != Handoff.Status.REQUESTED:
        raise Conflict(f"hand-off {handoff.public_id} is already '{handoff.status}'; nothing to answer.")
    if handoff.expires_at is not None and handoff.expires_at <= timezone.now():
        raise Conflict(
            f"hand-off {handoff.public_id} expired at {handoff.expires_at.isoformat(timespec='seconds')}; "
            f"ask {handoff.from_agent_id} to request it again with request_handoff, or claim other work with claim_next_task."
        )
    return handoff, task


@transaction.atomic
def handoff_accept(*, agent: Agent, handoff_id, note: str = "") -> Handoff:
    """Accept a hand-off: the task's assignment and lease move to the caller atomically (new fencing
    token). Refused when the hand-off expired or the requester no longer holds the task."""
    handoff, task = _lock_task_then_handoff(agent, handoff_id)
    if not task_is_held_by(task, handoff.from_agent_id, fencing_token=handoff.fencing_token):
        # Normally already marked expired by whatever took the task away (lease reaped, released, finished);
        # this refusal covers the rest. Raising rolls back, so nothing is half-applied.
        raise Conflict(
            f"hand-off {handoff.public_id} lapsed: {handoff.from_agent_id} no longer holds {task.public_id} "
            f"(now '{task.status}'{', held by ' + task.claimed_by_id if task.status in Task.ACTIVE_STATUSES else ''}). "
            "Claim other work with claim_next_task."
        )
    now = timezone.now()
    previous_holder = task.claimed_by_id or task.assigned_agent_id
    lease_grant(task, agent, now=now, event_type="handoff_accepted", new_attempt=False,
                details={"handoff_id": handoff.public_id, "from": previous_holder})
    handoff.status = Handoff.Status.ACCEPTED
    handoff.responded_at = now
    handoff.response_note = (note or "")[:2000]
    handoff.save(update_fields=["status", "responded_at", "response_note"])
    _system_message(handoff, agent, handoff.from_agent, Message.MessageType.HANDOFF_ACCEPTED,
                    f"Accepted hand-off {handoff.public_id} of {task.public_id}. {note}".strip())

    agent_event_record(agent=agent, event_type="handoff_accepted", task=task, payload={"handoff_id": handoff.public_id})
    publish_on_commit("handoff.accepted", workflow=task.workflow.slug, ticket=ticket_public_id(task.ticket_id),
                      payload={**payloads.handoff_payload(handoff), "fencing_token": task.fencing_token},
                      agents=[agent.agent_id, handoff.from_agent_id])
    return handoff


@transaction.atomic
def handoff_decline(*, agent: Agent, handoff_id, reason: str = "") -> Handoff:
    """Decline a hand-off; the task stays with the requester."""
    handoff, task = _lock_task_then_handoff(agent, handoff_id)
    handoff.status = Handoff.Status.DECLINED
    handoff.responded_at = timezone.now()
    handoff.response_note = (reason or "")[:2000]
    handoff.save(update_fields=["status", "responded_at", "response_note"])
    TaskEvent.objects.create(task=task, actor_agent=agent, event_type="handoff_declined", details={"handoff_id": handoff.public_id})
    _system_message(handoff, agent, handoff.from_agent, Message.MessageType.HANDOFF_DECLINED,
                    f"Declined hand-off {handoff.public_id} of {task.public_id}. {reason}".strip())
    publish_on_commit("handoff.declined", workflow=task.workflow.slug, ticket=ticket_public_id(task.ticket_id),
                      payload=payloads.handoff_payload(handoff), agents=[agent.agent_id, handoff.from_agent_id])
    return handoff


def handoffs_expire_for_task(*, task_id: int, reason: str) -> int:
    """Expire the open hand-off of a task whose holder lost or gave up the task (called by task services
    inside their transaction: lease reaped, released, finished, returned to the queue)."""
    now = timezone.now()
    return Handoff.objects.filter(task_id=task_id, status=Handoff.Status.REQUESTED).update(
        status=Handoff.Status.EXPIRED, responded_at=now, response_note=reason[:2000]
    )


def handoffs_expire_stale(*, now=None) -> int:
    """Mark requested hand-offs past their expiry as expired (periodic job)."""
    now = now or timezone.now()
    with transaction.atomic():
        stale = list(Handoff.objects.filter(status=Handoff.Status.REQUESTED, expires_at__lt=now)
                     .select_for_update(skip_locked=True)[:500])
        for handoff in stale:
            handoff.status = Handoff.Status.EXPIRED
            handoff.responded_at = now
            handoff.save(update_fields=["status", "responded_at"])
        return len(stale)


def event_records_prune(*, older_than, batch_size: int = 5000) -> int:
    """Delete realtime event records created before `older_than`, in batches (the table is append-only and
    grows with every change). Sockets can replay `?since=` only within what is kept; the feed shows the
    latest events. Returns how many rows were deleted."""
    from collaboration.models import EventRecord

    deleted = 0
    while True:
        ids = list(EventRecord.objects.filter(created_at__lt=older_than).order_by("id").values_list("id", flat=True)[:batch_size])
        if not ids:
            return deleted
        deleted += EventRecord.objects.filter(id__in=ids).delete()[0]
