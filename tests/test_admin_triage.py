"""Admin triage door: every write goes through a service with the staff user as the actor, status is
never a form field, and a refused write shows an error and changes nothing."""

from __future__ import annotations

import pytest
from django.contrib.messages import get_messages
from django.urls import reverse

from tickets.models import Ticket, TicketComment, TicketEvent

CHANGELIST = "admin:tickets_ticket_changelist"


@pytest.fixture
def staff(admin_user):
    return admin_user


@pytest.fixture
def agent(workflow, make_agent):
    return make_agent("triage-worker", workflow)[0]


def _ticket(workflow, actor, title="Login times out after five minutes", **kwargs):
    from tickets.services import ticket_create

    return ticket_create(actor=actor, workflow=workflow, title=title, description="Sessions expire far too early for users.", **kwargs)


def _messages(response) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


def _run_action(client, action, tickets, **form):
    """Pick the action on the changelist, then submit its intermediate form (like a person would)."""
    url = reverse(CHANGELIST)
    selection = {"action": action, "_selected_action": [t.pk for t in tickets], "index": 0}
    intermediate = client.post(url, selection)
    assert intermediate.status_code == 200 and b'name="apply"' in intermediate.content
    return client.post(url, {**selection, **form, "apply": "Apply"}, follow=True)


def _change_form_data(client, ticket) -> dict:
    """The change form's current values, including the inline management forms, as the browser posts them."""
    response = client.get(reverse("admin:tickets_ticket_change", args=[ticket.pk]))
    form = response.context["adminform"].form
    data = {}
    for name, field in form.fields.items():
        value = form.initial.get(name, field.initial)
        if name == "tags":
            value = ",".join(value or [])
        if value is not None:
            data[name] = getattr(value, "pk", value)
    for inline in response.context["inline_admin_formsets"]:
        management = inline.formset.management_form
        for name in management.fields:
            data[f"{management.prefix}-{name}"] = management.initial.get(name, management[name].value())
        for inline_form in inline.formset.forms:
            for name, field in inline_form.fields.items():
                value = inline_form.initial.get(name, field.initial)
                if value is not None:
                    data[inline_form.add_prefix(name)] = getattr(value, "pk", value)
    return data


def _history(ticket, event_type):
    return list(TicketEvent.objects.filter(ticket=ticket, event_type=event_type).order_by("id"))


def test_changelist_lists_tickets_with_triage_columns_and_filters(client, staff, workflow, agent):
    _ticket(workflow, agent, priority="high", assigned_agent_id="triage-worker")
    client.force_login(staff)

    response = client.get(reverse(CHANGELIST), {"status__exact": "backlog", "priority__exact": "high"})

    assert response.status_code == 200
    page = response.content.decode()
    assert "Login times out after five minutes" in page and "triage-worker" in page and "test-flow" in page
    change_list = response.context["cl"]
    assert [f for f in change_list.list_display if f != "action_checkbox"][:5] == [
        "public_id", "title", "status_badge", "blocked_badge", "priority_badge"]
    filters = {f if isinstance(f, str) else f[0] for f in change_list.model_admin.list_filter}
    assert {"status", "priority", "ticket_type", "is_blocked", "assigned_agent", "workflow"} <= filters
    assert '<span class="omoi-badge omoi-unblocked">unblocked</span>' in page and "omoi-priority-high" in page


def test_bulk_change_status_goes_through_the_service_as_the_staff_user(client, staff, workflow, agent):
    first, second = _ticket(workflow, agent), _ticket(workflow, agent, title="Password reset mail never arrives")
    client.force_login(staff)

    response = _run_action(client, "change_status", [first, second], new_status="analyzing", comment="Triage: both need analysis first.")

    assert any("Moved 2 ticket(s) to analyzing" in m for m in _messages(response))
    for ticket in (first, second):
        ticket.refresh_from_db()
        assert (ticket.status, ticket.phase) == ("analyzing", "PHASE_REQUIREMENTS")
        [row] = _history(ticket, "status_changed")
        assert (row.actor_user, row.actor_agent, row.old_value, row.new_value) == (staff, None, "backlog", "analyzing")
        assert ticket.comments.get(comment_type="status_change").author_user == staff


