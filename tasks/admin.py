from django.contrib import admin

from tasks.models import Discovery, Task, TaskEvent


@admin.register(Task)
class TaskAdmin(admin.ModelAdmin):
    list_display = ["public_id", "ticket", "task_type", "priority", "status", "claimed_by", "lease_expires_at", "updated_at"]
    list_filter = ["status", "priority", "task_type", "workflow"]
    search_fields = ["description"]
    readonly_fields = ["status", "claimed_by", "lease_expires_at", "fencing_token", "attempts"]


@admin.register(Discovery)
class DiscoveryAdmin(admin.ModelAdmin):
    list_display = ["source_task", "discovery_type", "resolution_status", "spawned_task", "created_at"]
    list_filter = ["discovery_type", "resolution_status"]
    search_fields = ["description"]


@admin.register(TaskEvent)
class TaskEventAdmin(admin.ModelAdmin):
    list_display = ["task", "event_type", "old_status", "new_status", "actor_agent", "created_at"]
    list_filter = ["event_type"]
