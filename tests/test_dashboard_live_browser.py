"""Dashboards a manager can trust, in a real headless Chromium (Playwright) against the real ASGI server
and the real Redis channel layer: every panel follows changes agents make through MCP, a dropped socket
catches up on what it missed, a reload shows the same feed, the board filter lives in the URL, phones
get no sideways page scroll, and axe-core finds no serious or critical accessibility violation.

Screenshots land in test-artifacts/.
"""

from __future__ import annotations

import pytest

from tests import test_dashboard_browser
from tests.test_dashboard_browser import ARTIFACTS, PASSWORD, _seed, off_loop

browser_page = test_dashboard_browser.browser_page  # the same Chromium fixture as the first browser tests

pytestmark = [pytest.mark.browser, pytest.mark.slow]
WAIT = 15_000


class _Agent:
    """The MCP client, called off Playwright's loop."""

    def __init__(self, client):
        self.client = client

    def call(self, tool, **arguments):
        return off_loop(self.client.call, tool, **arguments)


def _login(page, base_url, next_path):
    page.goto(f"{base_url}/admin/login/?next={next_path}")
    page.fill("#id_username", "manager")
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_url(f"**{next_path}")
    page.wait_for_selector("body[data-live=live]", timeout=WAIT)


def _feed(page) -> list[tuple[str, str]]:
    return page.eval_on_selector_all("#feed li[data-event-id]", "items => items.map(li => [li.dataset.eventId, li.querySelector('.text').textContent])")


def test_every_panel_is_live_catches_up_after_a_drop_and_a_reload_shows_the_same_feed(asgi_server, mcp_for, make_agent, workflow, browser_page):
    ARTIFACTS.mkdir(exist_ok=True)
    worker_token, bug, release, investigation = off_loop(_seed, make_agent, workflow)
    page, agent = browser_page, _Agent(mcp_for(worker_token))
    _login(page, asgi_server.url, f"/dashboard/{workflow.slug}/")

    # the board's heading count and column count follow a ticket created through MCP
    assert page.inner_text("#ticket-total") == "3 tickets"
    created = agent.call("create_ticket", workflow_id=workflow.slug, agent_id="worker-1", title="Audit the session cookie flags",
                         description="Check Secure and SameSite on the session cookie.")["ticket"]["ticket_id"]
    page.wait_for_selector(f'.column[data-status="backlog"] .card[data-ticket-id="{created}"]', timeout=WAIT)
    page.wait_for_function("document.getElementById('ticket-total').textContent === '4 tickets'", timeout=WAIT)
    assert page.inner_text('.column[data-status="backlog"] .count') == "3"

    # catch-up: the socket drops, three changes happen, the page reconnects and shows all three
    page.evaluate("window.omoiDashboard.pause()")
    page.wait_for_selector("body[data-live=offline]", timeout=WAIT)
    agent.call("change_ticket_status", ticket_id=bug.public_id, agent_id="worker-1", new_status="analyzing",
               comment="Starting to investigate the session expiry.")
    agent.call("broadcast_message", sender_agent_id="worker-1", message="Missed while offline: the TTL is in the cache.")
    agent.call("add_ticket_comment", ticket_id=created, agent_id="worker-1", comment_text="Missed while offline: cookie is not Secure.")
    assert page.locator('#feed li:has-text("Missed while offline")').count() == 0
    page.evaluate("window.omoiDashboard.resume()")
    page.wait_for_selector(f'.column[data-status="analyzing"] .card[data-ticket-id="{bug.public_id}"]', timeout=WAIT)
    page.wait_for_selector('#feed li:has-text("Missed while offline: the TTL is in the cache.")', timeout=WAIT)
    page.wait_for_selector('#feed li:has-text("Missed while offline: cookie is not Secure.")', timeout=WAIT)
    page.wait_for_selector(f'#feed li[data-event="ticket.status_changed"]:has-text("{bug.public_id} moved from backlog to analyzing")', timeout=WAIT)
    page.screenshot(path=str(ARTIFACTS / "live-board-after-catch-up.png"), full_page=True)

    # a reload lists the same feed items (same ids, same sentences) as the page showed live
    live_feed = _feed(page)
    assert len(live_feed) >= 5
    page.reload()
    page.wait_for_selector("body[data-live=live]", timeout=WAIT)
    assert _feed(page)[: len(live_feed)] == live_feed
    assert all(page.eval_on_selector_all("#feed li time", "ts => ts.map(t => /^[A-Z][a-z]{2} \\d{1,2}, \\d\\d:\\d\\d:\\d\\d$/.test(t.textContent))"))

    # the ticket page: phase, version, history and comments follow MCP changes without a reload
    page.goto(f"{asgi_server.url}/dashboard/ticket/{bug.public_id}/")
    page.wait_for_selector("body[data-live=live]", timeout=WAIT)
    page.evaluate("window.__sameDocument = true")
    phase_before, version_before = page.inner_text("#ticket-phase"), page.inner_text("#ticket-version")
    agent.call("change_ticket_status", ticket_id=bug.public_id, agent_id="worker-1", new_status="building",
               comment="Root cause confirmed, starting the fix.")
    agent.call("add_ticket_comment", ticket_id=bug.public_id, agent_id="worker-1", comment_text="The fix reads the TTL from settings.")
    page.wait_for_selector('#comments :text("The fix reads the TTL from settings.")', timeout=WAIT)
    page.wait_for_function(f"document.getElementById('ticket-phase').textContent !== {phase_before!r}", timeout=WAIT)
    page.wait_for_selector('#history :text("Root cause confirmed, starting the fix.")', timeout=WAIT)
    page.wait_for_function("document.getElementById('ticket-status').textContent === 'building'", timeout=WAIT)
    assert page.inner_text("#ticket-version") != version_before
    assert page.locator("#phases li").count() >= 2
    assert page.evaluate("window.__sameDocument") is True
    page.screenshot(path=str(ARTIFACTS / "live-ticket-page.png"), full_page=True)


