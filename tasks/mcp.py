"""MCP tools for tasks: create (incl. discovery spawns), claim/heartbeat/release, status, discoveries, graph."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field

from collaboration import selectors as collaboration_selectors
from omoi_site.constants import DESCRIPTION_MAX, DESCRIPTION_MIN
from omoi_site.mcp_endpoint import (
    ActingAgentId,
    PriorityName,
    TaskId,
    TicketId,
    WorkflowSlug,
    act_as,
    choices_of,
    mcp_tool,
)
from tasks import blockers, payloads, selectors, services
from tasks.models import Discovery, Task
from tickets.models import Phase
from tickets.selectors import ticket_get, workflow_get

PhaseId = choices_of(Phase)
TaskType = choices_of(Task.TaskType)
TaskStatus = choices_of(Task.Status)
DiscoveryType = choices_of(Discovery.DiscoveryType)
ResolutionStatus = choices_of(Discovery.ResolutionStatus)
# No advertised maximum (it cost ~20 tokens per tool in tools/list): the door refuses integers beyond
# 64 bits for every argument anyway (mcp_endpoint.find_unstorable), with a clear message.
FencingToken = Annotated[int | None, Field(ge=0, description="from claim_next_task; refuses stale holders")]


@mcp_tool()
def create_task(
    caller,
    ticket_id: TicketId,
    phase_id: PhaseId,
    description: Annotated[str, Field(min_length=DESCRIPTION_MIN, max_length=DESCRIPTION_MAX)],
    task_type: TaskType = "implementation",
    priority: PriorityName = "medium",
    discovery_type: DiscoveryType | None = None,
    discovery_description: Annotated[str | None, Field(max_length=DESCRIPTION_MAX)] = None,
    source_task_id: str | None = None,
    priority_boost: bool = False,
    dependencies: Annotated[list[str] | None, Field(max_length=50, description="task ids that must complete first")] = None,
    claim: Annotated[bool, Field(description="hold it at once")] = False,
) -> dict:
    """Create a task under a ticket (claim=true: hold it at once). discovery_type+source_task_id record a
    discovery on the source task that spawns this task (priority_boost: one level up)."""
    return payloads.task_created_payload(services.task_create(
        actor=caller, ticket_id=ticket_id, phase_id=phase_id, description=description, task_type=task_type, priority=priority,
        dependencies=dependencies, discovery_type=discovery_type, discovery_description=discovery_description,
        source_task_id=source_task_id, priority_boost=priority_boost, claim=claim,
    ))


@mcp_tool()
def update_task_status(
    caller,
    task_id: TaskId,
    status: TaskStatus,
    result: Annotated[dict[str, Any] | None, Field(description="outcome summary for completed tasks")] = None,
    error_message: Annotated[str | None, Field(max_length=10000)] = None,
    fencing_token: FencingToken = None,
) -> dict:
    """Set a task's status (running, completed with result, failed with error_message; failed→pending retries).
    Only the lease holder may change a claimed task."""
    task = services.task_update_status(actor=caller, task_id=task_id, status=status, result=result,
                                       error_message=error_message, fencing_token=fencing_token)
    return {"task": payloads.task_payload(task)}


@mcp_tool(read_only=True)
def get_task(caller, task_id: TaskId) -> dict:
    """Get one task with its lease, dependencies and result."""
    task = selectors.task_get(task_id=task_id, actor=caller)
    return payloads.task_payload(task, include_dependencies=True)


@mcp_tool(read_only=True)
def get_task_discoveries(
    caller, task_id: TaskId, resolution_status: ResolutionStatus | None = None
) -> dict:
    """Discoveries a task recorded (and the follow-up task each spawned)."""
    task = selectors.task_get(task_id=task_id, actor=caller)
    return payloads.task_discoveries_payload(task, selectors.task_discoveries(task=task, resolution_status=resolution_status))


@mcp_tool(read_only=True)
def get_workflow_graph(caller, ticket_id: TicketId) -> dict:
    """A ticket's task graph: nodes = tasks; edges = dependencies (depends_on) and discovery spawns."""
    ticket = ticket_get(ticket_id=ticket_id, actor=caller)
    return selectors.workflow_graph(ticket=ticket)


