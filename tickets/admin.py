from django.contrib import admin

from tickets.models import CommitLink, PhaseTransition, Ticket, TicketComment, TicketDependency, TicketEvent, Workflow


@admin.register(Workflow)
class WorkflowAdmin(admin.ModelAdmin):
    list_display = ["slug", "name", "max_concurrent_sandboxes", "created_at"]
    search_fields = ["slug", "name"]


@admin.register(Ticket)
class TicketAdmin(admin.ModelAdmin):
    list_display = ["public_id", "title", "workflow", "status", "is_blocked", "priority", "ticket_type", "assigned_agent", "updated_at"]
    list_filter = ["status", "priority", "ticket_type", "is_blocked", "workflow"]
    search_fields = ["title", "description"]
    readonly_fields = ["status", "phase", "is_blocked", "version", "created_at", "updated_at", "resolved_at"]


@admin.register(TicketDependency)
class TicketDependencyAdmin(admin.ModelAdmin):
    list_display = ["ticket", "blocker", "created_at"]
    list_filter = ["ticket__workflow"]


@admin.register(TicketComment)
class TicketCommentAdmin(admin.ModelAdmin):
    list_display = ["ticket", "comment_type", "author_agent", "author_user", "created_at"]
    list_filter = ["comment_type"]
    search_fields = ["text"]


@admin.register(TicketEvent)
class TicketEventAdmin(admin.ModelAdmin):
    list_display = ["ticket", "event_type", "field", "actor_agent", "actor_user", "created_at"]
    list_filter = ["event_type"]
    search_fields = ["comment"]


@admin.register(CommitLink)
class CommitLinkAdmin(admin.ModelAdmin):
    list_display = ["ticket", "commit_sha", "linked_by_agent", "created_at"]
    search_fields = ["commit_sha", "commit_message"]


@admin.register(PhaseTransition)
class PhaseTransitionAdmin(admin.ModelAdmin):
    list_display = ["ticket", "from_phase", "to_phase", "actor_agent", "created_at"]
    list_filter = ["to_phase"]
