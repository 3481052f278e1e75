"""Admin triage of workflows and tickets — the main human UI.

A door like the others: every write calls a service (tickets.services, or the all-or-nothing bulk
wrappers in tickets.admin_services) with the staff user as the actor, so history rows record
`actor_user`. `status` is never a form field; it moves through actions. A DomainError becomes an admin
error message and, since the whole request's transaction rolls back, nothing changes.

`ServiceAdmin` and `ReadOnlyAdmin` are shared by the other apps' admin modules.
"""

from __future__ import annotations

import re
from urllib.parse import urlencode

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.core.exceptions import PermissionDenied
from django.db.models import Case, IntegerField, Value, When
from django.http import Http404, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.timesince import timesince

from agents.agent_templates import TEMPLATES
from agents.launcher import launch_worker_requested, launch_workers_for_tickets
from agents.selectors import agent_list
from omoi_site.domain import TICKET_PREFIX, DomainError, parse_public_id, recorded_actor_label, ticket_public_id
from tasks import blockers
from tasks.selectors import task_list
from tickets import admin_services, payloads, selectors, services
from tickets.models import CommitLink, PhaseTransition, Ticket, TicketComment, TicketDependency, TicketEvent, Workflow

try:  # the search selector (tickets/search.py); the admin falls back to search_fields without it
    from tickets.search import possible_duplicates, similar_tickets, ticket_search
except ImportError:  # pragma: no cover - depends on another issue's module
    possible_duplicates = similar_tickets = ticket_search = None

PUBLIC_ID = re.compile(r"^\s*(TKT|TSK|HND)-(\d+)\s*$", re.IGNORECASE)
ADD_FORM_FIELDS = ("workflow", "title", "description", "ticket_type", "priority", "assigned_agent", "parent", "tags")


# --- shared admin plumbing -------------------------------------------------------------------------


admin.site.site_url = "/dashboard/"  # "View site" → the live dashboards (there is no page at /)
admin.site.site_header = "OmoiOS triage"


class WorkflowScopedAdmin(admin.ModelAdmin):
    """Lists and opens only the rows of the workflows the staff user may see (selectors.scoped_to_actor;
    a staff user in a `workflow:<slug>` group is limited to that workflow). Foreign-key and many-to-many
    choices in forms are narrowed the same way, so other workflows are neither listed nor pickable."""

    workflow_lookup: str | None = "workflow"

    def get_queryset(self, request):
        return selectors.scoped_to_actor(super().get_queryset(request), actor=request.user, workflow_lookup=self.workflow_lookup)

    def _scoped_choices(self, request, field, kwargs):
        lookups = {"agents.workflow": "pk", "tickets.ticket": "workflow", "agents.agent": "workflows", "tasks.task": "workflow"}
        lookup = lookups.get(field.related_model._meta.label_lower)
        if lookup is not None:
            queryset = kwargs.get("queryset", field.related_model._default_manager.all())
            kwargs["queryset"] = selectors.scoped_to_actor(queryset, actor=request.user, workflow_lookup=lookup)
        return kwargs

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        return super().formfield_for_foreignkey(db_field, request, **self._scoped_choices(request, db_field, kwargs))

    def formfield_for_manytomany(self, db_field, request, **kwargs):
        return super().formfield_for_manytomany(db_field, request, **self._scoped_choices(request, db_field, kwargs))


class NoWrites:
    """Nobody adds, changes or deletes these rows in the admin: only services write them."""

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class ReadOnlyAdmin(NoWrites, WorkflowScopedAdmin):
    """View-only admin for rows that only services write (history, receipts, runs …)."""


class ReadOnlyInline(NoWrites, admin.TabularInline):
    extra = 0
    can_delete = False
    show_change_link = False


