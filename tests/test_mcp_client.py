"""The agent-side MCP client (agents/agent_side/mcp_client.py) against the live ASGI server.

Failures of the network are produced by a real HTTP stand-in on 127.0.0.1 between the client and the
live server (it drops connections, answers 502, or forwards), never by patching the client.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import textwrap
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from agents.agent_side.mcp_client import (
    AsyncMCPClient,
    MCPAuthError,
    MCPClient,
    MCPProtocolError,
    MCPToolError,
    MCPTransportError,
    RetryPolicy,
)

FAST_RETRY = RetryPolicy(attempts=4, base_delay=0.01, max_delay=0.05, jitter=0)
ROOT = Path(__file__).resolve().parent.parent


class FlakyProxy:
    """HTTP stand-in on 127.0.0.1. Each POST takes the next step of `script` (then `then`):

    - "drop": close the connection without answering (the request never reaches the server)
    - "forward-drop": forward to the server, then close without passing the answer on
    - "502" / "503" / "400" …: answer that status
    - "forward": pass the request through and the answer back
    """

    def __init__(self, upstream: str, script: list[str], then: str = "forward"):
        self.upstream = upstream.rstrip("/")
        self.script = list(script)
        self.then = then
        self.seen: list[dict] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                proxy.seen.append({"method": "GET", "port": self.client_address[1]})
                self.send_response(405)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                step = proxy.script.pop(0) if proxy.script else proxy.then
                proxy.seen.append({"method": "POST", "port": self.client_address[1], "step": step, "body": body})
                if step == "drop":
                    self.close_connection = True
                    return
                if step.isdigit():
                    payload = b'{"detail":"stand-in says no"}'
                    self.send_response(int(step))
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
                answer = httpx.post(proxy.upstream + self.path, content=body, headers=headers, timeout=30)
                if step == "forward-drop":
                    self.close_connection = True
                    return
                self.send_response(answer.status_code)
                for key, value in answer.headers.items():
                    if key.lower() not in ("content-length", "transfer-encoding", "connection", "content-encoding"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/mcp/"

    def steps(self) -> list[str]:
        return [item.get("step") for item in self.seen]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def proxy_to(asgi_server):
    proxies = []

    def _make(script, then="forward"):
        proxy = FlakyProxy(asgi_server.url, script, then)
        proxies.append(proxy)
        return proxy

    yield _make
    for proxy in proxies:
        proxy.close()


@pytest.fixture
def worker(make_agent, workflow, transactional_db):
    agent, token = make_agent("worker-1", workflow)
    return agent, token


@pytest.fixture
def endpoint(asgi_server):
    return f"{asgi_server.url}/mcp/"


def _create_ticket(client, title="Login times out after 5 minutes", **extra):
    return client.call_tool(
        "create_ticket",
        {
            "workflow_id": "test-flow",
            "agent_id": "worker-1",
            "title": title,
            "description": "Users are logged out after five minutes of inactivity.",
            **extra,
        },
    )


# --- imports without Django ----------------------------------------------------------------------------


def test_client_imports_without_django():
    # given a process in which importing django fails, as in a worker sandbox
    script = textwrap.dedent(
        """
        import sys
        class RefuseDjango:
            def find_spec(self, name, path=None, target=None):
                if name == "django" or name.startswith("django."):
                    raise ImportError("django is not available in a worker sandbox")
        sys.meta_path.insert(0, RefuseDjango())
        import agents.agent_side.mcp_client as client
        assert "django" not in sys.modules
        print(client.MCPClient.__name__)
        """
    )
    # when the client module is imported
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60)
    # then it works
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "MCPClient"


# --- the live server -------------------------------------------------------------------------------------


def test_list_tools_returns_the_servers_tools_with_schemas(worker, endpoint, mcp_for):
    _, token = worker
    with MCPClient(endpoint, token) as client:
        tools = client.list_tools()
        info = client.server_info
    reference = {tool.name: tool.inputSchema for tool in mcp_for(token).list_tools()}
    assert {tool["name"]: tool["inputSchema"] for tool in tools} == reference
    assert "create_ticket" in reference
    assert info.get("name") == "OmoiOS" and info.get("version") == "0.1.0"  # the project, not the mcp library


def test_call_tool_returns_the_parsed_json_result(worker, endpoint, mcp_for):
    _, token = worker
    with MCPClient(endpoint, token) as client:
        created = _create_ticket(client)
        ticket_id = created["ticket"]["ticket_id"]
        fetched = client.call_tool("get_ticket", {"ticket_id": ticket_id})
    # the ticket is really there: the reference client (the `mcp` package) reads it too
    reference = mcp_for(token).call("get_ticket", ticket_id=ticket_id)
    assert fetched == reference
    assert ticket_id.startswith("TKT-")


def test_call_tool_text_is_the_servers_compact_json(worker, endpoint, mcp_for):
    _, token = worker
    with MCPClient(endpoint, token) as client:
        created = _create_ticket(client)
        ticket_id = created["ticket"]["ticket_id"]
        text = client.call_tool_text("get_ticket", {"ticket_id": ticket_id})
    reference = mcp_for(token).raw_call("get_ticket", {"ticket_id": ticket_id}).content[0].text
    assert text == reference
    assert ": " not in text[:50] and "\n" not in text


def test_tool_error_raises_mcp_tool_error_with_the_servers_message(worker, endpoint, mcp_for):
    _, token = worker
    expected = mcp_for(token).error("get_ticket", ticket_id="TKT-999999")
    with MCPClient(endpoint, token) as client, pytest.raises(MCPToolError) as caught:
        client.call_tool("get_ticket", {"ticket_id": "TKT-999999"})
    assert caught.value.message == expected
    assert str(caught.value) == expected
    assert caught.value.tool_name == "get_ticket"
    assert "TKT-999999" in expected


def test_invalid_arguments_come_back_as_a_tool_error(worker, endpoint):
    _, token = worker
    with MCPClient(endpoint, token) as client, pytest.raises(MCPToolError) as caught:
        client.call_tool("get_ticket", {"ticket_id": "TKT-1", "colour": "blue"})
    assert "colour" in caught.value.message


def test_unknown_tool_is_a_tool_error(worker, endpoint):
    _, token = worker
    with MCPClient(endpoint, token) as client, pytest.raises(MCPToolError) as caught:
        client.call_tool("make_coffee", {})
    assert "make_coffee" in caught.value.message


def test_missing_token_raises_auth_error(endpoint, transactional_db):
    with MCPClient(endpoint, None) as client, pytest.raises(MCPAuthError) as caught:
        client.list_tools()
    assert caught.value.status_code == 401


def test_unknown_token_raises_auth_error_with_the_servers_reason(endpoint, worker):
    with MCPClient(endpoint, "not-a-real-token") as client, pytest.raises(MCPAuthError) as caught:
        client.call_tool("get_ticket", {"ticket_id": "TKT-1"})
    assert caught.value.status_code in (401, 403)
    assert "create_agent" in caught.value.message


def test_async_client_lists_and_calls(worker, endpoint):
    _, token = worker

    async def scenario():
        async with AsyncMCPClient(endpoint, token) as client:
            tools = await client.list_tools()
            created = await client.call_tool(
                "create_ticket",
                {
                    "workflow_id": "test-flow",
                    "agent_id": "worker-1",
                    "title": "Async client ticket",
                    "description": "Created through the asyncio client.",
                },
            )
            fetched = await client.call_tool("get_ticket", {"ticket_id": created["ticket"]["ticket_id"]})
            with pytest.raises(MCPToolError) as caught:
                await client.call_tool("get_ticket", {"ticket_id": "TKT-999999"})
            return tools, created, fetched, caught.value

    tools, created, fetched, error = asyncio.run(scenario())
    assert "create_ticket" in {tool["name"] for tool in tools}
    assert fetched["ticket_id"] == created["ticket"]["ticket_id"]
    assert "TKT-999999" in error.message


# --- retries, through the stand-in ---------------------------------------------------------------------------


def test_dropped_connections_are_retried_with_backoff(worker, proxy_to):
    _, token = worker
    proxy = proxy_to(["drop", "drop"])
    with MCPClient(proxy.url, token, retry=FAST_RETRY) as client:
        tools = client.list_tools()
    assert "get_ticket" in {tool["name"] for tool in tools}
    assert proxy.steps()[:3] == ["drop", "drop", "forward"]


def test_gateway_errors_are_retried(worker, proxy_to):
    _, token = worker
    proxy = proxy_to(["502", "503", "504"])
    with MCPClient(proxy.url, token, retry=FAST_RETRY) as client:
        client.initialize()
    assert proxy.steps()[:4] == ["502", "503", "504", "forward"]


def test_a_refused_port_gives_up_with_a_transport_error(transactional_db):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # nothing listens on `port` now
    with MCPClient(f"http://127.0.0.1:{port}/mcp/", "token", retry=FAST_RETRY) as client:
        with pytest.raises(MCPTransportError) as caught:
            client.list_tools()
    assert caught.value.attempts == FAST_RETRY.attempts
    assert "ConnectError" in caught.value.message


def test_persistent_gateway_errors_give_up_with_the_status(worker, proxy_to):
    _, token = worker
    proxy = proxy_to([], then="503")
    with MCPClient(proxy.url, token, retry=FAST_RETRY) as client, pytest.raises(MCPTransportError) as caught:
        client.initialize()
    assert caught.value.status_code == 503
    assert len(proxy.seen) == FAST_RETRY.attempts


@pytest.mark.parametrize(
    "status, error_type",
    [
        ("400", MCPProtocolError),
        ("404", MCPProtocolError),
        ("401", MCPAuthError),
        ("403", MCPAuthError),
        ("500", MCPTransportError),
    ],
)
def test_client_errors_and_500_are_not_retried(worker, proxy_to, status, error_type):
    _, token = worker
    proxy = proxy_to([], then=status)
    with MCPClient(proxy.url, token, retry=FAST_RETRY) as client, pytest.raises(error_type) as caught:
        client.initialize()
    assert len(proxy.seen) == 1
    assert caught.value.status_code == int(status)
    assert "stand-in says no" in caught.value.message


def test_a_tool_error_is_not_retried(worker, proxy_to):
    _, token = worker
    proxy = proxy_to([])
    with MCPClient(proxy.url, token, retry=FAST_RETRY) as client:
        client.list_tools()
        before = len(proxy.seen)
        with pytest.raises(MCPToolError):
            client.call_tool("get_ticket", {"ticket_id": "TKT-999999"})
    assert len(proxy.seen) == before + 1


def test_a_write_whose_answer_was_lost_is_retried_without_applying_it_twice(worker, proxy_to):
    from tickets.models import Ticket

    _, token = worker
    proxy = proxy_to([])
    with MCPClient(proxy.url, token, retry=FAST_RETRY) as client:
        client.list_tools()
        # given the server applies the next call but its answer never reaches the client
        proxy.script = ["forward-drop"]
        # when the client retries
        created = _create_ticket(client, title="Only once please")
    # then the retry replayed the first result instead of creating a second ticket
    assert proxy.steps()[-2:] == ["forward-drop", "forward"]
    assert Ticket.objects.filter(title="Only once please").count() == 1
    assert created["ticket"]["ticket_id"] == Ticket.objects.get(title="Only once please").public_id


def test_one_connection_is_reused_and_get_is_never_sent(worker, proxy_to):
    _, token = worker
    proxy = proxy_to([])
    with MCPClient(proxy.url, token) as client:
        client.list_tools()
        for _ in range(3):
            with pytest.raises(MCPToolError):
                client.call_tool("get_ticket", {"ticket_id": "TKT-999999"})
    assert {item["method"] for item in proxy.seen} == {"POST"}
    assert len({item["port"] for item in proxy.seen}) == 1
    methods = [httpx.Response(200, content=item["body"]).json()["method"] for item in proxy.seen]
    assert methods[:3] == ["initialize", "notifications/initialized", "tools/list"]
    assert methods[3:] == ["tools/call"] * 3