@mcp_tool(read_only=True)
def get_task_timeline(caller, task_id: TaskId) -> dict:
    """Everything that happened to a task, oldest first: status changes, claims, discoveries, hand-offs."""
    task = selectors.task_get(task_id=task_id, actor=caller)
    return {"task_id": task.public_id, "timeline": collaboration_selectors.task_timeline(task=task)}


@mcp_tool(read_only=True)
def get_discoveries_by_type(caller, discovery_type: DiscoveryType, limit: Annotated[int, Field(ge=1, le=100)] = 50) -> dict:
    """Recent discoveries of one type across your workflows."""
    return {"discoveries": [payloads.discovery_payload(d) for d in selectors.discoveries_by_type(actor=caller, discovery_type=discovery_type, limit=limit)]}


@mcp_tool()
def claim_next_task(
    caller, workflow_id: WorkflowSlug,
    task_types: Annotated[list[TaskType] | None, Field(max_length=10)] = None, agent_id: ActingAgentId = None,
) -> dict:
    """Atomically claim the highest-priority ready task: task + fencing_token (+ warnings: what blocked
    similar work), or task null. Keep the lease with heartbeat_task."""
    act_as(caller, agent_id)
    workflow = workflow_get(slug=workflow_id, actor=caller)
    task = services.task_claim_next(agent=caller, workflow=workflow, task_types=task_types)
    if task is None:
        return {"task": None}
    result = {"task": payloads.task_payload(task, include_dependencies=True), "lease_seconds": services.lease_seconds()}
    warnings = blockers.task_claim_warnings(task=task)
    if warnings:
        result["warnings"] = warnings
    return result


@mcp_tool()
def heartbeat_task(caller, task_id: TaskId, fencing_token: FencingToken = None, agent_id: ActingAgentId = None,
) -> dict:
    """Renew your lease on a task you hold."""
    act_as(caller, agent_id)
    return payloads.lease_payload(services.task_heartbeat(agent=caller, task_id=task_id, fencing_token=fencing_token))


@mcp_tool()
def release_task(
    caller, task_id: TaskId, fencing_token: FencingToken = None,
    reason: Annotated[str | None, Field(max_length=2000)] = None, agent_id: ActingAgentId = None,
) -> dict:
    """Give a task you hold back to the queue."""
    act_as(caller, agent_id)
    task = services.task_release(agent=caller, task_id=task_id, fencing_token=fencing_token, reason=reason or "")
    return {"task": payloads.task_payload(task)}


@mcp_tool()
def register_conversation(
    caller, task_id: TaskId, conversation_id: Annotated[str, Field(min_length=1, max_length=200)],
    sandbox_id: Annotated[str | None, Field(max_length=200)] = None, agent_id: ActingAgentId = None,
) -> dict:
    """Attach your conversation id (and sandbox id) to a task you hold."""
    act_as(caller, agent_id)
    return payloads.conversation_payload(services.task_register_conversation(
        agent=caller, task_id=task_id, conversation_id=conversation_id, sandbox_id=sandbox_id))


@mcp_tool(read_only=True)
def predict_blockers(caller, ticket_id: TicketId) -> dict:
    """Forecast now what may block a ticket (the risk object of get_ticket); risk null: none shown."""
    ticket = ticket_get(ticket_id=ticket_id, actor=caller)
    return {"ticket_id": ticket.public_id, "risk": blockers.ticket_risk_predict(ticket=ticket)}


@mcp_tool(read_only=True)
def search_similar_discoveries(
    caller, workflow_id: WorkflowSlug, query: Annotated[str, Field(min_length=3, max_length=1000)],
    discovery_type: Annotated[str | None, Field(max_length=30, description="as in get_discoveries_by_type")] = None,
    limit: Annotated[int, Field(ge=1, le=50)] = 10,
) -> dict:
    """Past discoveries like query (meaning + words), with their follow-up and hours to unblock."""
    workflow = workflow_get(slug=workflow_id, actor=caller)
    return {"discoveries": blockers.discoveries_similar(workflow=workflow, query=query, discovery_type=discovery_type, limit=limit)}
