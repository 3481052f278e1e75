"""Admin views of tasks, discoveries and task timelines. Tasks are written only by services: status is
read-only, and humans move tasks with the actions below (tasks.services.task_update_status with the staff
user as actor). Each selected task is a separate service call; refusals are reported per task."""

from django.contrib import admin, messages
from django.urls import reverse
from django.utils.html import format_html

from omoi_site.domain import DomainError
from tasks import services
from tasks.models import Discovery, Task, TaskEvent
from tickets.admin import PUBLIC_ID, ReadOnlyAdmin, ReadOnlyInline, run_links


class TaskEventInline(ReadOnlyInline):
    model = TaskEvent
    verbose_name_plural = "timeline"
    fields = ["created_at", "event_type", "old_status", "new_status", "actor_agent", "actor_user", "details"]
    readonly_fields = fields


class DiscoveryInline(ReadOnlyInline):
    model = Discovery
    fk_name = "source_task"
    fields = ["created_at", "discovery_type", "description", "spawned_task", "resolution_status"]
    readonly_fields = fields


@admin.register(Task)
class TaskAdmin(ReadOnlyAdmin):
    list_display = ["public_id", "ticket_link", "task_type", "priority", "status", "claimed_by", "assigned_agent",
                    "lease_expires_at", "attempts", "updated_at"]
    list_filter = ["status", "priority", "task_type", ("claimed_by", admin.RelatedOnlyFieldListFilter),
                   ("workflow", admin.RelatedOnlyFieldListFilter)]
    list_select_related = ["ticket", "claimed_by", "assigned_agent"]
    search_fields = ["description"]
    search_help_text = "Words of the description, or an id: TSK-7 (that task) or TKT-42 (its tasks)."
    inlines = [TaskEventInline, DiscoveryInline]
    actions = ["return_to_queue", "cancel", "launch_implementer"]

    @admin.display(description="id", ordering="id")
    def public_id(self, obj):
        return obj.public_id

    def get_search_results(self, request, queryset, search_term):
        """An exact TSK-n finds that task, TKT-n the tasks of that ticket; other text searches descriptions."""
        match = PUBLIC_ID.match(search_term or "")
        if match and match.group(1).upper() == "TSK":
            return queryset.filter(pk=int(match.group(2))), False
        if match and match.group(1).upper() == "TKT":
            return queryset.filter(ticket_id=int(match.group(2))), False
        return super().get_search_results(request, queryset, search_term)

    @admin.display(description="ticket", ordering="ticket_id")
    def ticket_link(self, obj):
        return format_html('<a href="{}">TKT-{}</a>', reverse("admin:tickets_ticket_change", args=[obj.ticket_id]), obj.ticket_id)

    def _move(self, request, queryset, status: str, verb: str):
        done, refused = [], []
        for task in queryset.order_by("pk"):
            try:
                services.task_update_status(actor=request.user, task_id=task.pk, status=status)
            except DomainError as error:
                refused.append(error.message)
            else:
                done.append(task.public_id)
        if done:
            self.message_user(request, f"{verb}: {', '.join(done)}.", messages.SUCCESS)
        for message in refused:
            self.message_user(request, f"Not changed: {message}", messages.ERROR)

    @admin.action(description="Return selected tasks to the queue (pending; releases the lease)")
    def return_to_queue(self, request, queryset):
        self._move(request, queryset, Task.Status.PENDING, "Returned to the queue")

    @admin.action(description="Launch an implementer worker on each selected pending task")
    def launch_implementer(self, request, queryset):
        from agents.launcher import launch_worker

        for task in queryset.select_related("ticket").order_by("pk"):
            try:
                run = launch_worker(actor=request.user, template="implementer", task=task)
            except DomainError as error:
                self.message_user(request, f"{task.public_id} not launched: {error.message}", messages.ERROR)
            else:
                self.message_user(request, format_html("{}: launched {}: follow {}.", task.public_id, run.agent_id, run_links([run])),
                                  messages.SUCCESS)

    @admin.action(description="Cancel selected tasks")
    def cancel(self, request, queryset):
        self._move(request, queryset, Task.Status.CANCELLED, "Cancelled")


@admin.register(Discovery)
class DiscoveryAdmin(ReadOnlyAdmin):
    workflow_lookup = "source_task__workflow"
    list_display = ["id", "source_task", "discovery_type", "resolution_status", "spawned_task", "recorded_by_agent", "created_at"]
    list_filter = ["discovery_type", "resolution_status"]
    search_fields = ["description"]


@admin.register(TaskEvent)
class TaskEventAdmin(ReadOnlyAdmin):
    workflow_lookup = "task__workflow"
    list_display = ["task", "event_type", "old_status", "new_status", "actor_agent", "actor_user", "created_at"]
    list_filter = ["event_type"]
