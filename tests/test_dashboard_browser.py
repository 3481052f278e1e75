"""The live board in a real headless Chromium (Debian package) driven by Playwright, against the real
ASGI server: a status change and a broadcast made by an agent through MCP show up without a reload.

Screenshots of the board and the ticket page land in test-artifacts/.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage",
]
PASSWORD = "board-watcher-pw-1"


def off_loop(function, *args, **kwargs):
    """Playwright's sync API keeps an asyncio loop running in this thread, so the Django ORM (refuses to
    run in an async context) and the MCP client (asyncio.run) are called from a worker thread."""
    def call():
        from django.db import connection

        try:
            return function(*args, **kwargs)
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=1) as executor:
        return executor.submit(call).result()


def _chromium() -> str:
    """The Debian chromium binary, installed on first use (CI images may not ship it)."""
    found = shutil.which("chromium")
    if found is None:
        env = {"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
        subprocess.run(["apt-get", "update"], check=False, capture_output=True, env=env, timeout=600)
        subprocess.run(["apt-get", "install", "-y", "chromium"], check=False, capture_output=True, env=env, timeout=1200)
        found = shutil.which("chromium")
    if found is None:
        pytest.fail("chromium is not installed and `apt-get install -y chromium` did not provide it")
    return found


@pytest.fixture
def browser_page():
    from playwright.sync_api import sync_playwright

    executable = _chromium()
    with sync_playwright() as playwright, tempfile.TemporaryDirectory(prefix="omoi-chromium-") as profile:
        context = playwright.chromium.launch_persistent_context(
            profile, executable_path=executable, args=CHROMIUM_ARGS, headless=True, viewport={"width": 1500, "height": 950},
        )
        try:
            yield context.pages[0] if context.pages else context.new_page()
        finally:
            context.close()


def _seed(make_agent, workflow):
    from django.contrib.auth.models import User

    from tasks.services import task_claim_next, task_create
    from tickets.services import dependency_add, ticket_change_status, ticket_create

    User.objects.create_user("manager", password=PASSWORD, is_staff=True)
    worker, worker_token = make_agent("worker-1", workflow)
    make_agent("db-specialist", workflow, agent_type="specialist")
    bug = ticket_create(actor=worker, workflow=workflow, title="Fix login timeout bug", ticket_type="bug", priority="high",
                        description="Users are logged out after 5 minutes.", assigned_agent_id="worker-1")
    release = ticket_create(actor=worker, workflow=workflow, title="Release 2.4 to production", priority="critical",
                            description="Ship the release once the login bug is fixed.")
    dependency_add(actor=worker, ticket_id=release.pk, blocked_by_ticket_id=bug.pk)
    chore = ticket_create(actor=worker, workflow=workflow, title="Rotate the staging credentials", ticket_type="chore",
                          priority="low", description="Quarterly rotation of the staging secrets.")
    ticket_change_status(actor=worker, ticket_id=chore.pk, new_status="analyzing", comment="Checking which secrets rotate.")
    investigation, _ = task_create(actor=worker, ticket_id=bug.public_id, phase_id="PHASE_IMPLEMENTATION",
                                   description="Investigate the session expiry", task_type="investigation")
    task_create(actor=worker, ticket_id=bug.public_id, phase_id="PHASE_IMPLEMENTATION", description="Fix the TTL setting",
                dependencies=[investigation.public_id])
    task_claim_next(agent=worker, workflow=workflow)
    return worker_token, bug, release, investigation


def test_board_moves_cards_and_shows_broadcasts_live(asgi_server, mcp_for, make_agent, workflow, browser_page):
    ARTIFACTS.mkdir(exist_ok=True)
    worker_token, bug, release, investigation = off_loop(_seed, make_agent, workflow)
    page = browser_page
    client = mcp_for(worker_token)

    class agent:  # the MCP client, called off Playwright's loop
        @staticmethod
        def call(tool, **arguments):
            return off_loop(client.call, tool, **arguments)

    # log in through the admin login page, landing on the board
    page.goto(f"{asgi_server.url}/admin/login/?next=/dashboard/{workflow.slug}/")
    page.fill("#id_username", "manager")
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_url(f"**/dashboard/{workflow.slug}/")
    page.wait_for_selector("body[data-live=live]", timeout=15_000)
    card = f'.card[data-ticket-id="{bug.public_id}"]'
    assert page.locator(f'.column[data-status="backlog"] {card}').count() == 1
    assert page.locator(f'.card[data-ticket-id="{release.public_id}"] .badge.blocked').is_visible()
    assert not page.locator(f'{card} .badge.blocked').is_visible()
    page.evaluate("window.__sameDocument = true")  # survives only if the page never reloads

    # when the agent moves the ticket through MCP, the card moves to the new column live
    agent.call("change_ticket_status", ticket_id=bug.public_id, agent_id="worker-1", new_status="analyzing",
               comment="Starting to investigate the session expiry.")
    page.wait_for_selector(f'.column[data-status="analyzing"] {card}', timeout=10_000)
    assert page.locator(f'.column[data-status="backlog"] {card}').count() == 0
    assert page.locator('.column[data-status="analyzing"] .count').inner_text() == "2"

    # and a broadcast appears in the activity feed
    agent.call("broadcast_message", sender_agent_id="worker-1", message="Session TTL is read from a cache key that expires.",
               message_type="discovery", ticket_id=bug.public_id)
    page.wait_for_selector('#feed li[data-event="message.sent"]:has-text("Session TTL is read from a cache key")', timeout=10_000)
    assert page.evaluate("window.__sameDocument") is True
    page.screenshot(path=str(ARTIFACTS / "dashboard-board.png"), full_page=True)

    # the ticket page: history, phase history, dependencies and the server-drawn task graph
    page.goto(f"{asgi_server.url}/dashboard/ticket/{bug.public_id}/")
    page.wait_for_selector("body[data-live=live]", timeout=15_000)
    assert page.locator("svg.graph g[data-task-id]").count() == 2
    assert "worker-1 moved it from backlog to analyzing" in page.locator("#history").inner_text()  # as a sentence
    agent.call("add_ticket_comment", ticket_id=bug.public_id, agent_id="worker-1", comment_text="Root cause found in the cache layer.")
    page.wait_for_selector('#feed li[data-event="ticket.commented"]', timeout=10_000)
    page.screenshot(path=str(ARTIFACTS / "dashboard-ticket.png"), full_page=True)

    # the agents page lists the agents with their current task
    page.goto(f"{asgi_server.url}/dashboard/{workflow.slug}/agents/")
    assert investigation.public_id in page.locator('tr[data-agent-id="worker-1"]').inner_text()
    page.screenshot(path=str(ARTIFACTS / "dashboard-agents.png"), full_page=True)


def test_dashboard_pages_require_login(client, workflow):
    for path in ("/dashboard/", f"/dashboard/{workflow.slug}/", f"/dashboard/{workflow.slug}/agents/", "/dashboard/ticket/TKT-1/"):
        response = client.get(path)
        assert response.status_code == 302 and response["Location"].startswith("/admin/login/")


def test_unknown_workflow_and_ticket_are_404_for_staff(client, admin_user, workflow):
    client.force_login(admin_user)
    assert client.get("/dashboard/").status_code == 200
    assert client.get("/dashboard/no-such-flow/").status_code == 404
    assert client.get("/dashboard/ticket/TKT-999999/").status_code == 404
