"""The agent side of MCP: one streamable-HTTP client (httpx) per worker, sync and async.

A worker in a sandbox has httpx and the OpenHands SDK but no Django, so this module imports neither
Django nor anything of the project.

Protocol (MCP streamable HTTP, the server is stateless and answers JSON): every message is a POST of one
JSON-RPC object to the endpoint; the client sends ``initialize`` once, then the
``notifications/initialized`` notification, then ``tools/list`` / ``tools/call``. The optional GET stream
(server → client) is never opened: the OmoiOS endpoint answers GET with 405.

Failures are typed (all subclass :class:`MCPError`):

- :class:`MCPTransportError` — the server could not be reached or answered 5xx. Connection failures,
  timeouts and 502/503/504 are retried with exponential backoff first; nothing else is.
- :class:`MCPAuthError` — 401/403: the bearer token is missing, unknown, expired or revoked.
- :class:`MCPProtocolError` — any other 4xx, a JSON-RPC error, or a body that is not MCP.
- :class:`MCPToolError` — the tool ran and reported an error (``isError``); ``message`` is the server's
  one-line text, written to be shown to the LLM as is.

Retrying a write is only safe when a repeat cannot apply it twice: before the first attempt of a call to
a write tool (one whose schema has ``idempotency_key``) the client adds a fresh ``idempotency_key``
unless the caller gave one, so a retry after a lost response replays the first result instead of
creating a second ticket.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx

__all__ = [
    "AsyncMCPClient",
    "MCPAuthError",
    "MCPClient",
    "MCPError",
    "MCPProtocolError",
    "MCPToolError",
    "MCPTransportError",
    "RetryPolicy",
]

PROTOCOL_VERSION = "2025-06-18"
CLIENT_INFO = {"name": "omoios-agent", "version": "1.0"}
RETRYABLE_STATUS_CODES = frozenset({502, 503, 504})
DEFAULT_TIMEOUT = httpx.Timeout(connect=5.0, read=60.0, write=30.0, pool=10.0)
SESSION_HEADER = "mcp-session-id"


# --- errors -------------------------------------------------------------------------------------------


class MCPError(Exception):
    """Base of every error raised by the MCP client."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class MCPTransportError(MCPError):
    """The server could not be reached, timed out, or answered 5xx (after the retries allowed)."""

    def __init__(self, message: str, *, status_code: int | None = None, attempts: int = 1):
        super().__init__(message)
        self.status_code = status_code
        self.attempts = attempts


class MCPAuthError(MCPError):
    """401/403 from the endpoint: send a valid agent token (`Authorization: Bearer <token>`)."""

    def __init__(self, message: str, *, status_code: int):
        super().__init__(message)
        self.status_code = status_code


class MCPProtocolError(MCPError):
    """A 4xx other than auth, a JSON-RPC error object, or a response that is not MCP."""

    def __init__(self, message: str, *, status_code: int | None = None, code: int | None = None):
        super().__init__(message)
        self.status_code = status_code
        self.code = code


class MCPToolError(MCPError):
    """The tool reported an error (`isError: true`). `message` is the server's text, meant for the LLM."""

    def __init__(self, tool_name: str, message: str):
        super().__init__(message)
        self.tool_name = tool_name

    def __str__(self) -> str:
        return self.message


