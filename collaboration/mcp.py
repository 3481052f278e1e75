"""MCP tools for collaboration: direct and broadcast messages, inbox, hand-offs."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field

from collaboration import payloads, selectors, services
from collaboration.models import Message
from omoi_site.mcp_endpoint import ActingAgentId, AgentId, TaskId, act_as, choices_of, mcp_tool

MessageType = choices_of(Message.MessageType)
MessageText = Annotated[str, Field(min_length=1, max_length=20000)]
HandoffId = Annotated[str, Field(min_length=1, max_length=30, description="e.g. HND-3")]


@mcp_tool()
def broadcast_message(
    caller, message: MessageText, message_type: MessageType = "info",
    ticket_id: str | None = None, task_id: str | None = None, sender_agent_id: ActingAgentId = None,
) -> dict:
    """Send a message to every other agent of the workflow (of ticket_id/task_id if given)."""
    act_as(caller, sender_agent_id, argument="sender_agent_id")
    return payloads.broadcast_sent_payload(services.message_broadcast(
        sender=caller, message=message, message_type=message_type, ticket_id=ticket_id, task_id=task_id))


@mcp_tool()
def send_message(
    caller, recipient_agent_id: AgentId, message: MessageText, message_type: MessageType = "info",
    ticket_id: str | None = None, task_id: str | None = None,
    thread_id: Annotated[str | None, Field(max_length=64, description="reply in an existing thread")] = None, sender_agent_id: ActingAgentId = None,
) -> dict:
    """Send a direct message to another agent."""
    act_as(caller, sender_agent_id, argument="sender_agent_id")
    return payloads.message_sent_payload(services.message_send(
        sender=caller, recipient_agent_id=recipient_agent_id, message=message, message_type=message_type,
        ticket_id=ticket_id, task_id=task_id, thread_id=thread_id))


@mcp_tool(idempotent=True)
def get_messages(
    caller, thread_id: Annotated[str | None, Field(max_length=64)] = None,
    limit: Annotated[int, Field(ge=1, le=100)] = 50, unread_only: bool = False,
    mark_read: Annotated[bool, Field(description="mark the returned messages read")] = False, agent_id: ActingAgentId = None,
) -> dict:
    """Your inbox (direct messages and broadcasts), newest first, with read state."""
    act_as(caller, agent_id)
    items = selectors.inbox(agent=caller, thread_id=thread_id, limit=limit, unread_only=unread_only)
    result = payloads.inbox_payload(items)
    if mark_read and items:
        # Writes only when asked, and only the caller's own receipts; marking twice changes nothing more.
        result["marked_read"] = services.messages_mark_read(agent=caller, message_ids=[m.id for m, _ in items])
    return result


@mcp_tool()
def request_handoff(
    caller, to_agent_id: AgentId, task_id: TaskId,
    reason: Annotated[str, Field(min_length=10, max_length=5000)],
    context: Annotated[dict[str, Any] | None, Field(description="what the next agent needs to know")] = None, from_agent_id: ActingAgentId = None,
) -> dict:
    """Ask another agent to take over a task you hold; they accept_handoff or decline_handoff."""
    act_as(caller, from_agent_id, argument="from_agent_id")
    handoff = services.handoff_request(from_agent=caller, to_agent_id=to_agent_id, task_id=task_id, reason=reason, context=context)
    return payloads.handoff_payload(handoff)


@mcp_tool()
def accept_handoff(caller, handoff_id: HandoffId, note: Annotated[str | None, Field(max_length=2000)] = None, agent_id: ActingAgentId = None,
) -> dict:
    """Accept a hand-off addressed to you: the task and its lease become yours (new fencing_token)."""
    act_as(caller, agent_id)
    return payloads.handoff_accepted_payload(services.handoff_accept(agent=caller, handoff_id=handoff_id, note=note or ""))


@mcp_tool()
def decline_handoff(caller, handoff_id: HandoffId, reason: Annotated[str | None, Field(max_length=2000)] = None, agent_id: ActingAgentId = None,
) -> dict:
    """Decline a hand-off addressed to you; the task stays with the requester."""
    act_as(caller, agent_id)
    return payloads.handoff_payload(services.handoff_decline(agent=caller, handoff_id=handoff_id, reason=reason or ""))
