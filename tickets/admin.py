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
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.http import HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html, format_html_join

from omoi_site.domain import DomainError
from tickets import admin_services, selectors, services
from tickets.models import CommitLink, PhaseTransition, Ticket, TicketComment, TicketDependency, TicketEvent, Workflow

try:  # the search selector (tickets/search.py); the admin falls back to search_fields without it
    from tickets.search import similar_tickets, ticket_search
except ImportError:  # pragma: no cover - depends on another issue's module
    similar_tickets = ticket_search = None

PUBLIC_ID = re.compile(r"^\s*(TKT|TSK|HND)-(\d+)\s*$", re.IGNORECASE)
ADD_FORM_FIELDS = ("workflow", "title", "description", "ticket_type", "priority", "assigned_agent", "parent", "tags")


# --- shared admin plumbing -------------------------------------------------------------------------


class ReadOnlyAdmin(admin.ModelAdmin):
    """View-only admin for rows that only services write (history, receipts, runs …)."""

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class ReadOnlyInline(admin.TabularInline):
    extra = 0
    can_delete = False
    show_change_link = False

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class ServiceAdmin(admin.ModelAdmin):
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
        (one service call) and report `done(count, cleaned_data)`. Returning None goes back to the list."""
        form_kwargs = form_kwargs or {}
        if "apply" in request.POST:
            form = form_class(request.POST, **form_kwargs)
            if form.is_valid():
                ids = sorted(queryset.values_list("pk", flat=True))
                try:
                    run(ids, form.cleaned_data)
                except DomainError as error:
                    self.message_user(request, f"Nothing changed: {error.message}", messages.ERROR)
                    return None
                self.message_user(request, done(len(ids), form.cleaned_data), messages.SUCCESS)
                return None
        else:
            form = form_class(**form_kwargs)
        context = {
            **self.admin_site.each_context(request),
            "title": title,
            "form": form,
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
        from agents.agent_templates import TEMPLATES

        super().__init__(*args, **kwargs)
        self.fields["template"].choices = [(name, name) for name in TEMPLATES]


class TicketAdminForm(forms.ModelForm):
    expected_version = forms.IntegerField(widget=forms.HiddenInput, required=False)

    class Meta:
        model = Ticket
        fields = list(ADD_FORM_FIELDS)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance.pk and "expected_version" in self.fields:
            self.fields["expected_version"].initial = self.instance.version


class ChangeStatusForm(forms.Form):
    new_status = forms.ChoiceField(choices=Ticket.Status.choices, label="New status")
    comment = forms.CharField(widget=forms.Textarea(attrs={"rows": 3, "cols": 60}), help_text=COMMENT_HELP)


class AssignForm(forms.Form):
    agent = forms.ModelChoiceField(queryset=None, required=False, empty_label="— unassign —")
    comment = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2, "cols": 60}))

    def __init__(self, *args, **kwargs):
        from agents.selectors import agent_list

        super().__init__(*args, **kwargs)
        self.fields["agent"].queryset = agent_list()


class ResolveForm(forms.Form):
    resolution_comment = forms.CharField(widget=forms.Textarea(attrs={"rows": 3, "cols": 60}), help_text=COMMENT_HELP)


class DuplicateForm(forms.Form):
    duplicate_of = forms.CharField(label="Duplicate of", help_text="The original ticket, e.g. TKT-12.", max_length=30)
    comment = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2, "cols": 60}))


class BlockerForm(forms.Form):
    blocked_by = forms.CharField(label="Blocked by", help_text="The blocking ticket, e.g. TKT-12.", max_length=30)


class TicketCommentInlineForm(forms.ModelForm):
    class Meta:
        model = TicketComment
        fields = ["comment_type", "text"]
        widgets = {"text": forms.Textarea(attrs={"rows": 2, "cols": 70})}


# --- inlines ---------------------------------------------------------------------------------------


def _actor(row, agent_field="actor_agent", user_field="actor_user") -> str:
    agent_id = getattr(row, f"{agent_field}_id")
    if agent_id:
        return agent_id
    user = getattr(row, user_field)
    return f"user:{user.get_username()}" if user else "system"


class TicketEventInline(ReadOnlyInline):
    model = TicketEvent
    verbose_name_plural = "history"
    fields = ["created_at", "who", "event_type", "field", "old_value", "new_value", "comment"]
    readonly_fields = fields
    ordering = ["created_at", "id"]

    @admin.display(description="by")
    def who(self, row):
        return _actor(row)

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("actor_user")


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
    form = TicketAdminForm
    list_display = ["public_id", "title", "status", "is_blocked", "priority", "ticket_type", "assigned_agent", "workflow", "updated_at"]
    list_display_links = ["public_id", "title"]
    list_filter = ["status", "priority", "ticket_type", "is_blocked", "assigned_agent", "workflow"]
    list_select_related = ["workflow", "assigned_agent"]
    search_fields = ["title", "description"]  # fallback when tickets.search is absent
    search_help_text = "Full-text search over title, description and comments (or a ticket id such as TKT-12)."
    autocomplete_fields = []
    raw_id_fields = ["parent"]
    list_per_page = 50
    actions = ["change_status", "assign", "resolve", "mark_duplicate", "add_blocker", "launch_worker"]
    inlines = [TicketCommentInline, TicketEventInline, PhaseTransitionInline, CommitLinkInline]
    state_fields = ["status", "phase", "is_blocked", "dependencies", "resolution", "resolved_at", "duplicate_of", "version"]

    def get_fieldsets(self, request, obj=None):
        if obj is None:
            return [(None, {"fields": list(ADD_FORM_FIELDS)})]
        return [
            (None, {"fields": ["title", "description", "ticket_type", "priority", "assigned_agent", "parent", "tags", "expected_version"]}),
            ("State (changes only through the actions on the ticket list)", {"fields": self.state_fields}),
            ("Context", {"fields": ["workflow", "created_by", "created_at", "updated_at", "links", "similar"]}),
        ]

    def get_readonly_fields(self, request, obj=None):
        provenance = ["workflow", "created_by", "created_at", "updated_at", "links", "similar"]
        return [*self.state_fields, *(provenance if obj else [])]

    def get_inlines(self, request, obj):
        return self.inlines if obj else []

    @admin.display(description="id", ordering="id")
    def public_id(self, obj):
        return obj.public_id

    @admin.display(description="created by")
    def created_by(self, obj):
        return _actor(obj, "created_by_agent", "created_by_user")

    @admin.display(description="blocked by / blocks")
    def dependencies(self, obj):
        def links(tickets):
            if not tickets:
                return "—"
            return format_html_join(", ", '<a href="{}">{}</a> ({})', (
                (reverse("admin:tickets_ticket_change", args=[t.pk]), t.public_id, t.status) for t in tickets))

        return format_html("blocked by: {}<br>blocks: {}", links(selectors.ticket_blockers(ticket=obj)),
                           links(selectors.ticket_dependents(ticket=obj)))

    @admin.display(description="elsewhere")
    def links(self, obj):
        return format_html('<a href="{}">live ticket page, history and task graph</a>', reverse("dashboard:ticket", args=[obj.public_id]))

    @admin.display(description="similar tickets")
    def similar(self, obj):
        if similar_tickets is None:
            return "—"
        try:
            found = similar_tickets(workflow_ids=[obj.workflow_id], title=obj.title, description=obj.description,
                                    exclude_ticket_id=obj.pk, limit=5)
        except Exception as error:  # the embedding provider may be down; the page must still open
            return f"unavailable ({type(error).__name__})"
        if not found:
            return "none above the similarity threshold"
        return format_html_join(format_html("<br>"), '<a href="{}">{}</a> {} <span style="color:#666">({}, similarity {})</span>', (
            (reverse("admin:tickets_ticket_change", args=[int(r["ticket_id"].split("-")[1])]), r["ticket_id"], r["title"],
             r["status"], r["similarity"]) for r in found))

    # -- search through the search selector --

    def get_search_results(self, request, queryset, search_term):
        term = search_term.strip()
        if not term:
            return queryset, False
        match = PUBLIC_ID.match(term)
        if match and match.group(1).upper() == "TKT":
            return queryset.filter(pk=int(match.group(2))), False
        if ticket_search is None:
            return super().get_search_results(request, queryset, search_term)
        allowed = selectors.workflow_ids_for(request.user)
        workflow_ids = list(Workflow.objects.values_list("id", flat=True)) if allowed is None else sorted(allowed)
        try:
            results = ticket_search(workflow_ids=workflow_ids, query=term, search_type="keyword", limit=50)
        except DomainError as error:
            self.message_user(request, error.message, messages.WARNING)
            return queryset.none(), False
        return queryset.filter(pk__in=[int(r["ticket_id"].split("-")[1]) for r in results]), False

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
            run=lambda ids, data: admin_services.tickets_change_status(
                actor=request.user, ticket_ids=ids, new_status=data["new_status"], comment=data["comment"]),
            done=lambda n, data: f"Moved {n} ticket(s) to {data['new_status']}.",
        )

    @admin.action(description="Assign selected tickets to an agent…")
    def assign(self, request, queryset):
        return self.bulk_form_action(
            request, queryset, form_class=AssignForm, title="Assign these tickets",
            run=lambda ids, data: admin_services.tickets_assign(
                actor=request.user, ticket_ids=ids, agent_id=data["agent"].agent_id if data["agent"] else None,
                comment=data.get("comment") or ""),
            done=lambda n, data: f"Assigned {n} ticket(s) to {data['agent'] or 'nobody'}.",
        )

    @admin.action(description="Resolve selected tickets…")
    def resolve(self, request, queryset):
        return self.bulk_form_action(
            request, queryset, form_class=ResolveForm, title="Resolve these tickets",
            run=lambda ids, data: admin_services.tickets_resolve(
                actor=request.user, ticket_ids=ids, resolution_comment=data["resolution_comment"]),
            done=lambda n, data: f"Resolved {n} ticket(s).",
        )

    @admin.action(description="Mark selected tickets as duplicates of…")
    def mark_duplicate(self, request, queryset):
        return self.bulk_form_action(
            request, queryset, form_class=DuplicateForm, title="Mark these tickets as duplicates",
            run=lambda ids, data: admin_services.tickets_mark_duplicate(
                actor=request.user, ticket_ids=ids, duplicate_of_ticket_id=data["duplicate_of"], comment=data.get("comment") or ""),
            done=lambda n, data: f"Marked {n} ticket(s) as duplicates of {data['duplicate_of']} and resolved them.",
        )

    @admin.action(description="Launch a sandboxed worker on selected tickets…")
    def launch_worker(self, request, queryset):
        from agents.launcher import launch_workers_for_tickets

        return self.bulk_form_action(
            request, queryset, form_class=LaunchWorkerForm, title="Launch a worker on each of these tickets",
            run=lambda ids, data: launch_workers_for_tickets(actor=request.user, ticket_ids=ids, template=data["template"]),
            done=lambda n, data: f"Launched {n} {data['template']} worker(s); follow them under Agents › Sandbox runs.",
        )

    @admin.action(description="Add a blocker to selected tickets…")
    def add_blocker(self, request, queryset):
        return self.bulk_form_action(
            request, queryset, form_class=BlockerForm, title="Block these tickets by another ticket",
            run=lambda ids, data: admin_services.tickets_add_blocker(
                actor=request.user, ticket_ids=ids, blocked_by_ticket_id=data["blocked_by"]),
            done=lambda n, data: f"{n} ticket(s) are now blocked by {data['blocked_by']}.",
        )


# --- history and links: read-only views, writes happen through the ticket ----------------------------


@admin.register(TicketDependency)
class TicketDependencyAdmin(ReadOnlyAdmin):
    list_display = ["ticket", "blocker", "created_by_agent", "created_at"]
    list_filter = ["ticket__workflow"]
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
    list_display = ["ticket", "comment_type", "author_agent", "author_user", "created_at"]
    list_filter = ["comment_type"]
    search_fields = ["text"]


@admin.register(TicketEvent)
class TicketEventAdmin(ReadOnlyAdmin):
    list_display = ["ticket", "event_type", "field", "actor_agent", "actor_user", "created_at"]
    list_filter = ["event_type"]
    search_fields = ["comment"]


@admin.register(CommitLink)
class CommitLinkAdmin(ReadOnlyAdmin):
    list_display = ["ticket", "commit_sha", "linked_by_agent", "linked_by_user", "created_at"]
    search_fields = ["commit_sha", "commit_message"]


@admin.register(PhaseTransition)
class PhaseTransitionAdmin(ReadOnlyAdmin):
    list_display = ["ticket", "from_phase", "to_phase", "actor_agent", "actor_user", "created_at"]
    list_filter = ["to_phase"]
