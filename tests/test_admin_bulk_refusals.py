"""Every bulk action's refusal path: the intermediate page comes back with the selection and the typed
values kept, the reason listed per refused ticket, and nothing changed in the database."""

from __future__ import annotations

import pytest
from django.urls import reverse

from agents.models import Agent, SandboxRun
from tasks.models import Task
from tickets.models import Ticket, TicketComment, TicketDependency, TicketEvent

CHANGELIST = "admin:tickets_ticket_changelist"


@pytest.fixture
def agent(workflow, make_agent):
    return make_agent("bulk-worker", workflow)[0]


def _ticket(workflow, actor, title, **kwargs):
    from tickets.services import ticket_create

    return ticket_create(actor=actor, workflow=workflow, title=title, description="A ticket for the bulk refusal tests.", **kwargs)


def _snapshot():
    """Everything a bulk action could touch."""
    return {
        "tickets": sorted(Ticket.objects.values_list("pk", "status", "version", "is_blocked", "assigned_agent_id", "duplicate_of_id")),
        "events": TicketEvent.objects.count(),
        "comments": TicketComment.objects.count(),
        "dependencies": TicketDependency.objects.count(),
        "runs": SandboxRun.objects.count(),
        "tasks": Task.objects.count(),
        "agents": Agent.objects.count(),
    }


def _refused(client, action, tickets, form, *, reasons_for):
    """Submit the action's form; assert the refusal page keeps the selection and lists a reason per ticket."""
    url = reverse(CHANGELIST)
    selection = {"action": action, "_selected_action": [t.pk for t in tickets], "index": 0}
    response = client.post(url, {**selection, **form, "apply": "Apply"})
    assert response.status_code == 200 and b'name="apply"' in response.content
    assert response.context["selected"] == [str(t.pk) for t in tickets]
    refusal = dict(response.context["refusal"])
    assert set(refusal) == {t.public_id for t in reasons_for}
    page = response.content.decode()
    for ticket in reasons_for:
        assert f"<strong>{ticket.public_id}</strong>: " in page
    for name, value in form.items():
        if name not in ("confirmed_target",) and isinstance(value, str) and value:
            assert value in page  # what was typed or picked is still there
    return refusal


def test_change_status_refusal_lists_each_blocked_ticket(client, admin_user, workflow, agent):
    from tickets.services import dependency_add

    free = _ticket(workflow, agent, "Free to move")
    blocked_one = _ticket(workflow, agent, "Blocked one")
    blocked_two = _ticket(workflow, agent, "Blocked two")
    blocker = _ticket(workflow, agent, "The blocker")
    for ticket in (blocked_one, blocked_two):
        dependency_add(actor=agent, ticket_id=ticket.pk, blocked_by_ticket_id=blocker.pk)
    client.force_login(admin_user)
    before = _snapshot()
    selected = [free.pk, blocked_one.pk, blocked_two.pk]

    response = client.post(reverse(CHANGELIST), {"action": "change_status", "_selected_action": selected, "index": 0,
                                                 "new_status": "analyzing", "comment": "Start the analysis of all three.", "apply": "Apply"})

    assert response.status_code == 200 and response.context["selected"] == [str(pk) for pk in selected]
    assert list(response.context["form"].errors["new_status"])[1:] == [
        f"{blocked_one.public_id} is in 'backlog' and blocked; allowed next: none",
        f"{blocked_two.public_id} is in 'backlog' and blocked; allowed next: none",
    ]
    assert "Start the analysis of all three." in response.content.decode()
    assert _snapshot() == before


def test_assign_refusal_names_the_ticket_of_another_workflow(client, admin_user, workflow, other_workflow, agent, make_agent):
    mine = _ticket(workflow, agent, "Mine to assign")
    outsider, _ = make_agent("outsider", other_workflow)
    theirs = _ticket(other_workflow, outsider, "Theirs to assign")
    client.force_login(admin_user)
    before = _snapshot()

    refusal = _refused(client, "assign", [mine, theirs], {"agent": agent.agent_id, "comment": "Owner for both tickets."},
                       reasons_for=[theirs])

    assert "bulk-worker" in refusal[theirs.public_id]
    assert _snapshot() == before


def test_resolve_refusal_names_the_already_done_ticket(client, admin_user, workflow, agent):
    from tickets.services import ticket_resolve

    open_ticket = _ticket(workflow, agent, "Still open")
    done = _ticket(workflow, agent, "Already finished")
    ticket_resolve(actor=agent, ticket_id=done.pk, resolution_comment="Finished in the previous sprint.")
    client.force_login(admin_user)
    before = _snapshot()

    refusal = _refused(client, "resolve", [open_ticket, done], {"resolution_comment": "Closing both after the review."},
                       reasons_for=[done])

    assert "already done" in refusal[done.public_id]
    assert _snapshot() == before


def test_mark_duplicate_asks_for_the_title_then_refuses_the_original_itself(client, admin_user, workflow, agent):
    original = _ticket(workflow, agent, "The original crash report")
    copy = _ticket(workflow, agent, "The same crash again")
    client.force_login(admin_user)
    url = reverse(CHANGELIST)
    selection = {"action": "mark_duplicate", "_selected_action": [original.pk, copy.pk], "index": 0}
    before = _snapshot()

    # a bare number is looked up and shown by title; nothing happens until it is confirmed
    asked = client.post(url, {**selection, "duplicate_of": str(original.pk), "comment": "Same trace.", "apply": "Apply"})
    assert asked.status_code == 200
    assert f"{original.public_id} “The original crash report”" in asked.content.decode()
    assert asked.context["form"]["confirmed_target"].value() == original.public_id
    assert _snapshot() == before

    refusal = _refused(client, "mark_duplicate", [original, copy],
                       {"duplicate_of": str(original.pk), "comment": "Same trace.", "confirmed_target": original.public_id},
                       reasons_for=[original])

    assert "another ticket" in refusal[original.public_id]
    assert _snapshot() == before


def test_add_blocker_refusal_shows_the_cycle_for_the_ticket_that_would_close_it(client, admin_user, workflow, agent):
    from tickets.services import dependency_add

    first = _ticket(workflow, agent, "First step")
    second = _ticket(workflow, agent, "Second step")
    gate = _ticket(workflow, agent, "Release gate")
    dependency_add(actor=agent, ticket_id=gate.pk, blocked_by_ticket_id=second.pk)  # gate waits for second
    client.force_login(admin_user)
    before = _snapshot()

    refusal = _refused(client, "add_blocker", [first, second], {"blocked_by": gate.public_id}, reasons_for=[second])

    assert "cycle" in refusal[second.public_id]
    assert _snapshot() == before


def test_launch_refusal_names_the_done_ticket_and_launches_nothing(client, admin_user, workflow, agent):
    from tickets.services import ticket_resolve

    open_ticket = _ticket(workflow, agent, "Needs a worker")
    done = _ticket(workflow, agent, "Nothing left to do")
    ticket_resolve(actor=agent, ticket_id=done.pk, resolution_comment="Finished in the previous sprint.")
    client.force_login(admin_user)
    before = _snapshot()

    response = client.post(reverse(CHANGELIST), {"action": "launch_worker", "_selected_action": [open_ticket.pk, done.pk],
                                                 "template": "implementer", "apply": "Apply"})

    assert response.status_code == 200 and response.context["selected"] == [str(open_ticket.pk), str(done.pk)]
    reasons = " ".join(reason for _, reason in response.context["refusal"])
    assert f"ticket {done.public_id} is done" in reasons
    assert _snapshot() == before