class ServiceAdmin(WorkflowScopedAdmin):
    """Maps DomainError raised by a service during add/change to an error message. The admin runs the
    change view inside transaction.atomic; letting the error leave that block rolls everything back."""

    def has_delete_permission(self, request, obj=None):
        return False  # no delete services: closing work goes through status changes

    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        try:
            return super().changeform_view(request, object_id, form_url, extra_context)
        except DomainError as error:
            self.message_user(request, error.message, messages.ERROR)
            return HttpResponseRedirect(self.after_refusal_url(request, object_id))

    def after_refusal_url(self, request, object_id) -> str:
        return request.get_full_path()

    @staticmethod
    def formsets_written_by_services(formsets, new_objects_by_formset=None) -> None:
        """The admin's change message reads what formset.save() would have recorded; services did the
        writing instead, so record that here."""
        for formset in formsets:
            formset.new_objects = (new_objects_by_formset or {}).get(formset, [])
            formset.changed_objects = []
            formset.deleted_objects = []

    def bulk_form_action(self, request, queryset, *, form_class, title: str, run, done, form_kwargs=None):
        """An action with an intermediate form: render it, then on 'apply' call `run(ids, cleaned_data)`
        (one service call) and report `done(count, cleaned_data, result)`. Returning None goes back to the
        list. A refusal re-renders the form with the selection and the typed values kept and the reason per
        ticket listed (admin_services.BulkRefused); nothing changed."""
        form_kwargs = form_kwargs or {}
        refusal = None
        if "apply" in request.POST:
            form = form_class(request.POST, **form_kwargs)
            if form.is_valid():
                ids = sorted(queryset.values_list("pk", flat=True))
                try:
                    result = run(ids, form.cleaned_data)
                except admin_services.BulkRefused as error:
                    refusal = error.reasons
                    self.message_user(request, f"Nothing changed: {error.message}", messages.ERROR)
                except DomainError as error:
                    refusal = [("", error.message)]
                    self.message_user(request, f"Nothing changed: {error.message}", messages.ERROR)
                else:
                    self.message_user(request, done(len(ids), form.cleaned_data, result), messages.SUCCESS)
                    return None
        else:
            form = form_class(**form_kwargs)
        context = {
            **self.admin_site.each_context(request),
            "title": title,
            "form": form,
            "refusal": refusal,
            "objects": list(queryset[:200]),
            "count": queryset.count(),
            "selected": request.POST.getlist(helpers.ACTION_CHECKBOX_NAME),
            "select_across": request.POST.get("select_across", "0"),
            "action": request.POST.get("action"),
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
            "opts": self.model._meta,
            "media": self.media + form.media,
        }
        return TemplateResponse(request, "admin/omoi/bulk_action.html", context)


# --- forms -----------------------------------------------------------------------------------------

COMMENT_HELP = "Recorded in the history (at least 10 characters)."


class LaunchWorkerForm(forms.Form):
    template = forms.ChoiceField(choices=[], help_text="The agent template: system prompt, tools and limits.")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["template"].choices = [(name, name) for name in TEMPLATES]
        self.isolation_warning = (
            "the local sandbox provider runs each worker as a plain process on this machine, with this machine's "
            "access (development only). Set DAYTONA_API_KEY for isolated sandboxes."
        ) if settings.SANDBOX_PROVIDER == "local" else ""


class TicketAdminForm(forms.ModelForm):
    expected_version = forms.IntegerField(widget=forms.HiddenInput, required=False)

    class Meta:
        model = Ticket
        fields = list(ADD_FORM_FIELDS)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # the admin swaps in its own narrow widgets; a triager reads and edits whole titles
        if "title" in self.fields:
            self.fields["title"].widget.attrs.update({"class": "vTextField omoi-wide", "size": 90})
        if "description" in self.fields:
            self.fields["description"].widget.attrs.update({"rows": 4, "class": "vLargeTextField omoi-wide"})
        if self.instance.pk and "expected_version" in self.fields:
            self.fields["expected_version"].initial = self.instance.version

    similar_checked = forms.CharField(required=False, widget=forms.HiddenInput)

    def clean(self):
        data = super().clean()
        if self.instance.pk is None:
            self._warn_about_similar(data)
            return data
        return self._refuse_stale_edit(data)

    def _warn_about_similar(self, data) -> None:
        """Before a new ticket is filed: the duplicate check agents get from create_ticket. The first save
        lists the similar tickets; saving again files it anyway."""
        workflow, title = data.get("workflow"), data.get("title")
        if workflow is None or not title or possible_duplicates is None:
            return
        signature = f"{workflow.pk}:{title.strip()}"
        if data.get("similar_checked") == signature:
            return
        found = possible_duplicates(workflow=workflow, title=title, description=data.get("description") or "")
        if not found:
            return
        self.data = self.data.copy()
        self.data["similar_checked"] = signature
        rows = format_html_join("", '<li><a href="{}" target="_blank">{}</a> “{}” ({}, similarity {})</li>', (
            (reverse("admin:tickets_ticket_change", args=[parse_public_id(r["ticket_id"], TICKET_PREFIX, argument="ticket_id")]), r["ticket_id"], r["title"],
             r["status"], r["similarity"]) for r in found))
        raise forms.ValidationError(format_html(
            '<span id="similar-warning">This looks like {} existing ticket(s):</span><ul>{}</ul>'
            "Open one to comment on it instead, or press Save again to file this ticket anyway.", len(found), rows))

    def _refuse_stale_edit(self, data):
        """A stale edit (someone changed the ticket after this form was read) is sent back with what was
        typed kept and the other change shown beside it; saving again applies the typed values on top.
        (ticket_update checks the version again under lock, so a race still ends in a clear refusal.)"""
        expected = data.get("expected_version")
        if self.instance.pk and expected is not None and expected != self.instance.version:
            current = [f"{name.replace('_', ' ')}: “{payloads.short_value(getattr(self.instance, name), 80)}”" for name in self.changed_data
                       if name in ("title", "description", "priority", "ticket_type", "tags")
                       and data.get(name) != getattr(self.instance, name)]
            recent = [payloads.history_sentence(e) for e in selectors.ticket_history(ticket=self.instance)[-3:]]
            self.data = self.data.copy()
            self.data["expected_version"] = self.instance.version
            raise forms.ValidationError(
                f"{self.instance.public_id} changed since you read it (your version {expected}, now {self.instance.version}). "
                f"Your text is kept below. Now in the database — {'; '.join(current) or 'none of the fields you edited differ'}. "
                f"Latest changes: {' · '.join(recent)}. Save again to apply your version on top.")
        return data


