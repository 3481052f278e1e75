"""Admin views of agent messages, receipts and hand-offs: read-only (agents write them through MCP; a
hand-off is answered by the agent it is addressed to, never by a human)."""

from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html

from collaboration.models import Handoff, Message, MessageReceipt
from omoi_site.domain import task_public_id
from tickets.admin import ReadOnlyAdmin, ReadOnlyInline


class MessageReceiptInline(ReadOnlyInline):
    model = MessageReceipt
    fields = ["agent", "delivered_at", "read_at"]
    readonly_fields = fields


@admin.register(Message)
class MessageAdmin(ReadOnlyAdmin):
    list_display = ["id", "workflow", "sender", "to", "message_type", "short_body", "ticket", "created_at"]
    list_filter = ["message_type", ("workflow", admin.RelatedOnlyFieldListFilter), ("sender", admin.RelatedOnlyFieldListFilter)]
    list_select_related = ["workflow", "ticket"]
    search_fields = ["body", "thread_id"]
    inlines = [MessageReceiptInline]

    @admin.display(description="to", ordering="recipient")
    def to(self, obj):
        return obj.recipient_id or "everyone (broadcast)"

    @admin.display(description="message")
    def short_body(self, obj):
        return obj.body if len(obj.body) <= 90 else obj.body[:87] + "…"


@admin.register(MessageReceipt)
class MessageReceiptAdmin(ReadOnlyAdmin):
    workflow_lookup = "message__workflow"
    list_display = ["message", "agent", "delivered_at", "read_at"]
    list_filter = [("agent", admin.RelatedOnlyFieldListFilter)]


@admin.register(Handoff)
class HandoffAdmin(ReadOnlyAdmin):
    list_display = ["public_id", "task_link", "from_agent", "to_agent", "status", "created_at", "responded_at"]
    list_filter = ["status", ("workflow", admin.RelatedOnlyFieldListFilter)]
    search_fields = ["reason", "response_note"]

    @admin.display(description="id", ordering="id")
    def public_id(self, obj):
        return obj.public_id

    @admin.display(description="task", ordering="task_id")
    def task_link(self, obj):
        return format_html('<a href="{}">{}</a>', reverse("admin:tasks_task_change", args=[obj.task_id]), task_public_id(obj.task_id))
