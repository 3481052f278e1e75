from django.contrib import admin

from agents.models import Agent, AgentEvent, AgentToken, IdempotencyRecord, SandboxRun, WorkerHeartbeat


@admin.register(Agent)
class AgentAdmin(admin.ModelAdmin):
    list_display = ["agent_id", "agent_type", "status", "last_heartbeat", "created_at"]
    list_filter = ["agent_type", "status", "workflows"]
    search_fields = ["agent_id"]


@admin.register(AgentToken)
class AgentTokenAdmin(admin.ModelAdmin):
    list_display = ["agent", "prefix", "label", "created_at", "expires_at", "revoked_at", "last_used_at"]
    list_filter = ["revoked_at"]
    readonly_fields = ["token_hash", "prefix"]


@admin.register(AgentEvent)
class AgentEventAdmin(admin.ModelAdmin):
    list_display = ["agent", "event_type", "task", "created_at"]
    list_filter = ["event_type"]


@admin.register(SandboxRun)
class SandboxRunAdmin(admin.ModelAdmin):
    list_display = ["id", "agent", "task", "provider", "status", "started_at", "ended_at", "sandbox_seconds"]
    list_filter = ["provider", "status", "workflow"]


@admin.register(IdempotencyRecord)
class IdempotencyRecordAdmin(admin.ModelAdmin):
    list_display = ["agent", "key", "tool_name", "created_at"]


@admin.register(WorkerHeartbeat)
class WorkerHeartbeatAdmin(admin.ModelAdmin):
    list_display = ["worker_name", "beat_at", "started_at", "jobs_run"]
