"""Typed OpenHands SDK tools for the OmoiOS MCP server: 25 seed tools + 2 meta tools = 27.

An agent gets them with::

    tools = register_mcp_tools_with_agent([Tool(name="terminal")], mcp_url, token)
    agent = Agent(llm=llm, tools=tools)

Each server tool `<name>` has a typed `MCP<Name>Action` (pydantic: required/optional fields, enums as
Literal, the server's length and range limits), and a tool the LLM sees as `mcp__<name>`. Calling it
sends the action's arguments to the server (`tools/call`) through one shared :class:`MCPClient`; the
observation's LLM-visible content is the server's compact JSON, and a tool error comes back with
`is_error=True` and the server's one-line message. `mcp__list_tools` and `mcp__call_tool` reach every
server tool, including the coordination extras (claim_next_task, accept_handoff, …).

Like agents/agent_side/mcp_client.py this module must import without Django: a worker in a sandbox has only httpx
and the OpenHands SDK. `tests/test_mcp_tools.py` compares every action with the live server's schemas.

SDK facts this module relies on (openhands-sdk 1.58):

- The LLM-visible name of a tool is the ToolDefinition class attribute `name`. When a subclass does not
  set it, `__init_subclass__` derives it from the class name (`MCPCreateTicketTool` → `m_c_p_create_ticket`
  style snake case), silently; every tool class here sets `name` explicitly.
- `Agent(tools=[Tool(name=…, params=…)])` resolves specs through the process-wide registry and
  serialises `params` into the conversation state, so params carry a connection id, never the token.
- Action/Observation/ToolDefinition subclasses must be module-level classes with globally unique class
  names (the class name is the `kind` used to deserialise events).
- The SDK adds a `summary` property to every tool schema and a `security_risk` property to every tool
  that is not read-only; it strips `default`, `minLength`/`maxLength`, `minimum`/`maximum`, `pattern`
  from what the LLM sees, so limits the LLM must know are in the field descriptions.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from abc import ABC
from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

import httpx
from openhands.sdk.llm import TextContent
from openhands.sdk.tool import (
    Action,
    Observation,
    Tool,
    ToolAnnotations,
    ToolDefinition,
    ToolExecutor,
    register_tool,
)
from pydantic import Field

from agents.agent_side.mcp_client import MCPClient, MCPError, MCPToolError, RetryPolicy

if TYPE_CHECKING:
    from openhands.sdk.conversation import LocalConversation

__all__ = [
    "MCP_TOOL_NAMES",
    "MCPToolResultObservation",
    "SEED_ACTIONS",
    "mcp_tool_definitions",
    "register_mcp_tools_with_agent",
]

TOOL_PREFIX = "mcp__"
TOKEN_ENVIRONMENT_VARIABLE = "OMOIOS_AGENT_TOKEN"

# --- argument types (mirroring the server's; the drift test keeps them equal) ------------------------------

WorkflowSlug = Annotated[str, Field(min_length=1, max_length=100, description="workflow slug")]
AgentId = Annotated[str, Field(min_length=1, max_length=100)]
# The acting agent: the server defaults it to the token's agent when omitted.
ActingAgentId = Annotated[str | None, Field(default=None, min_length=1, max_length=100)]
# Ids and keys mirror the server's schema, which enforces their length without advertising it
# (omoi_site.mcp_endpoint.unadvertised_max_length): the server refuses an over-long one with a clear error.
TicketId = Annotated[str, Field(min_length=1, description="e.g. TKT-12")]
TaskId = Annotated[str, Field(min_length=1, description="e.g. TSK-7")]
IdempotencyKey = Annotated[str | None, Field(min_length=1, description="reuse on retry")]
CommitSha = Annotated[str, Field(min_length=7, max_length=64, pattern=r"^[0-9a-fA-F]+$")]
Comment10 = Annotated[str, Field(min_length=10, max_length=20000, description="min 10 chars")]

TicketStatus = Literal["backlog", "analyzing", "building", "building-done", "testing", "done"]
TicketPriority = Literal["low", "medium", "high", "critical"]
TicketType = Literal["task", "bug", "feature", "improvement", "research", "epic", "chore"]
PhaseId = Literal[
    "PHASE_BACKLOG",
    "PHASE_REQUIREMENTS",
    "PHASE_DESIGN",
    "PHASE_IMPLEMENTATION",
    "PHASE_TESTING",
    "PHASE_DEPLOYMENT",
    "PHASE_DONE",
]
TaskType = Literal[
    "implementation",
    "investigation",
    "research",
    "testing",
    "review",
    "bugfix",
    "documentation",
    "deployment",
    "follow_up",
]
TaskPriority = Literal["low", "medium", "high", "critical"]  # any case is accepted by the server
TaskStatus = Literal["pending", "claimed", "running", "completed", "failed", "cancelled"]
DiscoveryType = Literal[
    "bug",
    "optimization",
    "clarification_needed",
    "new_component",
    "security_issue",
    "performance_issue",
    "missing_requirement",
    "integration_issue",
    "technical_debt",
    "documentation",
    "other",
]
MessageType = Literal[
    "info", "question", "warning", "discovery", "handoff_request", "handoff_accepted", "handoff_declined"
]
MessageText = Annotated[str, Field(min_length=1, max_length=20000)]


# --- actions ----------------------------------------------------------------------------------------------


class MCPServerAction(Action, ABC):
    """An action that is one `tools/call` of the server tool `server_tool`."""

    server_tool: ClassVar[str]
    tool_description: ClassVar[str]
    read_only: ClassVar[bool] = False
    destructive: ClassVar[bool] = False
    # Safe to repeat with the same arguments (reads, and get_messages' optional read receipts).
    idempotent: ClassVar[bool] = False

    def to_arguments(self) -> dict[str, Any]:
        """The `tools/call` arguments: only what was given (the server applies its own defaults)."""
        return self.model_dump(mode="json", exclude_unset=True, exclude_none=True, exclude={"kind"})


class MCPCreateTicketAction(MCPServerAction):
    server_tool: ClassVar[str] = "create_ticket"
    tool_description: ClassVar[str] = (
        "Create a ticket. Search first (mcp__search_tickets); the result lists similar_tickets (possible duplicates)."
    )

    workflow_id: WorkflowSlug
    agent_id: ActingAgentId = None
    title: str = Field(min_length=3, max_length=500, description="3-500 chars")
    description: str = Field(min_length=10, max_length=20000, description="min 10 chars")
    ticket_type: TicketType = "task"
    priority: TicketPriority = "medium"
    initial_status: TicketStatus | None = None
    assigned_agent_id: str | None = None
    parent_ticket_id: str | None = None
    blocked_by_ticket_ids: list[str] | None = Field(default=None, max_length=50)
    tags: list[str] | None = Field(default=None, max_length=20)
    related_task_ids: list[str] | None = Field(default=None, max_length=50)
    idempotency_key: IdempotencyKey = None


class MCPGetTicketAction(MCPServerAction):
    server_tool: ClassVar[str] = "get_ticket"
    tool_description: ClassVar[str] = "Get a ticket: fields, allowed next statuses, blockers, comments, commits."
    read_only: ClassVar[bool] = True

    ticket_id: TicketId


class MCPGetTicketsAction(MCPServerAction):
    server_tool: ClassVar[str] = "get_tickets"
    tool_description: ClassVar[str] = "List a workflow's tickets, filtered and sorted; page with offset=next_offset."
    read_only: ClassVar[bool] = True

    workflow_id: WorkflowSlug
    status: Literal["backlog", "analyzing", "building", "building-done", "testing", "done", "blocked"] | None = None
    ticket_type: TicketType | None = None
    priority: TicketPriority | None = None
    assigned_agent_id: str | None = None
    include_completed: bool = True
    limit: int = Field(default=50, ge=1, le=100, description="1-100")
    offset: int = Field(default=0, ge=0, le=1_000_000)
    sort_by: Literal["created_at", "updated_at", "priority", "status"] = "created_at"
    sort_order: Literal["desc", "asc"] = "desc"


class MCPGetTicketHistoryAction(MCPServerAction):
    server_tool: ClassVar[str] = "get_ticket_history"
    tool_description: ClassVar[str] = "A ticket's audit trail: who changed which field when, old and new value."
    read_only: ClassVar[bool] = True

    ticket_id: TicketId


class MCPUpdateTicketAction(MCPServerAction):
    server_tool: ClassVar[str] = "update_ticket"
    tool_description: ClassVar[str] = "Edit ticket fields (not status: use mcp__change_ticket_status)."

    ticket_id: TicketId
    agent_id: ActingAgentId = None
    updates: dict[str, Any] = Field(
        description="any of: title, description, priority, ticket_type, tags, assigned_agent_id, parent_ticket_id"
    )
    update_comment: str | None = Field(default=None, max_length=5000)
    expected_version: int | None = Field(
        default=None, ge=1, le=2**31 - 1, description="refuse if changed since this version"
    )
    idempotency_key: IdempotencyKey = None


class MCPChangeTicketStatusAction(MCPServerAction):
    server_tool: ClassVar[str] = "change_ticket_status"
    tool_description: ClassVar[str] = (
        "Move a ticket: backlog→analyzing→building→building-done→testing→done (testing→building allowed)."
    )

    ticket_id: TicketId
    agent_id: ActingAgentId = None
    new_status: TicketStatus
    comment: Comment10
    commit_sha: CommitSha | None = None
    idempotency_key: IdempotencyKey = None


class MCPResolveTicketAction(MCPServerAction):
    server_tool: ClassVar[str] = "resolve_ticket"
    tool_description: ClassVar[str] = "Close a ticket as done; unblocks the tickets it blocked."

    ticket_id: TicketId
    agent_id: ActingAgentId = None
    resolution_comment: Comment10
    commit_sha: CommitSha | None = None
    idempotency_key: IdempotencyKey = None


class MCPSearchTicketsAction(MCPServerAction):
    server_tool: ClassVar[str] = "search_tickets"
    tool_description: ClassVar[str] = (
        "Find tickets by meaning (semantic), exact words/error strings (keyword) or both (hybrid)."
    )
    read_only: ClassVar[bool] = True

    workflow_id: WorkflowSlug
    agent_id: ActingAgentId = None
    query: str = Field(min_length=3, max_length=1000, description="min 3 chars")
    search_type: Literal["hybrid", "semantic", "keyword"] = "hybrid"
    filters: dict[str, Any] | None = Field(
        default=None, description="status, priority, ticket_type, tags, assigned_agent_id"
    )
    limit: int = Field(default=10, ge=1, le=50, description="1-50")
    include_comments: bool = True


class MCPAddTicketCommentAction(MCPServerAction):
    server_tool: ClassVar[str] = "add_ticket_comment"
    tool_description: ClassVar[str] = "Comment on a ticket; mentioned agents are notified."

    ticket_id: TicketId
    agent_id: ActingAgentId = None
    comment_text: str = Field(min_length=1, max_length=20000)
    comment_type: Literal["general", "status_change", "resolution", "question", "review", "discovery"] = "general"
    mentions: list[str] | None = Field(default=None, max_length=20, description="agent ids to notify")
    attachments: list[Annotated[str, Field(min_length=1, max_length=2000)]] | None = Field(
        default=None, max_length=20, description="URLs or file paths"
    )
    idempotency_key: IdempotencyKey = None


class MCPAddTicketDependencyAction(MCPServerAction):
    server_tool: ClassVar[str] = "add_ticket_dependency"
    tool_description: ClassVar[str] = "Mark ticket_id as blocked by blocked_by_ticket_id (cycles are refused)."

    ticket_id: TicketId
    agent_id: ActingAgentId = None
    blocked_by_ticket_id: TicketId
    idempotency_key: IdempotencyKey = None


class MCPRemoveTicketDependencyAction(MCPServerAction):
    server_tool: ClassVar[str] = "remove_ticket_dependency"
    tool_description: ClassVar[str] = "Remove a blocker from a ticket."
    destructive: ClassVar[bool] = True

    ticket_id: TicketId
    agent_id: ActingAgentId = None
    blocked_by_ticket_id: TicketId
    idempotency_key: IdempotencyKey = None


class MCPLinkCommitAction(MCPServerAction):
    server_tool: ClassVar[str] = "link_commit"
    tool_description: ClassVar[str] = "Link a git commit (hex sha, 7-64 chars) to a ticket."

    ticket_id: TicketId
    agent_id: ActingAgentId = None
    commit_sha: CommitSha
    commit_message: str | None = Field(default=None, max_length=5000)
    idempotency_key: IdempotencyKey = None


class MCPCreateTaskAction(MCPServerAction):
    server_tool: ClassVar[str] = "create_task"
    tool_description: ClassVar[str] = (
        "Create a task under a ticket. With discovery_type+source_task_id it records a discovery on the "
        "source task that spawns this task (priority_boost raises it a level)."
    )

    ticket_id: TicketId
    phase_id: PhaseId
    description: str = Field(min_length=10, max_length=20000, description="min 10 chars")
    task_type: TaskType = "implementation"
    priority: TaskPriority = "medium"
    discovery_type: DiscoveryType | None = None
    discovery_description: str | None = Field(default=None, max_length=20000)
    source_task_id: str | None = None
    priority_boost: bool = False
    dependencies: list[str] | None = Field(default=None, max_length=50, description="task ids to finish first")
    claim: bool = Field(default=False, description="hold it at once (you become its holder)")
    idempotency_key: IdempotencyKey = None


class MCPUpdateTaskStatusAction(MCPServerAction):
    server_tool: ClassVar[str] = "update_task_status"
    tool_description: ClassVar[str] = (
        "Set a task's status (completed with result, failed with error_message). Only the lease holder may "
        "change a claimed task."
    )

    task_id: TaskId
    status: TaskStatus
    result: dict[str, Any] | None = Field(default=None, description="outcome summary")
    error_message: str | None = Field(default=None, max_length=10000)
    fencing_token: int | None = Field(default=None, ge=0, description="from claim_next_task")
    idempotency_key: IdempotencyKey = None


class MCPGetTaskAction(MCPServerAction):
    server_tool: ClassVar[str] = "get_task"
    tool_description: ClassVar[str] = "Get a task with its lease, dependencies and result."
    read_only: ClassVar[bool] = True

    task_id: TaskId


class MCPGetTaskDiscoveriesAction(MCPServerAction):
    server_tool: ClassVar[str] = "get_task_discoveries"
    tool_description: ClassVar[str] = "Discoveries a task recorded, and the follow-up task each spawned."
    read_only: ClassVar[bool] = True

    task_id: TaskId
    resolution_status: Literal["open", "in_progress", "resolved", "wont_fix"] | None = None


class MCPGetWorkflowGraphAction(MCPServerAction):
    server_tool: ClassVar[str] = "get_workflow_graph"
    tool_description: ClassVar[str] = "A ticket's task graph: nodes = tasks, edges = dependencies and discovery spawns."
    read_only: ClassVar[bool] = True

    ticket_id: TicketId


class MCPBroadcastMessageAction(MCPServerAction):
    server_tool: ClassVar[str] = "broadcast_message"
    tool_description: ClassVar[str] = "Message every other agent of the workflow (of ticket_id/task_id if given)."

    sender_agent_id: ActingAgentId = None
    message: MessageText
    message_type: MessageType = "info"
    ticket_id: str | None = None
    task_id: str | None = None
    idempotency_key: IdempotencyKey = None


class MCPSendMessageAction(MCPServerAction):
    server_tool: ClassVar[str] = "send_message"
    tool_description: ClassVar[str] = "Send a direct message to another agent."

    sender_agent_id: ActingAgentId = None
    recipient_agent_id: AgentId
    message: MessageText
    message_type: MessageType = "info"
    ticket_id: str | None = None
    task_id: str | None = None
    thread_id: str | None = Field(default=None, max_length=64, description="reply in this thread")
    idempotency_key: IdempotencyKey = None


class MCPGetMessagesAction(MCPServerAction):
    server_tool: ClassVar[str] = "get_messages"
    tool_description: ClassVar[str] = "Your inbox (direct and broadcast), newest first, with read state."
    # Not read-only: mark_read=true writes read receipts (the caller's own rows; repeating it changes nothing).
    idempotent: ClassVar[bool] = True

    agent_id: ActingAgentId = None
    thread_id: str | None = Field(default=None, max_length=64)
    limit: int = Field(default=50, ge=1, le=100, description="1-100")
    unread_only: bool = False
    mark_read: bool = Field(default=False, description="mark returned messages read")


class MCPRequestHandoffAction(MCPServerAction):
    server_tool: ClassVar[str] = "request_handoff"
    tool_description: ClassVar[str] = "Ask another agent to take over a task you hold (they accept or decline)."

    from_agent_id: ActingAgentId = None
    to_agent_id: AgentId
    task_id: TaskId
    reason: str = Field(min_length=10, max_length=5000, description="min 10 chars")
    context: dict[str, Any] | None = Field(default=None, description="what the next agent needs to know")
    idempotency_key: IdempotencyKey = None


class MCPGetPhaseHistoryAction(MCPServerAction):
    server_tool: ClassVar[str] = "get_phase_history"
    tool_description: ClassVar[str] = "A ticket's phase transitions with who and why."
    read_only: ClassVar[bool] = True

    ticket_id: TicketId


class MCPGetTaskTimelineAction(MCPServerAction):
    server_tool: ClassVar[str] = "get_task_timeline"
    tool_description: ClassVar[str] = "Everything that happened to a task, oldest first."
    read_only: ClassVar[bool] = True

    task_id: TaskId


class MCPGetAgentTrajectoryAction(MCPServerAction):
    server_tool: ClassVar[str] = "get_agent_trajectory"
    tool_description: ClassVar[str] = "What an agent did, oldest first (last 50 steps unless include_full_history)."
    read_only: ClassVar[bool] = True

    agent_id: AgentId
    include_full_history: bool = False


class MCPGetDiscoveriesByTypeAction(MCPServerAction):
    server_tool: ClassVar[str] = "get_discoveries_by_type"
    tool_description: ClassVar[str] = "Recent discoveries of one type across your workflows."
    read_only: ClassVar[bool] = True

    discovery_type: DiscoveryType
    limit: int = Field(default=50, ge=1, le=100, description="1-100")


SEED_ACTIONS: tuple[type[MCPServerAction], ...] = (
    MCPCreateTicketAction,
    MCPGetTicketAction,
    MCPGetTicketsAction,
    MCPGetTicketHistoryAction,
    MCPUpdateTicketAction,
    MCPChangeTicketStatusAction,
    MCPResolveTicketAction,
    MCPSearchTicketsAction,
    MCPAddTicketCommentAction,
    MCPAddTicketDependencyAction,
    MCPRemoveTicketDependencyAction,
    MCPLinkCommitAction,
    MCPCreateTaskAction,
    MCPUpdateTaskStatusAction,
    MCPGetTaskAction,
    MCPGetTaskDiscoveriesAction,
    MCPGetWorkflowGraphAction,
    MCPBroadcastMessageAction,
    MCPSendMessageAction,
    MCPGetMessagesAction,
    MCPRequestHandoffAction,
    MCPGetPhaseHistoryAction,
    MCPGetTaskTimelineAction,
    MCPGetAgentTrajectoryAction,
    MCPGetDiscoveriesByTypeAction,
)


class MCPListToolsAction(Action):
    """Meta tool: what the server offers."""

    name: str | None = Field(default=None, max_length=100, description="a tool name: return its argument schema")


class MCPCallToolAction(Action):
    """Meta tool: call any server tool by name."""

    name: str = Field(min_length=1, max_length=100, description="server tool name, e.g. claim_next_task")
    arguments: dict[str, Any] = Field(default_factory=dict, description="the tool's arguments")


# --- observation -------------------------------------------------------------------------------------------


class MCPToolResultObservation(Observation):
    """The server's answer: compact JSON text, or (is_error) the server's message saying what to fix."""

    tool_name: str = Field(description="the server tool that was called")

    @classmethod
    def result(cls, tool_name: str, text: str, *, is_error: bool = False) -> MCPToolResultObservation:
        return cls(content=[TextContent(text=text)], is_error=is_error, tool_name=tool_name)


# --- executors ---------------------------------------------------------------------------------------------


def _failure(tool_name: str, error: MCPError) -> MCPToolResultObservation:
    if isinstance(error, MCPToolError):
        return MCPToolResultObservation.result(tool_name, error.message, is_error=True)
    # Not the tool's verdict: the call did not get through. Say so, so the LLM does not treat it as one.
    return MCPToolResultObservation.result(
        tool_name, f"{tool_name} did not reach the OmoiOS server: {error.message}", is_error=True
    )


class MCPServerToolExecutor(ToolExecutor):
    """Runs a typed action as one `tools/call` through the worker's shared MCP client."""

    def __init__(self, client: MCPClient):
        self.client = client

    def __call__(
        self, action: MCPServerAction, conversation: LocalConversation | None = None
    ) -> MCPToolResultObservation:
        tool_name = action.server_tool
        try:
            text = self.client.call_tool_text(tool_name, action.to_arguments())
        except MCPError as error:
            return _failure(tool_name, error)
        return MCPToolResultObservation.result(tool_name, text)


