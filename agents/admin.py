"""Admin of agents, their tokens and sandbox runs. Agents are created and edited through
agents.services (status is read-only: agents and the sandbox runner set it); tokens are issued and
revoked with actions — a new token is shown once, in the success message."""

from django import forms
from django.contrib import admin, messages

from agents import services
from agents.models import Agent, AgentEvent, AgentToken, IdempotencyRecord, SandboxRun, WorkerHeartbeat
from tickets.admin import ReadOnlyAdmin, ReadOnlyInline, ServiceAdmin, _copy_saved


class AgentAdminForm(forms.ModelForm):
    class Meta:
        model = Agent
        fields = ["agent_id", "workflows", "agent_type", "template"]


class AgentTokenInline(ReadOnlyInline):
    model = AgentToken
    fields = ["prefix", "label", "created_at", "expires_at", "revoked_at", "last_used_at"]
    readonly_fields = fields


class SandboxRunInline(ReadOnlyInline):
    model = SandboxRun
    fields = ["id", "workflow", "task", "status", "started_at", "ended_at", "sandbox_seconds", "llm_cost_usd"]
    readonly_fields = fields
    ordering = ["-created_at"]
    max_num = 0


@admin.register(Agent)
class AgentAdmin(ServiceAdmin):
    workflow_lookup = "workflows"
    form = AgentAdminForm
    list_display = ["agent_id", "agent_type", "status", "workflow_list", "last_heartbeat", "created_at"]
    list_filter = ["agent_type", "status", ("workflows", admin.RelatedOnlyFieldListFilter)]
    search_fields = ["agent_id"]
    inlines = [AgentTokenInline, SandboxRunInline]
    actions = ["issue_token", "revoke_tokens"]

    def get_readonly_fields(self, request, obj=None):
        # membership can only grow through the service, so it is chosen once, at creation
        return ["agent_id", "workflows", "status", "last_heartbeat", "created_at"] if obj else ["status", "last_heartbeat"]

    def get_inlines(self, request, obj):
        return self.inlines if obj else []

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("workflows")

    @admin.display(description="workflows")
    def workflow_list(self, obj):
        return ", ".join(w.slug for w in obj.workflows.all())

    def save_model(self, request, obj, form, change):
        data = form.cleaned_data
        agent = services.agent_create_or_update(
            agent_id=obj.agent_id if change else data["agent_id"],
            workflows=[] if change else list(data.get("workflows") or []),
            agent_type=data["agent_type"], template=data.get("template") or "",
        )
        _copy_saved(obj, agent)

    def save_related(self, request, form, formsets, change):
        self.formsets_written_by_services(formsets)  # workflows were set by the service; inlines are read-only

    @admin.action(description="Issue a new token for selected agents (shown once)")
    def issue_token(self, request, queryset):
        for agent in queryset.order_by("agent_id"):
            token = services.agent_token_issue(agent=agent, label=f"admin:{request.user.get_username()}")
            self.message_user(request, f"New token for {agent.agent_id} (copy it now, it is not stored): {token}", messages.WARNING)

    @admin.action(description="Revoke every token of selected agents")
    def revoke_tokens(self, request, queryset):
        revoked = sum(services.agent_tokens_revoke(agent=agent) for agent in queryset.order_by("agent_id"))
        self.message_user(request, f"Revoked {revoked} token(s).", messages.SUCCESS)


@admin.register(AgentToken)
class AgentTokenAdmin(ReadOnlyAdmin):
    workflow_lookup = "agent__workflows"
    list_display = ["agent", "prefix", "label", "created_at", "expires_at", "revoked_at", "last_used_at"]
    list_filter = ["revoked_at"]
    exclude = ["token_hash"]


@admin.register(AgentEvent)
class AgentEventAdmin(ReadOnlyAdmin):
    workflow_lookup = "agent__workflows"
    list_display = ["agent", "event_type", "task", "ticket", "created_at"]
    list_filter = ["event_type", ("agent", admin.RelatedOnlyFieldListFilter)]


@admin.register(SandboxRun)
class SandboxRunAdmin(ReadOnlyAdmin):
    list_display = ["id", "agent", "workflow", "task", "template", "provider", "status", "started_at", "ended_at",
                    "sandbox_seconds", "llm_prompt_tokens", "llm_completion_tokens", "llm_cost_usd"]
    list_filter = ["provider", "status", ("workflow", admin.RelatedOnlyFieldListFilter)]
    list_select_related = ["agent", "workflow", "task"]
    search_fields = ["sandbox_id", "log_tail", "error"]


@admin.register(IdempotencyRecord)
class IdempotencyRecordAdmin(ReadOnlyAdmin):
    workflow_lookup = "agent__workflows"
    list_display = ["agent", "key", "tool_name", "created_at"]


@admin.register(WorkerHeartbeat)
class WorkerHeartbeatAdmin(ReadOnlyAdmin):
    workflow_lookup = None  # worker processes serve every workflow
    list_display = ["worker_name", "beat_at", "started_at", "jobs_run"]