class ChangeStatusForm(forms.Form):
    """Only the statuses every selected ticket may move to are offered (selectors.common_next_statuses);
    posting another one is refused with the reason for each ticket that may not make the move."""

    new_status = forms.ChoiceField(choices=Ticket.Status.choices, label="New status")
    comment = forms.CharField(widget=forms.Textarea(attrs={"rows": 3, "cols": 60}), help_text=COMMENT_HELP)

    def __init__(self, *args, tickets=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.tickets = list(tickets)
        self.offered = selectors.common_next_statuses(tickets=self.tickets)
        self.fields["new_status"].widget.choices = [(s, s) for s in self.offered]
        if not self.offered:
            self.fields["new_status"].help_text = "No status is allowed for all the selected tickets; select tickets in the same status."

    def clean_new_status(self):
        value = self.cleaned_data["new_status"]
        if value not in self.offered:
            reasons = []
            for ticket in self.tickets:
                moves = selectors.ticket_allowed_moves(ticket=ticket)
                if value not in moves:
                    state = f"'{ticket.status}'" + (" and blocked" if ticket.is_blocked else "")
                    reasons.append(f"{ticket.public_id} is in {state}; allowed next: {', '.join(moves) or 'none'}")
            raise forms.ValidationError([f"Nothing changed: '{value}' is not allowed for every selected ticket.", *reasons])
        return value


class AssignForm(forms.Form):
    agent = forms.ModelChoiceField(queryset=None, required=False, empty_label="— unassign —")
    comment = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2, "cols": 60}))

    def __init__(self, *args, agents=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["agent"].queryset = agents


class ResolveForm(forms.Form):
    resolution_comment = forms.CharField(widget=forms.Textarea(attrs={"rows": 3, "cols": 60}), help_text=COMMENT_HELP)


class TicketTargetForm(forms.Form):
    """A form naming one other ticket (by TKT-n or number) that must be confirmed by its title before it
    is applied: the first 'Apply' shows the title found, the second applies."""

    target_field = "duplicate_of"
    confirmed_target = forms.CharField(required=False, widget=forms.HiddenInput)

    def __init__(self, *args, actor=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.actor = actor
        self.target = None

    def clean(self):
        data = super().clean()
        value = data.get(self.target_field)
        if not value:
            return data
        try:
            self.target = selectors.ticket_get(ticket_id=value, actor=self.actor, argument=self.fields[self.target_field].label)
        except DomainError as error:
            self.add_error(self.target_field, error.message)
            return data
        if data.get("confirmed_target") != self.target.public_id:
            self.data = self.data.copy()
            self.data["confirmed_target"] = self.target.public_id
            raise forms.ValidationError(format_html(
                'Please confirm: {} is <strong class="omoi-confirm-title">{} “{}”</strong> ({}). Press Apply again to go on, '
                "or change the ticket.", self.fields[self.target_field].label, self.target.public_id, self.target.title,
                self.target.status))
        data[self.target_field] = self.target.public_id
        return data


class DuplicateForm(TicketTargetForm):
    duplicate_of = forms.CharField(label="Duplicate of", help_text="The original ticket, e.g. TKT-12.", max_length=30)
    comment = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2, "cols": 60}))


class BlockerForm(forms.Form):
    blocked_by = forms.CharField(label="Blocked by", help_text="The blocking ticket, e.g. TKT-12.", max_length=30)


class TicketCommentInlineForm(forms.ModelForm):
    class Meta:
        model = TicketComment
        fields = ["comment_type", "text"]
        # a tabular inline labels its columns, not its inputs: name them for screen readers
        widgets = {"text": forms.Textarea(attrs={"rows": 2, "cols": 70, "aria-label": "New comment"}),
                   "comment_type": forms.Select(attrs={"aria-label": "Comment type"})}


# --- inlines ---------------------------------------------------------------------------------------


def _actor(row, agent_field="actor_agent", user_field="actor_user") -> str:
    return recorded_actor_label(getattr(row, f"{agent_field}_id"), getattr(row, user_field)) or "system"


