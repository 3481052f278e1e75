from django.contrib import admin

from collaboration.models import Handoff, Message, MessageReceipt


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    list_display = ["id", "workflow", "sender", "recipient", "message_type", "created_at"]
    list_filter = ["message_type", "workflow"]
    search_fields = ["body"]


@admin.register(MessageReceipt)
class MessageReceiptAdmin(admin.ModelAdmin):
    list_display = ["message", "agent", "delivered_at", "read_at"]


@admin.register(Handoff)
class HandoffAdmin(admin.ModelAdmin):
    list_display = ["id", "task", "from_agent", "to_agent", "status", "created_at"]
    list_filter = ["status", "workflow"]
    search_fields = ["reason"]
    readonly_fields = ["status"]
