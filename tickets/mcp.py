"""MCP tools for tickets: create, read, list, edit, status machine, resolve, search, comments, blockers, commits."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from omoi_site.constants import COMMENT_MIN, DESCRIPTION_MAX, DESCRIPTION_MIN, MAX_TAGS, TITLE_MAX, TITLE_MIN
from omoi_site.mcp_endpoint import (
    ActingAgentId,
    Offset,
    PriorityName,
    TicketId,
    WorkflowSlug,
    act_as,
    choices_of,
    mcp_tool,
)
from tasks import blockers
from tickets import payloads, selectors, services
from tickets.models import Ticket, TicketComment
from tickets.search import possible_duplicates, warm_duplicate_check

TicketStatus = choices_of(Ticket.Status)
TicketStatusOrBlocked = Literal[(*Ticket.Status.values, "blocked")]
TicketType = choices_of(Ticket.TicketType)
CommentType = choices_of(TicketComment.CommentType)
CommitSha = Annotated[str, Field(min_length=7, max_length=64, pattern=r"^[0-9a-fA-F]+$")]
Comment10 = Annotated[str, Field(min_length=COMMENT_MIN, max_length=DESCRIPTION_MAX)]


def _embed_before_the_transaction(caller, *, title: str, description: str, **_) -> None:
    warm_duplicate_check(title=title, description=description)


@mcp_tool(prepare=_embed_before_the_transaction)
def create_ticket(
    caller,
    workflow_id: WorkflowSlug,
    title: Annotated[str, Field(min_length=TITLE_MIN, max_length=TITLE_MAX)],
    description: Annotated[str, Field(min_length=DESCRIPTION_MIN, max_length=DESCRIPTION_MAX)],
    ticket_type: TicketType = "task",
    priority: PriorityName = "medium",
    initial_status: TicketStatus | None = None,
    assigned_agent_id: str | None = None,
    parent_ticket_id: str | None = None,
    blocked_by_ticket_ids: Annotated[list[str] | None, Field(max_length=50)] = None,
    tags: Annotated[list[str] | None, Field(max_length=MAX_TAGS)] = None,
    related_task_ids: Annotated[list[str] | None, Field(max_length=50)] = None, agent_id: ActingAgentId = None,
) -> dict:
    """Create a ticket. Returns it, similar_tickets (possible duplicates: check them) and risk (of blockers)."""
    act_as(caller, agent_id)
    workflow = selectors.workflow_get(slug=workflow_id, actor=caller)
    similar = possible_duplicates(workflow=workflow, title=title, description=description)
    vector = blockers.text_vector(title, description)
    ticket = services.ticket_create(
        actor=caller, workflow=workflow, title=title, description=description, ticket_type=ticket_type,
        priority=priority, initial_status=initial_status, assigned_agent_id=assigned_agent_id,
        parent_ticket_id=parent_ticket_id, blocked_by_ticket_ids=blocked_by_ticket_ids, tags=tags,
        related_task_ids=related_task_ids,
    )
    result = {"ticket": payloads.ticket_summary(ticket), "similar_tickets": similar}
    risk = blockers.ticket_risk_on_create(ticket=ticket, text_vector=vector)
    if risk is not None:
        result["risk"] = risk
    return result


@mcp_tool(read_only=True)
def get_ticket(caller, ticket_id: TicketId) -> dict:
    """Get one ticket: fields, allowed next statuses, blockers, comments, commits, risk."""
    read = selectors.ticket_detail_get(ticket_id=ticket_id, actor=caller)
    return payloads.ticket_read_payload(read, risk=blockers.ticket_risk_shown(ticket=read.ticket))


@mcp_tool(read_only=True)
def get_tickets(
    caller,
    workflow_id: WorkflowSlug,
    status: TicketStatusOrBlocked | None = None,
    ticket_type: TicketType | None = None,
    priority: PriorityName | None = None,
    assigned_agent_id: str | None = None,
    include_completed: bool = True,
    limit: Annotated[int, Field(ge=1, le=100)] = 50,
    offset: Offset = 0,
    sort_by: Literal["created_at", "updated_at", "priority", "status"] = "created_at",
    sort_order: Literal["desc", "asc"] = "desc",
) -> dict:
    """List a workflow's tickets (filtered, sorted, paginated: pass next_offset as offset)."""
    workflow = selectors.workflow_get(slug=workflow_id, actor=caller)
    tickets, total = selectors.ticket_list(
        workflow=workflow, status=status, ticket_type=ticket_type, priority=priority,
        assigned_agent_id=assigned_agent_id, include_completed=include_completed, limit=limit, offset=offset,
        sort_by=sort_by, sort_order=sort_order,
    )
    next_offset = offset + len(tickets) if offset + len(tickets) < total else None
    return {"tickets": [payloads.ticket_summary(t) for t in tickets], "total": total, "next_offset": next_offset}


@mcp_tool(read_only=True)
def get_ticket_history(caller, ticket_id: TicketId) -> dict:
    """A ticket's full audit trail: who changed which field when, from what to what."""
    ticket = selectors.ticket_get(ticket_id=ticket_id, actor=caller)
    return payloads.ticket_history_payload(ticket, selectors.ticket_history(ticket=ticket))


