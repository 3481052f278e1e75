"""Read-side queries on workflows and tickets, with workflow-scoped access checks."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import orjson
from django.db.models import Count, Exists, OuterRef, Q, QuerySet

from agents.selectors import (  # noqa: F401  (identity's rules, used here and by importers of this module)
    STAFF_WORKFLOW_GROUP_PREFIX,
    can_access_workflow,
    scoped_to_actor,
    workflow_get,
    workflow_ids_for,
)
from omoi_site.domain import DomainError, NotFound, first_of, is_agent, parse_public_id, ticket_public_id
from tickets.models import PhaseTransition, Ticket, TicketDependency, TicketEvent, Workflow

# A ticket's embedding (384 floats) and search vector are read by search only; loading them costs more CPU
# than the rest of a row (deferred, they still load on first access).
UNREAD_TICKET_COLUMNS = ("embedding", "search_vector")
SORT_FIELDS = {"created_at": "created_at", "updated_at": "updated_at", "priority": "priority_rank", "status": "status"}




def ticket_get(*, ticket_id, actor, argument: str = "ticket_id", for_update: bool = False) -> Ticket:
    """One ticket by public id ('TKT-42'), checking the actor's workflow access."""
    pk = parse_public_id(ticket_id, Ticket.PUBLIC_PREFIX, argument=argument)
    queryset = Ticket.objects.select_related("workflow", "assigned_agent", "created_by_agent", "parent").defer(
        *UNREAD_TICKET_COLUMNS, *(f"parent__{name}" for name in UNREAD_TICKET_COLUMNS)
    )
    if for_update:
        queryset = Ticket.objects.select_for_update(of=("self",)).select_related("workflow").defer(*UNREAD_TICKET_COLUMNS)
    if is_agent(actor) and not for_update:
        # The access check in the same query (an agent's own workflow links), not a second round trip.
        member = Workflow.agents.through.objects.filter(agent_id=actor.pk, workflow_id=OuterRef("workflow_id"))
        queryset = queryset.annotate(actor_is_member=Exists(member))
    ticket = first_of(queryset.filter(pk=pk))
    visible = getattr(ticket, "actor_is_member", None)
    if ticket is None or not (visible if visible is not None else can_access_workflow(actor, ticket.workflow_id)):
        raise NotFound(f"No ticket {ticket_public_id(pk)} in your workflows ({argument}). Use get_tickets or search_tickets to find ids.")
    return ticket


def ticket_queryset_for(actor) -> QuerySet[Ticket]:
    queryset = Ticket.objects.all()
    allowed = workflow_ids_for(actor)
    if allowed is not None:
        queryset = queryset.filter(workflow_id__in=allowed)
    return queryset


def ticket_list(
    *,
    workflow: Workflow,
    status: str | None = None,
    ticket_type: str | None = None,
    priority: str | None = None,
    assigned_agent_id: str | None = None,
    include_completed: bool = True,
    limit: int = 50,
    offset: int = 0,
    sort_by: str = "created_at",
    sort_order: str = "desc",
) -> tuple[list[Ticket], int]:
    """A filtered, sorted page of a workflow's tickets and the total count."""
    if status is not None and status not in Ticket.Status.values and status != "blocked":
        raise DomainError(f"status must be one of: {', '.join(Ticket.Status.values)}, blocked; got {status!r}.")
    if ticket_type is not None and ticket_type not in Ticket.TicketType.values:
        raise DomainError(f"ticket_type must be one of: {', '.join(Ticket.TicketType.values)}; got {ticket_type!r}.")
    if priority is not None and priority not in Ticket.Priority.values:
        raise DomainError(f"priority must be one of: {', '.join(Ticket.Priority.values)}; got {priority!r}.")
    if sort_by not in SORT_FIELDS:
        raise DomainError(f"sort_by must be one of: {', '.join(SORT_FIELDS)}; got {sort_by!r}.")
    if sort_order not in ("asc", "desc"):
        raise DomainError(f"sort_order must be 'asc' or 'desc'; got {sort_order!r}.")
    queryset = Ticket.objects.filter(workflow=workflow).select_related("assigned_agent").defer(*UNREAD_TICKET_COLUMNS)
    if status == "blocked":
        queryset = queryset.filter(is_blocked=True)
    elif status:
        queryset = queryset.filter(status=status)
    if ticket_type:
        queryset = queryset.filter(ticket_type=ticket_type)
    if priority:
        queryset = queryset.filter(priority=priority)
    if assigned_agent_id:
        queryset = queryset.filter(assigned_agent_id=assigned_agent_id)
    if not include_completed:
        queryset = queryset.exclude(status=Ticket.Status.DONE)
    field = SORT_FIELDS[sort_by]
    prefix = "-" if sort_order == "desc" else ""
    total = queryset.count()
    page = list(queryset.order_by(f"{prefix}{field}", f"{prefix}id")[offset : offset + limit])
    return page, total


