"""The triage flow in the admin, in a real headless Chromium (Playwright) against the real ASGI server:
search by meaning → open the ticket → move it with an allowed-status button → mark a similar ticket as
its duplicate (the confirmation shows the title) → add a blocker → launch a worker → follow the link to
its run. Every step is checked in the page and in the database. axe-core (axe-playwright-python) checks
the ticket changelist and change page: no serious or critical violations.

Screenshots land in test-artifacts/admin-*.png.
"""

from __future__ import annotations

import tempfile

import pytest

from tests.test_dashboard_browser import ARTIFACTS, CHROMIUM_ARGS, _chromium, off_loop

pytestmark = [pytest.mark.browser, pytest.mark.slow]
PASSWORD = "triage-cockpit-pw-1"
WAIT = 20_000  # ms: generous, every wait is for an event (navigation, selector), never a sleep


@pytest.fixture
def admin_page():
    from playwright.sync_api import sync_playwright

    executable = _chromium()
    with sync_playwright() as playwright, tempfile.TemporaryDirectory(prefix="omoi-admin-chromium-") as profile:
        context = playwright.chromium.launch_persistent_context(
            profile, executable_path=executable, args=CHROMIUM_ARGS, headless=True, viewport={"width": 1440, "height": 900},
        )
        try:
            page = context.pages[0] if context.pages else context.new_page()
            page.set_default_timeout(WAIT)
            yield page
        finally:
            context.close()


def _seed(workflow, make_agent):
    from django.contrib.auth.models import User

    from tickets.services import ticket_create

    User.objects.create_superuser("triager", password=PASSWORD)
    worker, _ = make_agent("worker-1", workflow)
    tickets = {
        "login": ("Fix login timeout bug", "Users are logged out after five minutes; sessions expire far too early.", "bug"),
        "duplicate": ("Users get logged out after a few minutes", "Our session ends after a few minutes and people must log in again.", "bug"),
        "basket": ("Empty basket shows an error page", "Removing the last item from the basket shows a server error.", "bug"),
        "dark": ("Dark mode for the dashboard", "Managers watch the board at night; offer a dark colour scheme.", "feature"),
        "store": ("Upgrade the session store library", "The session store library is two major versions behind.", "chore"),
    }
    return {key: ticket_create(actor=worker, workflow=workflow, title=title, description=description, ticket_type=kind)
            for key, (title, description, kind) in tickets.items()}


def _ticket(pk):
    from tickets.models import Ticket

    return Ticket.objects.get(pk=pk)


def _runs_for(ticket_pk):
    from agents.models import SandboxRun

    return list(SandboxRun.objects.filter(ticket_id=ticket_pk).values_list("pk", "template", "status"))


def _serious_violations(page) -> list[str]:
    from axe_playwright_python.sync_playwright import Axe

    results = Axe().run(page)
    return [f"{v['id']} ({v['impact']}): {v['help']} — {[n['target'] for n in v['nodes']][:5]}"
            for v in results.response["violations"] if v["impact"] in ("serious", "critical")]


