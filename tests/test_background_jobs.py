"""Periodic jobs run through Django's Tasks API on the database backend (the real worker command)."""

from datetime import timedelta

from django.core.management import call_command
from django.utils import timezone


def test_lease_reaper_job_returns_expired_tasks_to_the_queue(transactional_db, workflow, make_agent):
    from tasks.jobs import reap_expired_leases
    from tasks.models import Task, TaskEvent
    from tasks.services import task_claim_next, task_create
    from tickets.services import ticket_create

    agent = make_agent("sleepy", workflow)[0]
    ticket = ticket_create(actor=agent, workflow=workflow, title="Lease test", description="A task whose holder dies")
    task_create(actor=agent, ticket_id=ticket.id, phase_id="PHASE_IMPLEMENTATION", description="Work that gets abandoned")
    live = task_create(actor=agent, ticket_id=ticket.id, phase_id="PHASE_IMPLEMENTATION", description="Work still leased")[0]
    abandoned = task_claim_next(agent=agent, workflow=workflow)
    task_claim_next(agent=agent, workflow=workflow)
    Task.objects.filter(pk=abandoned.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))

    result = reap_expired_leases.enqueue()
    call_command("db_worker", "--batch", "--no-reload", "--no-startup-delay")

    result.refresh()
    assert result.status == "SUCCESSFUL" and result.return_value == 1
    abandoned.refresh_from_db()
    assert (abandoned.status, abandoned.claimed_by_id) == ("pending", None)
    assert TaskEvent.objects.get(task=abandoned, event_type="lease_expired").details == {"previous_holder": "sleepy"}
    assert Task.objects.get(pk=live.pk).status == "claimed"


def test_stale_handoffs_expire(transactional_db, workflow, make_agent):
    from collaboration.jobs import expire_stale_handoffs
    from collaboration.models import Handoff
    from collaboration.services import handoff_request
    from tasks.services import task_claim_next, task_create
    from tickets.services import ticket_create

    owner = make_agent("owner", workflow)[0]
    make_agent("other", workflow)
    ticket = ticket_create(actor=owner, workflow=workflow, title="Expiry", description="Nobody answers the hand-off")
    task_create(actor=owner, ticket_id=ticket.id, phase_id="PHASE_IMPLEMENTATION", description="Task to hand over")
    task = task_claim_next(agent=owner, workflow=workflow)
    handoff = handoff_request(from_agent=owner, to_agent_id="other", task_id=task.id, reason="Nobody will answer this.")
    Handoff.objects.filter(pk=handoff.pk).update(expires_at=timezone.now() - timedelta(minutes=1))
    expire_stale_handoffs.enqueue()
    call_command("db_worker", "--batch", "--no-reload", "--no-startup-delay")
    assert Handoff.objects.get(pk=handoff.pk).status == "expired"


def test_old_event_records_are_pruned_and_recent_ones_still_replay(transactional_db, workflow, settings):
    from django.db import transaction

    from collaboration.jobs import prune_event_records
    from collaboration.models import EventRecord
    from omoi_site.events import events_since, publish_on_commit, workflow_group

    settings.EVENT_RETENTION_DAYS = 30
    with transaction.atomic():
        for step in range(3):
            publish_on_commit("sandbox.finished", workflow=workflow.slug, payload={"step": step})
    old, kept_a, kept_b = EventRecord.objects.filter(workflow=workflow.slug).order_by("id")
    EventRecord.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(days=31))
    EventRecord.objects.filter(pk=kept_a.pk).update(created_at=timezone.now() - timedelta(days=29))

    result = prune_event_records.enqueue()
    call_command("db_worker", "--batch", "--no-reload", "--no-startup-delay")

    result.refresh()
    assert result.status == "SUCCESSFUL" and result.return_value == 1
    assert list(EventRecord.objects.filter(workflow=workflow.slug).values_list("pk", flat=True)) == [kept_a.pk, kept_b.pk]
    replayed = events_since(groups=[workflow_group(workflow.slug)], since_id=0)
    assert [event["id"] for event in replayed] == [kept_a.pk, kept_b.pk]
