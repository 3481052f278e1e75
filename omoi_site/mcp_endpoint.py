"""The MCP door: tool registry, argument validation, identity and error mapping (the transport and the `/mcp/`
view are in `omoi_site.mcp_transport`).

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
from typing import Annotated, Any, Literal

from asgiref.sync import sync_to_async
from django.db import IntegrityError, transaction
from mcp import types as mcp_types
from mcp_server.djangomcp import DjangoMCP, django_request_ctx
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, create_model

from agents.models import IdempotencyRecord
from omoi_site.constants import Priority
from omoi_site.domain import DomainError

logger = logging.getLogger(__name__)

TOOL_MODULES = ("tickets.mcp", "tasks.mcp", "collaboration.mcp", "agents.mcp")
MAX_JSON_ARGUMENT_BYTES = 32_000



def unadvertised_max_length(limit: int) -> AfterValidator:
    """A length backstop that is enforced but kept out of the advertised schema. Used for the ids and
    keys nearly every tool takes: their bare maxLength was ~4 tokens per tool in tools/list (budget 5,000)
    and tells an LLM nothing it plans for (ids come from earlier results)."""

    def check(value):
        if isinstance(value, str) and len(value) > limit:
            raise ValueError(f"at most {limit} characters")
        return value

    return AfterValidator(check)


IdempotencyKey = Annotated[str | None, Field(default=None, min_length=1), unadvertised_max_length(200)]


@dataclass
class ToolSpec:
    name: str
    function: Callable[..., dict]
    arguments_model: type[BaseModel]
    description: str
    read_only: bool
    destructive: bool
    # Repeat-safe by nature: no idempotency_key argument and no transaction of the door's own (a write it may
    # make, like get_messages' read receipts, is one service with its own transaction).
    idempotent: bool
    accepts_idempotency_key: bool
    # Work done before the call's transaction opens (e.g. an embedding over HTTP), so that no door holds a
    # transaction open while it waits on an outside service. Advice only: its failure is logged, not raised.
    prepare: Callable[..., None] | None = None

    def input_schema(self) -> dict:
        return compact_schema(self.arguments_model.model_json_schema())

    def as_mcp_tool(self) -> mcp_types.Tool:
        return mcp_types.Tool(
            name=self.name,
            description=self.description,
            inputSchema=self.input_schema(),
            # Only hints that differ from the spec's defaults (readOnly false, destructive true,
            # idempotent false): every token of tools/list is paid in every prompt. (openWorldHint is left
            # at its default too; these tools act on OmoiOS's own records only.)
            annotations=mcp_types.ToolAnnotations(
                readOnlyHint=True if self.read_only else None,
                destructiveHint=self.destructive if not self.read_only else None,
                idempotentHint=True if self.idempotent else None,
            ),
        )


TOOLS: dict[str, ToolSpec] = {}
_tools_loaded = threading.Lock()
_loaded = False


def mcp_tool(*, read_only: bool = False, idempotent: bool = False, destructive: bool = False, name: str | None = None,
             prepare: Callable[..., None] | None = None):
    """Register a function as an MCP tool. Its docstring is the description an LLM reads. `read_only`: it
    changes nothing; `idempotent`: it may write, but repeating it changes nothing more (read-only implies it).
    `prepare(caller, **arguments)` runs first, outside any transaction (warm what needs an outside service)."""
    idempotent = idempotent or read_only

    def decorator(function: Callable[..., dict]) -> Callable[..., dict]:
        tool_name = name or function.__name__
        parameters = list(inspect.signature(function, eval_str=True).parameters.values())
        if not parameters or parameters[0].name != "caller":
            raise TypeError(f"MCP tool {tool_name} must take `caller` (the authenticated agent) first")
        fields: dict[str, Any] = {}
        for parameter in parameters[1:]:
            default = ... if parameter.default is inspect.Parameter.empty else parameter.default
            fields[parameter.name] = (parameter.annotation, default)
        accepts_key = not idempotent
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
            idempotent=idempotent,
            destructive=destructive,
            accepts_idempotency_key=accepts_key,
            prepare=prepare,
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
    for prop in result.get("properties", {}).values():
        _describe_limits(prop)
    return result


def _describe_limits(prop: dict) -> None:
    """Write a property's limits into its description as well: some agent SDKs (OpenHands) strip
    minLength/maximum/maxItems before the LLM sees a schema, and then the model learns them by failing.
    A non-empty string (minLength 1) is implied and left out of the advertised schema."""
    if prop.get("minLength") == 1:
        prop.pop("minLength")
    notes = []
    low, high = prop.get("minLength"), prop.get("maxLength")
    if low is not None:  # (a bare maxLength is a backstop against abuse, not something to plan for)
        notes.append(f"{low}-{high} chars" if high is not None else f"min {low} chars")
    low, high = prop.get("minimum"), prop.get("maximum")
    if high is not None:
        notes.append(f"{low if low is not None else 'up to'}-{high}" if low is not None else f"max {high}")
    elif low is not None and low != 0:
        notes.append(f"min {low}")
    if prop.get("maxItems") is not None:
        notes.append(f"max {prop['maxItems']} items")
    items = prop.get("items")
    if isinstance(items, dict):
        if items.get("minLength") == 1:
            items.pop("minLength")
    if notes:
        text = ", ".join(notes)
        description = prop.get("description")
        if not description or text not in description:
            prop["description"] = f"{description} ({text})" if description else text


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


MAX_ARGUMENT_DEPTH = 32
INT64 = 2**63


def find_unstorable(value: Any) -> str | None:
    """Why the arguments cannot be stored, or None. PostgreSQL text holds neither NUL characters nor lone
    UTF-16 surrogates, and its integers are 64-bit; nesting is capped so no walk can recurse without end.
    Keys are checked as well as values. Iterative on purpose (no RecursionError on hostile input)."""
    stack: list[tuple[Any, str, int]] = [(value, "", 0)]
    while stack:
        node, path, depth = stack.pop()
        if isinstance(node, str):
            problem = _text_problem(node)
            if problem:
                return f"Argument '{path or 'arguments'}' contains {problem}, which cannot be stored; remove it."
        elif isinstance(node, bool):
            continue
        elif isinstance(node, int):
            if not -INT64 <= node < INT64:
                return f"Argument '{path}' is out of range: integers must fit in 64 bits (below 2^63)."
        elif isinstance(node, (dict, list)):
            if depth >= MAX_ARGUMENT_DEPTH:
                return f"Argument '{path}' is nested deeper than {MAX_ARGUMENT_DEPTH} levels; flatten it."
            if isinstance(node, dict):
                for key, item in node.items():
                    key_text = str(key)
                    problem = _text_problem(key_text)
                    if problem:
                        return f"An argument name under '{path or 'arguments'}' contains {problem}; remove it."
                    stack.append((item, f"{path}.{key_text}" if path else key_text, depth + 1))
            else:
                stack.extend((item, f"{path}[{index}]", depth + 1) for index, item in enumerate(node))
    return None


def _text_problem(text: str) -> str | None:
    if "\x00" in text:
        return "a NUL character (\\x00)"
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return "a lone surrogate (an unpaired \\ud800-\\udfff escape)"
    return None


def _check_argument_sizes(arguments: dict) -> str | None:
    for key, value in arguments.items():
        if isinstance(value, (dict, list)) and len(_json_dumps(value)) > MAX_JSON_ARGUMENT_BYTES:
            return f"Argument '{key}' is larger than {MAX_JSON_ARGUMENT_BYTES} bytes of JSON; send a summary instead."
    return None


def call_tool_sync(caller, name: str, arguments: Any) -> tuple[bool, str]:
    """tools/call for an authenticated agent, in a worker thread: look the tool up and run it."""
    tools = load_tools()
    tool = tools.get(name)
    if tool is None:
        return True, f"Unknown tool '{name}'. Call tools/list to see the {len(tools)} available tools."
    return run_tool(tool, caller, arguments)


def run_tool(tool: ToolSpec, caller, arguments: dict[str, Any]) -> tuple[bool, str]:
    """Validate and execute one tool call as `caller`. Returns (is_error, text). Never raises.

    A serialization failure or deadlock (SQLSTATE 40001/40P01) rolls the call back and runs it once more,
    invisibly; a database that cannot be reached is reported as such, so the agent retries later."""
    from django.db import DatabaseError

    from omoi_site.db_errors import DATABASE_UNAVAILABLE, is_database_unavailable, is_retryable_conflict

    if not isinstance(arguments, dict):
        return True, f"Arguments for {tool.name} must be a JSON object."
    oversize = _check_argument_sizes(arguments)
    if oversize:
        return True, oversize
    unstorable = find_unstorable(arguments)
    if unstorable:
        return True, unstorable
    try:
        validated = tool.arguments_model.model_validate(arguments)
    except ValidationError as error:
        return True, describe_validation_error(tool, error)
    values = {name: getattr(validated, name) for name in tool.arguments_model.model_fields}
    idempotency_key = values.pop("idempotency_key", None)
    if tool.prepare is not None:
        try:
            tool.prepare(caller, **values)
        except Exception:  # advice: the call itself decides what an outside failure means
            logger.warning("MCP tool %s: prepare failed", tool.name, exc_info=True)
    for attempt in (1, 2):
        try:
            if idempotency_key:
                result = _run_idempotent(tool, caller, idempotency_key, values)
            elif tool.idempotent:
                # Reads need no transaction of their own (an idempotent tool's optional write, e.g.
                # get_messages mark_read, is a service with its own); skipping BEGIN/COMMIT saves two round trips.
                result = tool.function(caller, **values)
            else:
                with transaction.atomic():
                    result = tool.function(caller, **values)
            return False, _json_dumps(result)
        except DomainError as error:
            return True, error.message
        except DatabaseError as error:
            if attempt == 1 and is_retryable_conflict(error):
                logger.info("MCP tool %s: %s, retrying once", tool.name, type(error).__name__)
                continue
            if is_database_unavailable(error):
                return True, f"{tool.name}: {DATABASE_UNAVAILABLE}"
            return _internal_error(tool)
        except Exception:
            return _internal_error(tool)
    return _internal_error(tool)  # pragma: no cover  (the loop always returns)


def _internal_error(tool: ToolSpec) -> tuple[bool, str]:
    reference = uuid.uuid4().hex[:12]
    logger.exception("MCP tool %s failed (ref %s)", tool.name, reference)
    return True, (
        f"Internal error in {tool.name} (ref {reference}); nothing was changed. "
        "Retry once; if it repeats, report the ref to an operator."
    )


def _run_idempotent(tool: ToolSpec, caller, key: str, values: dict) -> Any:
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
    """django-mcp-server's server object with OmoiOS's registry, validation and error rendering.

    `/mcp/` is served by `omoi_site.mcp_transport` (stateless, JSON, one thread hop per call); these
    handlers keep the library's own transport consistent with it for anyone who mounts that instead."""

    async def list_tools(self) -> list[mcp_types.Tool]:
        return [spec.as_mcp_tool() for spec in load_tools().values()]

    async def call_tool(self, name: str, arguments: dict[str, Any]):
        request = django_request_ctx.get(None)
        caller = getattr(request, "user", None)
        if caller is None or not getattr(caller, "agent_id", None):
            return _result(True, "Not authenticated: send 'Authorization: Bearer <agent token>'.")
        is_error, text = await sync_to_async(call_tool_sync, thread_sensitive=False)(caller, name, arguments or {})
        return _result(is_error, text)