def common_next_statuses(*, tickets: list[Ticket]) -> list[str]:
    """The statuses every one of `tickets` may move to next (status machine order); a blocked ticket may
    only go back to backlog until its blockers are resolved."""
    order = list(Ticket.Status.values)
    common = None
    for ticket in tickets:
        allowed = set(ticket_allowed_moves(ticket=ticket))
        common = allowed if common is None else common & allowed
    return [status for status in order if status in (common or set())]


def ticket_allowed_moves(*, ticket: Ticket) -> list[str]:
    """Next statuses the service will accept for this ticket now (TRANSITIONS, narrowed by the blocked overlay)."""
    allowed = set(ticket.allowed_next_statuses())
    if ticket.is_blocked:
        allowed &= {Ticket.Status.BACKLOG.value}
    return [status for status in Ticket.Status.values if status in allowed]


def blocker_candidates(*, ticket: Ticket, limit: int = 200) -> list[Ticket]:
    """Open tickets of the same workflow that could block `ticket` (not itself, not already a blocker)."""
    return list(
        Ticket.objects.filter(workflow_id=ticket.workflow_id)
        .exclude(pk=ticket.pk)
        .exclude(status=Ticket.Status.DONE)
        .exclude(blocking_links__ticket=ticket)
        .order_by("-priority_rank", "id")[:limit]
    )


def ticket_blockers(*, ticket: Ticket) -> list[Ticket]:
    return list(Ticket.objects.filter(blocking_links__ticket=ticket).order_by("id"))


def ticket_dependents(*, ticket: Ticket) -> list[Ticket]:
    return list(Ticket.objects.filter(blocked_by_links__blocker=ticket).order_by("id"))


def ticket_open_blocker_ids(*, ticket_id: int) -> list[int]:
    return list(
        TicketDependency.objects.filter(ticket_id=ticket_id)
        .exclude(blocker__status=Ticket.Status.DONE)
        .order_by("blocker_id")
        .values_list("blocker_id", flat=True)
    )


def ticket_history(*, ticket: Ticket) -> list[TicketEvent]:
    return list(TicketEvent.objects.filter(ticket=ticket).select_related("actor_agent", "actor_user"))


def phase_history(*, ticket: Ticket) -> list[PhaseTransition]:
    return list(PhaseTransition.objects.filter(ticket=ticket).select_related("actor_agent", "actor_user"))


def ready_tickets(*, workflow: Workflow, limit: int = 20) -> dict:
    """Open tickets split into ready (no open blocker) and not ready (with the blocking ids as the reason)."""
    open_blocker = TicketDependency.objects.filter(ticket=OuterRef("pk")).exclude(blocker__status=Ticket.Status.DONE)
    queryset = (
        Ticket.objects.filter(workflow=workflow)
        .exclude(status=Ticket.Status.DONE)
        .annotate(has_open_blocker=Exists(open_blocker), open_blocker_count=Count("blocked_by_links"))
        .order_by("-priority_rank", "created_at", "id")
    )
    ready = list(queryset.filter(has_open_blocker=False)[:limit])
    waiting = list(queryset.filter(has_open_blocker=True)[:limit])
    reasons = {}
    for ticket in waiting:
        reasons[ticket.id] = ticket_open_blocker_ids(ticket_id=ticket.id)
    return {"ready": ready, "not_ready": [(t, reasons[t.id]) for t in waiting]}


