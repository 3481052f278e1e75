"""The official MCP TypeScript SDK client (`@modelcontextprotocol/sdk`, pinned by the committed
package-lock.json in tests/js/mcp-conformance, installed with `npm ci` and the machine's Node) against the
live `/mcp/`: initialize, tools/list, ping, tool calls, a tool error, invalid arguments, an unknown method,
a 401 and a 429 — each result checked, and the SDK's transport must report no error of its own."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parent / "js" / "mcp-conformance"


def ensure_node_modules() -> str:
    """`npm ci` from the committed lock when node_modules is missing or older than the lock. No skip:
    without Node the conformance test cannot run, and that is a failure."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        pytest.fail("Node.js and npm are required for the MCP TypeScript SDK conformance test (node >= 20).")
    marker = PROJECT / "node_modules" / ".package-lock.json"
    if not marker.exists() or marker.stat().st_mtime < (PROJECT / "package-lock.json").stat().st_mtime:
        completed = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--ignore-scripts"], cwd=PROJECT, capture_output=True, text=True,
            timeout=600,
        )
        if completed.returncode != 0:
            pytest.fail(f"npm ci failed in {PROJECT}:\n{completed.stdout[-2000:]}\n{completed.stderr[-2000:]}")
    return node


def run_client(node: str, *arguments: str) -> dict:
    completed = subprocess.run(
        [node, "conformance.mjs", *arguments], cwd=PROJECT, capture_output=True, text=True, timeout=120
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return json.loads(completed.stdout.strip().splitlines()[-1])


def text_of(result: dict) -> str:
    assert result["content"][0]["type"] == "text"
    return result["content"][0]["text"]


def test_the_typescript_sdk_client_works_end_to_end(asgi_server, transactional_db, workflow, make_agent, settings):
    from django.core.cache import caches

    from tickets.models import Ticket
    from tickets.services import ticket_create

    node = ensure_node_modules()
    agent, token = make_agent("ts-client", workflow)
    ticket = ticket_create(actor=agent, workflow=workflow, title="Seen from TypeScript", description="A ticket to read.")
    url = f"{asgi_server.url}/mcp/"

    report = run_client(node, "main", url, token, ticket.public_id)

    assert report["serverVersion"] == {"name": "OmoiOS", "version": "0.1.0"}
    assert report["protocolVersion"] == "2025-11-25"
    assert report["capabilities"]["tools"] == {"listChanged": False}
    assert "claim_next_task" in report["instructions"]
    assert {"get_ticket", "create_ticket", "claim_next_task", "request_handoff"} <= set(report["toolNames"])
    assert report["getTicketSchema"]["required"] == ["ticket_id"]
    assert report["ping"] == {}
    assert not report["getTicket"].get("isError")
    assert json.loads(text_of(report["getTicket"]))["ticket_id"] == ticket.public_id
    assert report["toolError"]["isError"] is True and "TKT-999999" in text_of(report["toolError"])
    assert report["invalidArguments"]["isError"] is True
    assert "Unknown argument 'ticket'" in text_of(report["invalidArguments"])
    created = json.loads(text_of(report["created"]))["ticket"]
    assert Ticket.objects.get(pk=int(created["ticket_id"].split("-")[1])).created_by_agent_id == "ts-client"
    assert report["unknownMethod"]["code"] == -32601 and "resources/list" in report["unknownMethod"]["message"]
    # the optional GET stream answers 405, which the SDK treats as "no stream" — no onerror
    assert report["transportErrors"] == []
    assert report["unauthorized"]["code"] == 401
    assert "Unknown, expired or revoked agent token" in report["unauthorized"]["message"]

    # a 429 reaches the SDK with the server's own text
    caches[settings.THROTTLE_CACHE_ALIAS].clear()
    settings.MCP_RATE_LIMIT = "3/min"
    _limited_agent, limited_token = make_agent("ts-limited", workflow)
    limited = run_client(node, "limited", url, limited_token)
    assert limited["pings"] == 1  # initialize, notifications/initialized, one ping: three calls of three
    assert limited["rateLimited"]["code"] == 429
    assert "Rate limit exceeded" in limited["rateLimited"]["message"]
    caches[settings.THROTTLE_CACHE_ALIAS].clear()
