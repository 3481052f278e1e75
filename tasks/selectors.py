"""Read-side queries on tasks: lookup with access checks, discoveries, workflow graph."""

from __future__ import annotations

from omoi_site.domain import DomainError, NotFound, first_of, parse_public_id, task_public_id, ticket_public_id
from tasks.models import Discovery, Task
from tickets.models import Ticket
from tickets.selectors import UNREAD_TICKET_COLUMNS, can_access_workflow, workflow_ids_for


def task_get(*, task_id, actor, argument: str = "task_id", for_update: bool = False) -> Task:
    """One task by public id ('TSK-7'), checking the actor's workflow access."""
    pk = parse_public_id(task_id, Task.PUBLIC_PREFIX, argument=argument)
    if for_update:
        # (the writes that lock a task read its ticket id only; its row loads on first use)
        queryset = Task.objects.select_for_update(of=("self",)).select_related("workflow")
    else:
        queryset = Task.objects.select_related("workflow", "ticket", "claimed_by", "assigned_agent").defer(
            *(f"ticket__{name}" for name in UNREAD_TICKET_COLUMNS)
        )
    task = first_of(queryset.filter(pk=pk))
    if task is None or not can_access_workflow(actor, task.workflow_id):
        raise NotFound(f"No task {task_public_id(pk)} in your workflows ({argument}).")
    return task


def task_discoveries(*, task: Task, resolution_status: str | None = None) -> list[Discovery]:
    if resolution_status is not None and resolution_status not in Discovery.ResolutionStatus.values:
        raise DomainError(
            f"resolution_status must be one of: {', '.join(Discovery.ResolutionStatus.values)}; got {resolution_status!r}."
        )
    queryset = Discovery.objects.filter(source_task=task).select_related("spawned_task")
    if resolution_status:
        queryset = queryset.filter(resolution_status=resolution_status)
    return list(queryset)


def discoveries_by_type(*, actor, discovery_type: str, limit: int = 50) -> list[Discovery]:
    if discovery_type not in Discovery.DiscoveryType.values:
        raise DomainError(f"discovery_type must be one of: {', '.join(Discovery.DiscoveryType.values)}; got {discovery_type!r}.")
    queryset = Discovery.objects.filter(discovery_type=discovery_type).select_related("source_task", "spawned_task")
    allowed = workflow_ids_for(actor)
    if allowed is not None:
        queryset = queryset.filter(source_task__workflow_id__in=allowed)
    return list(queryset[:limit])


def workflow_graph(*, ticket) -> dict:
    """Nodes = the ticket's tasks; edges = task dependencies AND discovery spawns."""
    tasks = list(Task.objects.filter(ticket=ticket).order_by("id"))
    task_ids = {t.id for t in tasks}
    spawned = list(
        Discovery.objects.filter(source_task_id__in=task_ids, spawned_task__isnull=False).select_related("spawned_task")
    )
    extra = {d.spawned_task for d in spawned if d.spawned_task_id not in task_ids}
    nodes = tasks + sorted(extra, key=lambda t: t.id)
    node_ids = {t.id for t in nodes}
    edges = []
    through = Task.depends_on.through
    for row in through.objects.filter(from_task_id__in=node_ids).values("from_task_id", "to_task_id"):
        if row["to_task_id"] in node_ids:
            edges.append({"from": task_public_id(row['to_task_id']), "to": task_public_id(row['from_task_id']), "type": "depends_on"})
    for discovery in spawned:
        edges.append({
            "from": task_public_id(discovery.source_task_id), "to": task_public_id(discovery.spawned_task_id), "type": "discovery",
            "discovery_type": discovery.discovery_type,
        })
    return {
        "ticket_id": ticket.public_id,
        "nodes": [
            {"task_id": t.public_id, "status": t.status, "task_type": t.task_type, "priority": t.priority,
             "phase_id": t.phase_id, "claimed_by": t.claimed_by_id}
            for t in nodes
        ],
        "edges": edges,
    }


# --- filtered, sorted lists for the REST door --------------------------------------------------------


def task_list(*, actor, workflow=None, ticket=None, status: str | None = None, task_type: str | None = None):
    """Tasks the actor may see (optionally one workflow's or one ticket's), as a queryset for pagination."""
    if status is not None and status not in Task.Status.values:
        raise DomainError(f"status must be one of: {', '.join(Task.Status.values)}; got {status!r}.")
    if task_type is not None and task_type not in Task.TaskType.values:
        raise DomainError(f"task_type must be one of: {', '.join(Task.TaskType.values)}; got {task_type!r}.")
    queryset = Task.objects.select_related("workflow")
    allowed = workflow_ids_for(actor)
    if allowed is not None:
        queryset = queryset.filter(workflow_id__in=allowed)
    if workflow is not None:
        queryset = queryset.filter(workflow=workflow)
    if ticket is not None:
        queryset = queryset.filter(ticket=ticket)
    if status:
        queryset = queryset.filter(status=status)
    if task_type:
        queryset = queryset.filter(task_type=task_type)
    return queryset


def related_tasks_public_ids(*, actor, workflow, task_ids) -> list[str]:
    """The public ids of `task_ids` (each 'TSK-n'), each checked to be a task of `workflow` the actor may see.
    Answers tickets' `related_tasks_resolve` hook when a ticket is created with related tasks."""
    public_ids = []
    for task_id in dict.fromkeys(task_ids):
        task = task_get(task_id=task_id, actor=actor, argument="related_task_ids")
        if task.workflow_id != workflow.id:
            raise DomainError(f"related_task_ids: {task.public_id} belongs to another workflow.")
        public_ids.append(task.public_id)
    return public_ids