class MCPListToolsExecutor(ToolExecutor):
    def __init__(self, client: MCPClient):
        self.client = client

    def __call__(self, action: MCPListToolsAction, conversation: LocalConversation | None = None):
        try:
            tools = self.client.list_tools()
        except MCPError as error:
            return _failure("tools/list", error)
        if action.name:
            wanted = action.name.removeprefix(TOOL_PREFIX)
            match = next((tool for tool in tools if tool["name"] == wanted), None)
            if match is None:
                names = ", ".join(sorted(tool["name"] for tool in tools))
                return MCPToolResultObservation.result(
                    "tools/list", f"Unknown tool '{action.name}'. Available: {names}.", is_error=True
                )
            listing: Any = {
                "name": match["name"],
                "description": match.get("description", ""),
                "arguments": match.get("inputSchema", {}),
            }
        else:
            listing = [
                {"name": tool["name"], "description": (tool.get("description") or "").split("\n")[0]} for tool in tools
            ]
        return MCPToolResultObservation.result("tools/list", _compact(listing))


class MCPCallToolExecutor(ToolExecutor):
    def __init__(self, client: MCPClient):
        self.client = client

    def __call__(self, action: MCPCallToolAction, conversation: LocalConversation | None = None):
        tool_name = action.name.removeprefix(TOOL_PREFIX)
        try:
            text = self.client.call_tool_text(tool_name, action.arguments)
        except MCPError as error:
            return _failure(tool_name, error)
        return MCPToolResultObservation.result(tool_name, text)


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