def test_board_filter_hides_and_shows_the_right_cards_and_its_url_reproduces_it(asgi_server, mcp_for, make_agent, workflow, browser_page):
    ARTIFACTS.mkdir(exist_ok=True)
    worker_token, bug, release, investigation = off_loop(_seed, make_agent, workflow)
    page = browser_page
    _login(page, asgi_server.url, f"/dashboard/{workflow.slug}/")

    def visible_ids():
        return sorted(page.eval_on_selector_all(".board .card:not([hidden])", "cards => cards.map(c => c.dataset.ticketId)"))

    everything = visible_ids()
    assert len(everything) == 3
    page.select_option("#filter-blocked", "yes")
    assert visible_ids() == [release.public_id]
    page.select_option("#filter-blocked", "")
    page.select_option("#filter-assignee", "worker-1")
    assert visible_ids() == [bug.public_id]
    page.fill("#filter-q", "login")
    assert visible_ids() == [bug.public_id]
    page.fill("#filter-q", "rotate")
    assert visible_ids() == []
    page.fill("#filter-q", "")
    page.select_option("#filter-assignee", "")
    page.select_option("#filter-priority", "low")
    assert len(visible_ids()) == 1 and visible_ids() != [bug.public_id]
    shared = page.url
    assert "priority=low" in shared

    # the shared URL reproduces the view in a fresh page
    page.goto(shared)
    page.wait_for_selector("body[data-live=live]", timeout=WAIT)
    assert page.input_value("#filter-priority") == "low"
    assert len(visible_ids()) == 1
    page.screenshot(path=str(ARTIFACTS / "board-filtered.png"), full_page=True)
    page.click("#board-filter button[type=reset]")
    page.wait_for_function("document.querySelectorAll('.board .card:not([hidden])').length === 3", timeout=WAIT)
    assert "priority" not in page.url


def _with_risk_and_patterns(make_agent, workflow, tickets):
    """A finished history (recurring discoveries) and shown forecasts, so the board's At risk and
    Recurring discovery patterns panels have rows."""
    from tasks.blockers import ticket_risk_predict
    from tests.test_blockers import _history

    _history(make_agent("history-agent", workflow)[0], workflow)
    for ticket in tickets:
        ticket_risk_predict(ticket=ticket)  # as of now: the history is known


