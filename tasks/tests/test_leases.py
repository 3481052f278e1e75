"""Leases: claim, renew, release, reap, reserve and claim-on-create — at the service, on the shared scene."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from omoi_site.domain import Conflict, DomainError
from tasks import services
from tasks.models import Task, TaskEvent

pytestmark = pytest.mark.django_db


def _state(task: Task) -> tuple:
    task = Task.objects.get(pk=task.pk)
    return (task.status, task.claimed_by_id, task.assigned_agent_id, task.fencing_token, task.lease_expires_at,
            TaskEvent.objects.filter(task=task).count())


def _one_claimed_task(workflow, holder, title: str) -> Task:
    """A ticket with one task, claimed by `holder`."""
    from tickets.services import ticket_create

    ticket = ticket_create(actor=holder, workflow=workflow, title=title, description=f"{title}: a task under test.")
    services.task_create(actor=holder, ticket_id=ticket.pk, phase_id="PHASE_IMPLEMENTATION", description=f"The work of {title}")
    return services.task_claim_next(agent=holder, workflow=workflow)


def test_the_holder_renews_and_another_agent_is_refused_with_the_call_that_helps(scene, make_agent):
    # given the scene's claimed investigation task, held by the worker
    held = Task.objects.get(pk=scene.claimed.pk)
    outsider, _ = make_agent("outsider", scene.workflow)
    before = _state(held)

    # when someone else tries to renew it
    with pytest.raises(Conflict) as refused:
        services.task_heartbeat(agent=outsider, task_id=held.pk)

    # then: refused, told how to get work, nothing changed
    assert f"held by {scene.worker.agent_id}" in refused.value.message and "claim_next_task" in refused.value.message
    assert _state(held) == before
    renewed = services.task_heartbeat(agent=scene.worker, task_id=held.pk, fencing_token=held.fencing_token)
    assert renewed.lease_expires_at > held.lease_expires_at


def test_a_stale_fencing_token_is_refused_after_the_lease_moved_on(workflow, make_agent):
    first, _ = make_agent("first-holder", workflow)
    second, _ = make_agent("second-holder", workflow)
    claimed = _one_claimed_task(workflow, first, "Lease handover")
    stale_token = claimed.fencing_token
    Task.objects.filter(pk=claimed.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    reclaimed = services.task_claim_next(agent=second, workflow=workflow)
    assert reclaimed.pk == claimed.pk and reclaimed.fencing_token == stale_token + 1
    before = _state(claimed)

    with pytest.raises(Conflict):
        services.task_update_status(actor=first, task_id=claimed.pk, status="completed", result={"done": True},
                                    fencing_token=stale_token)

    assert _state(claimed) == before


def test_release_returns_the_task_to_the_queue_for_the_next_claim(workflow, make_agent):
    holder, _ = make_agent("releaser", workflow)
    taker, _ = make_agent("taker", workflow)
    claimed = _one_claimed_task(workflow, holder, "Release me")
    assert services.task_claim_next(agent=taker, workflow=workflow) is None  # nothing else is ready

    released = services.task_release(agent=holder, task_id=claimed.pk, fencing_token=claimed.fencing_token, reason="blocked on review")

    assert (released.status, released.claimed_by_id, released.assigned_agent_id) == ("pending", None, None)
    assert services.task_claim_next(agent=taker, workflow=workflow).pk == claimed.pk


def test_an_expired_lease_is_reaped_back_to_pending(workflow, make_agent):
    holder, _ = make_agent("sleeper", workflow)
    claimed = _one_claimed_task(workflow, holder, "Reap me")

    assert services.task_reap_expired_leases(workflow_id=workflow.id) == 0
    assert services.task_reap_expired_leases(workflow_id=workflow.id, now=claimed.lease_expires_at + timedelta(seconds=1)) == 1

    assert Task.objects.get(pk=claimed.pk).status == "pending"


def test_create_with_claim_holds_the_task_at_once_and_only_agents_may_do_it(workflow, make_agent, admin_user):
    agent, _ = make_agent("creator", workflow)
    from tickets.services import ticket_create

    ticket = ticket_create(actor=agent, workflow=workflow, title="Claim on create", description="The creator holds the task.")
    created = services.task_create(actor=agent, ticket_id=ticket.pk, phase_id="PHASE_IMPLEMENTATION",
                                   description="Investigate and hold it", priority="HIGH", claim=True)
    stored = Task.objects.get(pk=created.task.pk)
    assert (stored.status, stored.claimed_by_id, stored.priority) == ("claimed", agent.agent_id, "high")
    assert created.discovery is None
    count = Task.objects.count()

    with pytest.raises(DomainError, match="claim=true is for agents"):
        services.task_create(actor=admin_user, ticket_id=ticket.pk, phase_id="PHASE_IMPLEMENTATION",
                             description="A human cannot hold a lease", claim=True)

    assert Task.objects.count() == count


def test_reserving_a_task_for_a_worker_is_recorded_and_refused_once_it_is_taken(scene, make_agent):
    worker_for_follow_up, _ = make_agent("reserved-worker", scene.workflow)

    reserved = services.task_assign(actor=scene.specialist, task_id=scene.follow_up.pk, agent=worker_for_follow_up)

    assert reserved.assigned_agent_id == worker_for_follow_up.agent_id
    event = TaskEvent.objects.filter(task=scene.follow_up, event_type="assigned").get()
    assert event.details == {"from": None, "to": worker_for_follow_up.agent_id}
    before = _state(scene.claimed)
    with pytest.raises(Conflict, match="only a pending task"):
        services.task_assign(actor=scene.specialist, task_id=scene.claimed.pk, agent=worker_for_follow_up)
    assert _state(scene.claimed) == before