# --- tool definitions ----------------------------------------------------------------------------------------


def _annotations(*, read_only: bool, destructive: bool, idempotent: bool = False) -> ToolAnnotations:
    return ToolAnnotations(
        readOnlyHint=read_only,
        destructiveHint=destructive and not read_only,
        idempotentHint=read_only or idempotent,
        openWorldHint=False,
    )


SDK_FIELD_DESCRIPTIONS = {
    "summary": "~10-word summary of this call",
    "security_risk": "risk of this call",
}


def _shorten_sdk_fields(parameters: dict[str, Any]) -> None:
    properties = parameters.get("properties") or {}
    for field_name, description in SDK_FIELD_DESCRIPTIONS.items():
        if isinstance(properties.get(field_name), dict):
            properties[field_name]["description"] = description


class MCPServerTool(ToolDefinition[MCPServerAction, MCPToolResultObservation], ABC):
    """One server tool as an OpenHands tool. Concrete subclasses below set `name` (LLM-visible) and
    `action_class`; `create(conv_state, connection=…)` binds them to the worker's shared client."""

    action_class: ClassVar[type[Action]]

    @classmethod
    def _executor(cls, client: MCPClient) -> ToolExecutor:
        return MCPServerToolExecutor(client)

    @classmethod
    def _description(cls) -> str:
        return cls.action_class.tool_description

    @classmethod
    def _tool_annotations(cls) -> ToolAnnotations:
        return _annotations(read_only=cls.action_class.read_only, destructive=cls.action_class.destructive,
                            idempotent=cls.action_class.idempotent)

    # The SDK adds `summary` to every tool and `security_risk` to every tool that is not read-only, with
    # descriptions of ~40 tokens each (the SecurityRisk enum docstring): 27 tools pay ~2,200 tokens per
    # request for them. The fields stay (the SDK reads them); only their descriptions are shortened.
    def to_openai_tool(self, add_security_risk_prediction: bool = False, action_type=None):
        tool = super().to_openai_tool(
            add_security_risk_prediction=add_security_risk_prediction, action_type=action_type
        )
        _shorten_sdk_fields(tool["function"]["parameters"])
        return tool

    def to_responses_tool(self, add_security_risk_prediction: bool = False, action_type=None):
        tool = super().to_responses_tool(
            add_security_risk_prediction=add_security_risk_prediction, action_type=action_type
        )
        _shorten_sdk_fields(tool["parameters"])
        return tool

    @classmethod
    def create(cls, conv_state=None, connection: str = "", mcp_url: str = "", **params: Any) -> Sequence[MCPServerTool]:
        if params:
            raise ValueError(f"{cls.name} takes only 'connection' and 'mcp_url' params, got {sorted(params)}")
        client = _client_for(connection, mcp_url)
        return [cls.from_client(client)]

    @classmethod
    def from_client(cls, client: MCPClient) -> MCPServerTool:
        return cls(
            description=cls._description(),
            action_type=cls.action_class,
            observation_type=MCPToolResultObservation,
            annotations=cls._tool_annotations(),
            executor=cls._executor(client),
        )