def test_bulk_status_choices_are_only_the_moves_allowed_for_every_selected_ticket(client, staff, workflow, agent):
    from tickets.services import ticket_change_status

    # given one ticket in analyzing (may go to building or backlog) and one in backlog (may go to analyzing)
    movable = _ticket(workflow, agent)
    ticket_change_status(actor=agent, ticket_id=movable.pk, new_status="analyzing", comment="Analysis starts now.")
    stuck = _ticket(workflow, agent, title="Password reset mail never arrives")
    before = {t.pk: (t.status, t.version, t.events.count()) for t in Ticket.objects.all()}
    client.force_login(staff)
    url = reverse(CHANGELIST)
    both = {"action": "change_status", "_selected_action": [movable.pk, stuck.pk], "index": 0}

    offered = client.post(url, {"action": "change_status", "_selected_action": [movable.pk], "index": 0})
    mixed = client.post(url, both)
    forced = client.post(url, {**both, "new_status": "building", "comment": "Everyone start building now.", "apply": "Apply"})

    assert [v for v, _ in offered.context["form"].fields["new_status"].widget.choices] == ["backlog", "building"]
    assert mixed.context["form"].fields["new_status"].widget.choices == []
    assert "No status is allowed for all the selected tickets" in mixed.content.decode()
    # a status that was not offered is a form error on the same page: selection and typed comment kept
    assert forced.status_code == 200
    assert list(forced.context["form"].errors["new_status"])[1:] == [f"{stuck.public_id} is in 'backlog'; allowed next: analyzing"]
    assert forced.context["selected"] == [str(movable.pk), str(stuck.pk)]
    assert "Everyone start building now." in forced.content.decode()
    assert {t.pk: (t.status, t.version, t.events.count()) for t in Ticket.objects.all()} == before


def test_bulk_assign_resolve_duplicate_and_blocker_actions_call_the_services(client, staff, workflow, agent):
    original = _ticket(workflow, agent, title="Original report of the crash")
    duplicate = _ticket(workflow, agent, title="Same crash reported again")
    blocker = _ticket(workflow, agent, title="Upgrade the database driver")
    blocked = _ticket(workflow, agent, title="Ship release 2.4")
    to_resolve = _ticket(workflow, agent, title="Obsolete cleanup chore")
    client.force_login(staff)

    _run_action(client, "assign", [original], agent=agent.agent_id, comment="")
    _run_action(client, "resolve", [to_resolve], resolution_comment="No longer needed after the rewrite.")
    asked = _run_action(client, "mark_duplicate", [duplicate], duplicate_of=original.public_id, comment="Same stack trace as the original.")
    assert "Original report of the crash" in asked.content.decode() and Ticket.objects.get(pk=duplicate.pk).status == "backlog"
    _run_action(client, "mark_duplicate", [duplicate], duplicate_of=original.public_id, comment="Same stack trace as the original.",
                confirmed_target=original.public_id)
    response = _run_action(client, "add_blocker", [blocked], blocked_by=blocker.public_id)

    assert any("now blocked by" in m for m in _messages(response))
    for ticket in (original, duplicate, blocked, to_resolve):
        ticket.refresh_from_db()
    assert original.assigned_agent_id == "triage-worker"
    assert _history(original, "updated")[-1].actor_user == staff
    assert (to_resolve.status, to_resolve.resolution) == ("done", "No longer needed after the rewrite.")
    assert _history(to_resolve, "status_changed")[-1].actor_user == staff
    assert (duplicate.duplicate_of_id, duplicate.status) == (original.pk, "done")
    assert blocked.is_blocked is True
    assert _history(blocked, "dependency_added")[-1].actor_user == staff


def test_status_is_read_only_in_the_ticket_form(client, staff, workflow, agent):
    ticket = _ticket(workflow, agent)
    client.force_login(staff)

    page = client.get(reverse("admin:tickets_ticket_change", args=[ticket.pk]))
    form = page.context["adminform"].form
    assert "status" not in form.fields and "is_blocked" not in form.fields and "phase" not in form.fields
    assert b'name="status"' not in page.content

    # posting a status anyway is ignored; the title edit goes through ticket_update
    data = {**_change_form_data(client, ticket), "status": "done", "title": "Login times out after 5 minutes"}
    response = client.post(reverse("admin:tickets_ticket_change", args=[ticket.pk]), data, follow=True)

    assert response.status_code == 200
    ticket.refresh_from_db()
    assert (ticket.status, ticket.title, ticket.version) == ("backlog", "Login times out after 5 minutes", 2)
    [edit] = _history(ticket, "updated")
    assert (edit.field, edit.actor_user) == ("title", staff)


