"""The ticket status machine, blockers and priorities, tested at the service (every door calls these)."""

from __future__ import annotations

import pytest

from omoi_site.domain import Conflict, DomainError
from tickets import services
from tickets.models import PhaseTransition, Ticket, TicketEvent

pytestmark = pytest.mark.django_db


def _ticket(workflow, agent, title="Login times out after five minutes", **kwargs) -> Ticket:
    return services.ticket_create(actor=agent, workflow=workflow, title=title,
                                  description="Users are logged out far too early.", **kwargs)


def _snapshot(ticket: Ticket) -> tuple:
    ticket = Ticket.objects.get(pk=ticket.pk)
    return (ticket.status, ticket.phase, ticket.version, ticket.is_blocked,
            TicketEvent.objects.filter(ticket=ticket).count(), PhaseTransition.objects.filter(ticket=ticket).count())


def test_every_legal_move_records_history_and_moves_the_phase(workflow, make_agent):
    # given a ticket walked along the happy path, including the testing → building loop
    agent, _ = make_agent("walker", workflow)
    ticket = _ticket(workflow, agent)
    path = ["analyzing", "building", "building-done", "testing", "building", "building-done", "testing"]
    for status in path:
        # when
        transition = services.ticket_change_status(actor=agent, ticket_id=ticket.pk, new_status=status,
                                                   comment=f"Moving on to {status} now.")
        # then: the typed result carries the ticket as stored and where it may go next
        stored = Ticket.objects.get(pk=ticket.pk)
        assert transition.ticket.status == stored.status == status
        assert stored.phase == Ticket.STATUS_PHASE[Ticket.Status(status)]
        assert transition.unblocked_ticket_ids == []
    history = list(TicketEvent.objects.filter(ticket=ticket, event_type="status_changed").values_list("new_value", flat=True))
    assert history == path
    phases = list(PhaseTransition.objects.filter(ticket=ticket).order_by("id").values_list("to_phase", flat=True))
    assert phases[0] == Ticket.STATUS_PHASE[Ticket.Status.ANALYZING] and len(phases) >= 4


@pytest.mark.parametrize("start_path, illegal", [([], "building"), ([], "testing"), (["analyzing"], "testing"),
                                                 (["analyzing", "building"], "backlog")])
def test_an_illegal_move_is_refused_with_the_allowed_moves_and_changes_nothing(workflow, make_agent, start_path, illegal):
    agent, _ = make_agent("mover", workflow)
    ticket = _ticket(workflow, agent)
    for status in start_path:
        services.ticket_change_status(actor=agent, ticket_id=ticket.pk, new_status=status, comment="Step along the path.")
    before = _snapshot(ticket)

    with pytest.raises(Conflict) as refused:
        services.ticket_change_status(actor=agent, ticket_id=ticket.pk, new_status=illegal, comment="Jump ahead please.")

    current = Ticket.objects.get(pk=ticket.pk)
    assert f"allowed next: {', '.join(current.allowed_next_statuses())}" in refused.value.message
    assert _snapshot(ticket) == before


def test_a_blocked_ticket_may_only_go_back_to_backlog_until_its_blocker_resolves(workflow, make_agent):
    agent, _ = make_agent("blocked-agent", workflow)
    blocker = _ticket(workflow, agent, title="Rotate the database credentials")
    waiting = _ticket(workflow, agent, blocked_by_ticket_ids=[blocker.pk])
    before = _snapshot(waiting)

    with pytest.raises(Conflict) as refused:
        services.ticket_change_status(actor=agent, ticket_id=waiting.pk, new_status="analyzing", comment="Try to start anyway.")

    assert blocker.public_id in refused.value.message and "back to backlog" in refused.value.message
    assert _snapshot(waiting) == before
    transition = services.ticket_resolve(actor=agent, ticket_id=blocker.pk, resolution_comment="Credentials rotated and tested.")
    assert transition.unblocked_ticket_ids == [waiting.public_id]
    assert Ticket.objects.get(pk=waiting.pk).is_blocked is False
    services.ticket_change_status(actor=agent, ticket_id=waiting.pk, new_status="analyzing", comment="Now it can start.")


def test_a_cycle_is_refused_with_its_path_and_nothing_is_stored(workflow, make_agent):
    agent, _ = make_agent("cycle-agent", workflow)
    first, second, third = (_ticket(workflow, agent, title=f"Step number {i}") for i in range(3))
    services.dependency_add(actor=agent, ticket_id=second.pk, blocked_by_ticket_id=first.pk)
    change = services.dependency_add(actor=agent, ticket_id=third.pk, blocked_by_ticket_id=second.pk)
    assert change.blocked_by_ticket_ids == [second.public_id] and change.ticket.is_blocked
    before = _snapshot(first)

    with pytest.raises(Conflict) as refused:
        services.dependency_add(actor=agent, ticket_id=first.pk, blocked_by_ticket_id=third.pk)

    assert f"{first.public_id} → {third.public_id} → {second.public_id} → {first.public_id}" in refused.value.message
    assert _snapshot(first) == before
    with pytest.raises(DomainError, match="cannot block itself"):
        services.dependency_add(actor=agent, ticket_id=first.pk, blocked_by_ticket_id=first.pk)


def test_priorities_are_one_lowercase_vocabulary_read_in_any_case(workflow, make_agent):
    agent, _ = make_agent("priority-agent", workflow)
    ticket = _ticket(workflow, agent, priority="HIGH")
    assert Ticket.objects.get(pk=ticket.pk).priority == "high"
    edit = services.ticket_update(actor=agent, ticket_id=ticket.pk, updates={"priority": "Critical"})
    stored = Ticket.objects.get(pk=ticket.pk)
    assert (edit.changed, stored.priority, stored.priority_rank) == (["priority"], "critical", 4)
    count = Ticket.objects.count()

    with pytest.raises(DomainError) as refused:
        _ticket(workflow, agent, title="Refused for its priority", priority="urgent")

    assert "low, medium, high, critical" in refused.value.message
    assert Ticket.objects.count() == count
