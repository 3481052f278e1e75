"""Read-side queries on tasks: lookup with access checks, discoveries, workflow graph."""

from __future__ import annotations

from omoi_site.domain import DomainError, NotFound, parse_public_id
from tasks.models import Discovery, Task
from tickets.selectors import can_access_workflow, workflow_ids_for


def task_get(*, task_id, actor, argument: str = "task_id", for_update: bool = False) -> Task:
    """One task by public id ('TSK-7'), checking the actor's workflow access."""
    pk = parse_public_id(task_id, Task.PUBLIC_PREFIX, argument=argument)
    if for_update:
        queryset = Task.objects.select_for_update(of=("self",)).select_related("workflow", "ticket")
    else:
        queryset = Task.objects.select_related("workflow", "ticket", "claimed_by", "assigned_agent")
    task = queryset.filter(pk=pk).first()
    if task is None or not can_access_workflow(actor, task.workflow_id):
        raise NotFound(f"No task {Task.PUBLIC_PREFIX}-{pk} in your workflows ({argument}).")
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
            edges.append({"from": f"TSK-{row['to_task_id']}", "to": f"TSK-{row['from_task_id']}", "type": "depends_on"})
    for discovery in spawned:
        edges.append({
            "from": f"TSK-{discovery.source_task_id}", "to": f"TSK-{discovery.spawned_task_id}", "type": "discovery",
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
