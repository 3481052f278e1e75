"""Raw streamable-HTTP protocol of `/mcp/` (httpx against the live uvicorn server): every row of issue 13's
list of deviations — GET/Accept, Allow, JSON-RPC error bodies and codes, batches per protocol version,
null ids, 413, Origin, serverInfo, protocol negotiation — plus the token cache's revocation bound."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent
HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


@pytest.fixture
def alice(make_agent, workflow):
    _agent, token = make_agent("proto-alice", workflow)
    return token


@pytest.fixture
def post(asgi_server, transactional_db):
    def _post(body, token=None, headers=None, raw=None):
        sent = {**HEADERS, **({"Authorization": f"Bearer {token}"} if token else {}), **(headers or {})}
        content = raw if raw is not None else json.dumps(body)
        return httpx.post(f"{asgi_server.url}/mcp/", content=content, headers=sent, timeout=30)

    return _post


def rpc(method, request_id=1, params=None):
    body = {"jsonrpc": "2.0", "id": request_id, "method": method}
    if params is not None:
        body["params"] = params
    return body


def assert_jsonrpc_error(response, status, code, *, request_id=None):
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["jsonrpc"] == "2.0" and body["id"] == request_id, body
    assert body["error"]["code"] == code, body
    message = body["error"]["message"]
    assert message and "pydantic" not in message and "errors.pydantic.dev" not in response.text
    assert len(response.content) < 600, response.text  # a sentence, not a validation dump
    return message


def ticket_count():
    from tickets.models import Ticket

    return Ticket.objects.count()


# --- GET / HEAD / OPTIONS / DELETE -----------------------------------------------------------------------


@pytest.mark.parametrize("accept", ["text/event-stream", "application/json", "*/*", None])
def test_get_is_405_with_allow_post_delete_whatever_the_accept_header(asgi_server, transactional_db, alice, accept):
    headers = {"Authorization": f"Bearer {alice}", **({"Accept": accept} if accept else {})}
    response = httpx.get(f"{asgi_server.url}/mcp/", headers=headers, timeout=10)
    assert_jsonrpc_error(response, 405, -32000)
    assert response.headers["allow"] == "POST, DELETE"


@pytest.mark.parametrize("method", ["HEAD", "OPTIONS", "PUT", "PATCH"])
def test_other_methods_are_405_with_the_same_allow(asgi_server, transactional_db, method):
    response = httpx.request(method, f"{asgi_server.url}/mcp/", timeout=10)
    assert response.status_code == 405
    assert response.headers["allow"] == "POST, DELETE"


def test_delete_has_no_session_to_end_and_answers_200(asgi_server, transactional_db):
    assert httpx.delete(f"{asgi_server.url}/mcp/", timeout=10).status_code == 200


def test_the_path_without_slash_is_the_same_endpoint(asgi_server, alice, transactional_db):
    response = httpx.post(f"{asgi_server.url}/mcp", json=rpc("ping"), headers={**HEADERS, "Authorization": f"Bearer {alice}"})
    assert response.json() == {"jsonrpc": "2.0", "id": 1, "result": {}}


# --- authentication and rate limit -------------------------------------------------------------------------


def test_missing_token_is_401_jsonrpc_with_bearer_challenge(post):
    response = post(rpc("tools/list"))
    assert "Authorization: Bearer" in assert_jsonrpc_error(response, 401, -32001)
    assert response.headers["www-authenticate"] == 'Bearer realm="omoios"'


@pytest.mark.parametrize("authorization", ["Bearer omoi_not-a-token", "Bearer", "Basic dXNlcjpwYXNz", "Bearer a b"])
def test_invalid_token_is_401_invalid_token_whatever_the_body(post, authorization):
    for body in (rpc("ping"), {}, "not json"):
        response = post(None, headers={"Authorization": authorization}, raw=json.dumps(body) if body != "not json" else body)
        assert_jsonrpc_error(response, 401, -32001)
        assert 'error="invalid_token"' in response.headers["www-authenticate"]


def _fourth_call_over_a_limit_of_three(post, alice, settings):
    """Three pings pass under MCP_RATE_LIMIT=3/min; the fourth call (a write) gets a JSON-RPC 429 that says
    when to retry, and creates nothing. Returns that response."""
    settings.MCP_RATE_LIMIT = "3/min"
    statuses = [post(rpc("ping", index), alice).status_code for index in range(3)]
    assert statuses == [200, 200, 200]
    before = ticket_count()
    call = rpc("tools/call", 9, {"name": "create_ticket", "arguments": {"workflow_id": "test-flow", "title": "Limited", "description": "Must not be created."}})
    response = post(call, alice)
    message = assert_jsonrpc_error(response, 429, -32029)
    assert "retry in" in message
    assert ticket_count() == before
    return response


def test_rate_limit_is_429_jsonrpc_with_retry_after(post, alice, settings):
    from django.core.cache import caches

    caches[settings.THROTTLE_CACHE_ALIAS].clear()
    response = _fourth_call_over_a_limit_of_three(post, alice, settings)
    assert int(response.headers["retry-after"]) >= 1
    caches[settings.THROTTLE_CACHE_ALIAS].clear()


def test_rate_limit_on_redis_is_429_jsonrpc_with_retry_after(post, alice, settings):
    # production keeps the counters in Redis (one pipelined round trip per call); the suite's default is memory
    import uuid

    settings.CACHES = {
        **settings.CACHES,
        settings.THROTTLE_CACHE_ALIAS: {"BACKEND": "omoi_site.throttle_cache.FailOpenRedisCache",
                                        "LOCATION": settings.REDIS_URL, "KEY_PREFIX": f"test-{uuid.uuid4().hex}"},
    }
    response = _fourth_call_over_a_limit_of_three(post, alice, settings)
    assert 1 <= int(response.headers["retry-after"]) <= 60
    assert_jsonrpc_error(post(rpc("ping", 10), alice), 429, -32029)  # a refused call is not counted, still over


def test_a_revoked_token_is_refused_once_the_short_cache_lapses(post, make_agent, workflow, settings):
    from agents import services

    # the production bound: a revoked token is refused within 10 s
    from omoi_site import settings as project_settings

    assert 0 < project_settings.MCP_TOKEN_CACHE_SECONDS <= 10
    settings.MCP_TOKEN_CACHE_SECONDS = 1
    agent, token = make_agent("proto-revoked", workflow)
    assert post(rpc("ping"), token).status_code == 200  # looked up and cached
    assert services.agent_tokens_revoke(agent=agent) == 1
    time.sleep(1.1)  # the cache entry (1 s here, 5 s by default) has lapsed
    assert_jsonrpc_error(post(rpc("ping"), token), 401, -32001)


def test_a_removed_workflow_membership_is_refused_once_the_short_cache_lapses(post, make_agent, workflow, settings):
    # the cached agent carries its workflow ids (no membership query per call): the same bound as a revoked token
    settings.MCP_TOKEN_CACHE_SECONDS = 1
    agent, token = make_agent("proto-removed", workflow)
    call = rpc("tools/call", 3, {"name": "get_tickets", "arguments": {"workflow_id": workflow.slug}})
    assert post(call, token).json()["result"]["isError"] is False  # looked up and cached, with its workflows
    agent.workflows.remove(workflow)
    time.sleep(1.1)
    result = post(call, token).json()["result"]
    assert result["isError"] is True
    assert f"No workflow '{workflow.slug}' that you belong to" in result["content"][0]["text"]


# --- content type, accept, size, origin ----------------------------------------------------------------------


def test_wrong_content_type_is_415_jsonrpc(post, alice):
    assert_jsonrpc_error(post(rpc("ping"), alice, headers={"Content-Type": "text/plain"}), 415, -32600)


@pytest.mark.parametrize("accept", ["*/*", "application/json", "application/*", "application/json;q=0.9, text/event-stream"])
def test_accept_variants_are_served_as_json(post, alice, accept):
    response = post(rpc("ping"), alice, headers={"Accept": accept})
    assert response.status_code == 200 and response.json()["result"] == {}
    assert response.headers["content-type"] == "application/json"


def test_accept_event_stream_only_gets_one_sse_event(post, alice):
    response = post(rpc("ping", 5), alice, headers={"Accept": "text/event-stream"})
    assert response.status_code == 200 and response.headers["content-type"] == "text/event-stream"
    event, data = response.text.strip().split("\n")
    assert event == "event: message" and json.loads(data.removeprefix("data: ")) == {"jsonrpc": "2.0", "id": 5, "result": {}}


def test_unacceptable_accept_is_406_jsonrpc(post, alice):
    assert_jsonrpc_error(post(rpc("ping"), alice, headers={"Accept": "text/html"}), 406, -32600)


@pytest.mark.parametrize("size", [1024 * 1024 + 1, 2 * 1024 * 1024, 12 * 1024 * 1024])
def test_bodies_over_one_mebibyte_are_413_and_change_nothing(post, alice, size):
    before = ticket_count()
    filler = "x" * size
    body = rpc("tools/call", 1, {"name": "create_ticket", "arguments": {"workflow_id": "test-flow", "title": "Huge", "description": filler}})
    message = assert_jsonrpc_error(post(body, alice), 413, -32600)
    assert "1 MiB" in message
    assert ticket_count() == before


def test_a_body_just_under_the_limit_is_processed(post, alice):
    body = rpc("tools/call", 1, {"name": "get_ticket", "arguments": {"ticket_id": "TKT-1", "padding": "x" * 1_000_000}})
    response = post(body, alice)
    assert response.status_code == 200
    result = response.json()["result"]
    assert result["isError"] and "Unknown argument 'padding'" in result["content"][0]["text"]


@pytest.mark.parametrize("origin", ["http://evil.example", "null", "https://omoios.up.railway.app.evil.example"])
def test_a_foreign_origin_is_403_and_changes_nothing(post, alice, origin):
    before = ticket_count()
    body = rpc("tools/call", 1, {"name": "create_ticket", "arguments": {"workflow_id": "test-flow", "title": "From a page", "description": "A browser page tried this."}})
    message = assert_jsonrpc_error(post(body, alice, headers={"Origin": origin}), 403, -32003)
    assert "MCP_ALLOWED_ORIGINS" in message
    assert ticket_count() == before


def test_allowed_and_loopback_origins_are_served(post, alice, settings):
    settings.MCP_ALLOWED_ORIGINS = ["https://dash.example"]
    for origin in ("https://dash.example", "http://localhost:6274", "http://127.0.0.1:3000"):
        assert post(rpc("ping"), alice, headers={"Origin": origin}).status_code == 200, origin
    settings.MCP_ALLOW_LOOPBACK_ORIGINS = False
    assert post(rpc("ping"), alice, headers={"Origin": "http://localhost:6274"}).status_code == 403


# --- JSON-RPC shape --------------------------------------------------------------------------------------------


def test_malformed_json_is_400_parse_error_with_null_id(post, alice):
    for raw in ("{", '{"jsonrpc": "2.0", "id": 1, "method": ', "\xff\xfe", ""):
        assert_jsonrpc_error(post(None, alice, raw=raw), 400, -32700)


@pytest.mark.parametrize(
    "body",
    [
        {"jsonrpc": "1.0", "id": 1, "method": "ping"},
        {"id": 1, "method": "ping"},
        {"jsonrpc": "2.0", "id": 1, "method": 7},
        {"jsonrpc": "2.0", "id": 1, "method": "ping", "params": [1, 2]},
        {"jsonrpc": "2.0", "id": 1.5, "method": "ping"},
        {"jsonrpc": "2.0", "id": True, "method": "ping"},
        {"jsonrpc": "2.0", "id": {"a": 1}, "method": "ping"},
        {"jsonrpc": "2.0", "id": 1},
        [],
        "ping",
        42,
    ],
)
def test_invalid_requests_are_400_minus_32600_with_null_id(post, alice, body):
    assert_jsonrpc_error(post(body, alice, headers={"MCP-Protocol-Version": "2025-03-26"}), 400, -32600)


def test_a_null_id_is_refused_not_treated_as_a_notification(post, alice):
    before = ticket_count()
    body = {"jsonrpc": "2.0", "id": None, "method": "tools/call",
            "params": {"name": "create_ticket", "arguments": {"workflow_id": "test-flow", "title": "Null id", "description": "Must not be created."}}}
    message = assert_jsonrpc_error(post(body, alice), 400, -32600)
    assert "null" in message
    assert ticket_count() == before


def test_unknown_method_is_minus_32601_with_the_request_id(post, alice):
    for method in ("no/such", "resources/list", "prompts/get", "sampling/createMessage"):
        message = assert_jsonrpc_error(post(rpc(method, "req-7"), alice), 200, -32601, request_id="req-7")
        assert method in message and "tools/call" in message


@pytest.mark.parametrize(
    "params",
    [{}, {"name": 5}, {"arguments": {}}, {"name": "get_ticket", "arguments": "TKT-1"}, {"name": "get_ticket", "arguments": [1]}],
)
def test_invalid_params_are_minus_32602(post, alice, params):
    message = assert_jsonrpc_error(post(rpc("tools/call", 3, params), alice), 200, -32602, request_id=3)
    assert message.startswith("Invalid params")


def test_initialize_without_params_is_minus_32602(post, alice):
    assert_jsonrpc_error(post(rpc("initialize", 1, {}), alice), 200, -32602, request_id=1)


def test_too_deep_json_is_minus_32600_and_changes_nothing(post, alice):
    before = ticket_count()
    deep = {}
    node = deep
    for _ in range(100):
        node["n"] = {}
        node = node["n"]
    body = rpc("tools/call", 1, {"name": "create_ticket", "arguments": {"workflow_id": "test-flow", "title": "Deep", "description": "Nested far too deep.", "tags": [], "x": deep}})
    assert "64" in assert_jsonrpc_error(post(body, alice), 400, -32600)
    very_deep = "[" * 100_000 + "]" * 100_000
    assert post(None, alice, raw=very_deep).status_code == 400
    assert ticket_count() == before


def test_notifications_and_client_responses_are_202_with_no_body(post, alice):
    for body in ({"jsonrpc": "2.0", "method": "notifications/initialized"},
                 {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 1}},
                 {"jsonrpc": "2.0", "id": 4, "result": {}}):
        response = post(body, alice)
        assert response.status_code == 202 and response.content == b""


def test_unsupported_protocol_version_header_is_400(post, alice):
    message = assert_jsonrpc_error(post(rpc("ping"), alice, headers={"MCP-Protocol-Version": "1999-01-01"}), 400, -32600)
    assert "2025-11-25" in message


# --- batches ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["2025-06-18", "2025-11-25"])
def test_batches_are_refused_clearly_for_versions_without_them(post, alice, version):
    before = ticket_count()
    batch = [rpc("ping", 1), rpc("tools/call", 2, {"name": "create_ticket", "arguments": {"workflow_id": "test-flow", "title": "Batched", "description": "Must not be created."}})]
    message = assert_jsonrpc_error(post(batch, alice, headers={"MCP-Protocol-Version": version}), 400, -32600)
    assert version in message and "one message per POST" in message
    assert ticket_count() == before


@pytest.mark.parametrize("version", ["2025-03-26", None])
def test_batches_are_served_for_2025_03_26(post, alice, version):
    headers = {"MCP-Protocol-Version": version} if version else {}
    batch = [
        rpc("ping", 1),
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        rpc("tools/call", "b", {"name": "get_ticket", "arguments": {"ticket_id": "TKT-999999"}}),
        rpc("no/such", 3),
        {"jsonrpc": "2.0", "id": None, "method": "ping"},
        rpc("initialize", 4, {"protocolVersion": "2025-03-26", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}),
    ]
    response = post(batch, alice, headers=headers)
    assert response.status_code == 200
    answers = response.json()
    assert [answer["id"] for answer in answers] == [1, "b", 3, None, 4]
    assert answers[0]["result"] == {}
    assert answers[1]["result"]["isError"] and "TKT-999999" in answers[1]["result"]["content"][0]["text"]
    assert answers[2]["error"]["code"] == -32601
    assert answers[3]["error"]["code"] == -32600
    assert answers[4]["error"]["code"] == -32600 and "batch" in answers[4]["error"]["message"]


def test_a_batch_of_notifications_only_is_202(post, alice):
    batch = [{"jsonrpc": "2.0", "method": "notifications/initialized"}]
    response = post(batch, alice, headers={"MCP-Protocol-Version": "2025-03-26"})
    assert response.status_code == 202 and response.content == b""


# --- initialize, serverInfo, tools/list ---------------------------------------------------------------------


@pytest.mark.parametrize(("requested", "answered"), [("2025-11-25", "2025-11-25"), ("2025-06-18", "2025-06-18"), ("2025-03-26", "2025-03-26"), ("2099-01-01", "2025-11-25")])
def test_initialize_negotiates_the_version_and_names_omoios(post, alice, requested, answered):
    params = {"protocolVersion": requested, "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}}
    response = post(rpc("initialize", 1, params), alice)
    assert response.status_code == 200
    assert "mcp-session-id" not in response.headers  # stateless
    result = response.json()["result"]
    assert result["protocolVersion"] == answered
    assert result["serverInfo"] == {"name": "OmoiOS", "version": "0.1.0"}
    assert result["capabilities"] == {"tools": {"listChanged": False}}
    assert "claim_next_task" in result["instructions"]


def test_tools_list_is_built_once_and_every_schema_is_typed(post, alice):
    from omoi_site import mcp_transport

    first = post(rpc("tools/list", 1), alice).json()["result"]
    assert post(rpc("tools/list", 2), alice).json()["result"] == first
    assert mcp_transport.tools_list_result() is mcp_transport.tools_list_result()

    def untyped(node, path):
        if isinstance(node, dict):
            if path.endswith(("properties.*", "items")) or "type" in node or "enum" in node:
                if not ("type" in node or "enum" in node or "anyOf" in node):
                    yield path
            for key, value in node.items():
                if key == "properties":
                    for name, prop in value.items():
                        yield from untyped(prop, f"{path}.{name}")
                elif isinstance(value, dict):
                    yield from untyped(value, f"{path}.{key}")

    problems = [p for tool in first["tools"] for p in untyped(tool["inputSchema"], tool["name"])]
    for tool in first["tools"]:
        for name, prop in tool["inputSchema"]["properties"].items():
            if not ("type" in prop or "enum" in prop or "anyOf" in prop):
                problems.append(f"{tool['name']}.{name}")
            if prop.get("type") == "array" and not prop.get("items"):
                problems.append(f"{tool['name']}.{name}.items")
    assert not problems, problems


def test_no_response_is_ever_a_500_or_a_pydantic_dump(post, alice):
    bodies = [{"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "get_ticket", "arguments": {"ticket_id": "TKT-1", "x": "\ud800"}}},
              {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "get_tickets", "arguments": {"workflow_id": "test-flow", "offset": 2**63}}},
              {"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "get_tickets", "arguments": {"workflow_id": "test-flow", "offset": 10**30}}}]
    for body in bodies:
        response = post(None, alice, raw=json.dumps(body))
        assert response.status_code == 200, response.text
        result = response.json()["result"]
        assert result["isError"] and "Internal error" not in result["content"][0]["text"], result


def test_the_django_view_answers_like_the_asgi_path(transactional_db, client, alice):
    # WSGI deployments and Django's test client reach the same transport through urls.py
    response = client.get("/mcp/", HTTP_ACCEPT="text/event-stream")
    assert response.status_code == 405 and response["Allow"] == "POST, DELETE"
    response = client.post("/mcp/", data=json.dumps(rpc("ping", 8)), content_type="application/json",
                           HTTP_AUTHORIZATION=f"Bearer {alice}")
    assert response.status_code == 200 and json.loads(response.content) == {"jsonrpc": "2.0", "id": 8, "result": {}}


# --- database unavailable ----------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_database_unavailable_is_a_clear_503_not_a_hang(transactional_db):
    # given a server whose PostgreSQL is not there (a closed loopback port)
    port, dead = _free_port(), _free_port()
    env = {**os.environ, "DATABASE_URL": f"postgresql://omoi:omoi@127.0.0.1:{dead}/omoios", "DATABASE_POOL_TIMEOUT": "2",
           "PYTHONPATH": str(ROOT), "DJANGO_SETTINGS_MODULE": "omoi_site.settings"}
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "omoi_site.asgi:application", "--host", "127.0.0.1", "--port", str(port),
         "--lifespan", "off", "--log-level", "warning"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert server.poll() is None, server.stderr.read().decode()[-2000:]
                assert time.monotonic() < deadline, "server did not start"
                time.sleep(0.1)
        # when an agent calls it
        response = httpx.post(f"http://127.0.0.1:{port}/mcp/", json=rpc("tools/list"),
                              headers={**HEADERS, "Authorization": "Bearer omoi_some-token"}, timeout=30)
        # then it says so, as JSON-RPC, with a retry hint
        message = assert_jsonrpc_error(response, 503, -32000)
        assert message == "database unavailable; retry in a few seconds."
        assert response.headers["retry-after"]
    finally:
        server.terminate()
        server.wait(timeout=10)


# --- retry on serialization failure / deadlock ------------------------------------------------------------------


def _flaky_tool(failures: list[str]):
    """A door-level tool whose first attempts hit a real PostgreSQL error of the given SQLSTATEs, after
    writing a row (so a retry that did not roll back would leave two)."""
    from django.db import connection

    from omoi_site.mcp_endpoint import TOOLS, mcp_tool
    from tickets.services import workflow_get_or_create

    attempts = []

    def flaky_write(caller, slug: str) -> dict:
        """Test tool: writes a workflow, failing with the queued SQLSTATEs first."""
        attempts.append(slug)
        workflow_get_or_create(slug=f"{slug}-{len(attempts)}")
        if failures:
            code = failures.pop(0)
            with connection.cursor() as cursor:
                cursor.execute(f"DO $$ BEGIN RAISE EXCEPTION 'injected' USING ERRCODE = '{code}'; END $$;")
        return {"attempts": len(attempts)}

    mcp_tool(name="flaky_write_for_test")(flaky_write)
    return TOOLS.pop("flaky_write_for_test"), attempts


@pytest.mark.parametrize("sqlstate", ["40001", "40P01"])
def test_a_serialization_failure_or_deadlock_is_retried_once_invisibly(transactional_db, make_agent, workflow, sqlstate):
    from omoi_site.mcp_endpoint import run_tool
    from tickets.models import Workflow

    agent, _ = make_agent("retry-agent", workflow)
    tool, attempts = _flaky_tool([sqlstate])
    is_error, text = run_tool(tool, agent, {"slug": "retried"})
    assert (is_error, json.loads(text)) == (False, {"attempts": 2})
    assert list(Workflow.objects.filter(slug__startswith="retried").values_list("slug", flat=True)) == ["retried-2"]


def test_a_second_serialization_failure_is_an_internal_error_that_changed_nothing(transactional_db, make_agent, workflow):
    from omoi_site.mcp_endpoint import run_tool
    from tickets.models import Workflow

    agent, _ = make_agent("retry-agent", workflow)
    tool, attempts = _flaky_tool(["40001", "40001", "40001"])
    is_error, text = run_tool(tool, agent, {"slug": "twice"})
    assert is_error and "Internal error in flaky_write_for_test" in text and "nothing was changed" in text
    assert len(attempts) == 2  # once more, not forever
    assert not Workflow.objects.filter(slug__startswith="twice").exists()


def test_other_database_errors_are_not_retried(transactional_db, make_agent, workflow):
    from omoi_site.mcp_endpoint import run_tool

    agent, _ = make_agent("retry-agent", workflow)
    tool, attempts = _flaky_tool(["23505"])  # unique_violation: retrying cannot help
    is_error, _text = run_tool(tool, agent, {"slug": "unique"})
    assert is_error and len(attempts) == 1


def test_the_servers_tools_list_fits_5000_tokens(transactional_db):
    sys.path.insert(0, str(ROOT / "bench"))
    from tool_tokens import SERVER_BUDGET, server_tools_list

    measured = server_tools_list()
    assert measured["count"] >= 34
    assert measured["cl100k_base"] <= SERVER_BUDGET == 5000, measured
