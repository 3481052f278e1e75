"""The `/mcp/` transport: stateless streamable HTTP, answered as JSON, with nothing built per request.

django-mcp-server's view builds a `StreamableHTTPSessionManager`, a transport and a server task for every
POST and answers errors as DRF bodies. This module replaces that path (the server object, `OmoiMCP`, and
the tool registry stay in `omoi_site.mcp_endpoint`): one ASGI callable, mounted in front of Django's
handler in `omoi_site.asgi` and also reachable as a Django view (`mcp_view`, for WSGI and the test
client), that

* checks the HTTP envelope (method, Origin, Content-Type, Accept, MCP-Protocol-Version, body size),
* parses JSON-RPC and validates it with the `mcp` library's own pydantic types (`JSONRPCRequest`,
  `InitializeRequest`, `CallToolRequest`, …),
* answers `initialize`, `ping` and `tools/list` in the event loop (tools/list is serialised once per
  process) and runs `tools/call` — token lookup on a cache miss, rate limit and the tool — in ONE worker
  thread hop,
* renders every failure as a JSON-RPC error body with the right code and HTTP status.

Protocol versions 2025-11-25, 2025-06-18 and 2025-03-26 (and 2024-11-05) are served; JSON-RPC batches
only for the versions that define them (≤ 2025-03-26; a request without `MCP-Protocol-Version` is
2025-03-26 by the spec's rule). Error codes: -32700 parse error, -32600 invalid request (`id: null`),
-32601 unknown method, -32602 invalid params; HTTP-level refusals use -32001 unauthorized (401),
-32003 forbidden origin (403), -32029 rate limited (429, `Retry-After`), -32000 otherwise (405, 503).
"""

from __future__ import annotations

import asyncio
import contextvars
import copy
import json
import logging
import threading
import time
import tomllib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson
from django.conf import settings
from django.http import HttpResponse
from django.views.decorators.csrf import csrf_exempt
from mcp import types as mcp_types
from mcp.shared.version import SUPPORTED_PROTOCOL_VERSIONS
from mcp_server.views import MCPServerStreamableHttpView
from pydantic import ValidationError

from agents.selectors import agent_for_token, agent_with_membership
from agents.services import agent_token_mark_used
from omoi_site.db_errors import DATABASE_UNAVAILABLE, is_database_unavailable
from omoi_site.mcp_endpoint import SERVER_INSTRUCTIONS, call_tool_sync, load_tools, omoi_mcp_server

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 1024 * 1024  # 1 MiB; larger bodies get 413
MAX_JSON_DEPTH = 64
BATCH_PROTOCOL_VERSIONS = frozenset({"2024-11-05", "2025-03-26"})
ASSUMED_PROTOCOL_VERSION = "2025-03-26"  # the spec's rule for a request without MCP-Protocol-Version
ALLOW = "POST, DELETE"

UNAUTHORIZED = -32001
FORBIDDEN = -32003
RATE_LIMITED = -32029
SERVER_ERROR = -32000



def _project_version() -> str:
    try:
        with open(Path(__file__).resolve().parent.parent / "pyproject.toml", "rb") as handle:
            return tomllib.load(handle)["project"]["version"]
    except (OSError, KeyError, tomllib.TOMLDecodeError):
        return "0.0.0"


SERVER_NAME = "OmoiOS"
SERVER_VERSION = _project_version()

_REQUEST_TYPES: dict[str, type[mcp_types.Request]] = {
    "initialize": mcp_types.InitializeRequest,
    "ping": mcp_types.PingRequest,
    "tools/list": mcp_types.ListToolsRequest,
    "tools/call": mcp_types.CallToolRequest,
}
SUPPORTED_METHODS = ", ".join(_REQUEST_TYPES)


class Reply:
    """One HTTP answer: status, JSON (or empty) body, extra headers."""

    __slots__ = ("status", "body", "headers")

    def __init__(self, status: int, body: bytes = b"", headers: list[tuple[str, str]] | None = None):
        self.status, self.body, self.headers = status, body, headers or []