class PhaseTransitionInline(ReadOnlyInline):
    model = PhaseTransition
    verbose_name_plural = "phase history"
    fields = ["created_at", "from_phase", "to_phase", "who", "reason"]
    readonly_fields = fields

    @admin.display(description="by")
    def who(self, row):
        return _actor(row)


class TicketCommentInline(admin.TabularInline):
    """Existing comments are read-only; a new row is added through services.comment_add (save_formset)."""

    model = TicketComment
    form = TicketCommentInlineForm
    fields = ["created_at", "author", "comment_type", "text"]
    readonly_fields = ["created_at", "author"]
    extra = 1
    can_delete = False
    verbose_name = "comment"

    @admin.display(description="author")
    def author(self, row):
        return _actor(row, "author_agent", "author_user") if row.pk else "you"

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def has_add_permission(self, request, obj=None):
        return obj is not None  # comments on an existing ticket only


class CommitLinkInline(ReadOnlyInline):
    model = CommitLink
    fields = ["created_at", "commit_sha", "commit_message", "linked_by_agent", "linked_by_user"]
    readonly_fields = fields


# --- workflows -------------------------------------------------------------------------------------


class WorkflowAdminForm(forms.ModelForm):
    class Meta:
        model = Workflow
        fields = ["slug", "name", "description", "max_concurrent_sandboxes", "monthly_budget_usd", "auto_spawn_rules"]


@admin.register(Workflow)
class WorkflowAdmin(ServiceAdmin):
    workflow_lookup = "pk"
    form = WorkflowAdminForm
    list_display = ["slug", "name", "max_concurrent_sandboxes", "dashboard", "created_at"]
    search_fields = ["slug", "name"]

    def get_readonly_fields(self, request, obj=None):
        return ["slug", "created_at"] if obj else []

    @admin.display(description="dashboard")
    def dashboard(self, obj):
        return format_html('<a href="{}">board</a>', reverse("dashboard:board", args=[obj.slug]))

    def save_model(self, request, obj, form, change):
        data = form.cleaned_data
        if not change:
            workflow = services.workflow_get_or_create(slug=data["slug"], name=data.get("name") or "")
            changed = {f: data[f] for f in ("description", "max_concurrent_sandboxes", "monthly_budget_usd", "auto_spawn_rules")
                       if f in form.changed_data}
        else:
            workflow = obj
            changed = {f: data[f] for f in form.changed_data if f != "slug"}
        if changed:
            workflow = services.workflow_update(actor=request.user, workflow_id=workflow.pk, updates=changed)
        _copy_saved(obj, workflow)


def _copy_saved(target, saved) -> None:
    """Make the admin's unsaved form instance the row the service wrote (for messages, logs, redirects)."""
    for field in saved._meta.concrete_fields:
        if getattr(field, "generated", False):
            continue
        setattr(target, field.attname, getattr(saved, field.attname))
    target._state.adding = False
    target._state.db = saved._state.db


# --- tickets ---------------------------------------------------------------------------------------


