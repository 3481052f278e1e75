"""Write-side operations on workflows and tickets: the status machine, blockers, comments, commits.

Every service locks the rows it changes (`select_for_update`, several rows in pk order), checks the
rules, writes the change with its history rows (TicketEvent, PhaseTransition) in the same transaction,
and publishes realtime events only after commit.
"""

from __future__ import annotations

import re
from typing import Any, NamedTuple

from django.db import IntegrityError, transaction
from django.utils import timezone

from agents.models import Agent
from agents.services import workflow_get_or_create, workflow_update  # noqa: F401  (identity's; importers of this module use them)
from omoi_site.constants import (
    COMMENT_MIN,
    DESCRIPTION_MAX,
    DESCRIPTION_MIN,
    MAX_TAGS,
    TAG_MAX,
    TITLE_MAX,
    TITLE_MIN,
    priority_normalize,
)
from omoi_site.domain import (
    Conflict,
    DomainError,
    NotFound,
    actor_fields,
    actor_label,
    is_agent,
    require_choice,
    require_text,
    ticket_public_id,
)
from omoi_site.events import publish_on_commit
from tickets import hooks, payloads, selectors
from tickets.models import CommitLink, PhaseTransition, Ticket, TicketComment, TicketDependency, TicketEvent, Workflow

COMMIT_SHA_PATTERN = re.compile(r"^[0-9a-fA-F]{7,64}$")
EDITABLE_FIELDS = ("title", "description", "priority", "ticket_type", "tags", "assigned_agent_id", "parent_ticket_id")
# Tag edits relative to the stored tags, applied under the row lock: concurrent agents never lose each other's tags.
TAG_EDITS = ("add_tags", "remove_tags")




# --- typed results (one payload builder each in tickets.payloads, shared by MCP and REST) -----------


class TicketTransition(NamedTuple):
    """A status change or resolution: the ticket after it, and the dependents it unblocked (public ids)."""

    ticket: Ticket
    unblocked_ticket_ids: list[str]


class TicketEdit(NamedTuple):
    """An edit: the ticket after it and the fields that actually changed."""

    ticket: Ticket
    changed: list[str]


class DependencyChange(NamedTuple):
    """A blocker added or removed: the ticket after it and the ids of all its blockers now."""

    ticket: Ticket
    blocked_by_ticket_ids: list[str]


class CommitLinked(NamedTuple):
    """A commit linked to a ticket; `created` is false when it was already linked (idempotent)."""

    link: CommitLink
    created: bool


# --- helpers ---------------------------------------------------------------------------------------


def _record(ticket: Ticket, actor, event_type: str, *, field: str = "", old: Any = None, new: Any = None, comment: str = "") -> None:
    TicketEvent.objects.create(
        ticket=ticket, event_type=event_type, field=field, old_value=old, new_value=new, comment=comment, **actor_fields(actor)
    )


def _bump_version(ticket: Ticket, fields: list[str]) -> None:
    ticket.version += 1
    ticket.save(update_fields=[*fields, "version", "updated_at"])


def _clean_tags(tags: Any) -> list[str]:
    if tags is None:
        return []
    if not isinstance(tags, list) or not all(isinstance(tag, str) for tag in tags):
        raise DomainError("tags must be a list of strings.")
    cleaned = list(dict.fromkeys(tag.strip().lower() for tag in tags if tag.strip()))
    if len(cleaned) > MAX_TAGS or any(len(tag) > TAG_MAX for tag in cleaned):
        raise DomainError(f"tags: at most {MAX_TAGS} tags of at most {TAG_MAX} characters each.")
    return cleaned


def _agent_in_workflow(agent_id: str, workflow: Workflow, *, argument: str):
    agent = Agent.objects.filter(agent_id=agent_id, workflows=workflow).first() if isinstance(agent_id, str) else None
    if agent is None:
        raise NotFound(f"{argument}: no agent '{agent_id}' in workflow '{workflow.slug}'.")
    return agent


def _event_agents(ticket: Ticket) -> list[str]:
    return [ticket.assigned_agent_id] if ticket.assigned_agent_id else []


