"""Dashboard pages rendered by the Django test client: what a manager reads without a browser."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.django_db(transaction=True)


def test_agents_page_shows_last_seen_from_any_call_and_the_run_log_tail(client, admin_user, workflow, make_agent, mcp_for):
    from agents.models import SandboxRun
    from tickets.services import ticket_create

    worker, token = make_agent("seen-worker", workflow)
    make_agent("silent-worker", workflow)
    ticket = ticket_create(actor=worker, workflow=workflow, title="Check the cache TTL", description="The TTL looks wrong.")
    SandboxRun.objects.create(agent=worker, workflow=workflow, ticket=ticket, template="implementer", provider="local",
                              status="succeeded", log_tail="$ pytest\n12 passed in 0.4s\n")
    # an ordinary tool call (no heartbeat) counts as being seen
    mcp_for(token).call("get_ticket", ticket_id=ticket.public_id)
    client.force_login(admin_user)

    page = client.get(f"/dashboard/{workflow.slug}/agents/").content.decode()

    seen_row = page[page.index('data-agent-id="seen-worker"'):].split("</tr>")[0]
    silent_row = page[page.index('data-agent-id="silent-worker"'):].split("</tr>")[0]
    assert "ago</time>" in seen_row and "never" not in seen_row
    assert "never" in silent_row
    assert "12 passed in 0.4s" in page


def test_feed_first_render_is_the_event_log_in_sentences_with_dates(client, admin_user, workflow, make_agent):
    from omoi_site.events import event_feed
    from tickets.services import ticket_change_status, ticket_create

    worker, _ = make_agent("feed-worker", workflow)
    ticket = ticket_create(actor=worker, workflow=workflow, title="Fix login timeout bug", description="Sessions expire early.")
    ticket_change_status(actor=worker, ticket_id=ticket.pk, new_status="analyzing", comment="Looking at the session store.")
    client.force_login(admin_user)

    page = client.get(f"/dashboard/{workflow.slug}/").content.decode()

    feed = event_feed(workflow=workflow.slug)
    assert [item["event"] for item in feed][:2] == ["ticket.status_changed", "ticket.created"]
    assert f"{ticket.public_id} moved from backlog to analyzing by feed-worker." in page
    assert f'data-event-id="{feed[0]["id"]}"' in page
    assert page.index(f'data-event-id="{feed[0]["id"]}"') < page.index(f'data-event-id="{feed[1]["id"]}"')


def test_not_found_pages_speak_to_humans(client, admin_user):
    client.force_login(admin_user)
    missing_ticket = client.get("/dashboard/ticket/TKT-999999/")
    missing_flow = client.get("/dashboard/no-such-flow/")
    assert missing_ticket.status_code == missing_flow.status_code == 404
    assert "There is no ticket TKT-999999" in missing_ticket.content.decode()
    assert "get_tickets" not in missing_ticket.content.decode()
    assert "There is no workflow called “no-such-flow”" in missing_flow.content.decode()


def test_the_board_ranks_open_tickets_at_risk_by_p_times_one_plus_what_they_block(client, admin_user, workflow, make_agent, settings):
    from tasks.blockers import blocker_prediction_record
    from tasks.models import BlockerPrediction
    from tests.test_blockers import _history
    from tickets.services import dependency_add, ticket_create, ticket_resolve

    agent, _ = make_agent("risk-board-agent", workflow)
    _history(agent, workflow)  # payment webhooks kept being blocked; other work was not
    settings.BLOCKER_SHADOW_HOLDOUT_PERCENT = 0

    def forecast(title, description):
        ticket = ticket_create(actor=agent, workflow=workflow, title=title, description=description)
        blocker_prediction_record(ticket=ticket)
        return ticket

    apple = forecast("Payment webhook for Apple Pay events", "Handle the payment provider's webhook for Apple Pay charges.")
    klarna = forecast("Payment webhook for Klarna", "Receive Klarna payment webhook events.")
    pix = forecast("Payment webhook for Pix", "Receive Pix payment webhook events.")
    typo = forecast("Fix a typo in the about page", "The about page says 'teh' instead of 'the'.")
    readme = forecast("Update the README badges", "The build badge points at the old CI.")
    tidy = forecast("Tidy the logging configuration", "Remove the unused handlers from the logging setup.")
    finished = forecast("Payment webhook for SEPA", "Receive SEPA payment webhook events.")
    ticket_resolve(actor=agent, ticket_id=finished.public_id, resolution_comment="Done and deployed to production.")
    # the README ticket holds up a release train of eight open tickets
    for step in range(8):
        waiting = ticket_create(actor=agent, workflow=workflow, title=f"Release step {step} of the docs site",
                                description="Publish this part of the docs site after the README is fixed.")
        dependency_add(actor=agent, ticket_id=waiting.pk, blocked_by_ticket_id=readme.pk)
    settings.BLOCKER_SHADOW_HOLDOUT_PERCENT = 100
    held = forecast("Payment webhook for gift cards", "Gift card payment webhook events.")
    dependency_add(actor=agent, ticket_id=typo.pk, blocked_by_ticket_id=held.pk)
    client.force_login(admin_user)

    page = client.get(f"/dashboard/{workflow.slug}/")

    assert page.status_code == 200
    at_risk = page.context["at_risk"]
    p = dict(BlockerPrediction.objects.filter(shown=True).values_list("ticket_id", "p_blocked"))
    dependents = {readme.pk: 8}
    candidates = [apple, klarna, pix, typo, readme, tidy]
    expected = sorted(candidates, key=lambda t: (-p[t.pk] * (1 + dependents.get(t.pk, 0)), -p[t.pk], t.pk))[:5]
    assert [r["ticket_id"] for r in at_risk] == [t.public_id for t in expected]
    assert at_risk[0]["ticket_id"] == readme.public_id and at_risk[0]["dependents"] == 8  # low p, but it holds up eight
    assert p[readme.pk] < min(p[apple.pk], p[klarna.pk], p[pix.pk])
    assert held.public_id not in {r["ticket_id"] for r in at_risk} and finished.public_id not in {r["ticket_id"] for r in at_risk}
    html = page.content.decode()
    panel = html.split('id="at-risk"')[1].split("</section>")[0]
    positions = [panel.index(f'href="/dashboard/ticket/{t.public_id}/"') for t in expected]
    assert positions == sorted(positions)
    first = panel.split("<li")[1]
    assert f'<span class="badge risk-{at_risk[0]["band"]}">' in first and "blocks 8 open tickets" in first
    assert held.title not in panel


CREDENTIALS = [
    "Missing API credentials: the payment provider API key and webhook signing secret are not configured in this environment.",
    "The payment provider API key is not set in staging, so webhook calls fail with 401.",
    "No credentials for the payments API: the secret key is missing from the vault.",
    "Webhook signing secret for the payment gateway has not been configured.",
]
MIGRATION_LOCKS = [
    "The database migration locks the orders table for minutes on large shops.",
    "Adding the index on orders.created_at takes a long table lock during the migration.",
    "Migration on the orders table blocks writes for several minutes.",
]
UNCLEAR_SPEC = [
    "The spec does not say what happens when a user deletes their account with open orders.",
    "Unclear requirement: should deleted accounts keep their order history?",
]
ONE_OFFS = ["The CSS of the footer overlaps on small screens.", "The session TTL is set in seconds, not minutes."]


def test_the_board_draws_recurring_discovery_patterns_with_weekly_counts(client, admin_user, workflow, other_workflow, make_agent):
    from datetime import timedelta

    from django.utils import timezone

    from tasks.models import Discovery
    from tasks.services import task_create
    from tickets.services import ticket_create

    agent, _ = make_agent("pattern-agent", workflow, other_workflow)

    def record(flow, kind, texts, weeks_ago):
        found = []
        for text, weeks in zip(texts, weeks_ago, strict=True):
            ticket = ticket_create(actor=agent, workflow=flow, title=f"Work on {text[:40]}", description="Some work to do here.")
            source, _ = task_create(actor=agent, ticket_id=ticket.public_id, phase_id="PHASE_IMPLEMENTATION", description="Do the work.")
            _, discovery = task_create(actor=agent, ticket_id=ticket.public_id, phase_id="PHASE_IMPLEMENTATION",
                                       description="Follow up on it.", discovery_type=kind, discovery_description=text,
                                       source_task_id=source.public_id)
            Discovery.objects.filter(pk=discovery.pk).update(created_at=timezone.now() - timedelta(weeks=weeks))
            found.append(ticket)
        return found

    credentials = record(workflow, "missing_requirement", CREDENTIALS, [3, 1, 0, 0])
    record(workflow, "performance_issue", MIGRATION_LOCKS, [9, 0, 0])  # one of them before the 8 weeks drawn
    record(workflow, "clarification_needed", UNCLEAR_SPEC, [2, 1])
    record(workflow, "bug", ONE_OFFS, [0, 0])
    record(other_workflow, "missing_requirement", CREDENTIALS[:2], [0, 0])  # another workflow's do not count
    assert Discovery.objects.filter(embedding__isnull=True).count() == 0
    client.force_login(admin_user)

    page = client.get(f"/dashboard/{workflow.slug}/")

    patterns = page.context["patterns"]
    assert [(p["count"], p["discovery_type"]) for p in patterns] == [
        (4, "missing_requirement"), (3, "performance_issue"), (2, "clarification_needed")]
    assert [[w["count"] for w in p["weeks"]] for p in patterns] == [
        [0, 0, 0, 0, 1, 0, 1, 2], [0, 0, 0, 0, 0, 0, 0, 2], [0, 0, 0, 0, 0, 1, 1, 0]]
    assert patterns[0]["tickets"][0] in {t.public_id for t in credentials} and patterns[0]["ticket_count"] == 4
    html = page.content.decode()
    panel = html.split('id="patterns"')[1].split("</section>")[0]
    first = panel.split("<li")[1]
    assert "<strong>4×</strong>" in first and "missing_requirement" in first
    svg = first.split("<svg")[1].split("</svg>")[0]
    assert [int(part.split('"')[0]) for part in svg.split('data-count="')[1:]] == [0, 0, 0, 0, 1, 0, 1, 2]
    assert 'role="img"' in first and "https://" not in panel and "<script" not in panel
    assert "footer overlaps" not in panel and "session TTL" not in panel  # one-offs are not patterns
