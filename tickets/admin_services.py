"""Bulk triage for the admin: each function applies ONE existing ticket service to several tickets, in pk
order (the lock order every service uses), inside one transaction — if the service refuses any ticket,
none of them changes and no event is published (events go out on commit only). Each ticket runs in its
own savepoint so that every refused ticket is reported (BulkRefused.reasons), not only the first.

The rules stay in tickets.services; these wrappers only add the all-or-nothing bulk semantics.
"""

from __future__ import annotations

from django.db import transaction

from omoi_site.domain import DomainError, ticket_public_id
from tickets import services
from tickets.models import Ticket


class BulkRefused(DomainError):
    """Some tickets of a bulk action were refused; nothing changed. `reasons` = [(public id, message)]."""

    def __init__(self, reasons: list[tuple[str, str]], total: int):
        self.reasons = reasons
        summary = "; ".join(f"{public_id}: {message}" for public_id, message in reasons)
        super().__init__(f"{len(reasons)} of {total} ticket(s) refused — {summary}")


def _each(ticket_ids, apply) -> list:
    """apply(pk) for every ticket in pk order; collect every refusal, then undo all of it if any."""
    results, reasons = [], []
    ordered = sorted(ticket_ids)
    for pk in ordered:
        try:
            with transaction.atomic():
                results.append(apply(pk))
        except DomainError as error:
            reasons.append((ticket_public_id(pk), error.message))
    if reasons:
        raise BulkRefused(reasons, len(ordered))  # leaving the outer atomic block rolls every ticket back
    return results


@transaction.atomic
def tickets_change_status(*, actor, ticket_ids: list[int], new_status: str, comment: str) -> list[services.TicketTransition]:
    """ticket_change_status for every ticket ('done' resolves, as in the single-ticket service)."""
    return _each(ticket_ids, lambda pk: services.ticket_change_status(actor=actor, ticket_id=pk, new_status=new_status, comment=comment))


@transaction.atomic
def tickets_assign(*, actor, ticket_ids: list[int], agent_id: str | None, comment: str = "") -> list[Ticket]:
    """Assign every ticket to an agent of its workflow (None unassigns) through ticket_update."""
    return _each(ticket_ids, lambda pk: services.ticket_update(
        actor=actor, ticket_id=pk, updates={"assigned_agent_id": agent_id}, update_comment=comment).ticket)


@transaction.atomic
def tickets_resolve(*, actor, ticket_ids: list[int], resolution_comment: str) -> list[services.TicketTransition]:
    """ticket_resolve for every ticket (unblocking their dependents as usual)."""
    return _each(ticket_ids, lambda pk: services.ticket_resolve(actor=actor, ticket_id=pk, resolution_comment=resolution_comment))


@transaction.atomic
def tickets_mark_duplicate(*, actor, ticket_ids: list[int], duplicate_of_ticket_id, comment: str = "") -> list[services.TicketTransition]:
    """ticket_mark_duplicate for every ticket (each is resolved as a duplicate of the original)."""
    return _each(ticket_ids, lambda pk: services.ticket_mark_duplicate(
        actor=actor, ticket_id=pk, duplicate_of_ticket_id=duplicate_of_ticket_id, comment=comment))


@transaction.atomic
def tickets_add_blocker(*, actor, ticket_ids: list[int], blocked_by_ticket_id) -> list[services.DependencyChange]:
    """dependency_add for every ticket: each becomes blocked by the same ticket (cycles are refused)."""
    return _each(ticket_ids, lambda pk: services.dependency_add(actor=actor, ticket_id=pk, blocked_by_ticket_id=blocked_by_ticket_id))


@transaction.atomic
def dependencies_remove(*, actor, pairs: list[tuple[int, int]]) -> list[services.DependencyChange]:
    """dependency_remove for each (ticket, blocker) pair."""
    return [services.dependency_remove(actor=actor, ticket_id=ticket_pk, blocked_by_ticket_id=blocker_pk)
            for ticket_pk, blocker_pk in sorted(pairs)]