# --- shared protocol logic ------------------------------------------------------------------------------


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff for transport failures and 502/503/504: delay = base * 2**attempt (± jitter)."""

    attempts: int = 4
    base_delay: float = 0.2
    max_delay: float = 5.0
    jitter: float = 0.1

    def delay(self, attempt: int) -> float:
        delay = min(self.max_delay, self.base_delay * (2**attempt))
        return max(0.0, delay + random.uniform(-self.jitter, self.jitter) * delay)


class _Retry(Exception):
    """Internal: this attempt failed in a way that may be retried."""

    def __init__(self, error: MCPTransportError):
        super().__init__(error.message)
        self.error = error


class _Protocol:
    """Builds requests and reads responses; the sync and async clients share it and differ only in I/O."""

    def __init__(self, url: str, token: str | None, retry: RetryPolicy, auto_idempotency_keys: bool = True):
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"MCP url must be http(s)://…, got {url!r}")
        self.url = url
        self.token = token
        self.retry = retry
        self.auto_idempotency_keys = auto_idempotency_keys
        self._ids = itertools.count(1)
        self._id_lock = threading.Lock()
        self.session_id: str | None = None
        self.protocol_version: str | None = None
        self.server_info: dict[str, Any] = {}
        self.instructions: str | None = None
        self.tools: dict[str, dict[str, Any]] | None = None

    # requests

    def next_id(self) -> int:
        with self._id_lock:
            return next(self._ids)

    def headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        if self.session_id:
            headers[SESSION_HEADER] = self.session_id
        if self.protocol_version:
            headers["MCP-Protocol-Version"] = self.protocol_version
        return headers

    def request(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        message: dict[str, Any] = {"jsonrpc": "2.0", "id": self.next_id(), "method": method}
        if params is not None:
            message["params"] = params
        return message

    @staticmethod
    def notification(method: str) -> dict[str, Any]:
        return {"jsonrpc": "2.0", "method": method}

    def initialize_request(self) -> dict[str, Any]:
        return self.request(
            "initialize",
            {"protocolVersion": PROTOCOL_VERSION, "capabilities": {}, "clientInfo": CLIENT_INFO},
        )

    def remember_initialize(self, result: dict[str, Any], response: httpx.Response) -> None:
        self.protocol_version = result.get("protocolVersion") or PROTOCOL_VERSION
        self.server_info = result.get("serverInfo") or {}
        self.instructions = result.get("instructions")
        session_id = response.headers.get(SESSION_HEADER)
        if session_id:
            self.session_id = session_id

    def prepare_call(self, name: str, arguments: Mapping[str, Any] | None) -> dict[str, Any]:
        """The `tools/call` params; a write tool's call gets an idempotency key so retries are safe."""
        if not isinstance(name, str) or not name:
            raise ValueError("tool name must be a non-empty string")
        arguments = dict(arguments or {})
        schema = (self.tools or {}).get(name, {}).get("inputSchema") or {}
        if (
            self.auto_idempotency_keys
            and "idempotency_key" in (schema.get("properties") or {})
            and not arguments.get("idempotency_key")
        ):
            arguments["idempotency_key"] = f"auto-{uuid.uuid4().hex}"
        return {"name": name, "arguments": arguments}

    def remember_tools(self, tools: list[dict[str, Any]]) -> None:
        self.tools = {tool["name"]: tool for tool in tools if isinstance(tool, dict) and "name" in tool}

    # responses

    def transport_failure(self, error: httpx.TransportError, method: str) -> _Retry:
        kind = type(error).__name__
        return _Retry(MCPTransportError(f"MCP {method} to {self.url} failed: {kind}: {error or 'no detail'}"))

    def read_response(self, response: httpx.Response, message: dict[str, Any]) -> dict[str, Any] | None:
        """JSON-RPC result of `message` (None for a notification). Raises typed errors or `_Retry`."""
        method = message["method"]
        status = response.status_code
        if status in RETRYABLE_STATUS_CODES:
            raise _Retry(MCPTransportError(f"MCP {method}: HTTP {status} from {self.url}", status_code=status))
        if status in (401, 403):
            raise MCPAuthError(
                f"MCP endpoint refused the agent token (HTTP {status}): {_error_detail(response)}",
                status_code=status,
            )
        if 400 <= status < 500:
            raise MCPProtocolError(f"MCP {method}: HTTP {status}: {_error_detail(response)}", status_code=status)
        if status >= 500:
            raise MCPTransportError(
                f"MCP {method}: HTTP {status} from {self.url}: {_error_detail(response)}", status_code=status
            )
        if "id" not in message:
            return None
        payload = _parse_body(response, message["id"])
        if not isinstance(payload, dict) or payload.get("jsonrpc") != "2.0":
            raise MCPProtocolError(f"MCP {method}: the response is not a JSON-RPC message", status_code=status)
        if "error" in payload:
            error = payload["error"] or {}
            raise MCPProtocolError(
                f"MCP {method} failed: {error.get('message', 'unknown error')}",
                status_code=status,
                code=error.get("code"),
            )
        result = payload.get("result")
        if not isinstance(result, dict):
            raise MCPProtocolError(f"MCP {method}: the response has no result object", status_code=status)
        return result

    @staticmethod
    def tool_text(name: str, result: dict[str, Any]) -> str:
        """The text of a `tools/call` result; raises MCPToolError when the server flagged an error."""
        texts = [
            block.get("text", "")
            for block in result.get("content") or []
            if isinstance(block, dict) and block.get("type") == "text"
        ]
        text = "".join(texts)
        if not texts and "structuredContent" in result:
            text = json.dumps(result["structuredContent"], separators=(",", ":"), ensure_ascii=False)
        if result.get("isError"):
            raise MCPToolError(name, text.strip() or f"Tool {name} failed without a message.")
        return text

    @staticmethod
    def parse_tool_text(name: str, text: str) -> dict | list:
        try:
            value = json.loads(text)
        except ValueError:
            return {"text": text}
        return value if isinstance(value, (dict, list)) else {"value": value}