@admin.register(Ticket)
class TicketAdmin(ServiceAdmin):
    """The triage cockpit. The change page (templates/admin/tickets/ticket/change_form.html) shows status
    buttons for the allowed next moves, blockers with a picker, similar tickets with a confirmed one-click
    'duplicate', tasks with their holders, the blocker risk get_ticket shows (tasks.blockers.ticket_risk_shown:
    nothing for a shadow-holdout ticket) with its suggested blockers, history as sentences; each button posts
    to triage_view or duplicate_view, which call one service with the staff user as actor."""

    form = TicketAdminForm
    list_display = ["public_id", "title", "status_badge", "blocked_badge", "priority_badge", "assigned_agent", "workflow", "age"]
    list_display_links = ["public_id", "title"]
    list_filter = ["status", "priority", "ticket_type", "is_blocked", ("assigned_agent", admin.RelatedOnlyFieldListFilter),
                   ("workflow", admin.RelatedOnlyFieldListFilter)]
    list_select_related = ["workflow", "assigned_agent"]
    search_fields = ["title", "description"]  # fallback when tickets.search is absent
    search_help_text = "Search by meaning and words, best match first (or a ticket id such as TKT-12)."
    autocomplete_fields = []
    raw_id_fields = ["parent"]
    list_per_page = 50
    actions = ["change_status", "assign", "resolve", "mark_duplicate", "add_blocker", "launch_worker"]
    inlines = [TicketCommentInline, PhaseTransitionInline, CommitLinkInline]
    state_fields = ["status", "phase", "is_blocked", "resolution", "resolved_at", "duplicate_of", "version"]

    def get_fieldsets(self, request, obj=None):
        if obj is None:
            return [(None, {"fields": [*ADD_FORM_FIELDS, "similar_checked"]})]
        return [
            (None, {"fields": ["title", ("priority", "ticket_type", "assigned_agent"), "description", ("parent", "tags"), "expected_version"]}),
            ("State and provenance", {"classes": ["collapse"], "fields": [*self.state_fields, "workflow", "created_by", "created_at", "updated_at"]}),
        ]

    def get_readonly_fields(self, request, obj=None):
        provenance = ["workflow", "created_by", "created_at", "updated_at"]
        return [*self.state_fields, *(provenance if obj else [])]

    def get_inlines(self, request, obj):
        return self.inlines if obj else []

    # -- changelist badges --

    @admin.display(description="status", ordering="status")
    def status_badge(self, obj):
        return format_html('<span class="omoi-badge omoi-status-{}">{}</span>', obj.status, obj.status)

    @admin.display(description="blocked", ordering="is_blocked")
    def blocked_badge(self, obj):
        if obj.is_blocked:
            return format_html('<span class="omoi-badge omoi-blocked">{}</span>', "blocked")
        return format_html('<span class="omoi-badge omoi-unblocked">{}</span>', "unblocked")

    @admin.display(description="priority", ordering="priority_rank")
    def priority_badge(self, obj):
        return format_html('<span class="omoi-badge omoi-priority-{}">{}</span>', obj.priority, obj.priority)

    @admin.display(description="age", ordering="created_at")
    def age(self, obj):
        return timesince(obj.created_at, depth=1)

    # -- the cockpit --

    def get_urls(self):
        own = [
            path("<int:ticket_pk>/triage/", self.admin_site.admin_view(self.triage_view), name="tickets_ticket_triage"),
            path("<int:ticket_pk>/duplicate/", self.admin_site.admin_view(self.duplicate_view), name="tickets_ticket_duplicate"),
        ]
        return own + super().get_urls()

    def change_view(self, request, object_id, form_url="", extra_context=None):
        obj = self.get_object(request, object_id)
        if obj is not None:
            extra_context = {**(extra_context or {}), "cockpit": self.cockpit_context(request, obj)}
        return super().change_view(request, object_id, form_url, extra_context)

    def cockpit_context(self, request, ticket) -> dict:
        found, note = self.similar_found(ticket)
        events = selectors.ticket_history(ticket=ticket)
        blocked_by = selectors.ticket_blockers(ticket=ticket)
        now = timezone.now()
        return {
            "ticket": ticket,
            "triage_url": reverse("admin:tickets_ticket_triage", args=[ticket.pk]),
            "moves": selectors.ticket_allowed_moves(ticket=ticket),
            "blockers": blocked_by,
            "blocker_ids": {b.public_id for b in blocked_by},
            "dependents": selectors.ticket_dependents(ticket=ticket),
            "blocker_candidates": selectors.blocker_candidates(ticket=ticket),
            "similar": found,
            "similar_note": note,
            "tasks": list(task_list(actor=request.user, ticket=ticket).select_related("claimed_by", "assigned_agent")[:50]),
            "history": [(payloads.history_sentence(e), timesince(e.created_at, now, depth=1), e.created_at) for e in reversed(events)][:30],
            "history_count": len(events),
            "templates": list(TEMPLATES),
            "local_sandbox": settings.SANDBOX_PROVIDER == "local",
            "dashboard_url": reverse("dashboard:ticket", args=[ticket.public_id]),
            "risk": blockers.ticket_risk_shown(ticket=ticket),
        }

    def _ticket_for(self, request, ticket_pk):
        ticket = self.get_object(request, str(ticket_pk))
        if ticket is None:  # not there, or in a workflow this staff user does not see
            raise Http404(f"No ticket {ticket_public_id(ticket_pk)} in your workflows.")
        if not self.has_change_permission(request, ticket):
            raise PermissionDenied
        return ticket

    def triage_view(self, request, ticket_pk):
        """One cockpit button = one service call with the staff user as actor; a refusal changes nothing."""
        ticket = self._ticket_for(request, ticket_pk)
        back = reverse("admin:tickets_ticket_change", args=[ticket.pk])
        if request.method != "POST":
            return HttpResponseRedirect(back)
        op, user = request.POST.get("op", ""), request.user
        try:
            if op == "status":
                new_status = request.POST.get("new_status", "")
                comment = request.POST.get("comment", "").strip() or f"{user.get_username()} moved it to {new_status} in the admin triage."
                services.ticket_change_status(actor=user, ticket_id=ticket.pk, new_status=new_status, comment=comment)
                self.message_user(request, f"{ticket.public_id} moved to {new_status}.", messages.SUCCESS)
            elif op == "blocker_add":
                blocked = services.dependency_add(actor=user, ticket_id=ticket.pk, blocked_by_ticket_id=request.POST.get("blocked_by", ""))
                self.message_user(request, f"{ticket.public_id} is now blocked by {request.POST.get('blocked_by')}"
                                  f"{'' if blocked.ticket.is_blocked else ' (already done, so it does not block)'}.", messages.SUCCESS)
            elif op == "blocker_remove":
                services.dependency_remove(actor=user, ticket_id=ticket.pk, blocked_by_ticket_id=request.POST.get("blocked_by", ""))
                self.message_user(request, f"Removed blocker {request.POST.get('blocked_by')} from {ticket.public_id}.", messages.SUCCESS)
            elif op == "risk_predict":
                risk = blockers.ticket_risk_predict(ticket=ticket)
                shown = f"band {risk['band']}" if risk is not None else "no estimate is shown for this ticket"
                self.message_user(request, f"Forecast for {ticket.public_id} recorded: {shown}.", messages.SUCCESS)
            elif op == "launch":
                run = launch_worker_requested(actor=user, template=request.POST.get("template", ""), ticket_id=ticket.pk)
                self.message_user(request, format_html("Launched {} on {}: follow {}.", run.agent_id, ticket.public_id, run_links([run])),
                                  messages.SUCCESS)
            else:
                self.message_user(request, f"Nothing changed: unknown triage step {op!r}.", messages.ERROR)
        except DomainError as error:
            self.message_user(request, f"Nothing changed: {error.message}", messages.ERROR)
        return HttpResponseRedirect(back)

    def duplicate_view(self, request, ticket_pk):
        """Mark this ticket a duplicate of `of`: GET asks for confirmation showing both titles, POST applies."""
        ticket = self._ticket_for(request, ticket_pk)
        target = request.POST.get("of") or request.GET.get("of", "")
        try:
            original = selectors.ticket_get(ticket_id=target, actor=request.user, argument="of")
        except DomainError as error:
            self.message_user(request, f"Nothing changed: {error.message}", messages.ERROR)
            return HttpResponseRedirect(reverse("admin:tickets_ticket_change", args=[ticket.pk]))
        if request.method == "POST" and "confirm" in request.POST:
            try:
                services.ticket_mark_duplicate(actor=request.user, ticket_id=ticket.pk, duplicate_of_ticket_id=original.pk,
                                               comment=request.POST.get("comment", "").strip())
            except DomainError as error:
                self.message_user(request, f"Nothing changed: {error.message}", messages.ERROR)
            else:
                self.message_user(request, f"{ticket.public_id} is marked a duplicate of {original.public_id} and resolved.", messages.SUCCESS)
            return HttpResponseRedirect(reverse("admin:tickets_ticket_change", args=[original.pk]))
        context = {**self.admin_site.each_context(request), "title": f"Mark {ticket.public_id} as a duplicate?", "opts": self.model._meta,
                   "ticket": ticket, "original": original}
        return TemplateResponse(request, "admin/omoi/confirm_duplicate.html", context)

    @admin.display(description="id", ordering="id")
    def public_id(self, obj):
        return obj.public_id

    @admin.display(description="created by")
    def created_by(self, obj):
        return _actor(obj, "created_by_agent", "created_by_user")

    def similar_found(self, obj) -> tuple[list[dict], str]:
        """Similar tickets (the duplicate check agents get) and a note when there are none or it failed."""
        if similar_tickets is None:
            return [], "similarity search is not installed"
        try:
            found = similar_tickets(workflow_ids=[obj.workflow_id], title=obj.title, description=obj.description,
                                    exclude_ticket_id=obj.pk, limit=5)
        except Exception as error:  # the embedding provider may be down; the page must still open
            return [], f"unavailable ({type(error).__name__})"
        for row in found:
            pk = parse_public_id(row["ticket_id"], TICKET_PREFIX, argument="ticket_id")
            row["change_url"] = reverse("admin:tickets_ticket_change", args=[pk])
            row["duplicate_url"] = f'{reverse("admin:tickets_ticket_duplicate", args=[pk])}?{urlencode({"of": obj.public_id})}'
        return found, "" if found else "none above the similarity threshold"

    def changelist_view(self, request, extra_context=None):
        match = PUBLIC_ID.match(request.GET.get("q", ""))
        if match and match.group(1).upper() == TICKET_PREFIX:  # an exact ticket id jumps to the ticket
            ticket = self.get_queryset(request).filter(pk=int(match.group(2))).first()
            if ticket is not None:
                return HttpResponseRedirect(reverse("admin:tickets_ticket_change", args=[ticket.pk]))
        return super().changelist_view(request, extra_context)

    def get_search_results(self, request, queryset, search_term):
        """Hybrid search (meaning + words, tickets.search.ticket_search) ranked by relevance, unless the
        user sorts by a column."""
        term = search_term.strip()
        if not term:
            return queryset, False
        match = PUBLIC_ID.match(term)
        if match and match.group(1).upper() == TICKET_PREFIX:
            return queryset.filter(pk=int(match.group(2))), False
        if ticket_search is None:
            return super().get_search_results(request, queryset, search_term)
        allowed = selectors.workflow_ids_for(request.user)
        workflow_ids = list(Workflow.objects.values_list("id", flat=True)) if allowed is None else sorted(allowed)
        try:
            results = ticket_search(workflow_ids=workflow_ids, query=term, search_type="hybrid", limit=50)
        except DomainError as error:
            self.message_user(request, error.message, messages.WARNING)
            return queryset.none(), False
        ranked = [parse_public_id(r["ticket_id"], TICKET_PREFIX, argument="ticket_id") for r in results]
        queryset = queryset.filter(pk__in=ranked)
        if ranked and not request.GET.get("o"):
            rank = Case(*[When(pk=pk, then=Value(position)) for position, pk in enumerate(ranked)], output_field=IntegerField())
            queryset = queryset.annotate(search_rank=rank).order_by("search_rank")
        return queryset, False

    # -- writes through the services --

    def save_model(self, request, obj, form, change):
        data = form.cleaned_data
        agent = data.get("assigned_agent")
        parent = data.get("parent")
        if not change:
            ticket = services.ticket_create(
                actor=request.user, workflow=data["workflow"], title=data["title"], description=data["description"],
                ticket_type=data["ticket_type"], priority=data["priority"], assigned_agent_id=agent.agent_id if agent else None,
                parent_ticket_id=parent.pk if parent else None, tags=data.get("tags") or [],
            )
            blockers.ticket_risk_on_create(ticket=ticket, text_vector=blockers.text_vector(ticket.title, ticket.description))
            _copy_saved(obj, ticket)
            return
        updates = {}
        for name in form.changed_data:
            if name == "assigned_agent":
                updates["assigned_agent_id"] = agent.agent_id if agent else None
            elif name == "parent":
                updates["parent_ticket_id"] = parent.pk if parent else None
            elif name in ("title", "description", "priority", "ticket_type", "tags"):
                updates[name] = data[name]
        if updates:
            ticket, _ = services.ticket_update(actor=request.user, ticket_id=obj.pk, updates=updates,
                                               expected_version=data.get("expected_version"))
            _copy_saved(obj, ticket)

    def save_related(self, request, form, formsets, change):
        added = {}
        for formset in formsets:  # only the comment inline is writable
            if formset.model is TicketComment:
                for inline_form in formset.forms:
                    if inline_form.instance.pk is None and inline_form.has_changed() and inline_form.cleaned_data.get("text"):
                        added.setdefault(formset, []).append(services.comment_add(
                            actor=request.user, ticket_id=form.instance.pk, comment_text=inline_form.cleaned_data["text"],
                            comment_type=inline_form.cleaned_data["comment_type"]))
        self.formsets_written_by_services(formsets, added)

    def after_refusal_url(self, request, object_id) -> str:
        if object_id or request.method != "POST":
            return request.get_full_path()
        # a refused add: come back to the add form with what was typed
        initial = {name: request.POST.get(name, "") for name in ADD_FORM_FIELDS if request.POST.get(name)}
        if len(initial.get("description", "")) > 3000:
            initial["description"] = initial["description"][:3000]
        return f"{request.path}?{urlencode(initial)}"

    # -- bulk actions (all-or-nothing) --

    @admin.action(description="Change status of selected tickets…")
    def change_status(self, request, queryset):
        return self.bulk_form_action(
            request, queryset, form_class=ChangeStatusForm, title="Change the status of these tickets",
            form_kwargs={"tickets": queryset.order_by("pk")},
            run=lambda ids, data: admin_services.tickets_change_status(
                actor=request.user, ticket_ids=ids, new_status=data["new_status"], comment=data["comment"]),
            done=lambda n, data, result: f"Moved {n} ticket(s) to {data['new_status']}.",
        )

    @admin.action(description="Assign selected tickets to an agent…")
    def assign(self, request, queryset):
        agents = selectors.scoped_to_actor(agent_list(), actor=request.user, workflow_lookup="workflows")
        return self.bulk_form_action(
            request, queryset, form_class=AssignForm, title="Assign these tickets", form_kwargs={"agents": agents},
            run=lambda ids, data: admin_services.tickets_assign(
                actor=request.user, ticket_ids=ids, agent_id=data["agent"].agent_id if data["agent"] else None,
                comment=data.get("comment") or ""),
            done=lambda n, data, result: f"Assigned {n} ticket(s) to {data['agent'] or 'nobody'}.",
        )

    @admin.action(description="Resolve selected tickets…")
    def resolve(self, request, queryset):
        return self.bulk_form_action(
            request, queryset, form_class=ResolveForm, title="Resolve these tickets",
            run=lambda ids, data: admin_services.tickets_resolve(
                actor=request.user, ticket_ids=ids, resolution_comment=data["resolution_comment"]),
            done=lambda n, data, result: f"Resolved {n} ticket(s).",
        )

    @admin.action(description="Mark selected tickets as duplicates of…")
    def mark_duplicate(self, request, queryset):
        return self.bulk_form_action(
            request, queryset, form_class=DuplicateForm, title="Mark these tickets as duplicates",
            form_kwargs={"actor": request.user},
            run=lambda ids, data: admin_services.tickets_mark_duplicate(
                actor=request.user, ticket_ids=ids, duplicate_of_ticket_id=data["duplicate_of"], comment=data.get("comment") or ""),
            done=lambda n, data, result: f"Marked {n} ticket(s) as duplicates of {data['duplicate_of']} and resolved them.",
        )

    @admin.action(description="Launch a sandboxed worker on selected tickets…")
    def launch_worker(self, request, queryset):
        return self.bulk_form_action(
            request, queryset, form_class=LaunchWorkerForm, title="Launch a worker on each of these tickets",
            run=lambda ids, data: launch_workers_for_tickets(actor=request.user, ticket_ids=ids, template=data["template"]),
            done=lambda n, data, runs: format_html("Launched {} {} worker(s): {}.", n, data["template"], run_links(runs)),
        )

    @admin.action(description="Add a blocker to selected tickets…")
    def add_blocker(self, request, queryset):
        return self.bulk_form_action(
            request, queryset, form_class=BlockerForm, title="Block these tickets by another ticket",
            run=lambda ids, data: admin_services.tickets_add_blocker(
                actor=request.user, ticket_ids=ids, blocked_by_ticket_id=data["blocked_by"]),
            done=lambda n, data, result: f"{n} ticket(s) are now blocked by {data['blocked_by']}.",
        )


