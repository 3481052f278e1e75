"""Launch → run page, run pages, token bookkeeping and offline API docs, as staff see them."""

from __future__ import annotations

import io
import re

import pytest
from django.contrib.messages import get_messages
from django.core.management import call_command
from django.urls import reverse

from agents.models import AgentToken, SandboxRun

pytestmark = pytest.mark.django_db


@pytest.fixture
def agent(workflow, make_agent):
    return make_agent("runs-worker", workflow)[0]


def _ticket(workflow, actor, title="Fix login timeout bug"):
    from tickets.services import ticket_create

    return ticket_create(actor=actor, workflow=workflow, title=title, description="Sessions expire far too early for users.")


def test_launching_from_the_ticket_page_links_to_the_run_and_the_run_page_warns_about_isolation(client, admin_user, workflow, agent,
                                                                                               settings):
    settings.SANDBOX_PROVIDER = "local"
    ticket = _ticket(workflow, agent)
    client.force_login(admin_user)

    response = client.post(reverse("admin:tickets_ticket_triage", args=[ticket.pk]), {"op": "launch", "template": "implementer"},
                           follow=True)

    [run] = SandboxRun.objects.all()
    assert (run.ticket_id, run.template, run.provider, run.status) == (ticket.pk, "implementer", "local", "pending")
    run_url = reverse("admin:agents_sandboxrun_change", args=[run.pk])
    [message] = [str(m) for m in get_messages(response.wsgi_request)]
    assert f'<a href="{run_url}">run {run.pk} ({run.agent_id})</a>' in message
    assert f'href="{run_url}"' in response.content.decode()  # rendered as a link, not escaped text

    page = client.get(run_url)
    content = page.content.decode()
    assert "NOT isolated:" in content
    assert '<meta http-equiv="refresh" content="5">' in content  # pending: the page keeps itself current


def test_a_failed_run_shows_its_log_monospace_with_the_error_line_highlighted(client, admin_user, workflow, agent):
    from agents.launcher import launch_worker

    ticket = _ticket(workflow, agent)
    run = launch_worker(actor=admin_user, template="implementer", ticket=ticket, enqueue=False, provider="daytona")
    SandboxRun.objects.filter(pk=run.pk).update(status="failed", log_tail="step 1 ok\nTraceback: KeyError 'session'\nstep 3", sandbox_seconds=4.2)
    client.force_login(admin_user)

    page = client.get(reverse("admin:agents_sandboxrun_change", args=[run.pk])).content.decode()
    listing = client.get(reverse("admin:agents_sandboxrun_changelist")).content.decode()

    assert '<pre class="omoi-log">step 1 ok\n<span class="omoi-error-line">Traceback: KeyError &#x27;session&#x27;</span>step 3\n</pre>' in page
    assert "NOT isolated" not in page and 'http-equiv="refresh"' not in page
    assert "4.2 s" in listing and f"TKT-{ticket.pk}" in listing and ">failed<" in listing


def test_a_token_records_when_it_was_last_used_at_most_once_a_minute(client, workflow, make_agent):
    agent, token = make_agent("api-user", workflow)
    row = AgentToken.objects.get(agent=agent)
    assert row.last_used_at is None

    first = client.get(reverse("api-tickets"), {"workflow": workflow.slug}, HTTP_AUTHORIZATION=f"Bearer {token}")
    row.refresh_from_db()
    used = row.last_used_at
    client.get(reverse("api-tickets"), {"workflow": workflow.slug}, HTTP_AUTHORIZATION=f"Bearer {token}")
    row.refresh_from_db()

    assert first.status_code == 200 and used is not None
    assert row.last_used_at == used  # the second request within the minute wrote nothing


def test_reseeding_the_demo_revokes_the_demo_tokens_it_replaces(db):
    from agents.selectors import agent_for_token

    def seed() -> dict[str, str]:
        out = io.StringIO()
        call_command("seed_demo", stdout=out)
        return dict(re.findall(r"agent (\S+)\s+token (\S+)", out.getvalue()))

    old, new = seed(), seed()

    assert set(old) == set(new) == {"coordinator", "worker-1", "db-specialist"}
    for agent_id in old:
        assert agent_for_token(raw_token=old[agent_id]) is None
        assert agent_for_token(raw_token=new[agent_id]).agent_id == agent_id


@pytest.mark.parametrize("name", ["api-redoc", "api-docs"])
def test_the_api_docs_load_nothing_from_outside_the_server(client, admin_user, name):
    client.force_login(admin_user)

    page = client.get(reverse(name)).content.decode()

    external = re.findall(r'(?:src|href)=["\'](?:https?:)?//[^"\']+', page)
    assert external == []
    assert "<script" in page


def test_launched_workers_are_marked_ephemeral_with_their_run(client, admin_user, workflow, agent):
    from agents.launcher import launch_worker

    run = launch_worker(actor=admin_user, template="implementer", ticket=_ticket(workflow, agent), enqueue=False)
    client.force_login(admin_user)

    listing = client.get(reverse("admin:agents_agent_changelist")).content.decode()

    run_url = reverse("admin:agents_sandboxrun_change", args=[run.pk])
    assert f'ephemeral worker · <a href="{run_url}">run {run.pk} (pending)</a>' in listing
    assert listing.count("standing") == 1  # runs-worker, the agent that filed the ticket


def test_task_search_finds_a_task_or_a_tickets_tasks_by_id(client, admin_user, workflow, agent):
    from tasks.services import task_create

    ticket, other = _ticket(workflow, agent), _ticket(workflow, agent, title="Another ticket")
    first, _ = task_create(actor=agent, ticket_id=ticket.public_id, phase_id="PHASE_IMPLEMENTATION", description="Profile the session store")
    second, _ = task_create(actor=agent, ticket_id=ticket.public_id, phase_id="PHASE_IMPLEMENTATION", description="Raise the TTL to a day")
    task_create(actor=agent, ticket_id=other.public_id, phase_id="PHASE_IMPLEMENTATION", description="Unrelated work on another ticket")
    client.force_login(admin_user)
    url = reverse("admin:tasks_task_changelist")

    by_task = client.get(url, {"q": second.public_id}).context["cl"].result_list
    by_ticket = client.get(url, {"q": ticket.public_id}).context["cl"].result_list

    assert [t.pk for t in by_task] == [second.pk]
    assert sorted(t.pk for t in by_ticket) == [first.pk, second.pk]
