"""The MCP door: tool registry, argument validation, identity, error mapping and the `/mcp/` view.

Each app's `mcp.py` declares plain sync functions with `@mcp_tool`. Their signatures (typed with
pydantic `Annotated[..., Field(...)]`) become strict argument models (unknown arguments rejected) and
compact JSON schemas. The first parameter, `caller`, is the authenticated `Agent` and never appears in
the schema. A tool returns a dict; the door renders it as compact JSON text.

Errors: a `DomainError` from a service, or an argument that fails validation, becomes an MCP tool error
(`isError: true`) whose text names the argument and the rule. Anything unexpected is logged with a
reference id and reported as an internal error; the transaction around the call is rolled back.

We reuse django-mcp-server for the streamable-HTTP transport inside Django and DRF authentication, but
override FastMCP's `list_tools` / `call_tool`: FastMCP's own validation messages carry pydantic
boilerplate (URLs, input dumps) and it renders results as indented JSON, which costs LLM tokens.
"""

from __future__ import annotations

import importlib
import inspect
import json
import logging
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

from asgiref.sync import sync_to_async
from django.db import IntegrityError, transaction
from django.http import HttpResponse
from django.views.decorators.csrf import csrf_exempt
from mcp import types as mcp_types
from mcp_server.djangomcp import DjangoMCP, django_request_ctx
from mcp_server.views import MCPServerStreamableHttpView
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model
from rest_framework.permissions import IsAuthenticated

from agents.authentication import AgentTokenAuthentication
from omoi_site.api_support import McpRateThrottle
from omoi_site.domain import DomainError

logger = logging.getLogger(__name__)

TOOL_MODULES = ("tickets.mcp", "tasks.mcp", "collaboration.mcp", "agents.mcp")
MAX_JSON_ARGUMENT_BYTES = 32_000

IdempotencyKey = Annotated[
    str | None, Field(default=None, min_length=1, max_length=200, description="Retry-safe key: same key → first result")
]


@dataclass
class ToolSpec:
    name: str
    function: Callable[..., dict]
    arguments_model: type[BaseModel]
    description: str
    read_only: bool
    destructive: bool
    accepts_idempotency_key: bool

    def input_schema(self) -> dict:
        return compact_schema(self.arguments_model.model_json_schema())

    def as_mcp_tool(self) -> mcp_types.Tool:
        return mcp_types.Tool(
            name=self.name,
            description=self.description,
            inputSchema=self.input_schema(),
            annotations=mcp_types.ToolAnnotations(
                readOnlyHint=self.read_only,
                destructiveHint=self.destructive if not self.read_only else None,
                idempotentHint=True if self.read_only else None,
                openWorldHint=False,
            ),
        )


TOOLS: dict[str, ToolSpec] = {}
_tools_loaded = threading.Lock()
_loaded = False


def mcp_tool(*, read_only: bool = False, destructive: bool = False, name: str | None = None):
    """Register a function as an MCP tool. Its docstring is the description an LLM reads."""

    def decorator(function: Callable[..., dict]) -> Callable[..., dict]:
        tool_name = name or function.__name__
        parameters = list(inspect.signature(function, eval_str=True).parameters.values())
        if not parameters or parameters[0].name != "caller":
            raise TypeError(f"MCP tool {tool_name} must take `caller` (the authenticated agent) first")
        fields: dict[str, Any] = {}
        for parameter in parameters[1:]:
            default = ... if parameter.default is inspect.Parameter.empty else parameter.default
            fields[parameter.name] = (parameter.annotation, default)
        accepts_key = not read_only
        if accepts_key:
            fields["idempotency_key"] = (IdempotencyKey, None)
        model = create_model(
            f"{tool_name}_arguments",
            __config__=ConfigDict(extra="forbid", str_strip_whitespace=False),
            **fields,
        )
        description = inspect.cleandoc(function.__doc__ or "").strip()
        if not description:
            raise TypeError(f"MCP tool {tool_name} needs a docstring: it is what the LLM reads")
        TOOLS[tool_name] = ToolSpec(
            name=tool_name,
            function=function,
            arguments_model=model,
            description=description,
            read_only=read_only,
            destructive=destructive,
            accepts_idempotency_key=accepts_key,
        )
        return function

    return decorator


