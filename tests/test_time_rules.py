"""Time is a rule: an expired hand-off cannot be accepted, an expired lease cannot be renewed."""

from datetime import timedelta

import pytest
from django.utils import timezone

from omoi_site.domain import Conflict


@pytest.fixture
def held_task_with_handoff(workflow, make_agent):
    from collaboration.services import handoff_request
    from tasks.services import task_create, task_update_status
    from tickets.services import ticket_create

    holder, _ = make_agent("holder", workflow)
    taker, _ = make_agent("taker", workflow)
    ticket = ticket_create(actor=holder, workflow=workflow, title="Timed work", description="Work with deadlines")
    task, _ = task_create(actor=holder, ticket_id=ticket.id, phase_id="PHASE_IMPLEMENTATION", description="Something timed")
    task = task_update_status(actor=holder, task_id=task.public_id, status="claimed")
    handoff = handoff_request(from_agent=holder, to_agent_id="taker", task_id=task.public_id, reason="Taker knows this best")
    return holder, taker, task, handoff


def test_accepting_a_hand_off_past_its_expiry_is_refused_and_changes_nothing(held_task_with_handoff):
    from collaboration.models import Handoff
    from collaboration.services import handoff_accept
    from tasks.models import Task

    holder, taker, task, handoff = held_task_with_handoff
    Handoff.objects.filter(pk=handoff.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    before = Task.objects.filter(pk=task.pk).values().get()

    with pytest.raises(Conflict, match=r"expired at .*request_handoff"):
        handoff_accept(agent=taker, handoff_id=handoff.public_id)

    assert Task.objects.filter(pk=task.pk).values().get() == before
    assert Handoff.objects.get(pk=handoff.pk).status == "requested"


def test_a_heartbeat_on_an_expired_lease_is_refused_with_how_to_recover(held_task_with_handoff):
    from tasks.models import Task
    from tasks.services import task_heartbeat

    holder, _taker, task, _handoff = held_task_with_handoff
    expired_at = timezone.now() - timedelta(seconds=5)
    Task.objects.filter(pk=task.pk).update(lease_expires_at=expired_at)

    with pytest.raises(Conflict) as refusal:
        task_heartbeat(agent=holder, task_id=task.public_id)

    assert f"your lease on {task.public_id} expired at" in str(refusal.value)
    assert "claim_next_task" in str(refusal.value)
    assert Task.objects.get(pk=task.pk).lease_expires_at == expired_at


def test_handing_off_a_task_you_do_not_hold_names_the_call_that_fixes_it(workflow, make_agent):
    from collaboration.services import handoff_request
    from tasks.services import task_create
    from tickets.services import ticket_create

    creator, _ = make_agent("creator", workflow)
    make_agent("helper", workflow)
    ticket = ticket_create(actor=creator, workflow=workflow, title="Fresh work", description="Work nobody holds yet")
    task, _ = task_create(actor=creator, ticket_id=ticket.id, phase_id="PHASE_IMPLEMENTATION", description="Not claimed yet")

    with pytest.raises(Conflict, match=r'update_task_status\(task_id="TSK-\d+", status="claimed"\)'):
        handoff_request(from_agent=creator, to_agent_id="helper", task_id=task.public_id, reason="Helper should do it")
