"""Who may see what (identity floor): agents see their workflows, staff may be limited by groups."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group, User

from agents.selectors import can_access_workflow, workflow_ids_for
from omoi_site.domain import NotFound
from tickets.selectors import ticket_get

pytestmark = pytest.mark.django_db


def test_an_agent_sees_only_its_workflows_and_another_workflow_looks_like_an_unknown_id(scene, other_workflow, make_agent):
    outsider, _ = make_agent("outsider", other_workflow)

    assert workflow_ids_for(scene.worker) == {scene.workflow.id}
    assert not can_access_workflow(outsider, scene.workflow.id)
    with pytest.raises(NotFound) as hidden:
        ticket_get(ticket_id=scene.login.public_id, actor=outsider)
    with pytest.raises(NotFound) as unknown:
        ticket_get(ticket_id="TKT-999999", actor=outsider)
    assert hidden.value.message.replace(scene.login.public_id, "TKT-?") == unknown.value.message.replace("TKT-999999", "TKT-?")


def test_staff_in_a_workflow_group_see_that_workflow_only_and_non_staff_see_nothing(workflow, other_workflow):
    limited = User.objects.create_user("limited", password="x", is_staff=True)
    limited.groups.add(Group.objects.create(name=f"workflow:{workflow.slug}"))
    everyone = User.objects.create_user("everyone", password="x", is_staff=True)
    visitor = User.objects.create_user("visitor", password="x")

    assert workflow_ids_for(limited) == {workflow.id}
    assert workflow_ids_for(everyone) is None  # unscoped staff see every workflow
    assert workflow_ids_for(visitor) == set()
    assert not can_access_workflow(visitor, workflow.id) and not can_access_workflow(limited, other_workflow.id)
