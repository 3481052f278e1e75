"""Wiring tests of the REST door (/api/): each endpoint reaches its service/selector, renders the payload,
maps errors to the envelope, paginates, throttles, and refuses lost updates with 409."""

from __future__ import annotations

import json

import pytest
from django.core.cache import caches
from django.test import Client

from tickets.models import Ticket, TicketEvent


def bearer(token: str) -> dict:
    return {"HTTP_AUTHORIZATION": f"Bearer {token}"}


class Api:
    """A JSON client acting with one agent token."""

    def __init__(self, token: str | None):
        self.client = Client()
        self.headers = bearer(token) if token else {}

    def get(self, path, **params):
        return self.client.get(path, params, **self.headers)

    def post(self, path, body=None, **headers):
        return self.client.post(
            path, json.dumps(body or {}), content_type="application/json", **self.headers, **headers
        )

    def patch(self, path, body, **headers):
        return self.client.patch(path, json.dumps(body), content_type="application/json", **self.headers, **headers)

    def delete(self, path):
        return self.client.delete(path, **self.headers)


@pytest.fixture
def alice(db, workflow, make_agent):
    _agent, token = make_agent("alice", workflow)
    return Api(token)


@pytest.fixture
def bob(db, workflow, make_agent):
    _agent, token = make_agent("bob", workflow)
    return Api(token)


def create_ticket(api: Api, title="Login times out after 30s", **extra) -> dict:
    body = {
        "workflow_id": "test-flow",
        "title": title,
        "description": "Users see a timeout on the login page.",
        **extra,
    }
    response = api.post("/api/tickets", body)
    assert response.status_code == 201, response.content
    return response.json()["ticket"]


def assert_error(response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, response.content
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}, body
    assert body["error"]["message"]
    if code:
        assert body["error"]["code"] == code, body
    return body["error"]


def test_ticket_create_detail_and_etag(alice):
    ticket = create_ticket(alice, tags=["Auth", "login"], priority="high")
    assert (
        ticket["ticket_id"].startswith("TKT-") and ticket["priority"] == "high" and ticket["tags"] == ["auth", "login"]
    )

    response = alice.get(f"/api/tickets/{ticket['ticket_id']}")

    assert response.status_code == 200
    assert response["ETag"] == f'"{response.json()["version"]}"'
    assert response.json()["created_by"] == "alice"


def test_lost_update_second_writer_gets_409_and_first_change_stands(alice, bob):
    # given two clients that read the same version
    ticket_id = create_ticket(alice)["ticket_id"]
    etag_alice = alice.get(f"/api/tickets/{ticket_id}")["ETag"]
    etag_bob = bob.get(f"/api/tickets/{ticket_id}")["ETag"]
    assert etag_alice == etag_bob

    # when both edit based on it
    first = alice.patch(f"/api/tickets/{ticket_id}", {"title": "Login times out (alice)"}, HTTP_IF_MATCH=etag_alice)
    second = bob.patch(f"/api/tickets/{ticket_id}", {"title": "Login times out (bob)"}, HTTP_IF_MATCH=etag_bob)

    # then the first wins, the second is told to re-read
    assert first.status_code == 200 and first["ETag"] != etag_alice
    error = assert_error(second, 409, "conflict")
    assert error["details"]["current_version"] == int(first["ETag"].strip('"'))
    ticket = Ticket.objects.get(pk=int(ticket_id.split("-")[1]))
    assert ticket.title == "Login times out (alice)"
    assert ticket.version == int(first["ETag"].strip('"'))


def test_patch_with_stale_version_field_is_refused_and_changes_nothing(alice):
    ticket_id = create_ticket(alice)["ticket_id"]
    alice.patch(f"/api/tickets/{ticket_id}", {"priority": "critical"})
    before = list(TicketEvent.objects.filter(ticket_id=int(ticket_id[4:])).values_list("id", flat=True))

    response = alice.patch(f"/api/tickets/{ticket_id}", {"priority": "low", "version": 1})

    assert_error(response, 409, "conflict")
    assert Ticket.objects.get(pk=int(ticket_id[4:])).priority == "critical"
    assert list(TicketEvent.objects.filter(ticket_id=int(ticket_id[4:])).values_list("id", flat=True)) == before


def test_patch_refuses_status_unknown_fields_and_bad_if_match(alice):
    ticket_id = create_ticket(alice)["ticket_id"]
    assert_error(alice.patch(f"/api/tickets/{ticket_id}", {"status": "done"}), 400, "invalid")
    assert_error(alice.patch(f"/api/tickets/{ticket_id}", {"titel": "typo"}), 400, "invalid")
    assert_error(
        alice.patch(f"/api/tickets/{ticket_id}", {"title": "New title"}, HTTP_IF_MATCH="banana"), 400, "invalid"
    )
    assert_error(alice.patch(f"/api/tickets/{ticket_id}", {}), 400, "invalid")
    assert Ticket.objects.get(pk=int(ticket_id[4:])).version == 1


