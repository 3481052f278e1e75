"""Hand-offs at the service: only the holder asks, accepting moves the lease, declining keeps it."""

from __future__ import annotations

import pytest

from collaboration import services
from collaboration.models import Handoff
from omoi_site.domain import Conflict, PermissionDenied
from tasks.models import Task
from tasks.services import task_create, task_update_status

pytestmark = pytest.mark.django_db


def test_accepting_moves_the_lease_and_the_old_holder_is_fenced_off(scene):
    # given the scene's open hand-off of the claimed task, worker → db-specialist
    old_token = Task.objects.get(pk=scene.claimed.pk).fencing_token

    accepted = services.handoff_accept(agent=scene.specialist, handoff_id=scene.handoff.public_id, note="On it.")

    task = Task.objects.get(pk=scene.claimed.pk)
    assert accepted.status == "accepted"
    assert (task.claimed_by_id, task.assigned_agent_id) == (scene.specialist.agent_id, scene.specialist.agent_id)
    assert task.fencing_token == old_token + 1
    with pytest.raises(Conflict):
        task_update_status(actor=scene.worker, task_id=task.pk, status="completed", result={"by": "old holder"},
                           fencing_token=old_token)
    assert Task.objects.get(pk=task.pk).status == task.status


def test_declining_keeps_the_task_with_its_holder(scene):
    declined = services.handoff_decline(agent=scene.specialist, handoff_id=scene.handoff.public_id, reason="Busy this week.")

    task = Task.objects.get(pk=scene.claimed.pk)
    assert declined.status == "declined" and task.claimed_by_id == scene.worker.agent_id


def test_only_the_addressee_answers_and_only_once(scene, make_agent):
    bystander, _ = make_agent("bystander", scene.workflow)

    with pytest.raises(PermissionDenied, match="addressed to"):
        services.handoff_accept(agent=bystander, handoff_id=scene.handoff.public_id)
    assert Handoff.objects.get(pk=scene.handoff.pk).status == "requested"

    services.handoff_decline(agent=scene.specialist, handoff_id=scene.handoff.public_id)
    with pytest.raises(Conflict, match="already 'declined'"):
        services.handoff_accept(agent=scene.specialist, handoff_id=scene.handoff.public_id)


def test_a_creator_who_does_not_hold_the_task_is_told_how_to_become_its_holder(scene):
    created = task_create(actor=scene.worker, ticket_id=scene.login.pk, phase_id="PHASE_IMPLEMENTATION",
                          description="Write the migration for the TTL")
    count = Handoff.objects.count()

    with pytest.raises(Conflict) as refused:
        services.handoff_request(from_agent=scene.worker, to_agent_id=scene.specialist.agent_id, task_id=created.task.pk,
                                 reason="The migration is a database job.")

    assert f'update_task_status(task_id="{created.task.public_id}", status="claimed")' in refused.value.message
    assert Handoff.objects.count() == count
