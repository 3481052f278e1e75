"""Admin views of tasks, discoveries, task timelines and the blocker-prediction models and ledger. Tasks are written only by services: status is
read-only, and humans move tasks with the actions below (tasks.services.task_update_status with the staff
user as actor). Each selected task is a separate service call; refusals are reported per task."""

import json

from django.contrib import admin, messages
from django.http import HttpResponseRedirect
from django.urls import path, reverse
from django.utils.html import format_html

from agents.launcher import launch_worker
from omoi_site.domain import TASK_PREFIX, TICKET_PREFIX, DomainError, ticket_public_id
from tasks import blockers, services
from tasks.models import BlockerModel, BlockerPrediction, Discovery, Task, TaskEvent
from tickets.admin import PUBLIC_ID, ReadOnlyAdmin, ReadOnlyInline, run_links
from tickets.selectors import workflow_ids_for


class TicketColumnMixin:
    """Rows that belong to a ticket: a `ticket_link` column to the ticket's page, and an exact TKT-n search
    that lists that ticket's rows."""

    def get_search_results(self, request, queryset, search_term):
        match = PUBLIC_ID.match(search_term or "")
        if match and match.group(1).upper() == TICKET_PREFIX:
            return queryset.filter(ticket_id=int(match.group(2))), False
        return super().get_search_results(request, queryset, search_term)

    @admin.display(description="ticket", ordering="ticket_id")
    def ticket_link(self, obj):
        return format_html('<a href="{}">{}</a>', reverse("admin:tickets_ticket_change", args=[obj.ticket_id]), ticket_public_id(obj.ticket_id))


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
class TaskAdmin(TicketColumnMixin, ReadOnlyAdmin):
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
        if match and match.group(1).upper() == TASK_PREFIX:
            return queryset.filter(pk=int(match.group(2))), False
        return super().get_search_results(request, queryset, search_term)


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


HELD_BACK = "held back (shadow holdout)"


def _metric(value, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


@admin.register(BlockerModel)
class BlockerModelAdmin(ReadOnlyAdmin):
    """Trained blocker models with the walk-forward metrics that chose their tier, the one serving now,
    and "Retrain now" (tasks.blockers.blocker_model_retrain_request: superusers or holders of
    tasks.retrain_blockermodel not limited to workflows; anyone else is told why and nothing is queued).
    The shared model (no workflow) is listed to every staff user who may view models."""

    list_display = ["version", "tier", "scope", "created_at", "trained_through", "examples", "positives", "roc_auc", "brier",
                    "ece", "is_active"]
    list_filter = ["tier"]
    fields = ["version", "tier", "scope", "is_active", "feature_version", "created_at", "trained_through", "examples",
              "positives", "roc_auc", "brier", "ece", "metrics_json", "parameters_json", "training_fingerprint"]
    readonly_fields = fields

    def get_queryset(self, request):
        return blockers.blocker_model_list(actor=request.user)

    def get_urls(self):
        own = [path("retrain/", self.admin_site.admin_view(self.retrain_view), name="tasks_blockermodel_retrain")]
        return own + super().get_urls()

    def changelist_view(self, request, extra_context=None):
        allowed = workflow_ids_for(request.user)
        context = {
            "retrain_refusal": blockers.blocker_model_retrain_refusal(actor=request.user),
            "ledger_shown": blockers.ledger_metrics(shown=True, workflow_ids=allowed),
            "ledger_held": blockers.ledger_metrics(shown=False, workflow_ids=allowed),
        }
        return super().changelist_view(request, {**(extra_context or {}), **context})

    def retrain_view(self, request):
        back = reverse("admin:tasks_blockermodel_changelist")
        if request.method != "POST":
            return HttpResponseRedirect(back)
        try:
            blockers.blocker_model_retrain_request(actor=request.user)
        except DomainError as error:
            self.message_user(request, error.message, messages.ERROR)
        else:
            self.message_user(request, "Retraining is queued: the worker trains on every finished ticket and the new "
                              "version appears here (unchanged training data keeps the current model).", messages.SUCCESS)
        return HttpResponseRedirect(back)

    @admin.display(description="version", ordering="id")
    def version(self, obj):
        return obj.version

    @admin.display(description="scope")
    def scope(self, obj):
        return obj.workflow.slug if obj.workflow_id else "all workflows"

    @admin.display(description="serving", boolean=True)
    def is_active(self, obj):
        return obj.pk == getattr(obj, "active_id", None)

    @admin.display(description="ROC-AUC")
    def roc_auc(self, obj):
        return _metric(obj.served_metrics.get("roc_auc"))

    @admin.display(description="Brier")
    def brier(self, obj):
        return _metric(obj.served_metrics.get("brier"), 4)

    @admin.display(description="ECE")
    def ece(self, obj):
        return _metric(obj.served_metrics.get("ece"), 4)

    @admin.display(description="metrics")
    def metrics_json(self, obj):
        return format_html("<pre>{}</pre>", json.dumps(obj.metrics, indent=2, sort_keys=True))

    @admin.display(description="parameters (JSON)")
    def parameters_json(self, obj):
        return format_html("<pre>{}</pre>", json.dumps(obj.parameters, indent=2, sort_keys=True))


@admin.register(BlockerPrediction)
class BlockerPredictionAdmin(TicketColumnMixin, ReadOnlyAdmin):
    """The prediction ledger, read-only. A held-back (shadow-holdout) prediction's figures stay hidden
    until its ticket is graded (BlockerPrediction.is_revealable), as every other door hides them."""

    workflow_lookup = "ticket__workflow"
    list_display = ["id", "ticket_link", "moment", "t0", "model_version", "model_tier", "probability", "band_shown",
                    "shown", "outcome_blocked", "graded_at"]
    list_filter = ["moment", "model_tier", "shown", "outcome_blocked", ("ticket__workflow", admin.RelatedOnlyFieldListFilter)]
    list_select_related = ["ticket"]
    search_help_text = "A ticket id, e.g. TKT-42, or a model version such as lr-7."
    search_fields = ["model_version"]
    fields = ["ticket_link", "moment", "t0", "model_version", "model_tier", "shown", "probability", "base_rate_shown",
              "band_shown", "outcome_blocked", "graded_at", "created_at", "risk_json"]
    readonly_fields = fields



    @admin.display(description="p_blocked")
    def probability(self, obj):
        return _metric(obj.p_blocked) if obj.is_revealable else HELD_BACK

    @admin.display(description="band")
    def band_shown(self, obj):
        return obj.band if obj.is_revealable else HELD_BACK

    @admin.display(description="base rate")
    def base_rate_shown(self, obj):
        return _metric(obj.base_rate) if obj.is_revealable else HELD_BACK

    @admin.display(description="risk")
    def risk_json(self, obj):
        if not obj.is_revealable:
            return HELD_BACK
        return format_html("<pre>{}</pre>", json.dumps(obj.risk, indent=2, sort_keys=True, ensure_ascii=False))
