"""Authorization matrix for both doors (REST and MCP): anonymous / agent of another workflow / agent acting
as someone else / allowed. Each refused call gets its status (REST 401/404/403, MCP HTTP 401 or a tool
error) and leaves the database exactly as it was; the allowed call succeeds."""

from __future__ import annotations

import json

import httpx
import pytest
from django.test import Client

ANONYMOUS, OUTSIDER, IMPOSTOR, ALLOWED = "anonymous", "outsider", "impostor", "allowed"


def snapshot() -> dict:
    """Everything a refused call could have changed."""
    from agents.models import AgentEvent
    from collaboration.models import Handoff, Message, MessageReceipt
    from tasks.models import Discovery, Task, TaskEvent
    from tickets.models import CommitLink, Ticket, TicketComment, TicketDependency, TicketEvent

    return {
        "tickets": list(
            Ticket.objects.order_by("id").values_list("id", "version", "status", "title", "is_blocked", "priority")
        ),
        "tasks": list(Task.objects.order_by("id").values_list("id", "status", "claimed_by_id", "fencing_token")),
        "handoffs": list(Handoff.objects.order_by("id").values_list("id", "status")),
        "counts": [
            model.objects.count()
            for model in (
                TicketEvent,
                TicketComment,
                TicketDependency,
                CommitLink,
                TaskEvent,
                Discovery,
                Message,
                MessageReceipt,
                AgentEvent,
            )
        ],
    }


@pytest.fixture
def scene(workflow, other_workflow, make_agent):
    from collaboration import services as collaboration
    from tasks import services as tasks
    from tickets import services as tickets

    alice, alice_token = make_agent("alice", workflow)
    bob, _ = make_agent("bob", workflow)
    _mallory, mallory_token = make_agent("mallory", other_workflow)
    blocker = tickets.ticket_create(
        actor=alice, workflow=workflow, title="Pool too small", description="The pool runs dry."
    )
    ticket = tickets.ticket_create(
        actor=alice,
        workflow=workflow,
        title="Login timeout",
        description="Login takes 30 seconds.",
        blocked_by_ticket_ids=[blocker.public_id],
    )
    task, _ = tasks.task_create(
        actor=alice,
        ticket_id=blocker.public_id,
        phase_id="PHASE_IMPLEMENTATION",
        description="Investigate the pool size.",
    )
    tasks.task_create(
        actor=alice, ticket_id=blocker.public_id, phase_id="PHASE_TESTING", description="Regression test for it."
    )
    tasks.task_claim_next(agent=bob, workflow=workflow)  # bob holds `task`
    handoff = collaboration.handoff_request(
        from_agent=bob, to_agent_id="alice", task_id=task.public_id, reason="Alice knows this part best."
    )
    return {
        "alice": alice_token,
        "mallory": mallory_token,
        "ticket": ticket.public_id,
        "blocker": blocker.public_id,
        "task": task.public_id,
        "handoff": handoff.public_id,
    }


# --- REST -----------------------------------------------------------------------------------------------
# (name, method, path, body, actor field or None). Paths/bodies use {ticket}, {blocker}, {task}, {handoff}.

REST_OPERATIONS = [
    ("list tickets", "GET", "/api/tickets?workflow=test-flow", None, None),
    ("get ticket", "GET", "/api/tickets/{ticket}", None, None),
    ("ticket history", "GET", "/api/tickets/{ticket}/history", None, None),
    (
        "create ticket",
        "POST",
        "/api/tickets",
        {"workflow_id": "test-flow", "title": "New ticket", "description": "Something broke again."},
        "agent_id",
    ),
    ("edit ticket", "PATCH", "/api/tickets/{ticket}", {"title": "Renamed ticket"}, "agent_id"),
    (
        "change status",
        "POST",
        "/api/tickets/{blocker}/status",
        {"new_status": "analyzing", "comment": "Starting the analysis."},
        "agent_id",
    ),
    ("resolve", "POST", "/api/tickets/{blocker}/resolve", {"resolution_comment": "Raised the pool size."}, "agent_id"),
    ("comment", "POST", "/api/tickets/{ticket}/comments", {"comment_text": "A comment"}, "agent_id"),
    ("remove blocker", "DELETE", "/api/tickets/{ticket}/dependencies/{blocker}", None, None),
    ("add blocker", "POST", "/api/tickets/{blocker}/dependencies", {"blocked_by_ticket_id": "{ticket}X"}, "agent_id"),
    ("link commit", "POST", "/api/tickets/{ticket}/commits", {"commit_sha": "abcdef1234"}, "agent_id"),
    (
        "create task",
        "POST",
        "/api/tasks",
        {"ticket_id": "{ticket}", "phase_id": "PHASE_DESIGN", "description": "Design the fix."},
        None,
    ),
    ("get task", "GET", "/api/tasks/{task}", None, None),
    ("claim next", "POST", "/api/tasks/claim-next", {"workflow_id": "test-flow"}, "agent_id"),
    (
        "broadcast",
        "POST",
        "/api/messages/broadcast",
        {"message": "Heads up", "ticket_id": "{ticket}"},
        "sender_agent_id",
    ),
    ("send message", "POST", "/api/messages", {"recipient_agent_id": "bob", "message": "Hi bob"}, "sender_agent_id"),
    ("accept hand-off", "POST", "/api/handoffs/{handoff}/accept", {}, "agent_id"),
    ("agent trajectory", "GET", "/api/agents/bob/trajectory", None, None),
]


