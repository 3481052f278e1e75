"""Races with real threads, each on its own database connection and transaction."""

import threading
from collections import Counter

import pytest
from django.db import connection

from omoi_site.domain import Conflict


def _run_threads(count, target):
    barrier = threading.Barrier(count)
    results, errors = [None] * count, [None] * count

    def runner(index):
        try:
            barrier.wait()
            results[index] = target(index)
        except Exception as error:  # collected and asserted by the test
            errors[index] = error
        finally:
            connection.close()

    threads = [threading.Thread(target=runner, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return results, errors


@pytest.fixture
def swarm(transactional_db, workflow, make_agent):
    agents = [make_agent(f"racer-{i}", workflow)[0] for i in range(16)]
    return workflow, agents


def test_sixteen_agents_racing_claim_each_of_200_tasks_exactly_once(swarm):
    from tasks.models import Task, TaskEvent
    from tasks.services import task_claim_next, task_create
    from tickets.services import ticket_create

    workflow, agents = swarm
    ticket = ticket_create(actor=agents[0], workflow=workflow, title="Bulk work", description="Two hundred tasks to do")
    for i in range(200):
        task_create(actor=agents[0], ticket_id=ticket.id, phase_id="PHASE_IMPLEMENTATION", description=f"Task number {i:03d}",
                    priority=["LOW", "MEDIUM", "HIGH"][i % 3])

    def claim_until_empty(index):
        claimed = []
        while (task := task_claim_next(agent=agents[index], workflow=workflow)) is not None:
            claimed.append(task.id)
        return claimed

    results, errors = _run_threads(16, claim_until_empty)
    assert errors == [None] * 16
    all_claims = [task_id for claimed in results for task_id in claimed]
    assert len(all_claims) == 200
    assert Counter(all_claims).most_common(1)[0][1] == 1
    assert sum(1 for claimed in results if claimed) > 1  # really concurrent, not one thread doing it all
    assert Task.objects.filter(status="claimed").count() == 200
    assert TaskEvent.objects.filter(event_type="claimed").count() == 200
    holders = dict(Task.objects.values_list("id", "claimed_by_id"))
    for index, claimed in enumerate(results):
        assert all(holders[task_id] == agents[index].agent_id for task_id in claimed)


def test_two_agents_racing_to_accept_one_handoff_exactly_one_wins(transactional_db, workflow, make_agent):
    from collaboration.models import Handoff
    from collaboration.services import handoff_accept, handoff_request
    from tasks.models import Task
    from tasks.services import task_claim_next, task_create
    from tickets.services import ticket_create

    owner = make_agent("owner", workflow)[0]
    rivals = [make_agent(f"rival-{i}", workflow)[0] for i in range(2)]
    ticket = ticket_create(actor=owner, workflow=workflow, title="Handoff race", description="Who takes the task?")
    task_create(actor=owner, ticket_id=ticket.id, phase_id="PHASE_IMPLEMENTATION", description="The contested task")
    task = task_claim_next(agent=owner, workflow=workflow)
    handoff = handoff_request(from_agent=owner, to_agent_id="rival-0", task_id=task.id, reason="Please take this one over.")
    # both rivals present the same hand-off; only its addressee may take it, and only once
    Handoff.objects.filter(pk=handoff.pk).update(to_agent=rivals[0])

    results, errors = _run_threads(2, lambda i: handoff_accept(agent=rivals[0], handoff_id=handoff.id))
    winners = [r for r in results if r is not None]
    assert len(winners) == 1
    conflicts = [e for e in errors if e is not None]
    assert len(conflicts) == 1 and isinstance(conflicts[0], Conflict) and "already 'accepted'" in conflicts[0].message
    row = Task.objects.get(pk=task.pk)
    assert row.claimed_by_id == "rival-0" and row.fencing_token == task.fencing_token + 1


def test_two_agents_racing_to_resolve_one_ticket_exactly_one_wins(transactional_db, workflow, make_agent):
    from tickets.models import Ticket, TicketEvent
    from tickets.services import ticket_create, ticket_resolve

    first, second = (make_agent(f"closer-{i}", workflow)[0] for i in range(2))
    blocker = ticket_create(actor=first, workflow=workflow, title="Contested", description="Both want to close it")
    dependent = ticket_create(actor=first, workflow=workflow, title="Waits", description="Blocked by the contested one",
                              blocked_by_ticket_ids=[blocker.id])
    racers = [first, second]
    results, errors = _run_threads(2, lambda i: ticket_resolve(actor=racers[i], ticket_id=blocker.id,
                                                               resolution_comment=f"Resolved by racer {i} now."))
    assert len([r for r in results if r is not None]) == 1
    conflict = next(e for e in errors if e is not None)
    assert isinstance(conflict, Conflict) and "already done" in conflict.message
    assert TicketEvent.objects.filter(ticket=blocker, event_type="status_changed").count() == 1
    assert TicketEvent.objects.filter(ticket=dependent, event_type="unblocked").count() == 1
    assert Ticket.objects.get(pk=dependent.pk).is_blocked is False


def test_concurrent_opposite_dependencies_cannot_form_a_cycle(transactional_db, workflow, make_agent):
    from tickets.models import TicketDependency
    from tickets.services import dependency_add, ticket_create

    agent = make_agent("planner", workflow)[0]
    a = ticket_create(actor=agent, workflow=workflow, title="Ticket A", description="First of two tickets")
    b = ticket_create(actor=agent, workflow=workflow, title="Ticket B", description="Second of two tickets")
    pairs = [(a.id, b.id), (b.id, a.id)]
    results, errors = _run_threads(2, lambda i: dependency_add(actor=agent, ticket_id=pairs[i][0], blocked_by_ticket_id=pairs[i][1]))
    assert TicketDependency.objects.count() == 1
    assert sum(1 for e in errors if isinstance(e, Conflict) and "cycle" in e.message) == 1
