"""Shared fixtures: workflows, agents with real tokens, a live ASGI server and a real MCP client."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time

import pytest


class LiveServer:
    """(fixture `asgi_server`; pytest-django owns the name live_server) uvicorn serving the real ASGI app (HTTP + websockets) in a thread, on the test database."""

    def __init__(self):
        import uvicorn

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        config = uvicorn.Config(
            "omoi_site.asgi:application", host="127.0.0.1", port=self.port, lifespan="off", log_level="warning"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("live server did not start")
            time.sleep(0.02)
        self.url = f"http://127.0.0.1:{self.port}"

    def stop(self):
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture(scope="session")
def asgi_server(django_db_setup, django_db_blocker):
    with django_db_blocker.unblock():
        server = LiveServer()
    yield server
    server.stop()


class McpToolError(Exception):
    pass


class McpClient:
    """Synchronous facade over the `mcp` package's real streamable-HTTP client (one session per call)."""

    def __init__(self, url: str, token: str | None):
        self.url = url
        self.token = token

    async def _session_call(self, method: str, *args):
        from mcp import ClientSession
        from mcp.client.streamable_http import streamablehttp_client

        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        async with streamablehttp_client(self.url, headers=headers) as (read, write, _):
            async with ClientSession(read, write) as session:
                await session.initialize()
                return await getattr(session, method)(*args)

    def raw_call(self, name: str, arguments: dict):
        return asyncio.run(self._session_call("call_tool", name, arguments))

    def call(self, name: str, **arguments):
        """Call a tool; returns the parsed JSON result or raises McpToolError with the server's text."""
        result = self.raw_call(name, arguments)
        text = result.content[0].text if result.content else ""
        if result.isError:
            raise McpToolError(text)
        return json.loads(text)

    def error(self, name: str, **arguments) -> str:
        """Call a tool that must fail; returns the error text."""
        result = self.raw_call(name, arguments)
        text = result.content[0].text if result.content else ""
        assert result.isError, f"{name} unexpectedly succeeded: {text}"
        return text

    def list_tools(self):
        return asyncio.run(self._session_call("list_tools")).tools


@pytest.fixture
def mcp_for(asgi_server, transactional_db):
    """mcp_for(token) -> McpClient talking to the live server as that agent."""

    def _client(token):
        return McpClient(f"{asgi_server.url}/mcp/", token)

    return _client


@pytest.fixture
def tool_error():
    return McpToolError