def test_status_transitions_resolve_and_history(alice):
    blocker = create_ticket(alice, title="Database pool too small")["ticket_id"]
    ticket = create_ticket(alice, blocked_by_ticket_ids=[blocker])["ticket_id"]

    illegal = alice.post(
        f"/api/tickets/{blocker}/status", {"new_status": "testing", "comment": "Skipping ahead to testing."}
    )
    assert_error(illegal, 409)
    moved = alice.post(
        f"/api/tickets/{blocker}/status", {"new_status": "analyzing", "comment": "Looking at pool metrics."}
    )
    assert moved.status_code == 200 and moved.json()["phase"] == "PHASE_REQUIREMENTS"
    resolved = alice.post(f"/api/tickets/{blocker}/resolve", {"resolution_comment": "Raised the pool size to 50."})
    assert resolved.status_code == 200 and resolved.json()["unblocked"] == [ticket]

    history = alice.get(f"/api/tickets/{blocker}/history").json()
    assert [e["event"] for e in history["events"]][:2] == ["created", "status_changed"]
    phases = alice.get(f"/api/tickets/{blocker}/phase-history").json()
    assert phases["phase"] == "PHASE_DONE" and phases["transitions"][-1]["to_phase"] == "PHASE_DONE"


def test_comments_dependencies_and_commits(alice):
    first = create_ticket(alice, title="First ticket here")["ticket_id"]
    second = create_ticket(alice, title="Second ticket here")["ticket_id"]

    added = alice.post(f"/api/tickets/{second}/dependencies", {"blocked_by_ticket_id": first})
    assert added.status_code == 201 and added.json()["blocked_by"] == [first]
    cycle = alice.post(f"/api/tickets/{first}/dependencies", {"blocked_by_ticket_id": second})
    assert "cycle" in assert_error(cycle, 409, "conflict")["message"]
    removed = alice.delete(f"/api/tickets/{second}/dependencies/{first}")
    assert removed.status_code == 200 and removed.json()["blocked_by"] == []

    for text in ("one", "two", "three"):
        assert alice.post(f"/api/tickets/{first}/comments", {"comment_text": text}).status_code == 201
    page = alice.get(f"/api/tickets/{first}/comments", limit=2).json()
    assert [c["text"] for c in page["results"]] == ["one", "two"] and page["next"]
    rest = alice.client.get(page["next"], **alice.headers).json()
    assert [c["text"] for c in rest["results"]] == ["three"] and rest["next"] is None

    linked = alice.post(f"/api/tickets/{first}/commits", {"commit_sha": "abcdef1234", "commit_message": "Fix"})
    again = alice.post(f"/api/tickets/{first}/commits", {"commit_sha": "abcdef1234"})
    assert linked.status_code == 201 and again.status_code == 200 and again.json()["already_linked"] is True


def test_ticket_list_filters_and_cursor_pages(alice):
    for index in range(5):
        create_ticket(alice, title=f"Ticket number {index}", priority="high" if index % 2 else "low")

    page = alice.get("/api/tickets", workflow="test-flow", limit=2, sort_order="asc").json()
    titles = [t["title"] for t in page["results"]]
    while page["next"]:
        page = alice.client.get(page["next"], **alice.headers).json()
        titles += [t["title"] for t in page["results"]]
    assert titles == [f"Ticket number {i}" for i in range(5)]
    high = alice.get("/api/tickets", workflow="test-flow", priority="high").json()["results"]
    assert {t["title"] for t in high} == {"Ticket number 1", "Ticket number 3"}
    assert_error(alice.get("/api/tickets", workflow="test-flow", cursor="garbage!"), 400, "invalid")
    assert_error(alice.get("/api/tickets", workflow="test-flow", priority="urgent"), 400, "invalid")
    assert_error(alice.get("/api/tickets"), 400, "invalid")


def test_search_and_ready(alice):
    create_ticket(alice, title="Login timeout on Safari")
    results = alice.get(
        "/api/tickets/search", workflow="test-flow", q="Safari login timeout", search_type="keyword"
    ).json()
    assert results["results"][0]["title"] == "Login timeout on Safari"
    ready = alice.get("/api/tickets/ready", workflow="test-flow").json()
    assert [t["title"] for t in ready["ready"]] == ["Login timeout on Safari"]