def _camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_"))


def _define_tool_class(action_class: type[MCPServerAction]) -> type[MCPServerTool]:
    # `name` MUST be in the class namespace: otherwise ToolDefinition.__init_subclass__ renames the tool
    # after the class, and the LLM would see that name instead of mcp__<server tool>.
    class_name = f"MCP{_camel(action_class.server_tool)}Tool"
    namespace = {
        "__module__": __name__,
        "__qualname__": class_name,
        "__doc__": action_class.tool_description,
        "name": TOOL_PREFIX + action_class.server_tool,
        "action_class": action_class,
    }
    return type(class_name, (MCPServerTool,), namespace)


SEED_TOOL_CLASSES: tuple[type[MCPServerTool], ...] = tuple(_define_tool_class(action) for action in SEED_ACTIONS)
for _tool_class in SEED_TOOL_CLASSES:
    globals()[_tool_class.__name__] = _tool_class
del _tool_class


class MCPListToolsTool(MCPServerTool):
    name: ClassVar[str] = "mcp__list_tools"
    action_class: ClassVar[type[Action]] = MCPListToolsAction

    @classmethod
    def _executor(cls, client: MCPClient) -> ToolExecutor:
        return MCPListToolsExecutor(client)

    @classmethod
    def _description(cls) -> str:
        return (
            "List all OmoiOS server tools (name + summary), incl. claim_next_task, heartbeat_task, release_task, "
            "accept_handoff, decline_handoff, get_ready_tickets. Pass name to get one tool's argument schema."
        )

    @classmethod
    def _tool_annotations(cls) -> ToolAnnotations:
        return _annotations(read_only=True, destructive=False)


