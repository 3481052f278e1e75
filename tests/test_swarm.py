"""A small swarm over real MCP: 8 agents drain one dependency graph with discoveries, hand-offs and a
crash; nothing is done twice and nothing is lost. (bench/swarm.py runs the big one.)"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.swarm_lib import (  # noqa: E402
    SwarmConfig,
    check_executions,
    create_plan,
    crosscheck_database,
    format_report,
    generate_plan,
    run_swarm,
)

LEASE_SECONDS = 2


@pytest.fixture
def short_lease(settings):
    # The live server runs in this process, so it reads the overridden setting on every claim.
    settings.TASK_LEASE_SECONDS = LEASE_SECONDS


@pytest.mark.slow
def test_eight_agents_drain_a_dependency_graph_with_no_duplicate_and_no_lost_task(
    asgi_server, transactional_db, short_lease
):
    # given: 100 tasks in 10 tickets, some discoveries and hand-offs, one agent that dies mid-task
    plan = generate_plan(
        seed=11, tasks=100, tickets=10, agents=8, crash_agents=1, discovery_rate=0.08, handoff_rate=0.06
    )
    assert plan.follow_up_count > 0 and any(t.handoff == "accept" for t in plan.tasks) and plan.crash_points
    agents, task_ids = create_plan(plan, workflow_slug="swarm-test")
    config = SwarmConfig(
        scale=0.05, lease_seconds=LEASE_SECONDS, idle_backoff_cap=0.5, timeout=90, workflow="swarm-test"
    )

    # when
    result = asyncio.run(run_swarm(asgi_server.url, agents, plan, task_ids, config))

    # then: client side
    checks = check_executions(result)
    database = crosscheck_database("swarm-test", result)
    print(format_report(plan, config, result, checks, database, cpu=None))  # shown with -s or on failure
    assert not result.timed_out and not result.aborted
    assert result.unexpected_errors == []
    assert checks["duplicate_executions"] == 0, checks
    assert checks["tasks_lost"] == []
    assert checks["stale_writes_accepted"] == []
    assert len(result.spawned) >= plan.follow_up_count
    assert result.completed == set(task_ids.values()) | set(result.spawned)
    assert result.handoffs["accepted"] >= 1
    assert len(result.crashes) == 1 and checks["unreclaimed_crashes"] == []
    assert result.stale_refusals["zombie completion"] == 1
    # then: the database agrees
    assert database["task_rows"] == len(task_ids) + len(result.spawned)
    assert database["status_counts"] == {"completed": database["task_rows"]}
    assert database["completion_events"] == database["task_rows"]
    assert database["tasks_with_several_completion_events"] == []
    assert database["completer_mismatches"] == []
    assert database["claims_while_held"] == []
    assert database["handoffs_accepted_from_a_non_holder"] == []
    assert database["discoveries"] == len(result.spawned) and database["discoveries_spawning_unknown_tasks"] == 0
    assert database["crashed_tasks_without_lease_expired_event"] == []


def test_accepting_a_handoff_whose_requester_lost_the_lease_does_not_take_the_task_from_its_new_holder(
    workflow, make_agent
):
    from datetime import timedelta

    from django.utils import timezone

    from collaboration.services import handoff_accept, handoff_request
    from omoi_site.domain import Conflict
    from tasks.services import task_claim_next, task_create, task_reap_expired_leases
    from tickets.services import ticket_create

    # given: A holds the task and asks B to take it over; A's lease runs out and C claims the task
    (requester, _), (acceptor, _), (new_holder, _) = (
        make_agent(name, workflow) for name in ("agent-a", "agent-b", "agent-c")
    )
    ticket = ticket_create(
        actor=requester, workflow=workflow, title="Handoff race", description="One task, three agents."
    )
    task, _ = task_create(
        actor=requester, ticket_id=ticket.id, phase_id="PHASE_IMPLEMENTATION", description="Work to hand over"
    )
    assert task_claim_next(agent=requester, workflow=workflow).id == task.id
    handoff = handoff_request(
        from_agent=requester, to_agent_id="agent-b", task_id=task.id, reason="Please finish this for me."
    )
    task_reap_expired_leases(now=timezone.now() + timedelta(seconds=3600))
    claimed = task_claim_next(agent=new_holder, workflow=workflow)
    assert claimed.id == task.id

    # when: B answers the stale request
    with pytest.raises(Conflict):
        handoff_accept(agent=acceptor, handoff_id=handoff.id)

    # then: C still holds the task under its fencing token
    task.refresh_from_db()
    assert (task.claimed_by_id, task.fencing_token) == ("agent-c", claimed.fencing_token)


def test_accepting_a_handoff_of_a_completed_task_marks_it_expired(workflow, make_agent):
    from collaboration.models import Handoff
    from collaboration.services import handoff_accept, handoff_request
    from omoi_site.domain import Conflict
    from tasks.services import task_claim_next, task_create, task_update_status
    from tickets.services import ticket_create

    # given: A asks B to take over, then finishes the task itself before B answers
    (requester, _), (acceptor, _) = make_agent("agent-a", workflow), make_agent("agent-b", workflow)
    ticket = ticket_create(
        actor=requester, workflow=workflow, title="Lapsed handoff", description="One task, two agents."
    )
    task, _ = task_create(
        actor=requester, ticket_id=ticket.id, phase_id="PHASE_IMPLEMENTATION", description="Work to hand over"
    )
    claimed = task_claim_next(agent=requester, workflow=workflow)
    handoff = handoff_request(
        from_agent=requester, to_agent_id="agent-b", task_id=task.id, reason="Please finish this for me."
    )
    task_update_status(actor=requester, task_id=task.id, status="completed", fencing_token=claimed.fencing_token)

    # when
    with pytest.raises(Conflict, match="lapsed"):
        handoff_accept(agent=acceptor, handoff_id=handoff.id)

    # then: the error says it lapsed, and the hand-off is no longer open
    assert Handoff.objects.get(pk=handoff.id).status == Handoff.Status.EXPIRED