def test_phone_width_has_no_sideways_scroll_and_axe_finds_no_serious_violations(asgi_server, transactional_db, make_agent, workflow,
                                                                                 browser_page, settings):
    from axe_playwright_python.sync_playwright import Axe

    ARTIFACTS.mkdir(exist_ok=True)
    worker_token, bug, release, investigation = off_loop(_seed, make_agent, workflow)
    settings.BLOCKER_SHADOW_HOLDOUT_PERCENT = 0
    off_loop(_with_risk_and_patterns, make_agent, workflow, [bug, release])
    page = browser_page
    _login(page, asgi_server.url, f"/dashboard/{workflow.slug}/")
    pages = {
        "index": "/dashboard/",
        "board": f"/dashboard/{workflow.slug}/",
        "ticket": f"/dashboard/ticket/{bug.public_id}/",
        "agents": f"/dashboard/{workflow.slug}/agents/",
        "not-found": "/dashboard/ticket/TKT-999999/",
    }
    axe = Axe()
    serious = {}
    for name, path in pages.items():
        page.set_viewport_size({"width": 1440, "height": 900})
        page.goto(f"{asgi_server.url}{path}")
        page.wait_for_load_state("load")
        if name == "board":  # the risk and pattern panels are drawn, not empty
            assert page.locator("#at-risk li").count() == 2 and page.locator("#patterns svg.weeks").count() >= 1
        if name in ("board", "ticket", "agents"):
            violations = axe.run(page).response["violations"]
            serious[name] = [(v["id"], v["impact"], len(v["nodes"])) for v in violations if v["impact"] in ("serious", "critical")]
        page.set_viewport_size({"width": 390, "height": 844})
        page.wait_for_timeout(50)  # one layout pass at the new width (not a wait for an event)
        widths = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
        page.screenshot(path=str(ARTIFACTS / f"phone-{name}.png"), full_page=True)
        assert widths[0] <= widths[1], f"{name} scrolls sideways at 390 px: {widths}"
    assert serious == {"board": [], "ticket": [], "agents": []}
    assert "There is no ticket TKT-999999" in page.content()


def test_the_boards_risk_and_pattern_panels_follow_mcp_changes_live(asgi_server, mcp_for, make_agent, workflow, browser_page, settings):
    from tests.test_blockers import CREDENTIALS

    worker_token, bug, release, investigation = off_loop(_seed, make_agent, workflow)
    settings.BLOCKER_SHADOW_HOLDOUT_PERCENT = 0
    off_loop(_with_risk_and_patterns, make_agent, workflow, [])
    page, agent = browser_page, _Agent(mcp_for(worker_token))
    _login(page, asgi_server.url, f"/dashboard/{workflow.slug}/")
    page.evaluate("window.__sameDocument = true")
    assert page.locator("#at-risk li").count() == 0
    assert page.get_attribute("#patterns li", "data-count") == "6"  # the history's missing-credentials discoveries

    # a new payment-webhook ticket is forecast at risk; its first task finds the credentials missing again
    created = agent.call("create_ticket", workflow_id=workflow.slug, agent_id="worker-1", title="Payment webhook for Apple Pay events",
                         description="Handle the payment provider's webhook for Apple Pay charges and refunds.")
    ticket_id = created["ticket"]["ticket_id"]
    page.wait_for_selector(f'#at-risk li[data-ticket-id="{ticket_id}"]', timeout=WAIT)
    assert page.inner_text(f'#at-risk li[data-ticket-id="{ticket_id}"] .badge') == created["risk"]["band"]
    task = agent.call("create_task", ticket_id=ticket_id, phase_id="PHASE_IMPLEMENTATION", description="Implement the Apple Pay webhook.")
    agent.call("create_task", ticket_id=ticket_id, phase_id="PHASE_IMPLEMENTATION", description="Ask for the payment API credentials.",
               discovery_type="missing_requirement", discovery_description=CREDENTIALS, source_task_id=task["task"]["task_id"])
    page.wait_for_function("document.querySelector('#patterns li').dataset.count === '7'", timeout=WAIT)
    assert page.evaluate("window.__sameDocument") is True