def test_the_triage_flow_from_search_to_the_launched_run(asgi_server, transactional_db, workflow, make_agent, admin_page, settings):
    ARTIFACTS.mkdir(exist_ok=True)
    settings.SANDBOX_PROVIDER = "local"
    tickets = off_loop(_seed, workflow, make_agent)
    login, duplicate, store = tickets["login"], tickets["duplicate"], tickets["store"]
    page = admin_page
    base = asgi_server.url

    # search by meaning: the words of the query are not in the ticket's title
    page.goto(f"{base}/admin/login/?next=/admin/tickets/ticket/%3Fq%3Dsessions%2Bexpire%2Btoo%2Bearly")
    page.fill("#id_username", "triager")
    page.fill("#id_password", PASSWORD)
    with page.expect_navigation():
        page.click("input[type=submit]")
    first_row = page.locator("#result_list tbody tr").first
    assert "Fix login timeout bug" in first_row.inner_text()
    page.screenshot(path=str(ARTIFACTS / "admin-search.png"), full_page=True)
    violations = _serious_violations(page)
    assert violations == [], violations

    # open it: the cockpit
    with page.expect_navigation():
        first_row.locator("a", has_text="Fix login timeout bug").click()
    page.wait_for_selector("#cockpit")
    assert page.locator("#cockpit-status button[data-status]").all_inner_texts() == ["Move to analyzing"]
    page.screenshot(path=str(ARTIFACTS / "admin-cockpit.png"), full_page=False)
    violations = _serious_violations(page)
    assert violations == [], violations

    # change status with the allowed button
    with page.expect_navigation():
        page.click('#cockpit-status button[data-status="analyzing"]')
    page.wait_for_selector("#cockpit-status .omoi-status-analyzing")
    assert f"{login.public_id} moved to analyzing." in page.locator(".messagelist").inner_text()
    assert off_loop(lambda: _ticket(login.pk).status) == "analyzing"
    assert "moved it from backlog to analyzing" in page.locator("#cockpit-history").inner_text()

    # mark the similar ticket as a duplicate of this one: the confirmation shows both titles
    similar = page.locator("#cockpit-similar li", has_text=duplicate.public_id)
    with page.expect_navigation():
        similar.locator("a.omoi-dup").click()
    assert page.locator("#duplicate-ticket").inner_text() == f"{duplicate.public_id} “Users get logged out after a few minutes”"
    assert page.locator("#duplicate-original").inner_text() == f"{login.public_id} “Fix login timeout bug”"
    assert off_loop(lambda: _ticket(duplicate.pk).status) == "backlog"  # nothing happens before the confirmation
    page.screenshot(path=str(ARTIFACTS / "admin-duplicate-confirmation.png"))
    with page.expect_navigation():
        page.click("input[name=confirm]")
    page.wait_for_selector("#cockpit")
    assert f"{duplicate.public_id} is marked a duplicate of {login.public_id}" in page.locator(".messagelist").inner_text()
    marked = off_loop(_ticket, duplicate.pk)
    assert (marked.status, marked.duplicate_of_id) == ("done", login.pk)

    # add a blocker with the picker (titles shown)
    option = page.locator("#cockpit-blocker option", has_text="Upgrade the session store library")
    assert option.get_attribute("value") == store.public_id
    page.select_option("#cockpit-blocker", store.public_id)
    with page.expect_navigation():
        page.click("#cockpit-blockers button:has-text('Add')")
    page.wait_for_selector(f"#cockpit-blockers li:has-text('{store.public_id}')")
    assert page.locator("#cockpit-status .omoi-blocked").is_visible()
    assert off_loop(lambda: _ticket(login.pk).is_blocked) is True

    # launch a worker; the message links to its run
    page.select_option("#cockpit-template", "implementer")
    assert "NOT isolated" in page.locator("#cockpit-work").inner_text()
    with page.expect_navigation():
        page.click("#cockpit-work button:has-text('Launch')")
    run_link = page.locator(".messagelist a", has_text="run ")
    run_link.wait_for()
    [(run_pk, template, status)] = off_loop(_runs_for, login.pk)
    assert (template, status) == ("implementer", "pending")
    page.screenshot(path=str(ARTIFACTS / "admin-launched.png"))
    with page.expect_navigation():
        run_link.click()
    assert page.url.endswith(f"/admin/agents/sandboxrun/{run_pk}/change/")
    assert "NOT isolated" in page.locator("#content").inner_text()
    assert "implementer" in page.locator("#content").inner_text()
    page.screenshot(path=str(ARTIFACTS / "admin-run.png"), full_page=True)

    # the cockpit on a phone-sized screen (for the artifacts; the sections stack)
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(f"{base}/admin/tickets/ticket/{login.pk}/change/")
    page.wait_for_selector("#cockpit")
    page.screenshot(path=str(ARTIFACTS / "admin-cockpit-phone.png"), full_page=False)