def _set_status(ticket: Ticket, new_status: str, actor, reason: str) -> None:
    """Move status (and phase, with a PhaseTransition when it changes); caller saves."""
    old_status, old_phase = ticket.status, ticket.phase
    ticket.status = new_status
    ticket.phase = Ticket.STATUS_PHASE[Ticket.Status(new_status)]
    _record(ticket, actor, "status_changed", field="status", old=old_status, new=new_status, comment=reason)
    if ticket.phase != old_phase:
        PhaseTransition.objects.create(
            ticket=ticket, from_phase=old_phase, to_phase=ticket.phase, reason=reason, **actor_fields(actor)
        )


def _schedule_embedding(ticket_id: int) -> None:
    from tickets.jobs import schedule_ticket_embedding

    schedule_ticket_embedding(ticket_id)


def _schedule_comment_embedding(comment_id: int) -> None:
    from tickets.jobs import schedule_comment_embedding

    schedule_comment_embedding(comment_id)


def _lock_workflow(workflow_id: int) -> None:
    """Serialise dependency-graph changes within one workflow so concurrent adds cannot form a cycle."""
    Workflow.objects.select_for_update().filter(pk=workflow_id).first()


# --- tickets ---------------------------------------------------------------------------------------


@transaction.atomic
def ticket_create(
    *,
    actor,
    workflow: Workflow,
    title: str,
    description: str,
    ticket_type: str = Ticket.TicketType.TASK,
    priority: str = Ticket.Priority.MEDIUM,
    initial_status: str | None = None,
    assigned_agent_id: str | None = None,
    parent_ticket_id: Any = None,
    blocked_by_ticket_ids: list | None = None,
    tags: list | None = None,
    related_task_ids: list | None = None,
) -> Ticket:
    """Create a ticket (optionally blocked by others) and record its creation in the history, with the
    tasks it relates to (e.g. the task that found the problem)."""
    title = require_text(title, argument="title", min_length=TITLE_MIN, max_length=TITLE_MAX)
    description = require_text(description, argument="description", min_length=DESCRIPTION_MIN, max_length=DESCRIPTION_MAX)
    require_choice(ticket_type, Ticket.TicketType.values, argument="ticket_type")
    priority = priority_normalize(priority)
    status = initial_status or Ticket.Status.BACKLOG
    if status == Ticket.Status.DONE or status not in Ticket.Status.values:
        allowed = [s for s in Ticket.Status.values if s != Ticket.Status.DONE]
        raise DomainError(f"initial_status must be one of: {', '.join(allowed)}; got {initial_status!r}.")
    assignee = _agent_in_workflow(assigned_agent_id, workflow, argument="assigned_agent_id") if assigned_agent_id else None
    parent = None
    if parent_ticket_id:
        parent = selectors.ticket_get(ticket_id=parent_ticket_id, actor=actor, argument="parent_ticket_id")
        if parent.workflow_id != workflow.id:
            raise DomainError(f"parent_ticket_id {parent.public_id} belongs to another workflow.")
    blockers = []
    for blocker_id in dict.fromkeys(blocked_by_ticket_ids or []):
        blocker = selectors.ticket_get(ticket_id=blocker_id, actor=actor, argument="blocked_by_ticket_ids")
        if blocker.workflow_id != workflow.id:
            raise DomainError(f"blocked_by_ticket_ids: {blocker.public_id} belongs to another workflow.")
        blockers.append(blocker)
    related_tasks = hooks.related_tasks_resolve.ask(actor=actor, workflow=workflow, task_ids=related_task_ids) if related_task_ids else []
    ticket = Ticket.objects.create(
        workflow=workflow,
        title=title,
        description=description,
        ticket_type=ticket_type,
        priority=priority,
        priority_rank=Ticket.PRIORITY_RANK[Ticket.Priority(priority)],
        status=status,
        phase=Ticket.STATUS_PHASE[Ticket.Status(status)],
        is_blocked=any(b.status != Ticket.Status.DONE for b in blockers),
        tags=_clean_tags(tags),
        parent=parent,
        assigned_agent=assignee,
        **actor_fields(actor, agent_field="created_by_agent", user_field="created_by_user"),
    )
    created = {"title": title, "status": status, "priority": priority}
    if related_tasks:
        created["related_tasks"] = related_tasks
    _record(ticket, actor, "created", new=created)
    for blocker in blockers:
        TicketDependency.objects.create(ticket=ticket, blocker=blocker, created_by_agent=actor if is_agent(actor) else None)
        _record(ticket, actor, "dependency_added", field="blocked_by", new=blocker.public_id)
    if ticket.is_blocked:
        _record(ticket, actor, "blocked", field="is_blocked", old=False, new=True)
    _schedule_embedding(ticket.id)
    if not ticket.is_blocked:
        hooks.ticket_ready.send(ticket=ticket)
    publish_on_commit(
        "ticket.created", workflow=workflow.slug, ticket=ticket.public_id, payload=payloads.ticket_summary(ticket),
        agents=_event_agents(ticket),
    )
    return ticket