def load_tools() -> dict[str, ToolSpec]:
    global _loaded
    if not _loaded:
        with _tools_loaded:
            if not _loaded:
                for module in TOOL_MODULES:
                    importlib.import_module(module)
                _loaded = True
    return TOOLS


# --- schemas ---------------------------------------------------------------------------------------


def compact_schema(schema: dict) -> dict:
    """Shrink pydantic's JSON schema for LLM consumption: no titles, Optional[X] → X, inline $defs."""
    definitions = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                target = definitions[node["$ref"].split("/")[-1]]
                merged = {**resolve(dict(target)), **{k: v for k, v in node.items() if k != "$ref"}}
                return resolve(merged)
            node = {
                k: ({name: resolve(prop) for name, prop in v.items()} if k == "properties" else resolve(v))
                for k, v in node.items()
                if k != "title"
            }
            any_of = node.get("anyOf")
            if isinstance(any_of, list):
                non_null = [option for option in any_of if option.get("type") != "null"]
                if len(non_null) == 1 and len(non_null) < len(any_of):
                    node.pop("anyOf")
                    node = {**non_null[0], **node}
            if node.get("default", 0) is None:
                node.pop("default")
            return node
        if isinstance(node, list):
            return [resolve(item) for item in node]
        return node

    result = resolve(schema)
    result.pop("additionalProperties", None)
    result["additionalProperties"] = False
    return result


# --- validation messages -----------------------------------------------------------------------------


def describe_validation_error(tool: ToolSpec, error: ValidationError) -> str:
    allowed = [name for name in tool.arguments_model.model_fields]
    lines = []
    for item in error.errors(include_url=False, include_context=True, include_input=False)[:5]:
        location = ".".join(str(part) for part in item["loc"]) or "arguments"
        kind = item["type"]
        if kind == "extra_forbidden":
            lines.append(f"Unknown argument '{location}'. Allowed: {', '.join(allowed)}.")
        elif kind == "missing":
            lines.append(f"Missing required argument '{location}'.")
        else:
            lines.append(f"Argument '{location}': {item['msg']}.")
    return f"Invalid arguments for {tool.name}: " + " ".join(lines)


# --- execution --------------------------------------------------------------------------------------


def _json_dumps(payload: Any) -> str:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False, default=str)


def _find_nul(value: Any, path: str) -> str | None:
    """PostgreSQL text cannot hold NUL characters; find one anywhere in the arguments (keys included)."""
    if isinstance(value, str):
        return path if "\x00" in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            found = _find_nul(key, path) or _find_nul(item, f"{path}.{key}" if path else str(key))
            if found:
                return found
    if isinstance(value, list):
        for index, item in enumerate(value):
            found = _find_nul(item, f"{path}[{index}]")
            if found:
                return found
    return None


def _check_argument_sizes(arguments: dict) -> str | None:
    for key, value in arguments.items():
        if isinstance(value, (dict, list)) and len(_json_dumps(value)) > MAX_JSON_ARGUMENT_BYTES:
            return f"Argument '{key}' is larger than {MAX_JSON_ARGUMENT_BYTES} bytes of JSON; send a summary instead."
    return None


def run_tool(tool: ToolSpec, caller, arguments: dict[str, Any]) -> tuple[bool, str]:
    """Validate and execute one tool call as `caller`. Returns (is_error, text). Never raises."""
    if not isinstance(arguments, dict):
        return True, f"Arguments for {tool.name} must be a JSON object."
    oversize = _check_argument_sizes(arguments)
    if oversize:
        return True, oversize
    nul_at = _find_nul(arguments, "")
    if nul_at:
        return True, f"Argument '{nul_at}' contains a NUL character (\\x00), which cannot be stored; remove it."
    try:
        validated = tool.arguments_model.model_validate(arguments)
    except ValidationError as error:
        return True, describe_validation_error(tool, error)
    values = {name: getattr(validated, name) for name in tool.arguments_model.model_fields}
    idempotency_key = values.pop("idempotency_key", None)
    try:
        if idempotency_key:
            result = _run_idempotent(tool, caller, idempotency_key, values)
        else:
            with transaction.atomic():
                result = tool.function(caller, **values)
        return False, _json_dumps(result)
    except DomainError as error:
        return True, error.message
    except Exception:
        reference = uuid.uuid4().hex[:12]
        logger.exception("MCP tool %s failed (ref %s)", tool.name, reference)
        return True, (
            f"Internal error in {tool.name} (ref {reference}); nothing was changed. "
            "Retry once; if it repeats, report the ref to an operator."
        )