def test_a_stale_edit_keeps_what_was_typed_and_shows_the_other_change(client, staff, workflow, agent):
    from tickets.services import ticket_update

    ticket = _ticket(workflow, agent)
    client.force_login(staff)
    data = _change_form_data(client, ticket)
    ticket_update(actor=agent, ticket_id=ticket.pk, updates={"title": "Login times out after ten minutes"})  # someone else edits

    response = client.post(reverse("admin:tickets_ticket_change", args=[ticket.pk]), {**data, "title": "My stale edit of the title"})

    assert response.status_code == 200  # the form again, not a redirect
    page = response.content.decode()
    assert "changed since you read it" in page and "Login times out after ten minutes" in page
    assert response.context["adminform"].form["title"].value() == "My stale edit of the title"
    ticket.refresh_from_db()
    assert (ticket.title, ticket.version) == ("Login times out after ten minutes", 2)

    # saving the kept form again applies the typed title on top of the other change
    again = {**data, "title": "My stale edit of the title", "expected_version": 2}
    client.post(reverse("admin:tickets_ticket_change", args=[ticket.pk]), again, follow=True)
    ticket.refresh_from_db()
    assert (ticket.title, ticket.version) == ("My stale edit of the title", 3)


def test_creating_a_ticket_in_the_admin_goes_through_ticket_create(client, staff, workflow, agent):
    client.force_login(staff)

    response = client.post(reverse("admin:tickets_ticket_add"), {
        "workflow": workflow.pk, "title": "Dark mode for the dashboard", "description": "Managers watch it at night; make it dark.",
        "ticket_type": "feature", "priority": "low", "assigned_agent": agent.agent_id, "parent": "", "tags": "ui, dashboard",
    }, follow=True)

    assert response.status_code == 200
    ticket = Ticket.objects.get(title="Dark mode for the dashboard")
    assert (ticket.created_by_user, ticket.assigned_agent_id, ticket.tags, ticket.status) == (staff, "triage-worker", ["ui", "dashboard"], "backlog")
    [created] = _history(ticket, "created")
    assert created.actor_user == staff and created.new_value["title"] == "Dark mode for the dashboard"


def test_a_refused_creation_shows_the_service_message_and_creates_nothing(client, staff, workflow, other_workflow, make_agent):
    make_agent("outsider", other_workflow)
    client.force_login(staff)

    response = client.post(reverse("admin:tickets_ticket_add"), {
        "workflow": workflow.pk, "title": "Dark mode for the dashboard", "description": "Managers watch it at night; make it dark.",
        "ticket_type": "feature", "priority": "low", "assigned_agent": "outsider", "parent": "", "tags": "",
    }, follow=True)

    assert any("no agent 'outsider' in workflow 'test-flow'" in m for m in _messages(response))
    assert not Ticket.objects.exists() and not TicketEvent.objects.exists()
    # back on the add form with what was typed
    assert response.context["adminform"].form.initial["title"] == "Dark mode for the dashboard"


def test_a_comment_added_on_the_change_page_goes_through_comment_add(client, staff, workflow, agent):
    ticket = _ticket(workflow, agent)
    client.force_login(staff)
    data = _change_form_data(client, ticket)
    data.update({"comments-TOTAL_FORMS": "1", "comments-0-comment_type": "question", "comments-0-text": "Is this only on Safari?",
                 "comments-0-ticket": ticket.pk})

    client.post(reverse("admin:tickets_ticket_change", args=[ticket.pk]), data, follow=True)

    comment = TicketComment.objects.get(ticket=ticket)
    assert (comment.author_user, comment.comment_type, comment.text) == (staff, "question", "Is this only on Safari?")
    assert _history(ticket, "commented")[0].actor_user == staff
    ticket.refresh_from_db()
    assert ticket.version == 1  # a comment alone is not a ticket edit


def test_admin_search_ranks_by_meaning_and_an_exact_id_jumps_to_the_ticket(client, staff, workflow, agent):
    from tickets.embeddings import ticket_embeddings_refresh_batch

    wanted = _ticket(workflow, agent, title="Empty basket shows a server error")
    noise = [_ticket(workflow, agent, title="Error in the nightly report e-mail"),
             _ticket(workflow, agent, title="Typo on the pricing page error banner")]
    ticket_embeddings_refresh_batch(ticket_ids=[wanted.pk] + [t.pk for t in noise])
    client.force_login(staff)

    by_words = client.get(reverse(CHANGELIST), {"q": "empty basket error"})
    by_id = client.get(reverse(CHANGELIST), {"q": wanted.public_id.lower()})

    assert by_words.context["cl"].result_list[0].pk == wanted.pk
    assert by_id.status_code == 302 and by_id.url == reverse("admin:tickets_ticket_change", args=[wanted.pk])