@transaction.atomic
def ticket_update(
    *, actor, ticket_id, updates: dict, update_comment: str = "", expected_version: int | None = None
) -> TicketEdit:
    """Edit a ticket's editable fields (not its status); one history row per changed field.

    `updates` may carry `add_tags` / `remove_tags` instead of `tags`: they are applied to the tags stored
    at the moment of the edit (under the row lock), so two agents adding tags at once both keep theirs.

    `expected_version` (optimistic concurrency): when given and stale, the edit is refused with 409.
    """
    if not isinstance(updates, dict) or not updates:
        raise DomainError(f"updates must be a non-empty object with any of: {', '.join(EDITABLE_FIELDS)}.")
    if "status" in updates:
        raise DomainError("status cannot be edited through updates; use change_ticket_status (or resolve_ticket).")
    unknown = sorted(set(updates) - set(EDITABLE_FIELDS) - set(TAG_EDITS))
    if unknown:
        raise DomainError(
            f"updates: unknown or read-only field(s) {', '.join(unknown)}; editable: {', '.join(EDITABLE_FIELDS + TAG_EDITS)}."
        )
    tag_edits = {key: _clean_tags(updates[key]) for key in TAG_EDITS if key in updates}
    if tag_edits and "tags" in updates:
        raise DomainError("updates: give either tags (the whole list) or add_tags/remove_tags (edits), not both.")
    updates = {key: value for key, value in updates.items() if key not in TAG_EDITS}
    ticket = selectors.ticket_get(ticket_id=ticket_id, actor=actor, for_update=True)
    if tag_edits:
        removed = set(tag_edits.get("remove_tags", []))
        kept = [tag for tag in ticket.tags if tag not in removed]
        updates["tags"] = kept + [tag for tag in tag_edits.get("add_tags", []) if tag not in kept and tag not in removed]
        if len(updates["tags"]) > MAX_TAGS:
            raise DomainError(
                f"add_tags: {ticket.public_id} would have {len(updates['tags'])} tags (at most {MAX_TAGS}); remove some first."
            )
    if expected_version is not None and expected_version != ticket.version:
        raise Conflict(
            f"{ticket.public_id} changed since you read it (your version {expected_version}, current {ticket.version}); "
            "re-read it and apply your edit again.",
            details={"current_version": ticket.version},
        )
    changed: list[str] = []
    for field, value in updates.items():
        if field == "title":
            value = require_text(value, argument="updates.title", min_length=TITLE_MIN, max_length=TITLE_MAX)
        elif field == "description":
            value = require_text(value, argument="updates.description", min_length=DESCRIPTION_MIN, max_length=DESCRIPTION_MAX)
        elif field == "priority":
            value = priority_normalize(value, argument="updates.priority")
        elif field == "ticket_type":
            require_choice(value, Ticket.TicketType.values, argument="updates.ticket_type")
        elif field == "tags":
            value = _clean_tags(value)
        if field == "assigned_agent_id":
            new_agent = _agent_in_workflow(value, ticket.workflow, argument="updates.assigned_agent_id") if value else None
            old = ticket.assigned_agent_id
            if old != (new_agent.agent_id if new_agent else None):
                ticket.assigned_agent = new_agent
                _record(ticket, actor, "updated", field="assigned_agent", old=old, new=new_agent.agent_id if new_agent else None, comment=update_comment)
                changed.append("assigned_agent")
            continue
        if field == "parent_ticket_id":
            parent = selectors.ticket_get(ticket_id=value, actor=actor, argument="updates.parent_ticket_id") if value else None
            if parent is not None and (parent.id == ticket.id or parent.workflow_id != ticket.workflow_id):
                raise DomainError("updates.parent_ticket_id must be another ticket of the same workflow.")
            old = ticket_public_id(ticket.parent_id)
            if ticket.parent_id != (parent.id if parent else None):
                ticket.parent = parent
                _record(ticket, actor, "updated", field="parent", old=old, new=parent.public_id if parent else None, comment=update_comment)
                changed.append("parent")
            continue
        old = getattr(ticket, field)
        if old != value:
            setattr(ticket, field, value)
            if field == "priority":
                ticket.priority_rank = Ticket.PRIORITY_RANK[Ticket.Priority(value)]
                changed.append("priority_rank")
            _record(ticket, actor, "updated", field=field, old=old, new=value, comment=update_comment)
            changed.append(field)
    if changed:
        _bump_version(ticket, changed)
        if {"title", "description"} & set(changed):
            _schedule_embedding(ticket.id)
        publish_on_commit(
            "ticket.updated", workflow=ticket.workflow.slug, ticket=ticket.public_id,
            payload={**payloads.ticket_summary(ticket), "changed": [c for c in changed if c != "priority_rank"]},
            agents=_event_agents(ticket),
        )
    return TicketEdit(ticket, [c for c in changed if c != "priority_rank"])