def _run_idempotent(tool: ToolSpec, caller, key: str, values: dict) -> Any:
    from agents.models import IdempotencyRecord

    existing = IdempotencyRecord.objects.filter(agent=caller, key=key).first()
    if existing is not None:
        return _replayed(tool, existing)
    try:
        with transaction.atomic():
            result = tool.function(caller, **values)
            IdempotencyRecord.objects.create(
                agent=caller, key=key, tool_name=tool.name, result=json.loads(_json_dumps(result))
            )
        return result
    except IntegrityError:
        existing = IdempotencyRecord.objects.filter(agent=caller, key=key).first()
        if existing is None:
            raise
        return _replayed(tool, existing)


def _replayed(tool: ToolSpec, record) -> Any:
    if record.tool_name != tool.name:
        raise DomainError(
            f"idempotency_key '{record.key}' was already used for {record.tool_name}; use a new key for {tool.name}."
        )
    return record.result


class OmoiMCP(DjangoMCP):
    """django-mcp-server's transport with OmoiOS's registry, validation and error rendering."""

    async def list_tools(self) -> list[mcp_types.Tool]:
        return [spec.as_mcp_tool() for spec in load_tools().values()]

    async def call_tool(self, name: str, arguments: dict[str, Any]):
        tools = load_tools()
        tool = tools.get(name)
        if tool is None:
            return _result(True, f"Unknown tool '{name}'. Call tools/list to see the {len(tools)} available tools.")
        request = django_request_ctx.get(None)
        caller = getattr(request, "user", None)
        if caller is None or not getattr(caller, "agent_id", None):
            return _result(True, "Not authenticated: send 'Authorization: Bearer <agent token>'.")
        is_error, text = await sync_to_async(run_tool, thread_sensitive=True)(tool, caller, arguments or {})
        return _result(is_error, text)


def _result(is_error: bool, text: str) -> mcp_types.CallToolResult:
    return mcp_types.CallToolResult(content=[mcp_types.TextContent(type="text", text=text)], isError=is_error)


SERVER_INSTRUCTIONS = (
    "OmoiOS coordinates a fleet of agents. Tickets (TKT-n) hold work and blockers; tasks (TSK-n) are claimed "
    "under a lease (claim_next_task, heartbeat_task, update_task_status). Act only as your own agent_id. "
    "Search before you create a ticket. Errors say what to change."
)
omoi_mcp_server = OmoiMCP(name="omoios", instructions=SERVER_INSTRUCTIONS, stateless=True)


class OmoiMCPView(MCPServerStreamableHttpView):
    """POST = JSON-RPC over streamable HTTP (stateless). GET would open the optional server→client stream,
    which django-mcp-server cannot serve (it spins forever), so it is answered 405."""

    mcp_server = omoi_mcp_server
    authentication_classes = [AgentTokenAuthentication]
    permission_classes = [IsAuthenticated]
    throttle_classes = [McpRateThrottle]  # per-token limit, settings.MCP_RATE_LIMIT; 429 + Retry-After

    def get(self, request, *args, **kwargs):
        return HttpResponse(status=405, headers={"Allow": "POST, DELETE"}, content=b"GET is not supported; POST JSON-RPC.")

    def delete(self, request, *args, **kwargs):
        return HttpResponse(status=200)


mcp_view = csrf_exempt(OmoiMCPView.as_view())


# --- shared argument types and the identity rule (used by every app's mcp.py) ------------------------

WorkflowSlug = Annotated[str, Field(min_length=1, max_length=100, description="workflow slug")]
AgentId = Annotated[str, Field(min_length=1, max_length=100)]
TicketId = Annotated[str, Field(min_length=1, max_length=30, description="e.g. TKT-12")]
TaskId = Annotated[str, Field(min_length=1, max_length=30, description="e.g. TSK-7")]


def act_as(caller, agent_id: str, *, argument: str = "agent_id") -> None:
    """The acting-agent argument must name the authenticated agent: an agent acts only as itself."""
    from omoi_site.domain import PermissionDenied

    if agent_id != caller.agent_id:
        raise PermissionDenied(
            f"{argument} '{agent_id}' is not you: your token belongs to '{caller.agent_id}'. Pass {argument}='{caller.agent_id}'."
        )