def dependency_path(*, start_id: int, target_id: int) -> list[int] | None:
    """Blocker path start → … → target following 'blocked by' edges, or None (breadth-first)."""
    edges: dict[int, list[int]] = {}
    frontier = [start_id]
    seen = {start_id}
    parents: dict[int, int] = {}
    while frontier:
        rows = TicketDependency.objects.filter(ticket_id__in=frontier).values_list("ticket_id", "blocker_id")
        next_frontier = []
        for ticket_id, blocker_id in rows:
            edges.setdefault(ticket_id, []).append(blocker_id)
            if blocker_id in seen:
                continue
            seen.add(blocker_id)
            parents[blocker_id] = ticket_id
            if blocker_id == target_id:
                path = [blocker_id]
                while path[-1] != start_id:
                    path.append(parents[path[-1]])
                return list(reversed(path))
            next_frontier.append(blocker_id)
        frontier = next_frontier
    return None





# --- filtered, sorted lists for the REST door --------------------------------------------------------


def ticket_comments(*, ticket: Ticket):
    """A ticket's comments (queryset, for cursor pagination); the caller already checked access to the ticket."""
    from tickets.models import TicketComment

    return TicketComment.objects.filter(ticket=ticket).select_related("author_user")


def ticket_links(*, ticket: Ticket) -> tuple[list[Ticket], list[Ticket]]:
    """(blockers, dependents) of a ticket in one query: blockers carry their status, both their ids."""
    blockers, dependents = [], []
    rows = (
        TicketDependency.objects.filter(Q(ticket=ticket) | Q(blocker=ticket))
        .order_by("id")
        .values_list("ticket_id", "blocker_id", "blocker__status")
    )
    for ticket_id, blocker_id, blocker_status in rows:
        if ticket_id == ticket.pk:
            blockers.append(Ticket(pk=blocker_id, status=blocker_status))
        else:
            dependents.append(Ticket(pk=ticket_id))
    return sorted(blockers, key=lambda t: t.pk), sorted(dependents, key=lambda t: t.pk)


# --- get_ticket / REST detail: the whole detail in one statement --------------------------------------------


@dataclass
class TicketDetail:
    """Everything a ticket's detail shows, read by `ticket_detail_get` in one statement."""

    ticket: Ticket
    blockers: list[Ticket]
    dependents: list[Ticket]
    comments: list  # the latest 20 TicketComment rows, oldest first
    commits: list  # CommitLink rows, oldest first


_detail_sql: tuple[str, list[str]] | None = None


def _ticket_detail_sql() -> tuple[str, list[str]]:
    """The detail statement, built once per process from the models' tables and columns. Hand-written on
    purpose: the ORM spent more CPU compiling get_ticket's five queries than PostgreSQL spent running them."""
    global _detail_sql
    if _detail_sql is None:
        from django.contrib.auth import get_user_model

        from tickets.models import CommitLink, TicketComment

        user = get_user_model()._meta
        username = user.get_field(get_user_model().USERNAME_FIELD).column
        fields = [f for f in Ticket._meta.concrete_fields if f.name not in UNREAD_TICKET_COLUMNS]
        columns = ", ".join(f't."{f.column}"' for f in fields)
        membership = Workflow.agents.through._meta.db_table
        _detail_sql = (
            f"""SELECT {columns}, w.slug, u."{username}",
                   EXISTS (SELECT 1 FROM {membership} m WHERE m.agent_id = %(agent)s AND m.workflow_id = t.workflow_id),
                   (SELECT json_agg(json_build_array(d.ticket_id, d.blocker_id, b.status) ORDER BY d.id)::text
                      FROM {TicketDependency._meta.db_table} d JOIN {Ticket._meta.db_table} b ON b.id = d.blocker_id
                     WHERE d.ticket_id = t.id OR d.blocker_id = t.id),
                   (SELECT json_agg(c ORDER BY c.created_at, c.id)::text FROM (
                        SELECT c.id, c.author_agent_id, c.author_user_id, cu."{username}" AS author_username,
                               c.comment_type, c.text, c.mentions, c.attachments, c.created_at
                          FROM {TicketComment._meta.db_table} c LEFT JOIN {user.db_table} cu ON cu.id = c.author_user_id
                         WHERE c.ticket_id = t.id ORDER BY c.created_at DESC, c.id DESC LIMIT 20) c),
                   (SELECT json_agg(json_build_array(k.commit_sha, k.commit_message) ORDER BY k.created_at, k.id)::text
                      FROM {CommitLink._meta.db_table} k WHERE k.ticket_id = t.id)
              FROM {Ticket._meta.db_table} t
              JOIN {Workflow._meta.db_table} w ON w.id = t.workflow_id
              LEFT JOIN {user.db_table} u ON u.id = t.created_by_user_id
             WHERE t.id = %(ticket)s""",
            [f.attname for f in fields],
        )
    return _detail_sql