def test_the_add_page_warns_about_similar_tickets_before_filing(client, staff, workflow, agent):
    from tickets.embeddings import ticket_embeddings_refresh_batch

    existing = _ticket(workflow, agent, title="Login times out after five minutes")
    ticket_embeddings_refresh_batch(ticket_ids=[existing.pk])
    client.force_login(staff)
    data = {"workflow": workflow.pk, "title": "Users get logged out after five minutes",
            "description": "Sessions expire far too early for users.", "ticket_type": "bug", "priority": "medium",
            "assigned_agent": "", "parent": "", "tags": ""}

    warned = client.post(reverse("admin:tickets_ticket_add"), data)

    assert warned.status_code == 200 and 'id="similar-warning"' in warned.content.decode()
    assert f"{existing.public_id}</a> “Login times out after five minutes”" in warned.content.decode()
    assert Ticket.objects.count() == 1
    signature = warned.context["adminform"].form["similar_checked"].value()

    filed = client.post(reverse("admin:tickets_ticket_add"), {**data, "similar_checked": signature}, follow=True)

    assert filed.status_code == 200
    assert Ticket.objects.filter(title="Users get logged out after five minutes").count() == 1


def test_history_is_written_as_sentences_and_comments_are_read_only_on_the_change_page(client, staff, workflow, agent):
    from tickets.services import comment_add, ticket_change_status

    ticket = _ticket(workflow, agent)
    ticket_change_status(actor=agent, ticket_id=ticket.pk, new_status="analyzing", comment="Analysis starts now.")
    comment_add(actor=agent, ticket_id=ticket.pk, comment_text="Reproduced on Firefox too.")
    client.force_login(staff)

    page = client.get(reverse("admin:tickets_ticket_change", args=[ticket.pk]))

    content = page.content.decode()
    assert "Reproduced on Firefox too." in content
    history = [sentence for sentence, _, _ in page.context["cockpit"]["history"]]
    assert history == ["triage-worker commented: Reproduced on Firefox too.", "triage-worker moved it from backlog to analyzing",
                       "triage-worker created it"]
    assert "triage-worker moved it from backlog to analyzing · " in content
    inlines = {inline.opts.model.__name__: inline for inline in page.context["inline_admin_formsets"]}
    assert "TicketEvent" not in inlines
    assert not inlines["TicketComment"].has_change_permission and inlines["TicketComment"].has_add_permission


def test_task_actions_use_the_task_service_and_report_refusals(client, staff, workflow, agent):
    from tasks.models import Task, TaskEvent
    from tasks.services import task_claim_next, task_create

    ticket = _ticket(workflow, agent)
    task_create(actor=agent, ticket_id=ticket.public_id, description="Profile the session store", phase_id="PHASE_IMPLEMENTATION")
    claimed = task_claim_next(agent=agent, workflow=workflow)
    client.force_login(staff)

    response = client.post(reverse("admin:tasks_task_changelist"), {"action": "return_to_queue", "_selected_action": [claimed.pk]}, follow=True)
    claimed.refresh_from_db()
    assert (claimed.status, claimed.claimed_by_id) == ("pending", None)
    assert TaskEvent.objects.filter(task=claimed, event_type="status_changed", actor_user=staff).exists()
    assert any("Returned to the queue" in m for m in _messages(response))

    client.post(reverse("admin:tasks_task_changelist"), {"action": "cancel", "_selected_action": [claimed.pk]})
    response = client.post(reverse("admin:tasks_task_changelist"), {"action": "return_to_queue", "_selected_action": [claimed.pk]}, follow=True)
    assert Task.objects.get(pk=claimed.pk).status == "cancelled"
    assert any(m.startswith("Not changed") for m in _messages(response))


def test_agents_are_created_through_the_service_and_read_only_models_refuse_writes(client, staff, workflow):
    from agents.models import Agent

    client.force_login(staff)
    client.post(reverse("admin:agents_agent_add"), {"agent_id": "night-shift", "workflows": [workflow.pk], "agent_type": "reviewer", "template": ""})

    agent = Agent.objects.get(agent_id="night-shift")
    assert (agent.agent_type, [w.slug for w in agent.workflows.all()]) == ("reviewer", ["test-flow"])
    assert client.get(reverse("admin:collaboration_message_add")).status_code == 403
    assert client.get(reverse("admin:tickets_ticketevent_add")).status_code == 403