def _open_blocker_text(ticket: Ticket) -> str:
    ids = selectors.ticket_open_blocker_ids(ticket_id=ticket.id)
    return ", ".join(ticket_public_id(i) for i in ids)


@transaction.atomic
def ticket_change_status(*, actor, ticket_id, new_status: str, comment: str, commit_sha: str | None = None) -> TicketTransition:
    """Move a ticket along the status machine (recording phase changes); 'done' goes through resolve."""
    comment = require_text(comment, argument="comment", min_length=COMMENT_MIN, max_length=DESCRIPTION_MAX)
    if new_status not in Ticket.Status.values:
        raise DomainError(f"new_status must be one of: {', '.join(Ticket.Status.values)}; got {new_status!r}.")
    if new_status == Ticket.Status.DONE:
        return ticket_resolve(actor=actor, ticket_id=ticket_id, resolution_comment=comment, commit_sha=commit_sha, via_status_change=True)
    ticket = selectors.ticket_get(ticket_id=ticket_id, actor=actor, for_update=True)
    if not ticket.can_transition_to(new_status):
        allowed = ", ".join(ticket.allowed_next_statuses()) or "none (the ticket is done)"
        raise Conflict(f"ticket {ticket.public_id} is in '{ticket.status}'; allowed next: {allowed}.")
    if ticket.is_blocked and new_status != Ticket.Status.BACKLOG:
        raise Conflict(
            f"ticket {ticket.public_id} is blocked by {_open_blocker_text(ticket)}; it can only go back to backlog "
            "until those are resolved (or the dependency is removed)."
        )
    old_status = ticket.status
    _set_status(ticket, new_status, actor, comment)
    TicketComment.objects.create(ticket=ticket, text=comment, comment_type=TicketComment.CommentType.STATUS_CHANGE,
                                 **actor_fields(actor, agent_field="author_agent", user_field="author_user"))
    if commit_sha:
        _link_commit(ticket, actor, commit_sha, comment)
    _bump_version(ticket, ["status", "phase"])
    publish_on_commit(
        "ticket.status_changed", workflow=ticket.workflow.slug, ticket=ticket.public_id,
        payload={**payloads.ticket_summary(ticket), "old_status": old_status, "by": actor_label(actor)},
        agents=_event_agents(ticket),
    )
    return TicketTransition(ticket, [])


