"""Lease and hand-off races: one lock order (task, then its open hand-off) means no deadlock, ever.

Each race runs 200 rounds. In every round two real threads, each on its own database connection and
transaction, start the two operations at the same instant (a barrier). A PostgreSQL deadlock surfaces as
an OperationalError whose text says "deadlock detected"; the tests count them and demand zero, and they
check that every end state is consistent: the task's holder, its lease and the hand-off's outcome agree.
"""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from omoi_site.domain import DomainError

ROUNDS = 200


class Racer:
    """Two long-lived threads that run one pair of callables per round, released together by a barrier."""

    def __init__(self):
        self.deadlocks = 0
        self.internal_errors: list[str] = []

    def race(self, first, second):
        barrier = threading.Barrier(2)
        outcomes: list[tuple[str, object]] = [("", None), ("", None)]

        def run(index, operation):
            try:
                barrier.wait(timeout=30)
                outcomes[index] = ("ok", operation())
            except DomainError as refusal:
                outcomes[index] = ("refused", str(refusal))
            except Exception as error:  # counted and asserted by the test
                text = f"{type(error).__name__}: {error}"
                if "deadlock detected" in text:
                    self.deadlocks += 1
                self.internal_errors.append(text)
                outcomes[index] = ("error", text)
            finally:
                connection.close()

        threads = [threading.Thread(target=run, args=(0, first)), threading.Thread(target=run, args=(1, second))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        return outcomes


@pytest.fixture
def scene(transactional_db, workflow, make_agent):
    from tickets.services import ticket_create

    holder = make_agent("holder", workflow)[0]
    taker = make_agent("taker", workflow)[0]
    reaper = make_agent("reaper", workflow)[0]
    ticket = ticket_create(actor=holder, workflow=workflow, title="Race ground", description="Tasks raced for locks")
    return workflow, ticket, holder, taker, reaper


def _held_task_with_handoff(ticket, holder, taker, number):
    from collaboration.services import handoff_request
    from tasks.services import task_create, task_update_status

    task, _ = task_create(actor=holder, ticket_id=ticket.id, phase_id="PHASE_IMPLEMENTATION",
                          description=f"Raced task number {number:03d}")
    task = task_update_status(actor=holder, task_id=task.public_id, status="claimed")
    handoff = handoff_request(from_agent=holder, to_agent_id=taker.agent_id, task_id=task.public_id,
                              reason="Needs the other agent's expertise")
    return task, handoff


def _end_state(task, handoff):
    from collaboration.models import Handoff
    from tasks.models import Task

    return Task.objects.get(pk=task.pk), Handoff.objects.get(pk=handoff.pk)


def _assert_taker_won(task, handoff, taker, fencing_before):
    assert handoff.status == "accepted"
    assert task.claimed_by_id == taker.agent_id == task.assigned_agent_id
    assert task.status == "claimed" and task.lease_expires_at > timezone.now()
    assert task.fencing_token == fencing_before + 1


def test_release_racing_accept_never_deadlocks_and_ends_consistent(scene):
    from collaboration.services import handoff_accept
    from tasks.services import task_release

    workflow, ticket, holder, taker, _ = scene
    racer, wins = Racer(), {"release": 0, "accept": 0}
    for number in range(ROUNDS):
        task, handoff = _held_task_with_handoff(ticket, holder, taker, number)
        fencing = task.fencing_token
        released, accepted = racer.race(
            lambda task_id=task.public_id: task_release(agent=holder, task_id=task_id),
            lambda handoff_id=handoff.public_id: handoff_accept(agent=taker, handoff_id=handoff_id),
        )
        task, handoff = _end_state(task, handoff)
        if released[0] == "ok":
            wins["release"] += 1
            assert accepted[0] in ("refused", "error")
            assert task.status == "pending" and task.claimed_by_id is None and task.lease_expires_at is None
            assert handoff.status == "expired"
        else:
            wins["accept"] += 1
            assert accepted[0] == "ok" and released[0] in ("refused", "error")
            _assert_taker_won(task, handoff, taker, fencing)
    assert racer.deadlocks == 0
    assert racer.internal_errors == []
    assert wins["release"] + wins["accept"] == ROUNDS


def test_complete_racing_accept_never_deadlocks_and_ends_consistent(scene):
    from collaboration.services import handoff_accept
    from tasks.services import task_update_status

    workflow, ticket, holder, taker, _ = scene
    racer = Racer()
    for number in range(ROUNDS):
        task, handoff = _held_task_with_handoff(ticket, holder, taker, number)
        fencing = task.fencing_token
        completed, accepted = racer.race(
            lambda task_id=task.public_id: task_update_status(actor=holder, task_id=task_id, status="completed", result={"ok": True}),
            lambda handoff_id=handoff.public_id: handoff_accept(agent=taker, handoff_id=handoff_id),
        )
        task, handoff = _end_state(task, handoff)
        if completed[0] == "ok":
            assert accepted[0] != "ok"
            assert task.status == "completed" and task.claimed_by_id == holder.agent_id
            assert handoff.status == "expired"
        else:
            assert accepted[0] == "ok"
            _assert_taker_won(task, handoff, taker, fencing)
            assert task.result in (None, {})
    assert racer.deadlocks == 0
    assert racer.internal_errors == []


def test_lease_reaper_inside_a_claim_racing_accept_never_deadlocks(scene):
    from collaboration.services import handoff_accept
    from tasks.models import Task
    from tasks.services import task_claim_next

    workflow, ticket, holder, taker, reaper = scene
    racer = Racer()
    for number in range(ROUNDS):
        task, handoff = _held_task_with_handoff(ticket, holder, taker, number)
        fencing = task.fencing_token
        Task.objects.filter(pk=task.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
        claimed, accepted = racer.race(
            lambda: task_claim_next(agent=reaper, workflow=workflow),
            lambda handoff_id=handoff.public_id: handoff_accept(agent=taker, handoff_id=handoff_id),
        )
        assert claimed[0] == "ok", claimed  # the uninvolved agent's claim never fails
        task, handoff = _end_state(task, handoff)
        if accepted[0] == "ok":
            _assert_taker_won(task, handoff, taker, fencing)
        else:
            assert handoff.status == "expired"
            assert task.claimed_by_id in (None, reaper.agent_id)
        # keep the queue empty for the next round: whatever the reaper claimed is finished
        Task.objects.filter(claimed_by=reaper).update(status="completed", lease_expires_at=None)
    assert racer.deadlocks == 0
    assert racer.internal_errors == []


def test_decline_racing_release_never_deadlocks_and_ends_consistent(scene):
    from collaboration.services import handoff_decline
    from tasks.services import task_release

    workflow, ticket, holder, taker, _ = scene
    racer = Racer()
    for number in range(ROUNDS):
        task, handoff = _held_task_with_handoff(ticket, holder, taker, number)
        declined, released = racer.race(
            lambda handoff_id=handoff.public_id: handoff_decline(agent=taker, handoff_id=handoff_id, reason="busy"),
            lambda task_id=task.public_id: task_release(agent=holder, task_id=task_id),
        )
        assert released[0] == "ok", released  # the holder may always give the task back
        task, handoff = _end_state(task, handoff)
        assert task.status == "pending" and task.claimed_by_id is None
        if declined[0] == "ok":
            assert handoff.status == "declined"
        else:
            assert handoff.status == "expired"
    assert racer.deadlocks == 0
    assert racer.internal_errors == []


def test_heartbeat_racing_the_reaper_never_deadlocks_and_an_expired_lease_is_never_renewed(scene):
    from tasks.models import Task
    from tasks.services import task_heartbeat, task_reap_expired_leases

    workflow, ticket, holder, taker, _ = scene
    racer = Racer()
    renewed = refused = 0
    for number in range(ROUNDS):
        task, _ = _held_task_with_handoff(ticket, holder, taker, number)
        expired = number % 2 == 0
        Task.objects.filter(pk=task.pk).update(
            lease_expires_at=timezone.now() + (timedelta(seconds=-1) if expired else timedelta(seconds=60))
        )
        beat, _reaped = racer.race(
            lambda task_id=task.public_id: task_heartbeat(agent=holder, task_id=task_id),
            lambda: task_reap_expired_leases(workflow_id=workflow.id),
        )
        task = Task.objects.get(pk=task.pk)
        if expired:
            assert beat[0] == "refused" and "expired" in beat[1], beat
            refused += 1
            task_reap_expired_leases(workflow_id=workflow.id)
            task = Task.objects.get(pk=task.pk)
            assert task.status == "pending" and task.claimed_by_id is None
        else:
            assert beat[0] == "ok", beat
            renewed += 1
            assert task.status == "claimed" and task.lease_expires_at > timezone.now()
    assert (renewed, refused) == (ROUNDS // 2, ROUNDS // 2)
    assert racer.deadlocks == 0
    assert racer.internal_errors == []
