"""Monthly budget per workflow: set in the admin, enforced by the launcher through every door (admin
action, MCP `launch_worker`, REST `POST /api/sandbox-runs`), with nothing started when refused; and the
usage numbers the dashboard charts equal the SandboxRun sums."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import httpx
import pytest
from django.utils import timezone

from agents.models import Agent, SandboxRun
from tasks.models import Task


@pytest.fixture
def spent_workflow(transactional_db, workflow, make_agent):
    """A workflow with a $5 budget whose runs this month already cost $5.25, a coordinator and a pending task."""
    from tasks.services import task_create
    from tickets.services import ticket_create

    coordinator, token = make_agent("coordinator", workflow, agent_type="coordinator")
    ticket = ticket_create(actor=coordinator, workflow=workflow, title="Fix login timeout bug",
                           description="Sessions expire after five minutes instead of eight hours.")
    task, _ = task_create(actor=coordinator, ticket_id=ticket.id, phase_id="PHASE_IMPLEMENTATION",
                          description="Find where the session TTL comes from", task_type="investigation")
    old_worker, _ = make_agent("implementer-old", workflow)
    for cost in ("3.00", "2.25"):
        SandboxRun.objects.create(agent=old_worker, workflow=workflow, ticket=ticket, template="implementer", provider="local",
                                  status="succeeded", llm_cost_usd=Decimal(cost), sandbox_seconds=30, llm_prompt_tokens=1000,
                                  llm_completion_tokens=200)
    workflow.monthly_budget_usd = Decimal("5.00")
    workflow.save(update_fields=["monthly_budget_usd"])
    return workflow, coordinator, token, ticket, task


def _snapshot(task):
    return (SandboxRun.objects.count(), Agent.objects.count(), Task.objects.count(),
            Task.objects.get(pk=task.pk).assigned_agent_id)


def test_launch_beyond_the_budget_is_refused_by_the_launcher_and_starts_nothing(spent_workflow):
    from agents.launcher import launch_worker
    from omoi_site.domain import Conflict

    workflow, coordinator, _, ticket, task = spent_workflow
    before = _snapshot(task)
    with pytest.raises(Conflict) as refused:
        launch_worker(actor=coordinator, template="implementer", task=task, enqueue=False)
    assert "spent $5.25 of its $5.00 monthly budget" in refused.value.message
    assert _snapshot(task) == before


def test_mcp_launch_beyond_the_budget_is_a_clear_tool_error(spent_workflow, mcp_for):
    workflow, _, token, ticket, task = spent_workflow
    before = _snapshot(task)
    error = mcp_for(token).error("launch_worker", agent_id="coordinator", template="implementer", task_id=task.public_id)
    assert "monthly budget" in error and "$5.25" in error
    assert _snapshot(task) == before


def test_rest_launch_beyond_the_budget_is_409_with_the_reason(spent_workflow, asgi_server):
    workflow, _, token, ticket, task = spent_workflow
    before = _snapshot(task)
    response = httpx.post(f"{asgi_server.url}/api/sandbox-runs", json={"template": "implementer", "task_id": task.public_id},
                          headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 409, response.text
    assert "monthly budget" in response.json()["error"]["message"]
    assert _snapshot(task) == before


def test_admin_launch_beyond_the_budget_shows_the_reason_and_starts_nothing(spent_workflow, client, django_user_model):
    workflow, _, _, ticket, task = spent_workflow
    client.force_login(django_user_model.objects.create_superuser("boss", "", "boss-password-123"))
    before = _snapshot(task)
    response = client.post("/admin/tickets/ticket/", {"action": "launch_worker", "_selected_action": [ticket.pk],
                                                     "apply": "1", "template": "researcher"}, follow=True)
    assert response.status_code == 200
    assert "monthly budget" in response.content.decode()
    assert _snapshot(task) == before


def test_budget_is_set_in_the_admin_and_raising_it_lets_the_launch_through(spent_workflow, client, django_user_model):
    from agents.launcher import launch_worker

    workflow, coordinator, _, ticket, task = spent_workflow
    client.force_login(django_user_model.objects.create_superuser("boss", "", "boss-password-123"))
    page = client.get(f"/admin/agents/workflow/{workflow.pk}/change/")
    form = page.context["adminform"].form
    data = {name: form[name].value() if form[name].value() is not None else "" for name in form.fields}
    data["auto_spawn_rules"] = "{}"
    bad = client.post(f"/admin/agents/workflow/{workflow.pk}/change/", {**data, "monthly_budget_usd": "-3"})
    assert bad.status_code == 200  # the form is shown again with the error
    workflow.refresh_from_db()
    assert workflow.monthly_budget_usd == Decimal("5.00")
    saved = client.post(f"/admin/agents/workflow/{workflow.pk}/change/", {**data, "monthly_budget_usd": "20"}, follow=True)
    assert saved.status_code == 200
    workflow.refresh_from_db()
    assert workflow.monthly_budget_usd == Decimal("20.00")
    run = launch_worker(actor=coordinator, template="implementer", task=task, enqueue=False)
    assert run.status == "pending"


def test_last_months_spend_does_not_count_against_this_month(spent_workflow):
    from agents.launcher import launch_worker

    workflow, coordinator, _, ticket, task = spent_workflow
    SandboxRun.objects.update(created_at=timezone.now().replace(day=1, hour=0, minute=0) - timedelta(days=2))
    run = launch_worker(actor=coordinator, template="implementer", task=task, enqueue=False)
    assert run.status == "pending"


def test_usage_per_day_and_template_equals_the_sandbox_run_sums(spent_workflow, make_agent):
    from django.db.models import Sum

    from agents.selectors import workflow_usage

    workflow, _, _, ticket, _ = spent_workflow
    reviewer, _ = make_agent("reviewer-1", workflow, agent_type="reviewer")
    yesterday = SandboxRun.objects.create(agent=reviewer, workflow=workflow, ticket=ticket, template="reviewer", provider="local",
                                          status="succeeded", llm_cost_usd=Decimal("0.40"), sandbox_seconds=12.5,
                                          llm_prompt_tokens=300, llm_completion_tokens=50)
    SandboxRun.objects.filter(pk=yesterday.pk).update(created_at=timezone.now() - timedelta(days=1))

    usage = workflow_usage(workflow=workflow, days=7)

    runs = SandboxRun.objects.filter(workflow=workflow)
    assert usage["totals"]["cost_usd"] == runs.aggregate(s=Sum("llm_cost_usd"))["s"] == Decimal("5.65")
    assert usage["totals"]["sandbox_seconds"] == 72.5
    assert usage["totals"]["tokens"] == 2 * 1200 + 350
    by_template = {row["template"]: row for row in usage["templates"]}
    assert by_template["implementer"]["cost_usd"] == Decimal("5.25") and by_template["reviewer"]["cost_usd"] == Decimal("0.40")
    assert len(usage["days"]) == 7 and sum(day["cost_usd"] for day in usage["days"]) == Decimal("5.65")
    assert usage["days"][-1]["cost_usd"] == Decimal("5.25") and usage["days"][-2]["cost_usd"] == Decimal("0.40")


def test_agents_page_draws_the_usage_chart_and_budget_burn(spent_workflow, client, django_user_model):
    workflow, *_ = spent_workflow
    client.force_login(django_user_model.objects.create_superuser("boss", "", "boss-password-123"))
    page = client.get(f"/dashboard/{workflow.slug}/agents/").content.decode()
    assert 'id="usage"' in page and "$5.25 of $5.00" in page
    assert 'data-template="implementer"' in page and 'data-cost="5.25"' in page