def _gave_up(error: MCPTransportError | None, attempts: int) -> MCPTransportError:
    assert error is not None
    return MCPTransportError(
        f"{error.message} (gave up after {attempts} attempts)", status_code=error.status_code, attempts=attempts
    )


def _error_detail(response: httpx.Response) -> str:
    text = response.text.strip()
    try:
        body = json.loads(text)
    except ValueError:
        return text[:300] or response.reason_phrase
    if isinstance(body, dict):
        if isinstance(body.get("detail"), str):
            return body["detail"]
        error = body.get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
    return text[:300]


def _parse_body(response: httpx.Response, message_id: int) -> Any:
    content_type = response.headers.get("content-type", "")
    if content_type.startswith("text/event-stream"):
        # A server not in JSON mode answers with an SSE stream: take the event that answers our id.
        for event in response.text.replace("\r\n", "\n").split("\n\n"):
            data = "\n".join(line[5:].lstrip() for line in event.split("\n") if line.startswith("data:"))
            if not data:
                continue
            try:
                payload = json.loads(data)
            except ValueError:
                continue
            if isinstance(payload, dict) and payload.get("id") == message_id:
                return payload
        raise MCPProtocolError(f"MCP: the event stream held no answer to request {message_id}")
    try:
        payload = response.json()
    except ValueError:
        raise MCPProtocolError(f"MCP: the response body is not JSON (content-type {content_type!r})")
    if isinstance(payload, list):  # a JSON-RPC batch answer
        payload = next((item for item in payload if isinstance(item, dict) and item.get("id") == message_id), None)
    return payload


# --- synchronous client -----------------------------------------------------------------------------------


class MCPClient:
    """Synchronous MCP client over streamable HTTP; one instance (one pooled connection) per worker.

    >>> with MCPClient("http://127.0.0.1:8000/mcp/", token) as client:
    ...     client.call_tool("get_ticket", {"ticket_id": "TKT-1"})

    Thread-safe: httpx.Client is, and initialisation happens once under a lock. `auto_idempotency_keys`
    (default on) gives every write call a fresh key so that retries cannot apply it twice; the server
    keeps one idempotency record per such call.
    """

    def __init__(
        self,
        url: str,
        token: str | None = None,
        *,
        timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = None,
        http_client: httpx.Client | None = None,
        auto_idempotency_keys: bool = True,
    ):
        self._protocol = _Protocol(url, token, retry or RetryPolicy(), auto_idempotency_keys)
        self._owns_http = http_client is None
        self._http = http_client or httpx.Client(timeout=timeout, follow_redirects=False)
        self._init_lock = threading.Lock()
        self._initialized = False

    @property
    def url(self) -> str:
        return self._protocol.url

    @property
    def server_info(self) -> dict[str, Any]:
        return self._protocol.server_info

    @property
    def instructions(self) -> str | None:
        return self._protocol.instructions

    def __enter__(self) -> MCPClient:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        if self._owns_http:
            self._http.close()

    # public API

    def initialize(self) -> dict[str, Any]:
        """Run the MCP handshake once (later calls are no-ops); returns the server info."""
        with self._init_lock:
            if not self._initialized:
                message = self._protocol.initialize_request()
                result, response = self._send(message)
                self._protocol.remember_initialize(result, response)
                self._send(self._protocol.notification("notifications/initialized"))
                self._initialized = True
        return self._protocol.server_info

    def list_tools(self, *, refresh: bool = False) -> list[dict[str, Any]]:
        """The server's tools as MCP dicts (`name`, `description`, `inputSchema`, `annotations`); cached."""
        if self._protocol.tools is None or refresh:
            self.initialize()
            tools: list[dict[str, Any]] = []
            cursor = None
            while True:
                result, _ = self._send(self._protocol.request("tools/list", {"cursor": cursor} if cursor else None))
                tools.extend(result.get("tools") or [])
                cursor = result.get("nextCursor")
                if not cursor:
                    break
            self._protocol.remember_tools(tools)
        return list(self._protocol.tools.values())

    def call_tool_text(self, name: str, arguments: Mapping[str, Any] | None = None) -> str:
        """Call a tool and return the compact JSON text the server produced; MCPToolError on `isError`."""
        self.list_tools()
        result, _ = self._send(self._protocol.request("tools/call", self._protocol.prepare_call(name, arguments)))
        return self._protocol.tool_text(name, result)

    def call_tool(self, name: str, arguments: Mapping[str, Any] | None = None) -> dict | list:
        """Call a tool; returns its parsed JSON result. Raises MCPToolError with the server's message."""
        return self._protocol.parse_tool_text(name, self.call_tool_text(name, arguments))

    # transport

    def _send(self, message: dict[str, Any]) -> tuple[dict[str, Any] | None, httpx.Response]:
        policy = self._protocol.retry
        last: MCPTransportError | None = None
        for attempt in range(policy.attempts):
            if attempt:
                time.sleep(policy.delay(attempt - 1))
            try:
                try:
                    response = self._http.post(self._protocol.url, json=message, headers=self._protocol.headers())
                except httpx.TransportError as error:
                    raise self._protocol.transport_failure(error, message["method"])
                return self._protocol.read_response(response, message), response
            except _Retry as retry:
                last = retry.error
        raise _gave_up(last, policy.attempts)