class Refusal(Exception):
    """A failure answered at the HTTP level (before or instead of a JSON-RPC result)."""

    def __init__(self, status: int, code: int, message: str, headers: list[tuple[str, str]] | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or []


def dumps(payload: Any) -> bytes:
    try:
        return orjson.dumps(payload)
    except TypeError:  # lone surrogates echoed back in an error message; orjson refuses them
        return json.dumps(payload, ensure_ascii=True, separators=(",", ":"), default=str).encode()


def error_message(request_id: Any, code: int, message: str, data: Any = None) -> dict:
    error: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return {"jsonrpc": "2.0", "id": request_id, "error": error}


def refusal_reply(refusal: Refusal) -> Reply:
    return Reply(refusal.status, dumps(error_message(None, refusal.code, refusal.message)), refusal.headers)


# --- the HTTP envelope ----------------------------------------------------------------------------------


def _origin_allowed(origin: str) -> bool:
    allowed = getattr(settings, "MCP_ALLOWED_ORIGINS", ())
    if origin in allowed or "*" in allowed:
        return True
    parts = urlsplit(origin)
    if parts.scheme in ("http", "https") and parts.hostname in ("localhost", "127.0.0.1", "::1"):
        return bool(getattr(settings, "MCP_ALLOW_LOOPBACK_ORIGINS", True))
    return False


def _accepts(accept: str | None) -> str | None:
    """The response type the client takes: 'json', 'sse' or None (406)."""
    if not accept:
        return "json"
    kinds = {part.split(";")[0].strip().lower() for part in accept.split(",")}
    if kinds & {"application/json", "application/*", "*/*"}:
        return "json"
    if "text/event-stream" in kinds:
        return "sse"
    return None


def check_origin(headers: dict[str, str]) -> None:
    """The spec's DNS-rebinding defence: a browser's Origin must be on the allow-list."""
    origin = headers.get("origin")
    if origin is not None and not _origin_allowed(origin):
        raise Refusal(403, FORBIDDEN, f"Origin '{origin}' is not allowed (settings.MCP_ALLOWED_ORIGINS).")


def check_envelope(method: str, headers: dict[str, str]) -> str:
    """Raise Refusal for a request the transport does not serve; returns the protocol version in force."""
    check_origin(headers)
    if method != "POST":
        raise Refusal(
            405,
            SERVER_ERROR,
            f"Method Not Allowed: {method}. This server is stateless and serves no event stream; POST JSON-RPC.",
            [("allow", ALLOW)],
        )
    content_type = (headers.get("content-type") or "").split(";")[0].strip().lower()
    if content_type != "application/json":
        raise Refusal(
            415, mcp_types.INVALID_REQUEST, "Unsupported Media Type: send Content-Type: application/json."
        )
    if _accepts(headers.get("accept")) is None:
        raise Refusal(
            406, mcp_types.INVALID_REQUEST, "Not Acceptable: accept application/json (or text/event-stream)."
        )
    version = headers.get("mcp-protocol-version")
    if version is None:
        return ASSUMED_PROTOCOL_VERSION
    if version not in SUPPORTED_PROTOCOL_VERSIONS:
        raise Refusal(
            400,
            mcp_types.INVALID_REQUEST,
            f"Unsupported MCP-Protocol-Version '{version}'; supported: {', '.join(SUPPORTED_PROTOCOL_VERSIONS)}.",
        )
    return version


def parse_body(body: bytes) -> Any:
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        # orjson refuses lone surrogates ("\ud800"), which are valid JSON; the tool layer refuses them
        # with a message naming the argument, so parse them with the standard library.
        try:
            payload = json.loads(body)
        except (ValueError, RecursionError):
            raise Refusal(400, mcp_types.PARSE_ERROR, "Parse error: the body is not valid JSON.") from None
    if _too_deep(payload):
        raise Refusal(
            400, mcp_types.INVALID_REQUEST, f"Invalid Request: JSON nested deeper than {MAX_JSON_DEPTH} levels."
        )
    return payload


def _too_deep(payload: Any) -> bool:
    stack = [(payload, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        if depth > MAX_JSON_DEPTH:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False


# --- identity: cached token lookup ----------------------------------------------------------------------

_token_cache: dict[str, tuple[float, Any]] = {}
_TOKEN_CACHE_MAX = 10_000


def token_cache_seconds() -> float:
    return float(getattr(settings, "MCP_TOKEN_CACHE_SECONDS", 5))


def bearer_token(headers: dict[str, str]) -> str:
    header = headers.get("authorization")
    if not header:
        raise Refusal(
            401,
            UNAUTHORIZED,
            "Not authenticated: send 'Authorization: Bearer <agent token>'.",
            [("www-authenticate", 'Bearer realm="omoios"')],
        )
    parts = header.split()
    if len(parts) != 2 or parts[0].lower() != "bearer":
        raise _invalid_token("Malformed Authorization header: send 'Authorization: Bearer <agent token>'.")
    return parts[1]


def _invalid_token(message: str) -> Refusal:
    return Refusal(401, UNAUTHORIZED, message, [("www-authenticate", 'Bearer realm="omoios", error="invalid_token"')])


def cached_agent(raw_token: str):
    """A copy of the token's agent if it was looked up less than MCP_TOKEN_CACHE_SECONDS ago, else None."""
    entry = _token_cache.get(raw_token)
    if entry is None or entry[0] < time.monotonic():
        return None
    return copy.copy(entry[1])  # each call gets its own instance: services may save fields on it


def authenticate(raw_token: str):
    """The token's agent (database lookup, in a worker thread). Raises Refusal(401) for a dead token."""
    agent = agent_for_token(raw_token=raw_token)
    if agent is not None:
        # Its workflows too, so the calls in the next MCP_TOKEN_CACHE_SECONDS ask no membership query
        # (a removed membership, like a revoked token, is refused once the entry lapses).
        agent = agent_with_membership(agent)
        agent_token_mark_used(raw_token=raw_token)  # "last seen" on the agents page; one write a minute at most
    if agent is None:
        _token_cache.pop(raw_token, None)
        raise _invalid_token(
            "Unknown, expired or revoked agent token. Ask an operator to run "
            "`manage.py create_agent <agent_id> --workflow <slug>` for a new one."
        )
    seconds = token_cache_seconds()
    if seconds > 0:
        if len(_token_cache) >= _TOKEN_CACHE_MAX:
            _token_cache.clear()
        _token_cache[raw_token] = (time.monotonic() + seconds, copy.copy(agent))
    return agent


def forget_cached_tokens() -> None:
    _token_cache.clear()


class _ThrottleRequest:
    """What DRF's SimpleRateThrottle reads from a request."""

    def __init__(self, user, client: str):
        self.user = user
        self.META = {"REMOTE_ADDR": client}


def check_rate(agent, client: str) -> None:
    """MCP_RATE_LIMIT per agent. On Redis: two window counters in one pipelined round trip
    (`_redis_window_check`); in process memory (or while Redis is down): DRF's throttle."""
    from django.core.cache import caches

    from omoi_site.outages import redis_throttle
    from omoi_site.throttle_cache import FailOpenRedisCache

    cache = caches[getattr(settings, "THROTTLE_CACHE_ALIAS", "default")]
    if isinstance(cache, FailOpenRedisCache) and not redis_throttle.should_skip():
        try:
            wait = _redis_window_check(cache, agent.agent_id, time.time())
        except Exception as error:  # redis-py's connection errors: fail open to the per-process counters
            if isinstance(error, (ValueError, TypeError)):
                raise
            redis_throttle.failed(error)
        else:
            redis_throttle.succeeded()
            if wait is not None:
                _refuse_rate(wait)
            return
    _check_rate_drf(agent, client)


def _rate_limit() -> tuple[int, int]:
    from rest_framework.throttling import SimpleRateThrottle

    count, seconds = SimpleRateThrottle.parse_rate(None, settings.MCP_RATE_LIMIT)
    return count, seconds


def _redis_window_check(cache, agent_id: str, now: float) -> float | None:
    """Count this call; None if it is within the limit, else the seconds to wait (and it is not counted).

    A sliding window estimated from fixed windows: calls in this window plus the previous window's calls
    weighted by how much of it still lies within the last `seconds`. One pipelined round trip (INCR,
    EXPIRE, GET) whatever the rate — DRF's throttle reads and rewrites a pickled list of every call's
    timestamp in the window (two round trips, and O(limit) work per call)."""
    window = _RateWindow(cache, agent_id, now)
    client = cache._cache.get_client(window.current, write=True)
    count, _, earlier = window.queue(client.pipeline(transaction=False)).execute()
    wait = window.wait(count, earlier)
    if wait is not None:
        client.decr(window.current)  # a refused call does not count (as with DRF's throttle)
    return wait


class _RateWindow:
    """One call's view of the two window counters (shared by the thread and the event-loop paths)."""

    def __init__(self, cache, agent_id: str, now: float):
        self.limit, self.seconds = _rate_limit()
        index, self.offset = divmod(now, self.seconds)
        self.current = cache.make_and_validate_key(f"mcp-rate:{agent_id}:{int(index)}")
        self.previous = cache.make_and_validate_key(f"mcp-rate:{agent_id}:{int(index) - 1}")

    def queue(self, pipeline):
        return pipeline.incr(self.current).expire(self.current, 2 * self.seconds).get(self.previous)

    def wait(self, count: int, earlier) -> float | None:
        limit, seconds, offset = self.limit, self.seconds, self.offset
        earlier = int(earlier or 0)
        if earlier * (1 - offset / seconds) + count <= limit:
            return None
        count -= 1  # this call, which is refused and uncounted
        if earlier and count + 1 <= limit:  # the previous window's weight must fall to (limit - count - 1) / earlier
            return max(1.0, (1 - (limit - count - 1) / earlier) * seconds - offset)
        return max(1.0, seconds - offset)


_async_clients: dict = {}


async def check_rate_in_loop(agent) -> bool:
    """The Redis rate check without a thread hop (for calls that run no tool: ping, tools/list, …).
    False when it cannot decide here (counters in memory, Redis down): the caller hops to a thread."""
    import redis.asyncio as redis_asyncio
    from django.core.cache import caches

    from omoi_site.outages import redis_throttle
    from omoi_site.throttle_cache import FailOpenRedisCache

    cache = caches[getattr(settings, "THROTTLE_CACHE_ALIAS", "default")]
    if not isinstance(cache, FailOpenRedisCache) or redis_throttle.should_skip():
        return False
    loop = asyncio.get_running_loop()
    url = cache._cache._servers[0]
    client = _async_clients.get((loop, url))
    if client is None:  # one client (and connection pool) per event loop, like channels-redis
        client = redis_asyncio.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=1.0)
        _async_clients[(loop, url)] = client
    window = _RateWindow(cache, agent.agent_id, time.time())
    try:
        count, _, earlier = await window.queue(client.pipeline(transaction=False)).execute()
        wait = window.wait(count, earlier)
        if wait is not None:
            await client.decr(window.current)
    except Exception as error:  # connection errors: the thread path fails open to the per-process counters
        if isinstance(error, (ValueError, TypeError)):
            raise
        redis_throttle.failed(error)
        return False
    redis_throttle.succeeded()
    if wait is not None:
        _refuse_rate(wait)
    return True


def _refuse_rate(wait: float) -> None:
    seconds = max(1, int(wait + 0.999))
    raise Refusal(
        429,
        RATE_LIMITED,
        f"Rate limit exceeded (MCP_RATE_LIMIT {settings.MCP_RATE_LIMIT}); retry in {seconds} seconds.",
        [("retry-after", str(seconds))],
    )


def _check_rate_drf(agent, client: str) -> None:
    from omoi_site.api_support import McpRateThrottle

    throttle = McpRateThrottle()
    if not throttle.allow_request(_ThrottleRequest(agent, client), None):
        wait = throttle.wait()
        _refuse_rate(wait if wait is not None else 1)


def _throttle_is_local() -> bool:
    from django.core.cache import caches

    backend = type(caches[getattr(settings, "THROTTLE_CACHE_ALIAS", "default")]).__name__
    return backend == "LocMemCache"


# --- the one thread hop ---------------------------------------------------------------------------------

_executor: ThreadPoolExecutor | None = None
_executor_lock = threading.Lock()


def executor() -> ThreadPoolExecutor:
    global _executor
    if _executor is None:
        with _executor_lock:
            if _executor is None:
                size = max(4, int(getattr(settings, "DATABASE_POOL_MAX_SIZE", 0) or 0) or 16)
                _executor = ThreadPoolExecutor(max_workers=size, thread_name_prefix="mcp")
    return _executor


def _in_thread(function, *args):
    """Run `function` in a worker thread; its database connection goes back to the pool afterwards."""
    from django.db import connections

    try:
        return function(*args)
    finally:
        connections.close_all()


async def hop(function, *args):
    loop = asyncio.get_running_loop()
    context = contextvars.copy_context()
    return await loop.run_in_executor(executor(), context.run, _in_thread, function, *args)


def _identify(raw_token: str, client: str, agent):
    """In the worker thread: resolve the token unless it was cached, then apply the rate limit."""
    from django.db import DatabaseError

    try:
        if agent is None:
            agent = authenticate(raw_token)
        check_rate(agent, client)
        return agent
    except DatabaseError as error:
        if is_database_unavailable(error):
            raise Refusal(503, SERVER_ERROR, DATABASE_UNAVAILABLE, [("retry-after", "2")]) from None
        raise


def _call_tool_in_thread(raw_token: str, client: str, agent, name: str, arguments: Any):

    agent = _identify(raw_token, client, agent)
    return call_tool_sync(agent, name, arguments)


# --- JSON-RPC -------------------------------------------------------------------------------------------


class Call:
    """One HTTP request's context: its token, cached agent, client address and negotiated version."""

    def __init__(self, raw_token: str, client: str, version: str):
        self.raw_token, self.client, self.version = raw_token, client, version
        self.agent = cached_agent(raw_token)
        self.identified = False

    async def identify(self) -> None:
        """For calls that run no tool: the token and rate limit, in the loop when nothing blocks."""
        if self.identified:
            return
        if self.agent is not None and _throttle_is_local():
            check_rate(self.agent, self.client)
        elif self.agent is None or not await check_rate_in_loop(self.agent):
            self.agent = await hop(_identify, self.raw_token, self.client, self.agent)
        self.identified = True


def _params_error(error: ValidationError) -> str:
    parts = []
    for item in error.errors(include_url=False, include_input=False)[:3]:
        location = ".".join(str(part) for part in item["loc"][1:] if part != "params") or "params"
        parts.append(f"{location}: {item['msg']}")
    return "Invalid params: " + "; ".join(parts) + "."


_tools_list_result: bytes | None = None
_initialize_results: dict[str, bytes] = {}


def tools_list_result() -> bytes:
    """tools/list's result, built from the server object's registered handler once per process."""
    global _tools_list_result
    if _tools_list_result is None:

        tools = [spec.as_mcp_tool() for spec in load_tools().values()]
        result = mcp_types.ListToolsResult(tools=tools)
        _tools_list_result = dumps(result.model_dump(by_alias=True, mode="json", exclude_none=True))
    return _tools_list_result


def initialize_result(requested: str) -> bytes:
    version = requested if requested in SUPPORTED_PROTOCOL_VERSIONS else mcp_types.LATEST_PROTOCOL_VERSION
    cached = _initialize_results.get(version)
    if cached is None:

        result = mcp_types.InitializeResult(
            protocolVersion=version,
            capabilities=mcp_types.ServerCapabilities(tools=mcp_types.ToolsCapability(listChanged=False)),
            serverInfo=mcp_types.Implementation(name=SERVER_NAME, version=SERVER_VERSION),
            instructions=SERVER_INSTRUCTIONS,
        )
        cached = dumps(result.model_dump(by_alias=True, mode="json", exclude_none=True))
        _initialize_results[version] = cached
    return cached


def _result_bytes(request_id: Any, result: bytes) -> bytes:
    return b'{"jsonrpc":"2.0","id":' + dumps(request_id) + b',"result":' + result + b"}"


async def handle_message(message: Any, call: Call, *, in_batch: bool) -> tuple[int, bytes | None]:
    """One JSON-RPC message → (HTTP status it implies, response bytes or None for notifications)."""
    if not isinstance(message, dict):
        return 400, dumps(error_message(None, mcp_types.INVALID_REQUEST, "Invalid Request: a message must be a JSON object."))
    if "method" not in message:
        if "id" in message and ("result" in message or "error" in message):
            return 202, None  # a client's response to a server request: accepted (we send none)
        return 400, dumps(error_message(None, mcp_types.INVALID_REQUEST, "Invalid Request: 'method' is missing."))
    if message.get("jsonrpc") != "2.0":
        return 400, dumps(error_message(None, mcp_types.INVALID_REQUEST, "Invalid Request: 'jsonrpc' must be \"2.0\"."))
    if "id" not in message:
        try:
            mcp_types.JSONRPCNotification.model_validate(message)
        except ValidationError:
            return 400, dumps(error_message(None, mcp_types.INVALID_REQUEST, "Invalid Request: malformed notification."))
        await call.identify()
        return 202, None
    request_id = message["id"]
    if request_id is None or isinstance(request_id, bool) or not isinstance(request_id, (int, str)):
        return 400, dumps(
            error_message(None, mcp_types.INVALID_REQUEST, "Invalid Request: 'id' must be a string or an integer (null is not allowed).")
        )
    try:
        envelope = mcp_types.JSONRPCRequest.model_validate(message)
    except ValidationError:
        return 400, dumps(error_message(None, mcp_types.INVALID_REQUEST, "Invalid Request: 'method' must be a string and 'params' an object."))
    request_type = _REQUEST_TYPES.get(envelope.method)
    if request_type is None:
        await call.identify()
        return 200, dumps(
            error_message(request_id, mcp_types.METHOD_NOT_FOUND, f"Method not found: {envelope.method!r}. This server serves {SUPPORTED_METHODS}.")
        )
    if in_batch and envelope.method == "initialize":
        return 200, dumps(error_message(request_id, mcp_types.INVALID_REQUEST, "Invalid Request: initialize must not be part of a batch."))
    body = {"method": envelope.method}
    if envelope.params is not None:
        body["params"] = envelope.params
    try:
        request = request_type.model_validate(body)
    except ValidationError as error:
        return 200, dumps(error_message(request_id, mcp_types.INVALID_PARAMS, _params_error(error)))
    if envelope.method == "tools/call":
        call.identified = True
        is_error, text = await hop(
            _call_tool_in_thread, call.raw_token, call.client, call.agent, request.params.name, request.params.arguments or {}
        )
        result = {"content": [{"type": "text", "text": text}], "isError": is_error}
        return 200, _result_bytes(request_id, dumps(result))
    await call.identify()
    if envelope.method == "ping":
        return 200, _result_bytes(request_id, b"{}")
    if envelope.method == "tools/list":
        return 200, _result_bytes(request_id, tools_list_result())
    return 200, _result_bytes(request_id, initialize_result(request.params.protocolVersion))


async def handle_post(headers: dict[str, str], body: bytes, client: str) -> Reply:
    """A POST whose envelope passed: authenticate, parse, dispatch, render.

    Identity comes before any judgement of the body (a bad token is 401 whatever it sends), but a valid
    token not yet cached is looked up in the same thread hop as the tool it calls."""
    version = check_envelope("POST", headers)
    call = Call(bearer_token(headers), client, version)
    try:
        payload = parse_body(body)
        if isinstance(payload, list):
            if version not in BATCH_PROTOCOL_VERSIONS:
                raise Refusal(
                    400,
                    mcp_types.INVALID_REQUEST,
                    f"Invalid Request: JSON-RPC batches are not part of MCP protocol version {version}; "
                    "send one message per POST.",
                )
            if not payload:
                raise Refusal(400, mcp_types.INVALID_REQUEST, "Invalid Request: an empty batch.")
    except Refusal:
        await call.identify()
        raise
    if isinstance(payload, list):
        responses = []
        for message in payload:
            _status, response = await handle_message(message, call, in_batch=True)
            if response is not None:
                responses.append(response)
        await call.identify()
        if not responses:
            return Reply(202)
        return Reply(200, b"[" + b",".join(responses) + b"]")
    status, response = await handle_message(payload, call, in_batch=False)
    if not call.identified:
        await call.identify()
    return Reply(status, response or b"")


async def handle(method: str, headers: dict[str, str], body: bytes, client: str) -> Reply:
    """The whole transport for one HTTP request; never raises."""
    try:
        if method == "DELETE":
            check_origin(headers)
            return Reply(200)  # stateless: there is no session to end
        if method != "POST":
            check_envelope(method, headers)
        return await handle_post(headers, body, client)
    except Refusal as refusal:
        return refusal_reply(refusal)
    except Exception:
        logger.exception("MCP transport failure")
        return Reply(500, dumps(error_message(None, mcp_types.INTERNAL_ERROR, "Internal error in the MCP transport.")))


def _finish(reply: Reply, accept: str | None) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    headers = [(name.encode(), value.encode()) for name, value in reply.headers]
    body = reply.body
    if body:
        if reply.status < 300 and _accepts(accept) == "sse":
            body = b"event: message\ndata: " + body + b"\n\n"
            headers.append((b"content-type", b"text/event-stream"))
        else:
            headers.append((b"content-type", b"application/json"))
    headers.append((b"content-length", str(len(body)).encode()))
    headers.append((b"cache-control", b"no-store"))
    headers.append((b"x-content-type-options", b"nosniff"))
    return reply.status, headers, body


# --- ASGI -------------------------------------------------------------------------------------------------


async def asgi_app(scope, receive, send) -> None:
    """The ASGI callable for `/mcp` and `/mcp/`."""
    headers: dict[str, str] = {}
    for raw_name, raw_value in scope.get("headers", ()):
        name = raw_name.decode("latin-1").lower()
        value = raw_value.decode("latin-1")
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    method = scope.get("method", "GET").upper()
    body = b""
    reply: Reply | None = None
    length = headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > MAX_BODY_BYTES:
        reply = _too_large()
    else:
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                reply = _too_large()
                break
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
    if reply is None:
        client = scope.get("client") or ("", 0)
        reply = await handle(method, headers, body, client[0] or "")
    status, response_headers, response_body = _finish(reply, headers.get("accept"))
    await send({"type": "http.response.start", "status": status, "headers": response_headers})
    await send({"type": "http.response.body", "body": response_body})


def _too_large() -> Reply:
    return refusal_reply(
        Refusal(413, mcp_types.INVALID_REQUEST, f"Payload Too Large: the body exceeds {MAX_BODY_BYTES} bytes (1 MiB).")
    )


def with_mcp(django_application, paths: tuple[str, ...] = ("/mcp", "/mcp/")):
    """Serve `paths` with the MCP transport and everything else with `django_application`."""

    async def application(scope, receive, send):
        if scope["type"] == "http" and scope.get("path") in paths:
            await asgi_app(scope, receive, send)
        else:
            await django_application(scope, receive, send)

    return application


class OmoiMCPView(MCPServerStreamableHttpView):
    """django-mcp-server's view class bound to our server object, answered by our transport: `as_view()`
    returns one async Django view that hands the request to `omoi_site.mcp_transport.handle`.

    Under ASGI, `omoi_site.asgi` routes `/mcp` to the transport before Django's handler (no middleware,
    no extra thread hops); this view serves the same answers under WSGI and Django's test client."""

    mcp_server = omoi_mcp_server

    @classmethod
    def as_view(cls, **initkwargs):
        async def view(request):
            headers = {name.lower(): value for name, value in request.headers.items()}
            body = request.body if len(request.body) <= MAX_BODY_BYTES else None
            if body is None:
                reply = _too_large()
            else:
                reply = await handle(request.method, headers, body, request.META.get("REMOTE_ADDR", ""))
            status, response_headers, content = _finish(reply, headers.get("accept"))
            response = HttpResponse(content, status=status)
            for name, value in response_headers:
                if name != b"content-length":
                    response[name.decode()] = value.decode()
            return response

        return csrf_exempt(view)


mcp_view = OmoiMCPView.as_view()