def _result(is_error: bool, text: str) -> mcp_types.CallToolResult:
    return mcp_types.CallToolResult(content=[mcp_types.TextContent(type="text", text=text)], isError=is_error)


SERVER_INSTRUCTIONS = (
    "OmoiOS coordinates a fleet of agents. Tickets (TKT-n) hold work and blockers; tasks (TSK-n) are claimed "
    "under a lease (claim_next_task, heartbeat_task, update_task_status). Acting-agent arguments default to "
    "you. Search before you create a ticket. Errors say which call fixes them."
)
omoi_mcp_server = OmoiMCP(name="OmoiOS", instructions=SERVER_INSTRUCTIONS, stateless=True)


# --- shared argument types and the identity rule (used by every app's mcp.py) ------------------------

WorkflowSlug = Annotated[str, Field(min_length=1, max_length=100)]
AgentId = Annotated[str, Field(min_length=1, max_length=100)]
# The acting agent: omitted, it is the token's agent; naming another agent is refused (act_as).
ActingAgentId = Annotated[str | None, Field(min_length=1, max_length=100)]
Offset = Annotated[int, Field(ge=0, le=1_000_000)]
TicketId = Annotated[str, Field(min_length=1, description="e.g. TKT-12"), unadvertised_max_length(30)]
TaskId = Annotated[str, Field(min_length=1, description="e.g. TSK-7"), unadvertised_max_length(30)]


def choices_of(text_choices) -> Any:
    """A Literal of a model's TextChoices values: MCP enums come from the models, never a copied list."""
    return Literal[tuple(text_choices.values)]


def _lowercase(value: Any) -> Any:
    return value.strip().lower() if isinstance(value, str) else value


# Tickets and tasks share lowercase priorities; "HIGH" from an older client is read as "high".
PriorityName = Annotated[choices_of(Priority), BeforeValidator(_lowercase)]


def act_as(caller, agent_id: str | None, *, argument: str = "agent_id") -> None:
    """The acting-agent argument, when given, must name the authenticated agent: an agent acts only as
    itself. Omitted (None), it is the token's agent."""
    from omoi_site.domain import PermissionDenied

    if agent_id is not None and agent_id != caller.agent_id:
        raise PermissionDenied(
            f"{argument} '{agent_id}' is not you: your token belongs to '{caller.agent_id}'. "
            f"Omit {argument} or pass {argument}='{caller.agent_id}'."
        )
