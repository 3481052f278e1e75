"""Launching sandboxed workers: a scripted OpenHands agent claims its task through MCP, runs commands in its
sandbox, reports a discovery and completes; a killed worker's task returns to the queue when its lease expires."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.db import connection

from agents.models import SandboxRun
from tasks.models import Discovery, Task, TaskEvent


@pytest.fixture
def coordinator_and_ticket(asgi_server, transactional_db, workflow, make_agent, settings, tmp_path):
    from tasks.services import task_create
    from tickets.services import ticket_create

    settings.MCP_SERVER_URL = f"{asgi_server.url}/mcp/"
    settings.SANDBOX_PROVIDER = "local"
    coordinator = make_agent("coordinator", workflow, agent_type="coordinator")[0]
    ticket = ticket_create(actor=coordinator, workflow=workflow, title="Fix login timeout bug",
                           description="Sessions expire after five minutes instead of eight hours.")
    task, _ = task_create(actor=coordinator, ticket_id=ticket.id, phase_id="PHASE_IMPLEMENTATION",
                          description="Find where the session TTL comes from", task_type="investigation")
    return coordinator, ticket, task


def test_launched_worker_claims_runs_commands_reports_discovery_and_completes(coordinator_and_ticket):
    from agents.launcher import execute_run, launch_worker

    coordinator, ticket, task = coordinator_and_ticket
    run = launch_worker(actor=coordinator, template="implementer", task=task, enqueue=False)
    assert run.status == "pending" and run.agent.agent_type == "implementer"

    finished = execute_run(run.pk, playbook_command="echo session_ttl=300 > finding.txt && cat finding.txt")

    assert finished.status == "succeeded", (finished.error, finished.log_tail)
    assert finished.exit_code == 0 and finished.sandbox_seconds > 0 and finished.started_at and finished.ended_at
    assert "session_ttl=300" in finished.log_tail
    task.refresh_from_db()
    assert (task.status, task.claimed_by_id) == ("completed", run.agent_id)
    assert "session_ttl=300" in task.result["output"]
    discovery = Discovery.objects.get(source_task=task)
    assert discovery.spawned_task.status == "pending" and discovery.recorded_by_agent_id == run.agent_id
    # the launcher reserves the task for its worker with a history row, then the worker claims and runs it
    assert [e.event_type for e in TaskEvent.objects.filter(task=task)][:4] == ["created", "assigned", "claimed", "status_changed"]
    sandbox_dir = Path(django_settings.BASE_DIR) / ".data" / "sandboxes" / finished.sandbox_id
    assert finished.sandbox_id and not sandbox_dir.exists()
    assert not run.agent.tokens.filter(revoked_at__isnull=True).exists()


def test_sandbox_limit_per_workflow_is_enforced(coordinator_and_ticket, workflow):
    from agents.launcher import launch_worker
    from omoi_site.domain import Conflict
    from tasks.services import task_create

    coordinator, ticket, task = coordinator_and_ticket
    workflow.max_concurrent_sandboxes = 1
    workflow.save()
    launch_worker(actor=coordinator, template="researcher", task=task, enqueue=False)
    other, _ = task_create(actor=coordinator, ticket_id=ticket.id, phase_id="PHASE_TESTING", description="Another piece of work")
    with pytest.raises(Conflict, match="limit is 1"):
        launch_worker(actor=coordinator, template="researcher", task=other, enqueue=False)
    assert SandboxRun.objects.count() == 1


def test_coordinator_launches_through_mcp_and_others_may_not(coordinator_and_ticket, make_agent, workflow, mcp_for):
    coordinator, ticket, task = coordinator_and_ticket
    token = coordinator.tokens.none()  # tokens are hashed; issue a fresh one
    from agents.services import agent_token_issue

    token = agent_token_issue(agent=coordinator)
    _, worker_token = make_agent("plain-worker", workflow)
    result = mcp_for(token).call("launch_worker", agent_id="coordinator", template="implementer", task_id=task.public_id)
    assert result["status"] == "pending" and result["task_id"] == task.public_id
    assert "only coordinator" in mcp_for(worker_token).error("launch_worker", agent_id="plain-worker", template="implementer",
                                                             ticket_id=ticket.public_id)
    assert "template must be one of" in mcp_for(token).error("launch_worker", agent_id="coordinator", template="wizard",
                                                              ticket_id=ticket.public_id)
    assert SandboxRun.objects.count() == 1


def test_killed_worker_task_returns_to_the_queue_when_its_lease_expires(coordinator_and_ticket, settings):
    from agents.launcher import launch_worker
    from tasks.services import task_reap_expired_leases

    coordinator, ticket, task = coordinator_and_ticket
    settings.TASK_LEASE_SECONDS = 2
    run = launch_worker(actor=coordinator, template="implementer", task=task, enqueue=False)
    connection.ensure_connection()
    info = connection.connection.info  # the live connection knows the embedded server's socket dir
    url = f"postgresql://{info.user}@/{info.dbname}?host={info.host}&port={info.port}"
    environment = {**os.environ, "DATABASE_URL": url, "MCP_SERVER_URL": django_settings.MCP_SERVER_URL, "SANDBOX_PROVIDER": "local"}
    worker = subprocess.Popen([sys.executable, "manage.py", "run_sandbox_worker", str(run.pk), "--command", "sleep 120"],
                              cwd=django_settings.BASE_DIR, env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while Task.objects.get(pk=task.pk).status != "running":
            assert worker.poll() is None, worker.stdout.read().decode()[-3000:]
            assert time.monotonic() < deadline, "the worker never started its task"
            time.sleep(0.2)
            connection.close()
        os.killpg(worker.pid, signal.SIGKILL)  # crash: no release, no completion
        worker.wait(timeout=10)
        assert Task.objects.get(pk=task.pk).claimed_by_id == run.agent_id
        time.sleep(2.5)
        assert task_reap_expired_leases() == 1
        task.refresh_from_db()
        assert (task.status, task.claimed_by_id) == ("pending", None)
        assert TaskEvent.objects.filter(task=task, event_type="lease_expired", details__previous_holder=run.agent_id).exists()
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)


def test_demo_command_runs_the_whole_seed_workflow(asgi_server, transactional_db, settings):
    from io import StringIO

    from django.core.management import call_command

    from collaboration.models import Handoff
    from tickets.models import Ticket

    settings.SANDBOX_PROVIDER = "local"
    output = StringIO()
    call_command("demo", url=f"{asgi_server.url}/mcp/", stdout=output)
    text = output.getvalue()
    assert "demo complete" in text, text
    bug = Ticket.objects.get(title="Fix login timeout bug")
    release = Ticket.objects.get(title="Release 2.4 to production")
    assert (bug.status, release.is_blocked) == ("done", False)
    assert Handoff.objects.get().status == "accepted"
    assert SandboxRun.objects.get().status == "succeeded"
    assert bug.commits.get().commit_sha == "3f9c2ab71d"


def test_auto_spawn_rules_launch_workers_for_ready_tickets_of_mapped_types(transactional_db, workflow, make_agent):
    from django.core.management import call_command

    from tickets.services import ticket_create, ticket_resolve

    workflow.auto_spawn_rules = {"bug": "implementer"}
    workflow.save()
    reporter = make_agent("reporter", workflow)[0]
    blocker = ticket_create(actor=reporter, workflow=workflow, title="Feature work", description="Not a bug: no rule applies",
                            ticket_type="feature")
    bug = ticket_create(actor=reporter, workflow=workflow, title="Crash on save", description="Saving a draft crashes the editor",
                        ticket_type="bug")
    blocked_bug = ticket_create(actor=reporter, workflow=workflow, title="Crash on export", description="Export crashes after saving",
                                ticket_type="bug", blocked_by_ticket_ids=[blocker.id])
    call_command("db_worker", "--batch", "--no-reload", "--no-startup-delay", "--queue-name", "default", "--max-tasks", "2")
    runs = list(SandboxRun.objects.values_list("ticket_id", "template"))
    assert runs == [(bug.id, "implementer")]
    ticket_resolve(actor=reporter, ticket_id=blocker.id, resolution_comment="Feature shipped, export unblocked.")
    call_command("db_worker", "--batch", "--no-reload", "--no-startup-delay", "--max-tasks", "1")
    assert set(SandboxRun.objects.values_list("ticket_id", flat=True)) == {bug.id, blocked_bug.id}


def test_admin_actions_launch_workers_through_the_launcher(client, django_user_model, transactional_db, workflow, make_agent):
    from tasks.services import task_create
    from tickets.services import ticket_create

    staff = django_user_model.objects.create_superuser("boss", "", "boss-password-123")
    client.force_login(staff)
    reporter = make_agent("reporter", workflow)[0]
    ticket = ticket_create(actor=reporter, workflow=workflow, title="Slow search", description="Search takes ten seconds")
    task, _ = task_create(actor=reporter, ticket_id=ticket.id, phase_id="PHASE_IMPLEMENTATION", description="Profile the search query")
    response = client.post("/admin/tickets/ticket/", {"action": "launch_worker", "_selected_action": [ticket.pk],
                                                     "apply": "1", "template": "researcher"}, follow=True)
    assert response.status_code == 200
    run = SandboxRun.objects.get()
    assert (run.template, run.task_id, run.ticket_id) == ("researcher", task.pk, ticket.pk)
    other, _ = task_create(actor=staff, ticket_id=ticket.id, phase_id="PHASE_TESTING", description="Write a regression test")
    client.post("/admin/tasks/task/", {"action": "launch_implementer", "_selected_action": [other.pk]}, follow=True)
    assert SandboxRun.objects.filter(task=other, template="implementer").exists()


def test_rest_launch_is_for_coordinators_and_staff(coordinator_and_ticket, make_agent, workflow, asgi_server):
    import httpx

    from agents.services import agent_token_issue

    coordinator, ticket, task = coordinator_and_ticket
    coordinator_token = agent_token_issue(agent=coordinator)
    _, worker_token = make_agent("plain-worker", workflow)
    url = f"{asgi_server.url}/api/sandbox-runs"
    refused = httpx.post(url, json={"template": "implementer", "task_id": task.public_id},
                         headers={"Authorization": f"Bearer {worker_token}"})
    assert refused.status_code == 403 and "coordinator" in refused.json()["error"]["message"]
    bad = httpx.post(url, json={"template": "wizard", "task_id": task.public_id}, headers={"Authorization": f"Bearer {coordinator_token}"})
    assert bad.status_code == 400
    assert SandboxRun.objects.count() == 0
    created = httpx.post(url, json={"template": "implementer", "task_id": task.public_id},
                         headers={"Authorization": f"Bearer {coordinator_token}"})
    assert created.status_code == 201, created.text
    assert created.json()["task_id"] == task.public_id and SandboxRun.objects.get().template == "implementer"