def _fill(value, scene):
    if isinstance(value, str):
        # "{ticket}X" marks the one body needing a second ticket (blocker blocked by ticket would be a cycle):
        value = value.replace("{ticket}X", scene["ticket"]).replace("{ticket}", scene["ticket"])
        return (
            value.replace("{blocker}", scene["blocker"])
            .replace("{task}", scene["task"])
            .replace("{handoff}", scene["handoff"])
        )
    if isinstance(value, dict):
        return {k: _fill(v, scene) for k, v in value.items()}
    return value


REST_CASES = [
    (op, who) for op in REST_OPERATIONS for who in (ANONYMOUS, OUTSIDER, IMPOSTOR, ALLOWED) if who != IMPOSTOR or op[4]
]


@pytest.mark.parametrize(("operation", "who"), REST_CASES, ids=[f"{op[0]}-{who}" for op, who in REST_CASES])
def test_rest_authorization(operation, who, scene):
    name, method, path, body, actor_field = operation
    path, body = _fill(path, scene), _fill(body, scene)
    if name == "add blocker":  # a fresh, unrelated blocker so the allowed call is legal
        from agents.models import Agent
        from tickets.models import Workflow
        from tickets.services import ticket_create

        other = ticket_create(
            actor=Agent.objects.get(pk="alice"),
            workflow=Workflow.objects.get(slug="test-flow"),
            title="Another ticket",
            description="Another problem entirely.",
        )
        body = {"blocked_by_ticket_id": other.public_id}
    if who == IMPOSTOR:
        body = {**body, actor_field: "bob"}
    token = {ANONYMOUS: None, OUTSIDER: scene["mallory"], IMPOSTOR: scene["alice"], ALLOWED: scene["alice"]}[who]
    headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"} if token else {}
    before = snapshot()

    response = Client().generic(
        method, path, json.dumps(body) if body is not None else "", content_type="application/json", **headers
    )

    if who == ALLOWED:
        assert 200 <= response.status_code < 300, response.content
        return
    expected = {ANONYMOUS: {401}, OUTSIDER: {403, 404}, IMPOSTOR: {403}}[who]
    assert response.status_code in expected, response.content
    error = response.json()["error"]
    assert error["message"]
    assert snapshot() == before
    if who == OUTSIDER and method == "GET":
        assert "Pool too small" not in response.content.decode() and "Login timeout" not in response.content.decode()


# --- MCP ------------------------------------------------------------------------------------------------
# (tool, arguments, actor argument or None)

MCP_OPERATIONS = [
    ("get_ticket", {"ticket_id": "{ticket}"}, None),
    ("get_ticket_history", {"ticket_id": "{ticket}"}, None),
    (
        "create_ticket",
        {
            "workflow_id": "test-flow",
            "agent_id": "alice",
            "title": "New ticket",
            "description": "Something broke again.",
        },
        "agent_id",
    ),
    (
        "update_ticket",
        {"ticket_id": "{ticket}", "agent_id": "alice", "updates": {"title": "Renamed ticket"}},
        "agent_id",
    ),
    (
        "change_ticket_status",
        {"ticket_id": "{blocker}", "agent_id": "alice", "new_status": "analyzing", "comment": "Starting the analysis."},
        "agent_id",
    ),
    (
        "resolve_ticket",
        {"ticket_id": "{blocker}", "agent_id": "alice", "resolution_comment": "Raised the pool size."},
        "agent_id",
    ),
    ("add_ticket_comment", {"ticket_id": "{ticket}", "agent_id": "alice", "comment_text": "A comment"}, "agent_id"),
    (
        "remove_ticket_dependency",
        {"ticket_id": "{ticket}", "agent_id": "alice", "blocked_by_ticket_id": "{blocker}"},
        "agent_id",
    ),
    ("get_task", {"task_id": "{task}"}, None),
    ("claim_next_task", {"agent_id": "alice", "workflow_id": "test-flow"}, "agent_id"),
    (
        "broadcast_message",
        {"sender_agent_id": "alice", "message": "Heads up", "ticket_id": "{ticket}"},
        "sender_agent_id",
    ),
    ("accept_handoff", {"handoff_id": "{handoff}", "agent_id": "alice"}, "agent_id"),
    ("get_agent_trajectory", {"agent_id": "bob"}, None),
]