class MCPCallToolTool(MCPServerTool):
    name: ClassVar[str] = "mcp__call_tool"
    action_class: ClassVar[type[Action]] = MCPCallToolAction

    @classmethod
    def _executor(cls, client: MCPClient) -> ToolExecutor:
        return MCPCallToolExecutor(client)

    @classmethod
    def _description(cls) -> str:
        return "Call any OmoiOS server tool by name with its arguments (see mcp__list_tools)."

    @classmethod
    def _tool_annotations(cls) -> ToolAnnotations:
        return _annotations(read_only=False, destructive=True)


ALL_TOOL_CLASSES: tuple[type[MCPServerTool], ...] = (*SEED_TOOL_CLASSES, MCPListToolsTool, MCPCallToolTool)
MCP_TOOL_NAMES: tuple[str, ...] = tuple(tool_class.name for tool_class in ALL_TOOL_CLASSES)


# --- connections and registration -----------------------------------------------------------------------


_connections: dict[str, MCPClient] = {}
_connections_lock = threading.Lock()
_registered = False


def _connection_id(mcp_url: str, token: str | None) -> str:
    return hashlib.sha256(f"{mcp_url}\0{token or ''}".encode()).hexdigest()[:16]


def open_connection(mcp_url: str, token: str | None = None, **client_options: Any) -> str:
    """Open (or reuse) this process's client for (url, token); returns the id tools refer to it by.
    `client_options` (timeout, retry) apply when the client is first opened."""
    connection = _connection_id(mcp_url, token)
    with _connections_lock:
        if connection not in _connections:
            _connections[connection] = MCPClient(mcp_url, token, **client_options)
    return connection