# --- dashboard read models of blocker risk and discovery patterns ---------------------------------

AT_RISK_LIMIT = 5
PATTERN_WINDOW = 500  # newest discoveries clustered
PATTERN_SIMILARITY = 0.55  # cosine to a cluster's centroid (MiniLM: paraphrases ≈0.55-0.85, unrelated < 0.45)
PATTERN_WEEKS = 8
PATTERN_LIMIT = 6


def tickets_at_risk(*, workflow, limit: int = AT_RISK_LIMIT) -> list[dict]:
    """Open tickets of the workflow most worth unblocking early: p_blocked of the risk get_ticket shows
    (the latest prediction; none for a shadow-holdout ticket or a prior-tier one without p) times
    (1 + the open tickets it blocks). Best first; ties by p, then the older ticket."""
    from django.db.models import Count, OuterRef, Q, Subquery

    from tasks.models import BlockerPrediction

    latest = BlockerPrediction.objects.filter(ticket=OuterRef("pk")).order_by("-id")
    rows = (
        Ticket.objects.filter(workflow=workflow).exclude(status=Ticket.Status.DONE)
        .annotate(risk_shown=Subquery(latest.values("shown")[:1]), risk_p=Subquery(latest.values("p_blocked")[:1]),
                  risk_band=Subquery(latest.values("band")[:1]),
                  open_dependents=Count("blocking_links", filter=~Q(blocking_links__ticket__status=Ticket.Status.DONE)))
        .filter(risk_shown=True, risk_p__isnull=False)
        .values("id", "title", "status", "is_blocked", "risk_p", "risk_band", "open_dependents")
    )
    ranked = sorted(rows, key=lambda r: (-r["risk_p"] * (1 + r["open_dependents"]), -r["risk_p"], r["id"]))[:limit]
    return [
        {"ticket_id": ticket_public_id(r['id']), "title": r["title"], "status": r["status"], "is_blocked": r["is_blocked"],
         "p_blocked": r["risk_p"], "band": r["risk_band"], "dependents": r["open_dependents"],
         "score": round(r["risk_p"] * (1 + r["open_dependents"]), 3)}
        for r in ranked
    ]


def discovery_patterns(*, workflow, window: int = PATTERN_WINDOW, similarity: float = PATTERN_SIMILARITY,
                       weeks: int = PATTERN_WEEKS, limit: int = PATTERN_LIMIT, now=None) -> list[dict]:
    """Recurring discovery patterns: the workflow's newest `window` embedded discoveries, clustered
    greedily in the order they were recorded (each joins the cluster whose centroid is most similar, at
    least `similarity`, else starts one). Clusters of two or more, largest first, each with its count,
    leading discovery type, a representative summary (the member nearest the centroid), its latest
    tickets, when it was last seen and counts per week for the last `weeks` weeks (oldest first)."""
    from datetime import timedelta

    import numpy as np
    from django.utils import timezone

    rows = list(
        Discovery.objects.filter(source_task__workflow=workflow, embedding__isnull=False)
        .order_by("-created_at", "-id").values_list("id", "discovery_type", "description", "created_at", "source_task__ticket_id",
                                                     "embedding")[:window]
    )[::-1]
    if not rows:
        return []
    vectors = np.array([row[5] for row in rows], dtype=float)
    vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    sums: list[np.ndarray] = []
    members: list[list[int]] = []
    for index, vector in enumerate(vectors):
        if sums:
            centroids = np.array(sums)
            scores = centroids @ vector / np.linalg.norm(centroids, axis=1)
            best = int(np.argmax(scores))
            if scores[best] >= similarity:
                sums[best] = sums[best] + vector
                members[best].append(index)
                continue
        sums.append(vector.copy())
        members.append([index])

    today = timezone.localdate(now or timezone.now())
    this_week = today - timedelta(days=today.weekday())
    week_starts = [this_week - timedelta(weeks=weeks - 1 - i) for i in range(weeks)]
    patterns = []
    for total, indexes in zip(sums, members, strict=True):
        if len(indexes) < 2:
            continue
        centroid = total / np.linalg.norm(total)
        representative = rows[max(indexes, key=lambda i: float(vectors[i] @ centroid))]
        kinds: dict[str, int] = {}
        per_week = dict.fromkeys(week_starts, 0)
        for i in indexes:
            kinds[rows[i][1]] = kinds.get(rows[i][1], 0) + 1
            day = timezone.localdate(rows[i][3])
            start = day - timedelta(days=day.weekday())
            if start in per_week:
                per_week[start] += 1
        tickets = list(dict.fromkeys(ticket_public_id(rows[i][4]) for i in reversed(indexes)))
        summary = " ".join(representative[2].split())
        patterns.append({
            "count": len(indexes),
            "discovery_type": max(kinds.items(), key=lambda item: (item[1], item[0]))[0],
            "summary": summary if len(summary) <= 140 else summary[:139].rsplit(" ", 1)[0] + "…",
            "tickets": tickets[:3],
            "ticket_count": len(tickets),
            "last_seen": rows[indexes[-1]][3],
            "weeks": [{"week": start, "count": n} for start, n in per_week.items()],
        })
    patterns.sort(key=lambda p: (-p["count"], -p["last_seen"].timestamp()))
    return patterns[:limit]
