"""Compact JSON shapes of tasks and discoveries (MCP results and realtime events)."""

from __future__ import annotations

from omoi_site.domain import task_public_id, ticket_public_id
from omoi_site.payloads import compact, iso


def task_payload(task, *, include_dependencies: bool = False) -> dict:
    data = {
        "task_id": task.public_id,
        "ticket_id": ticket_public_id(task.ticket_id),
        "workflow_id": task.workflow.slug if task.workflow_id else None,
        "phase_id": task.phase_id,
        "task_type": task.task_type,
        "description": task.description,
        "priority": task.priority,
        "status": task.status,
        "assigned_agent_id": task.assigned_agent_id,
        "claimed_by": task.claimed_by_id if task.status in ("claimed", "running") else None,
        "lease_expires_at": iso(task.lease_expires_at) if task.status in ("claimed", "running") else None,
        "fencing_token": task.fencing_token if task.status in ("claimed", "running") else None,
        "conversation_id": task.conversation_id,
        "sandbox_id": task.sandbox_id,
        "result": task.result,
        "error": task.error,
        "created_at": iso(task.created_at),
        "completed_at": iso(task.completed_at),
    }
    if include_dependencies:
        data["depends_on"] = [task_public_id(pk) for pk in task.depends_on.values_list("id", flat=True)]
    return compact(data)


def discovery_payload(discovery) -> dict:
    return compact(
        {
            "discovery_id": discovery.id,
            "source_task_id": task_public_id(discovery.source_task_id),
            "discovery_type": discovery.discovery_type,
            "description": discovery.description,
            "priority_boost": discovery.priority_boost or None,
            "spawned_task_id": task_public_id(discovery.spawned_task_id),
            "resolution_status": discovery.resolution_status,
            "recorded_by": discovery.recorded_by_agent_id,
            "created_at": iso(discovery.created_at),
        }
    )


# --- results of the write services, the same JSON through MCP and REST -------------------------------------


def task_created_payload(created) -> dict:
    """tasks.services.TaskCreated: the task (with its dependencies) and the discovery that spawned it."""
    result = {"task": task_payload(created.task, include_dependencies=True)}
    if created.discovery is not None:
        result["discovery"] = discovery_payload(created.discovery)
    return result


def lease_payload(task) -> dict:
    """A renewed lease: until when it holds and the fencing token to send with every write."""
    return {"task_id": task.public_id, "lease_expires_at": iso(task.lease_expires_at), "fencing_token": task.fencing_token}


def task_discoveries_payload(task, discoveries) -> dict:
    return {"task_id": task.public_id, "discoveries": [discovery_payload(d) for d in discoveries]}


def conversation_payload(task) -> dict:
    return {"task_id": task.public_id, "conversation_id": task.conversation_id, "sandbox_id": task.sandbox_id or None}