def _client_for(connection: str, mcp_url: str) -> MCPClient:
    with _connections_lock:
        client = _connections.get(connection)
    if client is not None:
        return client
    # A conversation resumed in a new process: the token is never persisted, so take it from the
    # environment, and only if it is the one this connection was opened with.
    token = os.environ.get(TOKEN_ENVIRONMENT_VARIABLE)
    if mcp_url and _connection_id(mcp_url, token) == connection:
        return _connections.get(open_connection(mcp_url, token)) or MCPClient(mcp_url, token)
    raise ValueError(
        f"MCP connection {connection!r} is not open in this process; call "
        f"register_mcp_tools_with_agent(agent_tools, mcp_url, token) before starting the conversation."
    )


def _register_tool_classes() -> None:
    global _registered
    with _connections_lock:
        if _registered:
            return
        for tool_class in ALL_TOOL_CLASSES:
            register_tool(tool_class.name, tool_class)
        _registered = True


def register_mcp_tools_with_agent(
    agent_tools: list,
    mcp_url: str,
    token: str | None = None,
    *,
    timeout: httpx.Timeout | float | None = None,
    retry: RetryPolicy | None = None,
) -> list:
    """Return `agent_tools` plus the 27 OmoiOS tool specs (`mcp__<name>`) for `Agent(tools=…)`.

    `token` is the agent's bearer token (default: $OMOIOS_AGENT_TOKEN). All 27 tools share one HTTP
    client per (url, token) in this process (`timeout`/`retry` configure it when it is first opened);
    the specs carry only a connection id and the url, never the token.
    """
    token = token if token is not None else os.environ.get(TOKEN_ENVIRONMENT_VARIABLE)
    options = {key: value for key, value in {"timeout": timeout, "retry": retry}.items() if value is not None}
    connection = open_connection(mcp_url, token, **options)
    _register_tool_classes()
    return list(agent_tools) + [
        Tool(name=tool_class.name, params={"connection": connection, "mcp_url": mcp_url})
        for tool_class in ALL_TOOL_CLASSES
    ]


def mcp_tool_definitions(client: MCPClient) -> list[MCPServerTool]:
    """The 27 tool instances bound to `client`, without the registry (e.g. to inspect their schemas)."""
    return [tool_class.from_client(client) for tool_class in ALL_TOOL_CLASSES]
