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