@transaction.atomic
def ticket_resolve(
    *, actor, ticket_id, resolution_comment: str, commit_sha: str | None = None, via_status_change: bool = False
) -> TicketTransition:
    """Close a ticket as done and, in the same transaction, unblock every dependent whose last open
    blocker this was (each gets a history row and a `ticket.unblocked` event to its assignee)."""
    resolution_comment = require_text(resolution_comment, argument="comment" if via_status_change else "resolution_comment",
                                      min_length=COMMENT_MIN, max_length=DESCRIPTION_MAX)
    ticket = selectors.ticket_get(ticket_id=ticket_id, actor=actor, for_update=True)
    if ticket.status == Ticket.Status.DONE:
        raise Conflict(f"ticket {ticket.public_id} is already done (resolved {ticket.resolved_at:%Y-%m-%d %H:%M} UTC).")
    if via_status_change and not ticket.can_transition_to(Ticket.Status.DONE):
        allowed = ", ".join(ticket.allowed_next_statuses())
        raise Conflict(
            f"ticket {ticket.public_id} is in '{ticket.status}'; allowed next: {allowed}. "
            "Use resolve_ticket to close it from any open status."
        )
    if ticket.is_blocked:
        raise Conflict(
            f"ticket {ticket.public_id} is blocked by {_open_blocker_text(ticket)}; resolve those first or remove the dependency."
        )
    _set_status(ticket, Ticket.Status.DONE, actor, resolution_comment)
    ticket.resolved_at = timezone.now()
    ticket.resolution = resolution_comment
    TicketComment.objects.create(ticket=ticket, text=resolution_comment, comment_type=TicketComment.CommentType.RESOLUTION,
                                 **actor_fields(actor, agent_field="author_agent", user_field="author_user"))
    if commit_sha:
        _link_commit(ticket, actor, commit_sha, resolution_comment)
    _bump_version(ticket, ["status", "phase", "resolved_at", "resolution"])
    unblocked_ticket_ids = [t.public_id for t in _unblock_dependents(ticket, actor)]
    hooks.ticket_resolved.send(ticket=ticket)  # e.g. the blocker ledger learns the outcome as the ticket closes
    publish_on_commit(
        "ticket.resolved", workflow=ticket.workflow.slug, ticket=ticket.public_id,
        payload={**payloads.ticket_summary(ticket), "unblocked": unblocked_ticket_ids, "by": actor_label(actor)},
        agents=_event_agents(ticket),
    )
    return TicketTransition(ticket, unblocked_ticket_ids)


def _unblock_dependents(ticket: Ticket, actor) -> list[Ticket]:
    dependent_ids = sorted(TicketDependency.objects.filter(blocker=ticket).values_list("ticket_id", flat=True))
    dependents = list(Ticket.objects.select_for_update(of=("self",)).select_related("workflow").filter(pk__in=dependent_ids).order_by("pk"))
    unblocked = []
    for dependent in dependents:
        if dependent.is_blocked and not selectors.ticket_open_blocker_ids(ticket_id=dependent.id):
            dependent.is_blocked = False
            _record(dependent, actor, "unblocked", field="is_blocked", old=True, new=False, comment=f"{ticket.public_id} resolved")
            _bump_version(dependent, ["is_blocked"])
            unblocked.append(dependent)
            hooks.ticket_ready.send(ticket=dependent)
            publish_on_commit(
                "ticket.unblocked", workflow=dependent.workflow.slug, ticket=dependent.public_id,
                payload={**payloads.ticket_summary(dependent), "unblocked_by": ticket.public_id},
                agents=_event_agents(dependent),
            )
    return unblocked