def ticket_detail_get(*, ticket_id, actor, argument: str = "ticket_id") -> TicketDetail:
    """A ticket with its blockers (with their status), dependents, latest 20 comments and commits, checking
    the actor's workflow access — one query (access included for agents). The blocker risk is the tasks
    floor's (tasks.blockers.ticket_risk_shown): doors add it, so this floor reads no table above it."""
    from django.contrib.auth import get_user_model
    from django.db import connection

    from tickets.models import CommitLink, TicketComment

    pk = parse_public_id(ticket_id, Ticket.PUBLIC_PREFIX, argument=argument)
    sql, attnames = _ticket_detail_sql()
    with connection.cursor() as cursor:
        cursor.execute(sql, {"ticket": pk, "agent": actor.pk if is_agent(actor) else None})
        row = cursor.fetchone()
    if row is not None:
        width = len(attnames)
        slug, creator_name, is_member, links, comments, commits = row[width:]
        ticket = Ticket.from_db(connection.alias, attnames, row[:width])
        visible = is_member if is_agent(actor) else can_access_workflow(actor, ticket.workflow_id)
    if row is None or not visible:
        raise NotFound(f"No ticket {Ticket.PUBLIC_PREFIX}-{pk} in your workflows ({argument}). Use get_tickets or search_tickets to find ids.")
    user_model = get_user_model()
    ticket.workflow = Workflow(id=ticket.workflow_id, slug=slug)
    if ticket.created_by_user_id:
        ticket.created_by_user = user_model(pk=ticket.created_by_user_id, **{user_model.USERNAME_FIELD: creator_name})
    blockers, dependents = [], []
    for dependent_id, blocker_id, blocker_status in orjson.loads(links) if links else ():
        if dependent_id == pk:
            blockers.append(Ticket(pk=blocker_id, status=blocker_status))
        else:
            dependents.append(Ticket(pk=dependent_id))
    comment_rows = []
    for item in orjson.loads(comments) if comments else ():
        comment = TicketComment(
            id=item["id"], ticket_id=pk, author_agent_id=item["author_agent_id"], author_user_id=item["author_user_id"],
            comment_type=item["comment_type"], text=item["text"], mentions=item["mentions"] or [],
            attachments=item["attachments"], created_at=datetime.fromisoformat(item["created_at"]),
        )
        if comment.author_user_id:
            comment.author_user = user_model(pk=comment.author_user_id, **{user_model.USERNAME_FIELD: item["author_username"]})
        comment_rows.append(comment)
    commit_rows = [CommitLink(ticket_id=pk, commit_sha=sha, commit_message=message) for sha, message in (orjson.loads(commits) if commits else ())]
    return TicketDetail(
        ticket=ticket, blockers=sorted(blockers, key=lambda t: t.pk), dependents=sorted(dependents, key=lambda t: t.pk),
        comments=comment_rows, commits=commit_rows,
    )
