"""Read-side queries on messages and hand-offs."""

from __future__ import annotations

from django.db.models import Q

from collaboration.models import Handoff, Message, MessageReceipt
from omoi_site.domain import NotFound, parse_public_id
from tickets.selectors import can_access_workflow


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
    pk = parse_public_id(handoff_id, "HND", argument="handoff_id")
    queryset = Handoff.objects.select_for_update(of=("self",)) if for_update else Handoff.objects.all()
    handoff = queryset.select_related("workflow").filter(pk=pk).first()
    if handoff is None or not can_access_workflow(actor, handoff.workflow_id):
        raise NotFound(f"No hand-off HND-{pk} in your workflows (handoff_id).")
    return handoff


def handoffs_for(*, agent, status: str | None = None) -> list[Handoff]:
    queryset = Handoff.objects.filter(Q(to_agent=agent) | Q(from_agent=agent))
    if status:
        queryset = queryset.filter(status=status)
    return list(queryset[:50])