@mcp_tool()
def update_ticket(
    caller,
    ticket_id: TicketId,
    updates: Annotated[dict[str, Any], Field(description="any of: title, description, priority, ticket_type, tags, assigned_agent_id, parent_ticket_id; add_tags/remove_tags edit the stored tags atomically")],
    update_comment: Annotated[str | None, Field(max_length=5000)] = None,
    expected_version: Annotated[int | None, Field(ge=1, le=2**31 - 1, description="refuse if the ticket changed since this version")] = None, agent_id: ActingAgentId = None,
) -> dict:
    """Edit ticket fields (not status: use change_ticket_status)."""
    act_as(caller, agent_id)
    return payloads.ticket_edit_payload(services.ticket_update(
        actor=caller, ticket_id=ticket_id, updates=updates, update_comment=update_comment or "", expected_version=expected_version
    ))


@mcp_tool()
def change_ticket_status(
    caller,
    ticket_id: TicketId,
    new_status: TicketStatus,
    comment: Comment10,
    commit_sha: CommitSha | None = None, agent_id: ActingAgentId = None,
) -> dict:
    """Move a ticket along backlog→analyzing→building→building-done→testing→done (testing→building allowed)."""
    act_as(caller, agent_id)
    return payloads.ticket_transition_payload(services.ticket_change_status(
        actor=caller, ticket_id=ticket_id, new_status=new_status, comment=comment, commit_sha=commit_sha))


@mcp_tool()
def resolve_ticket(caller, ticket_id: TicketId, resolution_comment: Comment10, commit_sha: CommitSha | None = None, agent_id: ActingAgentId = None,
) -> dict:
    """Close a ticket as done from any open status; unblocks tickets it was blocking."""
    act_as(caller, agent_id)
    return payloads.ticket_transition_payload(services.ticket_resolve(
        actor=caller, ticket_id=ticket_id, resolution_comment=resolution_comment, commit_sha=commit_sha))


@mcp_tool(read_only=True)
def search_tickets(
    caller,
    workflow_id: WorkflowSlug,
    query: Annotated[str, Field(min_length=3, max_length=1000)],
    search_type: Literal["hybrid", "semantic", "keyword"] = "hybrid",
    filters: Annotated[dict[str, Any] | None, Field(description="status, priority, ticket_type, tags, assigned_agent_id")] = None,
    limit: Annotated[int, Field(ge=1, le=50)] = 10,
    include_comments: bool = True, agent_id: ActingAgentId = None,
) -> dict:
    """Find tickets by meaning (semantic), exact words/error strings (keyword) or both (hybrid)."""
    act_as(caller, agent_id)
    workflow = selectors.workflow_get(slug=workflow_id, actor=caller)
    from tickets.search import ticket_search

    results = ticket_search(
        workflow_ids=[workflow.id], query=query, search_type=search_type, filters=filters or {}, limit=limit,
        include_comments=include_comments,
    )
    return {"results": results, "search_type": search_type}


@mcp_tool()
def add_ticket_comment(
    caller,
    ticket_id: TicketId,
    comment_text: Annotated[str, Field(min_length=1, max_length=20000)],
    comment_type: CommentType = "general",
    mentions: Annotated[list[str] | None, Field(max_length=20, description="agent ids to notify")] = None,
    attachments: Annotated[list[Annotated[str, Field(min_length=1, max_length=2000)]] | None, Field(max_length=20, description="URLs or file paths")] = None, agent_id: ActingAgentId = None,
) -> dict:
    """Comment on a ticket; mentioned agents are notified."""
    act_as(caller, agent_id)
    comment = services.comment_add(actor=caller, ticket_id=ticket_id, comment_text=comment_text, comment_type=comment_type,
                                   mentions=mentions, attachments=attachments)
    return payloads.comment_added_payload(comment)


@mcp_tool()
def add_ticket_dependency(caller, ticket_id: TicketId, blocked_by_ticket_id: TicketId, agent_id: ActingAgentId = None,
) -> dict:
    """Mark ticket_id as blocked by blocked_by_ticket_id (cycles are refused)."""
    act_as(caller, agent_id)
    return payloads.dependency_change_payload(
        services.dependency_add(actor=caller, ticket_id=ticket_id, blocked_by_ticket_id=blocked_by_ticket_id))


@mcp_tool(destructive=True)
def remove_ticket_dependency(caller, ticket_id: TicketId, blocked_by_ticket_id: TicketId, agent_id: ActingAgentId = None,
) -> dict:
    """Remove a blocker from a ticket."""
    act_as(caller, agent_id)
    return payloads.dependency_change_payload(
        services.dependency_remove(actor=caller, ticket_id=ticket_id, blocked_by_ticket_id=blocked_by_ticket_id))


@mcp_tool()
def link_commit(caller, ticket_id: TicketId, commit_sha: CommitSha, commit_message: Annotated[str | None, Field(max_length=5000)] = None, agent_id: ActingAgentId = None,
) -> dict:
    """Link a git commit to a ticket."""
    act_as(caller, agent_id)
    return payloads.commit_linked_payload(
        services.commit_link(actor=caller, ticket_id=ticket_id, commit_sha=commit_sha, commit_message=commit_message or ""))


@mcp_tool(read_only=True)
def get_phase_history(caller, ticket_id: TicketId) -> dict:
    """A ticket's phase transitions (backlog→requirements→…→done) with who and why."""
    ticket = selectors.ticket_get(ticket_id=ticket_id, actor=caller)
    return payloads.phase_history_payload(ticket, selectors.phase_history(ticket=ticket))


@mcp_tool(read_only=True)
def get_ready_tickets(caller, workflow_id: WorkflowSlug, limit: Annotated[int, Field(ge=1, le=100)] = 20) -> dict:
    """Open tickets with no open blocker (ready), and the blocked ones with the ids blocking them."""
    workflow = selectors.workflow_get(slug=workflow_id, actor=caller)
    return payloads.ready_tickets_payload(selectors.ready_tickets(workflow=workflow, limit=limit))