@transaction.atomic
def dependency_add(*, actor, ticket_id, blocked_by_ticket_id) -> DependencyChange:
    """Make `ticket` blocked by `blocker`. Self-loops and cycles are refused (the error shows the cycle)."""
    ticket = selectors.ticket_get(ticket_id=ticket_id, actor=actor)
    blocker = selectors.ticket_get(ticket_id=blocked_by_ticket_id, actor=actor, argument="blocked_by_ticket_id")
    if ticket.id == blocker.id:
        raise DomainError(f"a ticket cannot block itself ({ticket.public_id}).")
    if ticket.workflow_id != blocker.workflow_id:
        raise DomainError(f"{blocker.public_id} belongs to another workflow than {ticket.public_id}; dependencies stay within one workflow.")
    _lock_workflow(ticket.workflow_id)
    if TicketDependency.objects.filter(ticket=ticket, blocker=blocker).exists():
        raise Conflict(f"{ticket.public_id} is already blocked by {blocker.public_id}.")
    path = selectors.dependency_path(start_id=blocker.id, target_id=ticket.id)
    if path is not None:
        cycle = " → ".join(ticket_public_id(pk) for pk in [ticket.id, *path])
        raise Conflict(f"adding {ticket.public_id} blocked by {blocker.public_id} would create a cycle: {cycle} (each blocked by the next).")
    ticket = selectors.ticket_get(ticket_id=ticket.id, actor=actor, for_update=True)
    try:
        with transaction.atomic():
            TicketDependency.objects.create(ticket=ticket, blocker=blocker, created_by_agent=actor if is_agent(actor) else None)
    except IntegrityError:
        raise Conflict(f"{ticket.public_id} is already blocked by {blocker.public_id}.") from None
    _record(ticket, actor, "dependency_added", field="blocked_by", new=blocker.public_id)
    changed = ["is_blocked"]
    if blocker.status != Ticket.Status.DONE and not ticket.is_blocked:
        if ticket.status == Ticket.Status.DONE:
            raise Conflict(f"{ticket.public_id} is already done; a done ticket cannot become blocked.")
        ticket.is_blocked = True
        _record(ticket, actor, "blocked", field="is_blocked", old=False, new=True, comment=f"blocked by {blocker.public_id}")
    _bump_version(ticket, changed)
    publish_on_commit(
        "ticket.blocked" if ticket.is_blocked else "ticket.updated", workflow=ticket.workflow.slug, ticket=ticket.public_id,
        payload={**payloads.ticket_summary(ticket), "blocked_by": blocker.public_id}, agents=_event_agents(ticket),
    )
    return _dependency_change(ticket)


@transaction.atomic
def dependency_remove(*, actor, ticket_id, blocked_by_ticket_id) -> DependencyChange:
    """Remove a blocker; the ticket is unblocked if no other open blocker remains."""
    ticket = selectors.ticket_get(ticket_id=ticket_id, actor=actor, for_update=True)
    blocker = selectors.ticket_get(ticket_id=blocked_by_ticket_id, actor=actor, argument="blocked_by_ticket_id")
    deleted, _ = TicketDependency.objects.filter(ticket=ticket, blocker=blocker).delete()
    if not deleted:
        raise NotFound(f"{ticket.public_id} is not blocked by {blocker.public_id}; nothing to remove.")
    _record(ticket, actor, "dependency_removed", field="blocked_by", old=blocker.public_id)
    if ticket.is_blocked and not selectors.ticket_open_blocker_ids(ticket_id=ticket.id):
        ticket.is_blocked = False
        _record(ticket, actor, "unblocked", field="is_blocked", old=True, new=False, comment=f"dependency on {blocker.public_id} removed")
        publish_on_commit(
            "ticket.unblocked", workflow=ticket.workflow.slug, ticket=ticket.public_id,
            payload={**payloads.ticket_summary(ticket), "unblocked_by": blocker.public_id}, agents=_event_agents(ticket),
        )
    _bump_version(ticket, ["is_blocked"])
    return _dependency_change(ticket)


def _dependency_change(ticket: Ticket) -> DependencyChange:
    return DependencyChange(ticket, [blocker.public_id for blocker in selectors.ticket_blockers(ticket=ticket)])


