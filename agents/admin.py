"""Admin of agents, their tokens and sandbox runs. Agents are created and edited through
agents.services (status is read-only: agents and the sandbox runner set it); tokens are issued and
revoked with actions — a new token is shown once, in the success message."""

import re

from django import forms
from django.contrib import admin, messages
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from agents import services
from agents.models import Agent, AgentEvent, AgentToken, IdempotencyRecord, SandboxRun, WorkerHeartbeat
from omoi_site.domain import ticket_public_id
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
    list_display = ["agent_id", "kind", "agent_type", "status", "workflow_list", "last_heartbeat", "created_at"]
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
        return super().get_queryset(request).prefetch_related("workflows", "sandbox_runs")

    @admin.display(description="kind")
    def kind(self, obj):
        """Workers the launcher made for one run are marked, with a link to their latest run."""
        runs = list(obj.sandbox_runs.all())
        if not runs:
            return "standing"
        latest = max(runs, key=lambda run: run.pk)
        return format_html('ephemeral worker · <a href="{}">run {} ({})</a>',
                           reverse("admin:agents_sandboxrun_change", args=[latest.pk]), latest.pk, latest.status)

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


ERROR_LINE = re.compile(r"(error|exception|traceback|failed)", re.IGNORECASE)


@admin.register(SandboxRun)
class SandboxRunAdmin(ReadOnlyAdmin):
    """Runs at a glance (status, duration, cost, ticket); the run page shows the log tail monospace with
    error lines highlighted, reloads itself while the run is active, and warns when the local provider
    (no isolation) ran it."""

    list_display = ["id", "status_badge", "ticket_link", "agent", "template", "provider", "duration", "cost", "created_at"]
    list_filter = ["provider", "status", ("workflow", admin.RelatedOnlyFieldListFilter)]
    list_select_related = ["agent", "workflow", "task", "ticket"]
    search_fields = ["sandbox_id", "log_tail", "error"]
    fields = ["status_badge", "isolation", "agent", "workflow", "ticket_link", "task", "template", "provider", "sandbox_id",
              "created_at", "started_at", "ended_at", "duration", "exit_code", "llm_prompt_tokens", "llm_completion_tokens",
              "cost", "error", "log"]
    readonly_fields = fields

    @admin.display(description="status", ordering="status")
    def status_badge(self, obj):
        css = {"succeeded": "done", "failed": "blocked-run", "running": "building", "provisioning": "analyzing"}.get(obj.status, "backlog")
        return format_html('<span class="omoi-badge omoi-status-{}">{}</span>', css, obj.status)

    @admin.display(description="ticket", ordering="ticket_id")
    def ticket_link(self, obj):
        if not obj.ticket_id:
            return "—"
        return format_html('<a href="{}">{}</a>', reverse("admin:tickets_ticket_change", args=[obj.ticket_id]), ticket_public_id(obj.ticket_id))

    @admin.display(description="duration", ordering="sandbox_seconds")
    def duration(self, obj):
        if obj.started_at and not obj.ended_at:
            return f"{(timezone.now() - obj.started_at).total_seconds():.0f} s so far"
        return f"{obj.sandbox_seconds:.1f} s" if obj.sandbox_seconds else "—"

    @admin.display(description="cost", ordering="llm_cost_usd")
    def cost(self, obj):
        tokens = obj.llm_prompt_tokens + obj.llm_completion_tokens
        return f"${obj.llm_cost_usd:.4f} · {tokens} tokens"

    @admin.display(description="isolation")
    def isolation(self, obj):
        if obj.provider == SandboxRun.Provider.LOCAL:
            return format_html('<p class="omoi-warning" role="note"><strong>NOT isolated:</strong> {}</p>',
                               "the local provider ran this worker as a plain process on this machine (development only).")
        return "Daytona sandbox"

    @admin.display(description="log tail")
    def log(self, obj):
        if not obj.log_tail:
            return "—"
        highlighted = format_html_join("", "{}", (
            (format_html('<span class="omoi-error-line">{}</span>', line) if ERROR_LINE.search(line) else format_html("{}\n", line),)
            for line in obj.log_tail.splitlines()))
        return format_html('<pre class="omoi-log">{}</pre>', highlighted)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        run = self.get_object(request, object_id)
        active = run is not None and run.status in (SandboxRun.Status.PENDING, SandboxRun.Status.PROVISIONING, SandboxRun.Status.RUNNING)
        return super().change_view(request, object_id, form_url, {**(extra_context or {}), "auto_refresh_seconds": 5 if active else None})


@admin.register(IdempotencyRecord)
class IdempotencyRecordAdmin(ReadOnlyAdmin):
    workflow_lookup = "agent__workflows"
    list_display = ["agent", "key", "tool_name", "created_at"]


@admin.register(WorkerHeartbeat)
class WorkerHeartbeatAdmin(ReadOnlyAdmin):
    workflow_lookup = None  # worker processes serve every workflow
    list_display = ["worker_name", "beat_at", "started_at", "jobs_run"]
