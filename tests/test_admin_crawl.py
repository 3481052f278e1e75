"""Every admin page opens: with a seeded, realistic pair of workflows (near-duplicate tickets with real
embeddings, blockers, tasks, discoveries, hand-offs, messages, sandbox runs, comments, commits, blocker
predictions; a trained blocker model) a staff superuser opens every changelist, every add page, the change
page of every object, the cockpit's confirmation pages and every dashboard page — no response ≥ 500. A
non-superuser staff user limited to one workflow (auth group `workflow:<slug>`) gets no 5xx either, and
sees and opens nothing of the other workflow."""

from __future__ import annotations

import pytest
from django.contrib import admin
from django.contrib.auth.models import Group, Permission, User
from django.urls import reverse

from tests.scene import seed_scene

pytestmark = pytest.mark.django_db


def _seed_workflow(workflow, make_agent, prefix: str) -> dict:
    from tasks.blockers import blocker_prediction_record
    from tickets.embeddings import ticket_embeddings_refresh_batch

    scene = seed_scene(workflow, make_agent, prefix)
    tickets = (scene.login, scene.near_duplicate, scene.release, scene.other)
    ticket_embeddings_refresh_batch(ticket_ids=[ticket.pk for ticket in tickets])
    for ticket in tickets:
        blocker_prediction_record(ticket=ticket)
    return {"login": scene.login, "near_duplicate": scene.near_duplicate, "release": scene.release, "run": scene.run,
            "task": scene.task}


@pytest.fixture
def seeded(workflow, other_workflow, make_agent):
    from tasks.blockers import blocker_model_train

    seeded = {"mine": _seed_workflow(workflow, make_agent, "a"), "theirs": _seed_workflow(other_workflow, make_agent, "b")}
    blocker_model_train()  # a shared blocker model for the models page
    return seeded


def _admin_pages():
    """(model, model_admin, changelist url, add url or None, [(object, change url)])"""
    pages = []
    for model, model_admin in admin.site._registry.items():
        name = f"admin:{model._meta.app_label}_{model._meta.model_name}"
        objects = [(obj, reverse(f"{name}_change", args=[obj.pk])) for obj in model._default_manager.all()]
        pages.append((model, model_admin, reverse(f"{name}_changelist"), reverse(f"{name}_add"), objects))
    return pages


def _dashboard_pages():
    from tickets.models import Ticket, Workflow

    urls = [reverse("dashboard:index")]
    for workflow in Workflow.objects.all():
        urls += [reverse("dashboard:board", args=[workflow.slug]), reverse("dashboard:agents", args=[workflow.slug])]
    return urls + [reverse("dashboard:ticket", args=[t.public_id]) for t in Ticket.objects.all()]


def _get(client, url, failures):
    response = client.get(url)
    if response.status_code >= 500:
        failures.append((url, response.status_code))
    return response


def test_a_superuser_opens_every_admin_and_dashboard_page_without_a_server_error(client, admin_user, seeded):
    from tickets.models import Ticket

    client.force_login(admin_user)
    failures, opened = [], 0
    similar_seen = 0
    for model, model_admin, changelist, add, objects in _admin_pages():
        assert _get(client, changelist, failures).status_code == 200, changelist
        opened += 1
        if model_admin.has_add_permission(_request_for(admin_user)):
            assert _get(client, add, failures).status_code == 200, add
            opened += 1
        for _obj, url in objects:
            response = _get(client, url, failures)
            assert response.status_code == 200, url
            opened += 1
            if model is Ticket:
                similar_seen += len(response.context["cockpit"]["similar"])
                for row in response.context["cockpit"]["similar"]:
                    assert _get(client, row["duplicate_url"], failures).status_code == 200
    for url in _dashboard_pages():
        assert _get(client, url, failures).status_code == 200, url
        opened += 1

    assert failures == []
    assert similar_seen >= 4  # the near-duplicates are there: exactly the pages that used to answer 500
    assert opened > 60


def _request_for(user):
    from django.test import RequestFactory

    request = RequestFactory().get("/admin/")
    request.user = user
    return request


@pytest.fixture
def workflow_staff(workflow):
    user = User.objects.create_user("flow-triager", password="pw-flow-triager-1", is_staff=True)
    group = Group.objects.create(name=f"workflow:{workflow.slug}")
    group.permissions.set(Permission.objects.filter(content_type__app_label__in=["tickets", "tasks", "collaboration", "agents"]))
    user.groups.add(group)
    return user


def test_a_staff_user_limited_to_one_workflow_sees_and_opens_only_that_workflow(client, workflow, other_workflow, workflow_staff, seeded):
    client.force_login(workflow_staff)
    failures = []
    checked_models = 0
    for model, model_admin, changelist, add, objects in _admin_pages():
        if model._meta.app_label not in ("tickets", "tasks", "collaboration", "agents"):
            assert client.get(changelist).status_code == 403  # users and groups: no permission
            continue
        listed = _get(client, changelist, failures)
        assert listed.status_code == 200, changelist
        lookup = model_admin.workflow_lookup
        visible = set(listed.context["cl"].queryset.values_list("pk", flat=True))
        if model_admin.has_add_permission(_request_for(workflow_staff)):
            page = _get(client, add, failures)
            assert page.status_code == 200, add
            for name in ("workflow", "workflows"):
                if name in page.context["adminform"].form.fields:
                    assert list(page.context["adminform"].form.fields[name].queryset) == [workflow]
        if lookup is None:
            continue
        theirs = set(model._default_manager.filter(**{("slug" if lookup == "pk" else f"{lookup}__slug"): other_workflow.slug})
                     .values_list("pk", flat=True))
        mine = set(model._default_manager.filter(**{("slug" if lookup == "pk" else f"{lookup}__slug"): workflow.slug})
                   .values_list("pk", flat=True))
        assert not visible & theirs, f"{changelist} lists objects of another workflow"
        assert mine <= visible, changelist
        for obj, url in objects:
            response = _get(client, url, failures)
            if obj.pk in theirs and obj.pk not in mine:
                assert response.status_code == 302 and response.url == reverse("admin:index"), url  # "does not exist"
            else:
                assert response.status_code == 200, url
        checked_models += 1
    for url in _dashboard_pages():
        response = _get(client, url, failures)
        assert response.status_code in (200, 404), url
        if other_workflow.slug in url or any(url.endswith(f"/{t}/") for t in _public_ids(other_workflow)):
            assert response.status_code == 404, url

    assert failures == []
    assert checked_models >= 14


def _public_ids(workflow):
    return [t.public_id for t in workflow.tickets.all()]


def test_a_workflow_limited_staff_user_cannot_act_on_another_workflows_ticket(client, workflow_staff, seeded):
    from tickets.models import Ticket

    theirs = Ticket.objects.get(pk=seeded["theirs"]["login"].pk)
    before = (theirs.status, theirs.version, theirs.events.count())
    client.force_login(workflow_staff)

    triage = client.post(reverse("admin:tickets_ticket_triage", args=[theirs.pk]), {"op": "status", "new_status": "building"})
    duplicate = client.get(reverse("admin:tickets_ticket_duplicate", args=[seeded["mine"]["login"].pk]), {"of": theirs.public_id},
                           follow=True)

    assert triage.status_code == 404
    assert any("No ticket" in str(m) for m in duplicate.context["messages"])
    theirs = Ticket.objects.get(pk=theirs.pk)
    assert (theirs.status, theirs.version, theirs.events.count()) == before
