"""Query counts of every MCP read tool, pinned (deterministic, not timed): a change that adds a round trip
to a read path fails here and has to say why. Counted through the door's own execution (`run_tool`),
with data in every relation the tool reads; the token lookup is not part of it (cached per process)."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

PINNED = {
    # one hand-written statement (tickets.selectors.ticket_detail_get): the ticket with its workflow and the
    # access check, its blocker links, latest comments and commits as subqueries; then the tasks floor's
    # latest shown blocker prediction (tasks.blockers.ticket_risk_shown; the forecast is made at creation)
    "get_ticket": 2,
    "get_tickets": 4,
    "get_ticket_history": 2,
    "get_phase_history": 2,
    "get_ready_tickets": 5,
    "get_task": 3,
    "get_task_discoveries": 3,
    "get_workflow_graph": 4,
    "get_task_timeline": 5,
    "get_discoveries_by_type": 2,
    "get_messages": 1,
    "get_agent_trajectory": 2,
    "search_tickets": 7,
    # A fresh forecast (issue 17): ticket (its embedding read apart: hot reads defer it), model, declared
    # blockers, shadow membership (the first ledger
    # row), then without a savepoint: one SET LOCAL, priors (outcome rows), neighbour tickets, near
    # discoveries (two meaning routes in one UNION; no word route in the features), their details, open
    # declared blockers, suggested blockers (2), and the ledger upsert (update_or_create: a fresh forecast
    # replaces the previous request; savepoint + SELECT FOR UPDATE + write).
    "predict_blockers": 18,
    # transaction + one SET LOCAL, semantic (two routes, one UNION), full text, details
    "search_similar_discoveries": 8,
}


@pytest.fixture
def scene(transactional_db, workflow, make_agent):
    from collaboration.services import message_send
    from tasks.services import task_create
    from tickets.services import comment_add, commit_link, ticket_create

    agent, _ = make_agent("query-agent", workflow)
    make_agent("query-peer", workflow)
    blocker = ticket_create(actor=agent, workflow=workflow, title="Counted blocker", description="A ticket to count queries on.")
    ticket = ticket_create(actor=agent, workflow=workflow, title="Counted ticket", description="Blocked by the first one.",
                           blocked_by_ticket_ids=[blocker.public_id])
    comment_add(actor=agent, ticket_id=ticket.public_id, comment_text="A comment to read back.")
    commit_link(actor=agent, ticket_id=ticket.public_id, commit_sha="abcdef1234", commit_message="fix")
    task, _ = task_create(actor=agent, ticket_id=ticket.public_id, phase_id="PHASE_IMPLEMENTATION", description="A task to count queries.")
    task_create(actor=agent, ticket_id=ticket.public_id, phase_id="PHASE_TESTING", description="A follow-up bug task.",
                discovery_type="bug", source_task_id=task.public_id)
    message_send(sender=agent, recipient_agent_id="query-peer", message="hello")
    return agent, ticket, task


def test_every_read_tool_has_a_pinned_query_count(scene):
    from omoi_site.mcp_endpoint import load_tools, run_tool

    agent, ticket, task = scene
    tools = load_tools()
    arguments = {
        "get_ticket": {"ticket_id": ticket.public_id},
        "get_tickets": {"workflow_id": "test-flow"},
        "get_ticket_history": {"ticket_id": ticket.public_id},
        "get_phase_history": {"ticket_id": ticket.public_id},
        "get_ready_tickets": {"workflow_id": "test-flow"},
        "get_task": {"task_id": task.public_id},
        "get_task_discoveries": {"task_id": task.public_id},
        "get_workflow_graph": {"ticket_id": ticket.public_id},
        "get_task_timeline": {"task_id": task.public_id},
        "get_discoveries_by_type": {"discovery_type": "bug"},
        "get_messages": {},
        "get_agent_trajectory": {"agent_id": "query-agent"},
        "search_tickets": {"workflow_id": "test-flow", "query": "count queries", "search_type": "keyword"},
        "predict_blockers": {"ticket_id": ticket.public_id},
        "search_similar_discoveries": {"workflow_id": "test-flow", "query": "follow-up bug"},
    }
    assert set(arguments) == {name for name, tool in tools.items() if tool.idempotent}  # every read tool (and get_messages)
    counted = {}
    for name, tool_arguments in arguments.items():
        with CaptureQueriesContext(connection) as queries:
            is_error, text = run_tool(tools[name], agent, tool_arguments)
        assert not is_error, (name, text)
        counted[name] = len(queries.captured_queries)
    assert counted == PINNED
    assert counted["get_ticket"] <= 4


def test_get_ticket_still_shows_blockers_dependents_comments_and_commits(scene):
    import json

    from omoi_site.mcp_endpoint import load_tools, run_tool

    agent, ticket, _task = scene
    blocker_id = f"TKT-{ticket.pk - 1}"
    detail = json.loads(run_tool(load_tools()["get_ticket"], agent, {"ticket_id": ticket.public_id})[1])
    assert detail["blocked_by"] == [{"ticket_id": blocker_id, "status": "backlog"}]
    assert [comment["text"] for comment in detail["comments"]] == ["A comment to read back."]
    assert detail["commits"][0]["sha"] == "abcdef1234"
    blocker = json.loads(run_tool(load_tools()["get_ticket"], agent, {"ticket_id": blocker_id})[1])
    assert blocker["blocks"] == [ticket.public_id] and not blocker.get("blocked_by")