@transaction.atomic
def comment_add(
    *, actor, ticket_id, comment_text: str, comment_type: str = TicketComment.CommentType.GENERAL,
    mentions: list | None = None, attachments: list | None = None,
) -> TicketComment:
    """Add a comment (with optional @mentions of agents of the workflow) and record it in the history."""
    text = require_text(comment_text, argument="comment_text", min_length=1, max_length=DESCRIPTION_MAX)
    require_choice(comment_type, TicketComment.CommentType.values, argument="comment_type")
    ticket = selectors.ticket_get(ticket_id=ticket_id, actor=actor)
    mentions = list(dict.fromkeys(mentions or []))
    for agent_id in mentions:
        _agent_in_workflow(agent_id, ticket.workflow, argument="mentions")
    attachments = attachments or []
    if not isinstance(attachments, list):
        raise DomainError("attachments must be a list (of URLs or small objects).")
    comment = TicketComment.objects.create(
        ticket=ticket, text=text, comment_type=comment_type, mentions=mentions, attachments=attachments,
        **actor_fields(actor, agent_field="author_agent", user_field="author_user"),
    )
    _record(ticket, actor, "commented", comment=text[:500])
    _schedule_comment_embedding(comment.id)
    publish_on_commit(
        "ticket.commented", workflow=ticket.workflow.slug, ticket=ticket.public_id,
        payload={"ticket_id": ticket.public_id, **payloads.comment_payload(comment)},
        agents=[*mentions, *_event_agents(ticket)],
    )
    return comment


def _link_commit(ticket: Ticket, actor, commit_sha: str, commit_message: str) -> tuple[CommitLink, bool]:
    if not isinstance(commit_sha, str) or not COMMIT_SHA_PATTERN.match(commit_sha.strip()):
        raise DomainError(f"commit_sha must be 7-64 hexadecimal characters; got {commit_sha!r}.")
    sha = commit_sha.strip().lower()
    link, created = CommitLink.objects.get_or_create(
        ticket=ticket, commit_sha=sha,
        defaults={"commit_message": (commit_message or "")[:5000], **actor_fields(actor, agent_field="linked_by_agent", user_field="linked_by_user")},
    )
    if created:
        _record(ticket, actor, "commit_linked", field="commits", new=sha, comment=(commit_message or "")[:500])
    return link, created


@transaction.atomic
def commit_link(*, actor, ticket_id, commit_sha: str, commit_message: str = "") -> CommitLinked:
    """Link a commit to a ticket (linking the same sha again is a no-op that reports already_linked)."""
    ticket = selectors.ticket_get(ticket_id=ticket_id, actor=actor, for_update=True)
    link, created = _link_commit(ticket, actor, commit_sha, commit_message)
    if created:
        _bump_version(ticket, [])
        publish_on_commit(
            "ticket.updated", workflow=ticket.workflow.slug, ticket=ticket.public_id,
            payload={**payloads.ticket_summary(ticket), "changed": ["commits"], "commit_sha": link.commit_sha},
            agents=_event_agents(ticket),
        )
    return CommitLinked(link, created)


@transaction.atomic
def ticket_mark_duplicate(*, actor, ticket_id, duplicate_of_ticket_id, comment: str = "") -> TicketTransition:
    """Mark a ticket as a duplicate of another and resolve it (admin triage)."""
    ticket = selectors.ticket_get(ticket_id=ticket_id, actor=actor, for_update=True)
    original = selectors.ticket_get(ticket_id=duplicate_of_ticket_id, actor=actor, argument="duplicate_of_ticket_id")
    if original.id == ticket.id or original.workflow_id != ticket.workflow_id:
        raise DomainError("duplicate_of must be another ticket of the same workflow.")
    ticket.duplicate_of = original
    _record(ticket, actor, "updated", field="duplicate_of", new=original.public_id, comment=comment)
    _bump_version(ticket, ["duplicate_of"])
    return ticket_resolve(actor=actor, ticket_id=ticket.id, resolution_comment=comment or f"Duplicate of {original.public_id}.")