def run_links(runs) -> str:
    """Links to the admin pages of sandbox runs ('run 7 (implementer-…)', …)."""
    return format_html_join(", ", '<a href="{}">run {} ({})</a>', (
        (reverse("admin:agents_sandboxrun_change", args=[run.pk]), run.pk, run.agent_id) for run in runs))


# --- history and links: read-only views, writes happen through the ticket ----------------------------


@admin.register(TicketDependency)
class TicketDependencyAdmin(ReadOnlyAdmin):
    workflow_lookup = "ticket__workflow"
    list_display = ["ticket", "blocker", "created_by_agent", "created_at"]
    list_filter = [("ticket__workflow", admin.RelatedOnlyFieldListFilter)]
    list_select_related = ["ticket", "blocker"]
    actions = ["remove_dependencies"]

    @admin.action(description="Remove selected dependencies (unblocks when no open blocker remains)")
    def remove_dependencies(self, request, queryset):
        pairs = list(queryset.values_list("ticket_id", "blocker_id"))
        try:
            admin_services.dependencies_remove(actor=request.user, pairs=pairs)
        except DomainError as error:
            self.message_user(request, f"Nothing changed: {error.message}", messages.ERROR)
            return
        self.message_user(request, f"Removed {len(pairs)} dependenc{'y' if len(pairs) == 1 else 'ies'}.", messages.SUCCESS)


