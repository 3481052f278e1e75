"""The default `make run` set-up (no REDIS_URL, in-memory channel layer): a worker launched from the API runs
in the `serve` child's background worker process, and the agents page in Chromium shows its run appear and
finish without a reload — the worker's events reach the web process through the event-log relay.

`manage.py serve` is a real child process on the test database; the sandbox provider is the local one and the
agent is the scripted OpenHands playbook (no LLM service here). Screenshots land in test-artifacts/.
"""

from __future__ import annotations

import httpx
import pytest

from tests import test_dashboard_browser
from tests.served_process import ServedProcess, child_environment
from tests.test_dashboard_browser import ARTIFACTS, PASSWORD, off_loop
from tests.test_degrade import _test_database_url

browser_page = test_dashboard_browser.browser_page

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def served_without_redis(workflow, make_agent):
    """A coordinator with a task to hand out, and `manage.py serve` as `make run` starts it (no REDIS_URL)."""
    from django.contrib.auth.models import User

    from agents.services import agent_token_issue
    from tasks.services import task_create
    from tickets.services import ticket_create

    User.objects.create_user("manager", password=PASSWORD, is_staff=True, is_superuser=True)
    coordinator = make_agent("coordinator", workflow, agent_type="coordinator")[0]
    ticket = ticket_create(actor=coordinator, workflow=workflow, title="Fix login timeout bug",
                           description="Sessions expire after five minutes instead of eight hours.")
    task, _ = task_create(actor=coordinator, ticket_id=ticket.id, phase_id="PHASE_IMPLEMENTATION",
                          description="Find where the session TTL comes from", task_type="investigation")
    coordinator_token = agent_token_issue(agent=coordinator)
    server = ServedProcess(child_environment(DATABASE_URL=_test_database_url(), REDIS_URL=None, MCP_SERVER_URL=None,
                                             SANDBOX_PROVIDER="local", PORT=None))
    yield server, coordinator_token, task
    server.stop()


def test_a_launched_worker_run_appears_and_finishes_live_on_the_agents_page_without_redis(workflow, served_without_redis, browser_page):
    from agents.models import SandboxRun
    from tasks.models import Task

    server, coordinator_token, task = served_without_redis
    page = browser_page
    ARTIFACTS.mkdir(exist_ok=True)
    agents_path = f"/dashboard/{workflow.slug}/agents/"
    page.goto(f"{server.url}/admin/login/?next={agents_path}")
    page.fill("#id_username", "manager")
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_url(f"**{agents_path}")
    page.wait_for_selector("body[data-live=live]", timeout=30_000)
    page.evaluate("window.__sameDocument = true")
    assert page.locator("tr[data-run-id]").count() == 0

    launched = httpx.post(f"{server.url}/api/sandbox-runs", json={"template": "implementer", "task_id": task.public_id},
                          headers={"Authorization": f"Bearer {coordinator_token}"}, timeout=30)
    assert launched.status_code == 201, launched.text
    run_id = off_loop(lambda: SandboxRun.objects.get().pk)

    page.wait_for_selector(f'tr[data-run-id="{run_id}"]', timeout=60_000)
    page.wait_for_selector(f'tr[data-run-id="{run_id}"][data-status="succeeded"]', timeout=180_000)
    page.screenshot(path=str(ARTIFACTS / "agents-live-run-no-redis.png"), full_page=True)

    assert page.evaluate("window.__sameDocument === true")  # updated in place, never reloaded
    assert page.locator(f'tr[data-run-id="{run_id}"] .status').inner_text() == "succeeded"
    run = off_loop(SandboxRun.objects.get, pk=run_id)
    assert run.status == "succeeded" and run.ended_at is not None
    assert off_loop(lambda: Task.objects.get(pk=task.pk).status) == "completed"
    assert "Traceback" not in server.output()