# --- asynchronous client -----------------------------------------------------------------------------------


class AsyncMCPClient:
    """The asyncio twin of :class:`MCPClient` (same API, awaitable)."""

    def __init__(
        self,
        url: str,
        token: str | None = None,
        *,
        timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = None,
        http_client: httpx.AsyncClient | None = None,
        auto_idempotency_keys: bool = True,
    ):
        self._protocol = _Protocol(url, token, retry or RetryPolicy(), auto_idempotency_keys)
        self._owns_http = http_client is None
        self._http = http_client or httpx.AsyncClient(timeout=timeout, follow_redirects=False)
        self._init_lock: asyncio.Lock | None = None
        self._initialized = False

    @property
    def url(self) -> str:
        return self._protocol.url

    @property
    def server_info(self) -> dict[str, Any]:
        return self._protocol.server_info

    async def __aenter__(self) -> AsyncMCPClient:
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    async def initialize(self) -> dict[str, Any]:
        if self._init_lock is None:
            self._init_lock = asyncio.Lock()
        async with self._init_lock:
            if not self._initialized:
                message = self._protocol.initialize_request()
                result, response = await self._send(message)
                self._protocol.remember_initialize(result, response)
                await self._send(self._protocol.notification("notifications/initialized"))
                self._initialized = True
        return self._protocol.server_info

    async def list_tools(self, *, refresh: bool = False) -> list[dict[str, Any]]:
        if self._protocol.tools is None or refresh:
            await self.initialize()
            tools: list[dict[str, Any]] = []
            cursor = None
            while True:
                params = {"cursor": cursor} if cursor else None
                result, _ = await self._send(self._protocol.request("tools/list", params))
                tools.extend(result.get("tools") or [])
                cursor = result.get("nextCursor")
                if not cursor:
                    break
            self._protocol.remember_tools(tools)
        return list(self._protocol.tools.values())

    async def call_tool_text(self, name: str, arguments: Mapping[str, Any] | None = None) -> str:
        await self.list_tools()
        params = self._protocol.prepare_call(name, arguments)
        result, _ = await self._send(self._protocol.request("tools/call", params))
        return self._protocol.tool_text(name, result)

    async def call_tool(self, name: str, arguments: Mapping[str, Any] | None = None) -> dict | list:
        return self._protocol.parse_tool_text(name, await self.call_tool_text(name, arguments))

    async def _send(self, message: dict[str, Any]) -> tuple[dict[str, Any] | None, httpx.Response]:
        policy = self._protocol.retry
        last: MCPTransportError | None = None
        for attempt in range(policy.attempts):
            if attempt:
                await asyncio.sleep(policy.delay(attempt - 1))
            try:
                try:
                    response = await self._http.post(self._protocol.url, json=message, headers=self._protocol.headers())
                except httpx.TransportError as error:
                    raise self._protocol.transport_failure(error, message["method"])
                return self._protocol.read_response(response, message), response
            except _Retry as retry:
                last = retry.error
        raise _gave_up(last, policy.attempts)