@admin.register(TicketComment)
class TicketCommentAdmin(ReadOnlyAdmin):
    workflow_lookup = "ticket__workflow"
    list_display = ["ticket", "comment_type", "author_agent", "author_user", "created_at"]
    list_filter = ["comment_type"]
    search_fields = ["text"]


@admin.register(TicketEvent)
class TicketEventAdmin(ReadOnlyAdmin):
    workflow_lookup = "ticket__workflow"
    list_display = ["ticket", "event_type", "who", "field", "old", "new", "created_at"]
    list_filter = ["event_type"]
    list_select_related = ["ticket", "actor_user"]
    search_fields = ["comment"]

    @admin.display(description="by")
    def who(self, row):
        return _actor(row)

    @admin.display(description="old")
    def old(self, row):
        return payloads.short_value(row.old_value, 40)

    @admin.display(description="new")
    def new(self, row):
        return payloads.short_value(row.new_value, 40)


@admin.register(CommitLink)
class CommitLinkAdmin(ReadOnlyAdmin):
    workflow_lookup = "ticket__workflow"
    list_display = ["ticket", "commit_sha", "linked_by_agent", "linked_by_user", "created_at"]
    search_fields = ["commit_sha", "commit_message"]


@admin.register(PhaseTransition)
class PhaseTransitionAdmin(ReadOnlyAdmin):
    workflow_lookup = "ticket__workflow"
    list_display = ["ticket", "from_phase", "to_phase", "actor_agent", "actor_user", "created_at"]
    list_filter = ["to_phase"]
