"""Compact JSON shapes of tasks and discoveries (MCP results and realtime events)."""

from __future__ import annotations


def _iso(value):
    return value.isoformat(timespec="seconds") if value else None


def _compact(data: dict) -> dict:
    return {k: v for k, v in data.items() if v not in (None, "", [], {})}


def task_payload(task, *, include_dependencies: bool = False) -> dict:
    data = {
        "task_id": task.public_id,
        "ticket_id": f"TKT-{task.ticket_id}",
        "workflow_id": task.workflow.slug if task.workflow_id else None,
        "phase_id": task.phase_id,
        "task_type": task.task_type,
        "description": task.description,
        "priority": task.priority,
        "status": task.status,
        "assigned_agent_id": task.assigned_agent_id,
        "claimed_by": task.claimed_by_id if task.status in ("claimed", "running") else None,
        "lease_expires_at": _iso(task.lease_expires_at) if task.status in ("claimed", "running") else None,
        "fencing_token": task.fencing_token if task.status in ("claimed", "running") else None,
        "conversation_id": task.conversation_id,
        "sandbox_id": task.sandbox_id,
        "result": task.result,
        "error": task.error,
        "created_at": _iso(task.created_at),
        "completed_at": _iso(task.completed_at),
    }
    if include_dependencies:
        data["depends_on"] = [f"TSK-{pk}" for pk in task.depends_on.values_list("id", flat=True)]
    return _compact(data)


def discovery_payload(discovery) -> dict:
    return _compact(
        {
            "discovery_id": discovery.id,
            "source_task_id": f"TSK-{discovery.source_task_id}",
            "discovery_type": discovery.discovery_type,
            "description": discovery.description,
            "priority_boost": discovery.priority_boost or None,
            "spawned_task_id": f"TSK-{discovery.spawned_task_id}" if discovery.spawned_task_id else None,
            "resolution_status": discovery.resolution_status,
            "recorded_by": discovery.recorded_by_agent_id,
            "created_at": _iso(discovery.created_at),
        }
    )