def test_tasks_claim_heartbeat_status_and_discoveries(alice, bob):
    ticket = create_ticket(alice)["ticket_id"]
    created = alice.post(
        "/api/tasks", {"ticket_id": ticket, "phase_id": "PHASE_IMPLEMENTATION", "description": "Investigate the pool."}
    )
    assert created.status_code == 201, created.content
    task_id = created.json()["task"]["task_id"]

    claimed = bob.post("/api/tasks/claim-next", {"workflow_id": "test-flow"}).json()
    assert claimed["task"]["task_id"] == task_id and claimed["task"]["claimed_by"] == "bob"
    assert alice.post("/api/tasks/claim-next", {"workflow_id": "test-flow"}).json() == {"task": None}
    token = claimed["task"]["fencing_token"]
    assert_error(alice.post(f"/api/tasks/{task_id}/heartbeat", {}), 409)
    assert bob.post(f"/api/tasks/{task_id}/heartbeat", {"fencing_token": token}).json()["task_id"] == task_id

    spawned = bob.post(
        "/api/tasks",
        {
            "ticket_id": ticket,
            "phase_id": "PHASE_IMPLEMENTATION",
            "description": "Fix the connection leak.",
            "discovery_type": "bug",
            "source_task_id": task_id,
            "priority_boost": True,
        },
    )
    assert spawned.status_code == 201 and spawned.json()["task"]["priority"] == "high"
    done = bob.post(
        f"/api/tasks/{task_id}/status",
        {"status": "completed", "result": {"summary": "found it"}, "fencing_token": token},
    )
    assert done.status_code == 200 and done.json()["task"]["status"] == "completed"
    discoveries = alice.get(f"/api/tasks/{task_id}/discoveries").json()["discoveries"]
    assert discoveries[0]["spawned_task_id"] == spawned.json()["task"]["task_id"]
    assert alice.get("/api/discoveries", discovery_type="bug").json()["discoveries"][0]["source_task_id"] == task_id
    listed = alice.get("/api/tasks", ticket=ticket).json()["results"]
    assert {t["task_id"] for t in listed} == {task_id, spawned.json()["task"]["task_id"]}
    assert alice.get(f"/api/tickets/{ticket}/graph").json()["edges"][0]["type"] == "discovery"
    assert alice.get(f"/api/tasks/{task_id}/timeline").json()["timeline"][0]["event"] == "created"


def test_messages_and_handoffs(alice, bob):
    ticket = create_ticket(alice)["ticket_id"]
    task_id = alice.post(
        "/api/tasks", {"ticket_id": ticket, "phase_id": "PHASE_IMPLEMENTATION", "description": "Investigate the pool."}
    ).json()["task"]["task_id"]
    alice.post("/api/tasks/claim-next", {"workflow_id": "test-flow"})

    sent = alice.post("/api/messages", {"recipient_agent_id": "bob", "message": "Can you look at the pool?"})
    assert sent.status_code == 201
    broadcast = alice.post("/api/messages/broadcast", {"message": "Pool exhaustion found", "message_type": "discovery"})
    assert broadcast.status_code == 201 and broadcast.json()["recipients"] == 1
    inbox = bob.get("/api/messages", unread_only="true").json()["messages"]
    assert [m["message"] for m in inbox] == ["Pool exhaustion found", "Can you look at the pool?"]
    assert bob.post("/api/messages/read", {"message_ids": [m["message_id"] for m in inbox]}).json() == {
        "marked_read": 2
    }

    handoff = alice.post(
        "/api/handoffs", {"to_agent_id": "bob", "task_id": task_id, "reason": "You know the database best."}
    )
    assert handoff.status_code == 201, handoff.content
    handoff_id = handoff.json()["handoff_id"]
    assert_error(alice.post(f"/api/handoffs/{handoff_id}/accept", {}), 403)
    accepted = bob.post(f"/api/handoffs/{handoff_id}/accept", {"note": "On it"})
    assert accepted.status_code == 200 and accepted.json()["status"] == "accepted"
    assert bob.get(f"/api/tasks/{task_id}").json()["claimed_by"] == "bob"
    assert [h["handoff_id"] for h in bob.get("/api/handoffs").json()["handoffs"]] == [handoff_id]


def test_agents_and_sandbox_runs(alice, bob, make_agent, other_workflow):
    make_agent("stranger", other_workflow)
    agents = alice.get("/api/agents", workflow="test-flow").json()["results"]
    assert [a["agent_id"] for a in agents] == ["alice", "bob"]
    assert alice.get("/api/agents/bob").json()["workflows"] == ["test-flow"]
    assert_error(alice.get("/api/agents/stranger"), 404, "not_found")
    assert alice.get("/api/agents/alice/trajectory").json()["agent_id"] == "alice"
    assert alice.get("/api/sandbox-runs", workflow="test-flow").json() == {
        "next": None,
        "previous": None,
        "results": [],
    }
    assert_error(alice.get("/api/sandbox-runs/RUN-999999"), 404, "not_found")