def test_mcp_without_token_is_http_401(asgi_server, transactional_db):
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    response = httpx.post(
        f"{asgi_server.url}/mcp/", json=body, headers={"Accept": "application/json, text/event-stream"}
    )
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert response.json()["jsonrpc"] == "2.0" and response.json()["id"] is None  # a JSON-RPC error body
    assert response.json()["error"]["code"] == -32001


@pytest.mark.parametrize("operation", MCP_OPERATIONS, ids=[op[0] for op in MCP_OPERATIONS])
def test_mcp_authorization(operation, mcp_for, scene, transactional_db):
    tool, arguments, actor_argument = operation
    arguments = _fill(arguments, scene)

    outsider_arguments = dict(arguments)
    if actor_argument:
        outsider_arguments[actor_argument] = "mallory"
    before = snapshot()
    outsider_error = mcp_for(scene["mallory"]).error(tool, **outsider_arguments)
    assert "No " in outsider_error or "not" in outsider_error, outsider_error
    assert "Pool too small" not in outsider_error and "Login timeout" not in outsider_error
    assert snapshot() == before

    if actor_argument:
        impostor_error = mcp_for(scene["alice"]).error(tool, **{**arguments, actor_argument: "bob"})
        assert "is not you" in impostor_error
        assert snapshot() == before

    result = mcp_for(scene["alice"]).call(tool, **arguments)
    assert result


# --- an agent shared by two workflows: each viewer sees only its own workflows' part --------------------


@pytest.fixture
def shared_agent_scene(transactional_db, workflow, other_workflow, make_agent):
    from agents.services import agent_report_event
    from tasks import services as tasks
    from tickets import services as tickets

    shared, _ = make_agent("shared", workflow, other_workflow)
    _viewer, viewer_token = make_agent("viewer", workflow)
    _insider, insider_token = make_agent("insider", workflow, other_workflow)
    mine = tickets.ticket_create(actor=shared, workflow=workflow, title="Visible work", description="Work in the viewer's flow")
    secret = tickets.ticket_create(actor=shared, workflow=other_workflow, title="Secret work", description="Work in another flow")
    tasks.task_create(actor=shared, ticket_id=mine.public_id, phase_id="PHASE_IMPLEMENTATION", description="Visible task here")
    tasks.task_create(actor=shared, ticket_id=secret.public_id, phase_id="PHASE_IMPLEMENTATION", description="Secret task here")
    agent_report_event(agent=shared, event_type="thought", payload={"text": "about both flows"})
    return {"viewer": viewer_token, "insider": insider_token, "mine": mine.public_id, "secret": secret.public_id}


def _trajectory_tickets(steps) -> set[str]:
    return {step.get("ticket_id") for step in steps}


def test_rest_trajectory_and_agent_of_a_shared_agent_show_only_the_viewers_workflows(shared_agent_scene):
    scene = shared_agent_scene
    headers = {"HTTP_AUTHORIZATION": f"Bearer {scene['viewer']}"}

    trajectory = Client().get("/api/agents/shared/trajectory", **headers).json()
    agent = Client().get("/api/agents/shared", **headers).json()
    listing = Client().get("/api/agents?workflow=test-flow", **headers).json()

    assert _trajectory_tickets(trajectory["steps"]) == {scene["mine"]}
    assert all(step["event"] != "thought" for step in trajectory["steps"])  # unscoped steps stay private
    assert agent["workflows"] == ["test-flow"]
    assert {a["agent_id"]: a["workflows"] for a in listing["results"]}["shared"] == ["test-flow"]
    # an agent in both workflows sees everything
    insider = Client().get("/api/agents/shared/trajectory", HTTP_AUTHORIZATION=f"Bearer {scene['insider']}").json()
    assert _trajectory_tickets(insider["steps"]) == {scene["mine"], scene["secret"], None}


def test_mcp_trajectory_of_a_shared_agent_shows_only_the_viewers_workflows(shared_agent_scene, mcp_for):
    scene = shared_agent_scene

    trajectory = mcp_for(scene["viewer"]).call("get_agent_trajectory", agent_id="shared")

    assert _trajectory_tickets(trajectory["steps"]) == {scene["mine"]}
    assert "other-flow" not in json.dumps(trajectory) and "Secret" not in json.dumps(trajectory)
