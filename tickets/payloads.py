"""Compact JSON shapes of tickets and their history, shared by MCP results and realtime events.

Stable keys; ids are public ids (TKT-n); empty optional values are omitted to save LLM tokens.
"""

from __future__ import annotations

from omoi_site.domain import actor_label, recorded_actor_label, ticket_public_id
from omoi_site.payloads import compact, iso


def ticket_summary(ticket) -> dict:
    return compact(
        {
            "ticket_id": ticket.public_id,
            "title": ticket.title,
            "status": ticket.status,
            "blocked": ticket.is_blocked or None,
            "priority": ticket.priority,
            "ticket_type": ticket.ticket_type,
            "assigned_agent_id": ticket.assigned_agent_id,
            "updated_at": iso(ticket.updated_at),
        }
    )


def ticket_detail(ticket, *, blockers=(), dependents=(), comments=None, commits=None) -> dict:
    data = {
        "ticket_id": ticket.public_id,
        "workflow_id": ticket.workflow.slug,
        "title": ticket.title,
        "description": ticket.description,
        "ticket_type": ticket.ticket_type,
        "priority": ticket.priority,
        "status": ticket.status,
        "phase": ticket.phase,
        "blocked": ticket.is_blocked,
        "allowed_next_statuses": ticket.allowed_next_statuses(),
        "tags": ticket.tags,
        "parent_ticket_id": ticket_public_id(ticket.parent_id),
        "duplicate_of": ticket_public_id(ticket.duplicate_of_id),
        "assigned_agent_id": ticket.assigned_agent_id,
        "created_by": recorded_actor_label(ticket.created_by_agent_id, ticket.created_by_user if ticket.created_by_user_id else None),
        "blocked_by": [{"ticket_id": b.public_id, "status": b.status} for b in blockers],
        "blocks": [d.public_id for d in dependents],
        "resolution": ticket.resolution,
        "version": ticket.version,
        "created_at": iso(ticket.created_at),
        "updated_at": iso(ticket.updated_at),
        "resolved_at": iso(ticket.resolved_at),
    }
    if comments is not None:
        data["comments"] = [comment_payload(c) for c in comments]
    if commits is not None:
        data["commits"] = [{"sha": c.commit_sha, "message": c.commit_message} for c in commits]
    compacted = compact(data)
    compacted["blocked"] = ticket.is_blocked
    return compacted


def comment_payload(comment) -> dict:
    return compact(
        {
            "comment_id": comment.id,
            "author": recorded_actor_label(comment.author_agent_id, comment.author_user if comment.author_user_id else None),
            "comment_type": comment.comment_type,
            "text": comment.text,
            "mentions": comment.mentions,
            "attachments": comment.attachments,
            "created_at": iso(comment.created_at),
        }
    )


def event_payload(event) -> dict:
    actor = event.actor_agent if event.actor_agent_id else event.actor_user
    return compact(
        {
            "at": iso(event.created_at),
            "actor": actor_label(actor),
            "event": event.event_type,
            "field": event.field,
            "old": event.old_value,
            "new": event.new_value,
            "comment": event.comment,
        }
    )


def phase_payload(transition) -> dict:
    actor = transition.actor_agent if transition.actor_agent_id else transition.actor_user
    return compact(
        {
            "at": iso(transition.created_at),
            "actor": actor_label(actor),
            "from_phase": transition.from_phase,
            "to_phase": transition.to_phase,
            "reason": transition.reason,
        }
    )


# --- results of the write services (tickets.services' typed results), the same JSON through MCP and REST ---


def ticket_read_payload(read, *, risk: dict | None = None) -> dict:
    """get_ticket / REST detail: selectors.ticket_detail_get's read, plus the blocker risk when one is shown."""
    detail = ticket_detail(read.ticket, blockers=read.blockers, dependents=read.dependents, comments=read.comments,
                           commits=read.commits)
    if risk is not None:
        detail["risk"] = risk
    return detail


def ticket_transition_payload(transition) -> dict:
    """A status change or resolution: the ticket, its phase, where it may go next, and whom it unblocked."""
    ticket = transition.ticket
    return {
        "ticket": ticket_summary(ticket),
        "phase": ticket.phase,
        "allowed_next_statuses": ticket.allowed_next_statuses(),
        "unblocked": transition.unblocked_ticket_ids,
    }


def ticket_edit_payload(edit) -> dict:
    return {"ticket": ticket_summary(edit.ticket), "changed": edit.changed, "version": edit.ticket.version}


def dependency_change_payload(change) -> dict:
    return {"ticket": ticket_summary(change.ticket), "blocked_by": change.blocked_by_ticket_ids}


def commit_linked_payload(linked) -> dict:
    return {"ticket_id": ticket_public_id(linked.link.ticket_id), "commit_sha": linked.link.commit_sha,
            "already_linked": not linked.created}


def comment_added_payload(comment) -> dict:
    return {"ticket_id": ticket_public_id(comment.ticket_id), "comment": comment_payload(comment)}


def ready_tickets_payload(split) -> dict:
    """selectors.ready_tickets: the ready ones, and the others with the ids they wait for."""
    return {
        "ready": [ticket_summary(t) for t in split["ready"]],
        "not_ready": [{**ticket_summary(t), "waiting_for": [ticket_public_id(i) for i in ids]} for t, ids in split["not_ready"]],
    }


def ticket_history_payload(ticket, events) -> dict:
    return {"ticket_id": ticket.public_id, "events": [event_payload(e) for e in events]}


def phase_history_payload(ticket, transitions) -> dict:
    return {"ticket_id": ticket.public_id, "phase": ticket.phase, "transitions": [phase_payload(p) for p in transitions]}


# --- history as sentences (the admin cockpit and the dashboard ticket page write it the same way) ----------


def short_value(value, length: int = 60) -> str:
    """A stored value as a short phrase: lists joined, empties as 'nothing', long text cut with an ellipsis."""
    text = "nothing" if value in (None, "", []) else (", ".join(map(str, value)) if isinstance(value, list) else str(value))
    return text if len(text) <= length else text[: length - 1] + "…"


def history_sentence(event) -> str:
    """One history row as a sentence: 'worker-1 moved it from analyzing to building'."""
    who = recorded_actor_label(event.actor_agent_id, event.actor_user) or "system"
    kind, field = event.event_type, event.field
    if kind == "created":
        return f"{who} created it"
    if kind == "status_changed":
        return f"{who} moved it from {event.old_value} to {event.new_value}"
    if kind == "updated":
        if field == "duplicate_of":
            return f"{who} marked it a duplicate of {event.new_value}"
        return f"{who} changed {field.replace('_', ' ')} from {short_value(event.old_value)} to {short_value(event.new_value)}"
    if kind == "commented":
        return f"{who} commented: {short_value(event.comment, 90)}"
    if kind == "dependency_added":
        return f"{who} made it blocked by {event.new_value}"
    if kind == "dependency_removed":
        return f"{who} removed its blocker {event.old_value}"
    if kind == "blocked":
        return f"it became blocked ({event.comment})" if event.comment else "it became blocked"
    if kind == "unblocked":
        return f"it was unblocked ({event.comment})" if event.comment else "it was unblocked"
    if kind == "commit_linked":
        return f"{who} linked commit {short_value(event.new_value, 12)}"
    return f"{who} {kind.replace('_', ' ')}" + (f" {field}" if field else "")