def test_every_error_has_the_envelope(alice, db):
    anonymous = Api(None)
    assert_error(anonymous.get("/api/tickets", workflow="test-flow"), 401, "not_authenticated")
    assert anonymous.get("/api/tickets")["WWW-Authenticate"].startswith("Bearer")
    assert_error(Api("omoi_not-a-token").get("/api/tickets"), 401, "authentication_failed")
    assert_error(alice.get("/api/nowhere"), 404, "not_found")
    assert_error(anonymous.post("/api/nowhere"), 404, "not_found")
    assert_error(alice.get("/api/tickets/TKT-999999"), 404, "not_found")
    assert_error(alice.get("/api/tickets/banana"), 400, "invalid")
    assert_error(alice.delete("/api/tickets"), 405, "method_not_allowed")
    bad_json = alice.client.post("/api/tickets", "{not json", content_type="application/json", **alice.headers)
    assert_error(bad_json, 400, "parse_error")
    form = alice.client.post("/api/tickets", {"title": "x"}, **alice.headers)
    assert_error(form, 415, "unsupported_media_type")
    nul = alice.post("/api/tickets", {"workflow_id": "test-flow", "title": "Nul \x00 byte", "description": "x" * 20})
    assert_error(nul, 400, "parse_error")
    assert_error(alice.get("/api/tickets", workflow="test\x00flow"), 400, "parse_error")
    huge = alice.post("/api/tasks/TSK-1/status", {"status": "completed", "result": {"blob": "x" * 40_000}})
    assert_error(huge, 400, "invalid")
    assert Ticket.objects.count() == 0


def test_staff_user_session_reads_and_writes_tickets_but_not_agent_only_actions(alice, db):
    from django.contrib.auth.models import User

    ticket_id = create_ticket(alice)["ticket_id"]
    staff = User.objects.create_user("operator", password="pw-operator-123", is_staff=True)
    client = Client()
    client.force_login(staff)
    assert client.get(f"/api/tickets/{ticket_id}").json()["ticket_id"] == ticket_id
    edited = client.patch(
        f"/api/tickets/{ticket_id}", json.dumps({"priority": "critical"}), content_type="application/json"
    )
    assert edited.status_code == 200 and edited.json()["priority"] == "critical"
    claim = client.post(
        "/api/tasks/claim-next", json.dumps({"workflow_id": "test-flow"}), content_type="application/json"
    )
    assert_error(claim, 403, "forbidden")
    acting = client.post(
        f"/api/tickets/{ticket_id}/comments",
        json.dumps({"comment_text": "hi", "agent_id": "alice"}),
        content_type="application/json",
    )
    assert_error(acting, 403, "forbidden")
    plain = User.objects.create_user("visitor", password="pw-visitor-123")
    client.force_login(plain)
    assert_error(client.get(f"/api/tickets/{ticket_id}"), 403, "forbidden")


def test_rest_rate_limit_per_token_answers_429_with_retry_after(alice, bob, settings):
    settings.API_RATE_LIMIT = "3/min"
    caches["throttle"].clear()

    statuses = [alice.get("/api/agents", workflow="test-flow").status_code for _ in range(4)]
    limited = alice.get("/api/agents", workflow="test-flow")

    assert statuses == [200, 200, 200, 429]
    error = assert_error(limited, 429, "throttled")
    assert int(limited["Retry-After"]) > 0 and error["details"]["retry_after_seconds"] > 0
    assert bob.get("/api/agents", workflow="test-flow").status_code == 200  # another token has its own budget
    caches["throttle"].clear()


def test_schema_and_docs_are_served(db):
    client = Client()
    schema = client.get("/api/schema/?format=json")
    assert schema.status_code == 200
    paths = schema.json()["paths"]
    assert "/api/tickets/{ticket_id}/status" in paths and "/mcp/" not in paths
    docs = client.get("/api/docs/")
    assert docs.status_code == 200 and b"swagger" in docs.content.lower()
    assert b"cdn.jsdelivr" not in docs.content


def test_mcp_rate_limit_per_token_answers_http_429(asgi_server, transactional_db, workflow, make_agent, settings):
    import httpx

    _agent, token = make_agent("chatty", workflow)
    settings.MCP_RATE_LIMIT = "2/min"
    caches["throttle"].clear()
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json, text/event-stream"}

    statuses = [httpx.post(f"{asgi_server.url}/mcp/", json=body, headers=headers).status_code for _ in range(3)]

    assert statuses[:2] != [429, 429] and statuses[2] == 429
    limited = httpx.post(f"{asgi_server.url}/mcp/", json=body, headers=headers)
    assert limited.status_code == 429 and int(limited.headers["Retry-After"]) > 0
    assert limited.json()["error"]["code"] == -32029  # a JSON-RPC error body (issue 13)
    caches["throttle"].clear()
