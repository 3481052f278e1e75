"""Blocker prediction (issue 17): leakage, cold start, the ledger, the shadow holdout, idempotent retraining,
bad input, and the payment-webhook case end to end through the real MCP client.

Real PostgreSQL + pgvector and the real local embedding model; histories are built through the services.
`transactional_db` because embeddings are written after commit (as in production)."""

from __future__ import annotations

import json

import pytest
from django.core.management import call_command
from django.test import Client
from django.utils import timezone

PAYMENT_TITLES = [
    "Payment webhook handler for Stripe charge events",
    "Handle the payment provider webhook for refunds",
    "Process incoming payment webhooks for subscriptions",
    "Verify signatures on payment webhook callbacks",
    "Retry failed payment webhook deliveries",
    "Payment webhook endpoint for invoice paid events",
]
OTHER_TITLES = [
    "Fix the CSS of the settings page footer",
    "Update the README installation section",
    "Rename the logging helper module",
    "Add dark mode to the dashboard theme",
    "Upgrade the markdown renderer library",
    "Tidy up unused translation strings",
]
CREDENTIALS = "Missing API credentials: the payment provider API key and webhook signing secret are not configured in this environment."


def _history(agent, workflow):
    """Payment-webhook tickets kept being blocked by missing-credentials discoveries; other tickets were not."""
    from tasks.services import task_create, task_update_status
    from tickets.services import ticket_create, ticket_resolve

    def finish(task):
        task_update_status(actor=agent, task_id=task.public_id, status="running")
        task_update_status(actor=agent, task_id=task.public_id, status="completed", result={"done": True})

    discoveries = []
    for index, title in enumerate(PAYMENT_TITLES + OTHER_TITLES):
        ticket = ticket_create(actor=agent, workflow=workflow, title=title,
                               description=f"{title}. Implement it with tests and deploy it.", tags=["payments"] if index < 6 else [])
        task, _ = task_create(actor=agent, ticket_id=ticket.public_id, phase_id="PHASE_IMPLEMENTATION",
                              description=f"Implement: {title}")
        if index < len(PAYMENT_TITLES):
            follow_up, discovery = task_create(
                actor=agent, ticket_id=ticket.public_id, phase_id="PHASE_IMPLEMENTATION",
                description="Ask the operator for the payment API credentials.",
                discovery_type="missing_requirement", discovery_description=CREDENTIALS, source_task_id=task.public_id,
            )
            discoveries.append(discovery)
            finish(follow_up)
        finish(task)
        ticket_resolve(actor=agent, ticket_id=ticket.public_id, resolution_comment="Done and deployed to production.")
    return discoveries


@pytest.fixture
def agent(transactional_db, workflow, make_agent):
    return make_agent("risk-agent", workflow)


def _facts(ticket, t0):
    from tasks.blockers import TicketFacts

    return TicketFacts.of_ticket(ticket, t0=t0, declared_blocker_ids=[])


def test_a_discovery_recorded_after_t0_never_changes_a_prediction_made_at_t0(agent, workflow):
    from tasks.blockers import predict
    from tasks.services import task_create
    from tickets.services import ticket_create, ticket_resolve

    # given a history and a new payment ticket predicted at t0
    _history(agent[0], workflow)
    ticket = ticket_create(actor=agent[0], workflow=workflow, title="Payment webhook for disputes",
                           description="Receive dispute events from the payment provider webhook.")
    t0 = timezone.now()
    before = predict(_facts(ticket, t0))
    # when more evidence arrives after t0: a finished, blocked payment ticket and a security discovery on it
    later = ticket_create(actor=agent[0], workflow=workflow, title="Payment webhook for payouts",
                          description="Receive payout events from the payment provider webhook.")
    task, _ = task_create(actor=agent[0], ticket_id=later.public_id, phase_id="PHASE_IMPLEMENTATION", description="Implement payouts webhook.")
    task_create(actor=agent[0], ticket_id=later.public_id, phase_id="PHASE_IMPLEMENTATION", description="Rotate the leaked webhook secret.",
                discovery_type="security_issue", discovery_description="The payment webhook secret was leaked in logs; rotate it.",
                source_task_id=task.public_id)
    ticket_resolve(actor=agent[0], ticket_id=later.public_id, resolution_comment="Done after rotating the secret.")
    # then the prediction as of t0 is exactly the same …
    assert predict(_facts(ticket, t0)) == before
    # … while a prediction as of now does see the new evidence (so the test could fail)
    now = predict(_facts(ticket, timezone.now()))
    assert now != before
    assert "security_issue" in {row["discovery_type"] for row in now["similar_discoveries"]} | {
        t["type"] for t in now["likely_blocker_types"]}


def test_cold_start_a_new_workflow_gets_prior_or_knn_and_a_sensible_base_rate(agent, workflow, make_agent):
    from tasks.blockers import blocker_prediction_record
    from tickets.services import ticket_create, workflow_get_or_create

    _history(agent[0], workflow)  # another workflow's history: only its counts may cross over
    fresh = workflow_get_or_create(slug="fresh-flow")
    newcomer, _ = make_agent("fresh-agent", fresh)
    ticket = ticket_create(actor=newcomer, workflow=fresh, title="Payment webhook for a brand new shop",
                           description="Receive payment webhooks for the new shop.")
    prediction = blocker_prediction_record(ticket=ticket)
    assert prediction.model_tier == "prior"
    assert prediction.p_blocked is None  # the prior tier claims no probability
    assert prediction.risk["similar_discoveries"] == []  # nothing from the other workflow leaks in
    # 6 of 12 finished tickets elsewhere were blocked; shrunk toward the 15 % default it lands in between
    assert 0.15 < prediction.base_rate < 0.5
    assert prediction.band == "low"


def test_a_stored_lr_model_serves_known_workflows_but_not_a_cold_start(agent, workflow, make_agent):
    from tasks.blockers import FEATURE_NAMES, FEATURE_VERSION, blocker_prediction_record
    from tasks.models import BlockerModel
    from tickets.services import ticket_create, workflow_get_or_create

    _history(agent[0], workflow)
    width = len(FEATURE_NAMES)
    # a model whose only weight is on knn_rate (coefficients as JSON, as training stores them)
    model = BlockerModel.objects.create(
        tier="lr", feature_version=FEATURE_VERSION, training_fingerprint="test", examples=12, positives=6,
        parameters={"mean": [0.0] * width, "scale": [1.0] * width, "coef": [1.0] + [0.0] * (width - 1),
                    "intercept": 0.0, "platt_a": 1.0, "platt_b": 0.0},
    )
    known = ticket_create(actor=agent[0], workflow=workflow, title="Payment webhook for Alipay",
                          description="Receive Alipay payment webhook events.")
    served = blocker_prediction_record(ticket=known)
    assert (served.model_tier, served.model_version, served.model_id) == ("lr", model.version, model.pk)
    assert served.p_blocked > 0.5  # sigmoid(logit(knn_rate)) = knn_rate, high for payment webhooks
    fresh = workflow_get_or_create(slug="cold-flow")
    newcomer, _ = make_agent("cold-agent", fresh)
    cold = ticket_create(actor=newcomer, workflow=fresh, title="Payment webhook for a new shop",
                         description="Receive payment webhooks.")
    assert blocker_prediction_record(ticket=cold).model_tier == "prior"


def test_the_ledger_grades_each_prediction_when_its_ticket_finishes(agent, workflow):
    from tasks.blockers import blocker_prediction_record
    from tasks.models import BlockerPrediction
    from tasks.services import task_create
    from tickets.services import ticket_create, ticket_resolve

    _history(agent[0], workflow)
    blocked = ticket_create(actor=agent[0], workflow=workflow, title="Payment webhook for chargebacks",
                            description="Chargeback events from the payment webhook.")
    clean = ticket_create(actor=agent[0], workflow=workflow, title="Fix the CSS of the login footer",
                          description="The footer overlaps on small screens.")
    for ticket in (blocked, clean):
        blocker_prediction_record(ticket=ticket)
    task, _ = task_create(actor=agent[0], ticket_id=blocked.public_id, phase_id="PHASE_IMPLEMENTATION", description="Implement chargebacks.")
    task_create(actor=agent[0], ticket_id=blocked.public_id, phase_id="PHASE_IMPLEMENTATION", description="Get the credentials.",
                discovery_type="missing_requirement", discovery_description=CREDENTIALS, source_task_id=task.public_id)
    assert BlockerPrediction.objects.filter(graded_at__isnull=False).count() == 0  # open tickets are not graded
    for ticket in (blocked, clean):
        ticket_resolve(actor=agent[0], ticket_id=ticket.public_id, resolution_comment="Finished and verified.")
    rows = {p.ticket_id: p for p in BlockerPrediction.objects.all()}
    assert rows[blocked.pk].outcome_blocked is True and rows[blocked.pk].graded_at is not None
    assert rows[clean.pk].outcome_blocked is False and rows[clean.pk].graded_at is not None
    assert rows[blocked.pk].p_blocked > rows[clean.pk].p_blocked


def test_the_shadow_holdout_is_predicted_but_hidden_from_every_door(agent, workflow, mcp_for, settings):
    from tasks.models import BlockerPrediction
    from tasks.services import task_create

    _history(agent[0], workflow)
    settings.BLOCKER_SHADOW_HOLDOUT_PERCENT = 100
    client = mcp_for(agent[1])
    created = client.call("create_ticket", workflow_id="test-flow", title="Payment webhook for gift cards",
                          description="Gift card payment webhook events.")
    ticket_id = created["ticket"]["ticket_id"]
    assert "risk" not in created
    assert "risk" not in client.call("get_ticket", ticket_id=ticket_id)
    assert client.call("predict_blockers", ticket_id=ticket_id)["risk"] is None
    rest = Client().get(f"/api/tickets/{ticket_id}/risk", HTTP_AUTHORIZATION=f"Bearer {agent[1]}")
    assert rest.status_code == 200 and rest.json()["risk"] is None
    assert "risk" not in Client().get(f"/api/tickets/{ticket_id}", HTTP_AUTHORIZATION=f"Bearer {agent[1]}").json()
    task_create(actor=agent[0], ticket_id=ticket_id, phase_id="PHASE_IMPLEMENTATION", description="Implement the gift card payment webhook.")
    claimed = client.call("claim_next_task", workflow_id="test-flow")
    assert claimed["task"]["ticket_id"] == ticket_id and "warnings" not in claimed
    # recorded all the same, marked not shown
    rows = BlockerPrediction.objects.filter(ticket_id=int(ticket_id.split("-")[1]))
    assert rows.count() == 2 and not any(rows.values_list("shown", flat=True))
    assert all(p is not None for p in rows.values_list("p_blocked", flat=True))

    settings.BLOCKER_SHADOW_HOLDOUT_PERCENT = 0  # with the holdout off, a new ticket's risk is shown
    shown = client.call("create_ticket", workflow_id="test-flow", title="Payment webhook for vouchers",
                        description="Voucher payment webhook events.")
    assert shown["risk"]["band"] in ("medium", "high")


def test_shadow_holdout_membership_is_sticky_when_the_share_changes_later(agent, workflow, mcp_for, settings):
    from tasks.blockers import is_shadow
    from tasks.models import BlockerPrediction
    from tasks.services import task_create

    _history(agent[0], workflow)
    client = mcp_for(agent[1])
    # given: one ticket filed while every ticket was held back, one while none was
    settings.BLOCKER_SHADOW_HOLDOUT_PERCENT = 100
    held_id = client.call("create_ticket", workflow_id="test-flow", title="Payment webhook for gift cards",
                          description="Gift card payment webhook events.")["ticket"]["ticket_id"]
    settings.BLOCKER_SHADOW_HOLDOUT_PERCENT = 0
    shown = client.call("create_ticket", workflow_id="test-flow", title="Payment webhook for vouchers",
                        description="Voucher payment webhook events.")
    shown_id = shown["ticket"]["ticket_id"]
    assert shown["risk"]["p_blocked"] is not None

    # when: the share is lowered to 0 (the held-back ticket would now fall outside it) ...
    held_get = client.call("get_ticket", ticket_id=held_id)
    held_predicted = client.call("predict_blockers", ticket_id=held_id)
    task_create(actor=agent[0], ticket_id=held_id, phase_id="PHASE_IMPLEMENTATION", description="Implement the gift card payment webhook.")
    held_claim = client.call("claim_next_task", workflow_id="test-flow")
    # ... and raised to 100 (the shown ticket would now fall inside it)
    settings.BLOCKER_SHADOW_HOLDOUT_PERCENT = 100
    shown_predicted = client.call("predict_blockers", ticket_id=shown_id)

    # then: each ticket keeps the membership it got at its first prediction, at every door
    assert "risk" not in held_get and held_predicted["risk"] is None
    assert held_claim["task"]["ticket_id"] == held_id and "warnings" not in held_claim
    assert shown_predicted["risk"] is not None and shown_predicted["risk"]["p_blocked"] is not None
    assert "risk" in client.call("get_ticket", ticket_id=shown_id)
    held_pk, shown_pk = int(held_id.split("-")[1]), int(shown_id.split("-")[1])
    assert is_shadow(held_pk) and not is_shadow(shown_pk)
    assert set(BlockerPrediction.objects.filter(ticket_id=held_pk).values_list("shown", flat=True)) == {False}
    assert set(BlockerPrediction.objects.filter(ticket_id=shown_pk).values_list("shown", flat=True)) == {True}


def test_a_workflow_with_its_own_model_is_served_by_it_and_other_workflows_by_the_shared_one(agent, workflow, other_workflow, make_agent):
    from tasks.blockers import FEATURE_VERSION, LR_INPUTS, blocker_prediction_record
    from tasks.models import BlockerModel
    from tickets.services import ticket_create

    _history(agent[0], workflow)
    other_agent, _ = make_agent("other-agent", other_workflow)
    _history(other_agent, other_workflow)
    width = len(LR_INPUTS)
    # given: a training run whose shared model is knn and which gave `workflow` its own lr (an lr whose
    # intercept alone says 0.9, so the test can tell who spoke)
    own = BlockerModel.objects.create(
        workflow=workflow, tier="lr", feature_version=FEATURE_VERSION, training_fingerprint="own", examples=12, positives=6,
        parameters={"mean": [0.0] * width, "scale": [1.0] * width, "coef": [0.0] * width, "intercept": 2.1972,
                    "platt_a": 1.0, "platt_b": 0.0, "feature_names": list(LR_INPUTS)},
    )
    shared = BlockerModel.objects.create(
        tier="knn", feature_version=FEATURE_VERSION, training_fingerprint="shared", examples=24, positives=12,
        parameters={}, metrics={"workflow_models": {str(workflow.pk): own.pk}},
    )

    # when
    mine = blocker_prediction_record(ticket=ticket_create(
        actor=agent[0], workflow=workflow, title="Payment webhook for Alipay", description="Receive Alipay payment webhook events."))
    theirs = blocker_prediction_record(ticket=ticket_create(
        actor=other_agent, workflow=other_workflow, title="Payment webhook for Alipay", description="Receive Alipay payment webhook events."))

    # then
    assert (mine.model_tier, mine.model_version, mine.model_id, mine.p_blocked) == ("lr", own.version, own.pk, 0.9)
    assert (theirs.model_tier, theirs.model_id) == ("knn", None) and theirs.model_version != shared.version
    assert theirs.p_blocked != 0.9


def test_a_resolved_ticket_records_its_outcome_and_the_priors_count_it(agent, workflow):
    from tasks.blockers import TicketFacts, ticket_features
    from tasks.models import BlockerOutcome
    from tickets.services import ticket_create

    def prior_counts():
        facts = TicketFacts(workflow_id=workflow.pk, title="Anything at all", description="Something to do here.",
                            ticket_type="task", priority="MEDIUM", phase="PHASE_BACKLOG", tags=[], t0=timezone.now())
        return ticket_features(facts, None).base_rate

    before = prior_counts()
    discoveries = _history(agent[0], workflow)  # 12 finished tickets, 6 blocked by a discovery

    outcomes = dict(BlockerOutcome.objects.filter(workflow=workflow).values_list("ticket_id", "blocked"))
    blocked_tickets = {d.source_task.ticket_id for d in discoveries}
    assert len(outcomes) == 12 and {pk for pk, blocked in outcomes.items() if blocked} == blocked_tickets
    assert before < 0.2 < prior_counts()  # 6 of 12 blocked pulls the smoothed workflow rate up from the default
    open_ticket = ticket_create(actor=agent[0], workflow=workflow, title="Still open", description="Not finished yet.")
    assert not BlockerOutcome.objects.filter(ticket=open_ticket).exists()


def test_retraining_is_idempotent(agent, workflow):
    from io import StringIO

    from tasks.blockers import blocker_model_train
    from tasks.models import BlockerModel
    from tickets.services import ticket_create, ticket_resolve

    _history(agent[0], workflow)
    first, created = blocker_model_train()
    assert created and first.examples == 12 and first.positives == 6
    again, created_again = blocker_model_train()
    assert (again.pk, created_again) == (first.pk, False)
    out = StringIO()
    call_command("train_blocker_model", stdout=out)
    assert "unchanged" in out.getvalue() and BlockerModel.objects.count() == 1
    # new finished work → a new model
    ticket = ticket_create(actor=agent[0], workflow=workflow, title="Write the changelog", description="For release 2.0 of the app.")
    ticket_resolve(actor=agent[0], ticket_id=ticket.public_id, resolution_comment="Changelog written and merged.")
    newer, created_newer = blocker_model_train()
    assert created_newer and newer.examples == 13 and BlockerModel.objects.count() == 2
    assert json.loads(json.dumps(newer.parameters)) == newer.parameters  # JSON, no pickle


def test_bad_input_gets_clear_errors_and_changes_nothing(agent, workflow, other_workflow, make_agent, mcp_for):
    from tasks.models import BlockerPrediction
    from tickets.services import ticket_create

    stranger, _ = make_agent("stranger", other_workflow)
    foreign = ticket_create(actor=stranger, workflow=other_workflow, title="Their payment webhook",
                            description="Belongs to the other workflow.")
    client = mcp_for(agent[1])
    before = BlockerPrediction.objects.count()
    assert "No ticket TKT-999999 in your workflows" in client.error("predict_blockers", ticket_id="TKT-999999")
    assert f"No ticket {foreign.public_id} in your workflows" in client.error("predict_blockers", ticket_id=foreign.public_id)
    assert "must look like 'TKT-42'" in client.error("predict_blockers", ticket_id="payment")
    assert "No workflow 'other-flow' that you belong to" in client.error(
        "search_similar_discoveries", workflow_id="other-flow", query="payment webhook")
    assert "discovery_type must be one of" in client.error(
        "search_similar_discoveries", workflow_id="test-flow", query="payment webhook", discovery_type="missing_credentials")
    assert "query" in client.error("search_similar_discoveries", workflow_id="test-flow", query="ab")
    assert BlockerPrediction.objects.count() == before
    rest = Client().get("/api/discoveries/similar", {"workflow_id": "test-flow", "query": "ab"}, HTTP_AUTHORIZATION=f"Bearer {agent[1]}")
    assert rest.status_code == 400


def test_payment_webhook_ticket_is_forecast_blocked_by_missing_credentials_through_mcp(agent, workflow, mcp_for, settings):
    settings.BLOCKER_SHADOW_HOLDOUT_PERCENT = 0
    discoveries = _history(agent[0], workflow)
    client = mcp_for(agent[1])

    created = client.call("create_ticket", workflow_id="test-flow", title="Payment webhook for Apple Pay events",
                          description="Handle the payment provider's webhook for Apple Pay charges and refunds.")
    risk = created["risk"]
    assert risk["band"] in ("medium", "high"), risk
    assert risk["model_tier"] in ("knn", "lr") and 0 < risk["base_rate"] < 1
    assert risk["likely_blocker_types"][0]["type"] == "missing_requirement"
    assert {d.id for d in discoveries} & {row["discovery_id"] for row in risk["similar_discoveries"]}
    # get_ticket shows the same creation-time risk; predict_blockers a fresh one with the same shape
    assert client.call("get_ticket", ticket_id=created["ticket"]["ticket_id"])["risk"] == risk
    fresh = client.call("predict_blockers", ticket_id=created["ticket"]["ticket_id"])["risk"]
    assert set(fresh) == set(risk) and fresh["band"] in ("medium", "high")

    # a ticket unlike the payment history stays low
    docs = client.call("create_ticket", workflow_id="test-flow", title="Fix a typo in the about page",
                       description="The about page says 'teh' instead of 'the'.")
    assert docs["risk"]["band"] == "low" and docs["risk"]["p_blocked"] < risk["p_blocked"], (docs["risk"], risk)

    found = client.call("search_similar_discoveries", workflow_id="test-flow", query="webhook API key not configured",
                        discovery_type="missing_requirement", limit=3)["discoveries"]
    assert found and found[0]["discovery_type"] == "missing_requirement" and "credentials" in found[0]["summary"]
    assert client.call("search_similar_discoveries", workflow_id="test-flow", query="webhook API key", discovery_type="bug")["discoveries"] == []


def test_claim_next_task_warns_what_blocked_similar_work(agent, workflow, mcp_for, settings):
    from tasks.services import task_create
    from tickets.services import ticket_create

    settings.BLOCKER_SHADOW_HOLDOUT_PERCENT = 0
    _history(agent[0], workflow)
    ticket = ticket_create(actor=agent[0], workflow=workflow, title="Payment webhook for Klarna",
                           description="Receive Klarna payment webhook events.")
    task_create(actor=agent[0], ticket_id=ticket.public_id, phase_id="PHASE_IMPLEMENTATION",
                description="Implement the Klarna payment webhook endpoint.")
    claimed = mcp_for(agent[1]).call("claim_next_task", workflow_id="test-flow")
    assert claimed["task"]["ticket_id"] == ticket.public_id
    assert claimed["warnings"][0]["discovery_type"] == "missing_requirement"


def test_predict_blockers_is_fresh_each_time_while_the_creation_forecast_stays(agent, workflow, mcp_for, settings):
    from tasks.models import BlockerPrediction
    from tasks.services import task_create

    settings.BLOCKER_SHADOW_HOLDOUT_PERCENT = 0
    _history(agent[0], workflow)
    client = mcp_for(agent[1])
    ticket_id = client.call("create_ticket", workflow_id="test-flow", title="Payment webhook for Pix",
                            description="Receive Pix payment webhook events.")["ticket"]["ticket_id"]
    first = client.call("predict_blockers", ticket_id=ticket_id)["risk"]
    task, _ = task_create(actor=agent[0], ticket_id=ticket_id, phase_id="PHASE_IMPLEMENTATION", description="Implement Pix.")
    task_create(actor=agent[0], ticket_id=ticket_id, phase_id="PHASE_IMPLEMENTATION", description="Answer the security review.",
                discovery_type="security_issue", discovery_description="Security review of webhook signatures pending.",
                source_task_id=task.public_id)
    second = client.call("predict_blockers", ticket_id=ticket_id)["risk"]
    assert second["as_of"] >= first["as_of"]
    pk = int(ticket_id.split("-")[1])
    assert BlockerPrediction.objects.filter(ticket_id=pk, moment="requested").count() == 1
    created = BlockerPrediction.objects.get(ticket_id=pk, moment="created")
    assert created.risk["as_of"] <= first["as_of"]


def test_the_retrain_job_trains_when_due_and_is_a_no_op_otherwise(agent, workflow, settings):
    from tasks.jobs import retrain_blocker_model
    from tasks.models import BlockerModel

    _history(agent[0], workflow)
    settings.BLOCKER_RETRAIN_AFTER_FINISHED = 5
    version = retrain_blocker_model.call()
    assert version and BlockerModel.objects.count() == 1
    assert retrain_blocker_model.call() is None  # nothing finished since: not due
    assert BlockerModel.objects.count() == 1


def test_rest_similar_discoveries_and_risk(agent, workflow, settings):
    settings.BLOCKER_SHADOW_HOLDOUT_PERCENT = 0
    discoveries = _history(agent[0], workflow)
    client = Client()
    headers = {"HTTP_AUTHORIZATION": f"Bearer {agent[1]}"}
    found = client.get("/api/discoveries/similar", {"workflow_id": "test-flow", "query": "payment API key missing", "limit": 3}, **headers)
    assert found.status_code == 200, found.content
    assert found.json()["discoveries"][0]["discovery_id"] in {d.id for d in discoveries}
    missing = client.get("/api/tickets/TKT-999999/risk", **headers)
    assert missing.status_code == 404
    created = client.post("/api/tickets", json.dumps({"workflow_id": "test-flow", "title": "Payment webhook for iDEAL",
                          "description": "Receive iDEAL payment webhook events."}), content_type="application/json", **headers)
    assert created.status_code == 201, created.content
    risk = created.json()["risk"]
    assert risk["band"] in ("medium", "high")
    ticket_id = created.json()["ticket"]["ticket_id"]
    assert client.get(f"/api/tickets/{ticket_id}", **headers).json()["risk"] == risk
    fresh = client.get(f"/api/tickets/{ticket_id}/risk", **headers).json()
    assert fresh["ticket_id"] == ticket_id and fresh["risk"]["likely_blocker_types"][0]["type"] == "missing_requirement"


# ------------------------------------------------------------------------------------------- admin


def _history_blocked_by_credentials_tickets(agent, workflow):
    """Payment tickets that, some while after they were filed, became blocked by a 'provision the payment
    credentials' ticket; an open ticket of that kind waits now."""
    from datetime import timedelta

    from tickets.models import Ticket
    from tickets.services import dependency_add, ticket_create, ticket_resolve

    for shop in ("Stripe", "Adyen", "Mollie", "Braintree"):
        payment = ticket_create(actor=agent, workflow=workflow, title=f"Payment webhook for {shop} charge events",
                                description=f"Handle the {shop} payment webhook for charges and refunds.")
        Ticket.objects.filter(pk=payment.pk).update(created_at=timezone.now() - timedelta(hours=2))  # filed earlier
        credentials = ticket_create(actor=agent, workflow=workflow, title=f"Provision the {shop} payment API credentials",
                                    description=f"Create the {shop} API key and webhook signing secret in the vault.")
        dependency_add(actor=agent, ticket_id=payment.pk, blocked_by_ticket_id=credentials.pk)
        ticket_resolve(actor=agent, ticket_id=credentials.public_id, resolution_comment="Credentials are in the vault now.")
        ticket_resolve(actor=agent, ticket_id=payment.public_id, resolution_comment="Webhook deployed and verified.")
    return ticket_create(actor=agent, workflow=workflow, title="Provision the Klarna payment API credentials",
                         description="Create the Klarna API key and webhook signing secret in the vault.")


def test_the_admin_cockpit_shows_the_risk_get_ticket_shows_and_adds_a_suggested_blocker(agent, workflow, admin_user, settings):
    from django.urls import reverse

    from tasks.blockers import blocker_prediction_record
    from tickets.models import TicketDependency
    from tickets.services import ticket_create

    settings.BLOCKER_SHADOW_HOLDOUT_PERCENT = 0
    discoveries = _history(agent[0], workflow)
    open_credentials = _history_blocked_by_credentials_tickets(agent[0], workflow)
    ticket = ticket_create(actor=agent[0], workflow=workflow, title="Payment webhook for Apple Pay events",
                           description="Handle the payment provider's webhook for Apple Pay charges and refunds.")
    blocker_prediction_record(ticket=ticket)
    client = Client()
    client.force_login(admin_user)

    page = client.get(reverse("admin:tickets_ticket_change", args=[ticket.pk]))

    assert page.status_code == 200
    shown = Client().get(f"/api/tickets/{ticket.public_id}", HTTP_AUTHORIZATION=f"Bearer {agent[1]}").json()["risk"]
    risk = page.context["cockpit"]["risk"]
    assert risk == shown  # one rule: the admin shows what get_ticket shows
    panel = page.content.decode().split('id="cockpit-risk"')[1].split("</section>")[0]
    assert risk["band"] in ("medium", "high") and f'data-band="{risk["band"]}"' in panel
    assert f'<strong id="risk-p">{round(risk["p_blocked"] * 100)}%</strong>' in panel
    assert f'<span id="risk-base">{round(risk["base_rate"] * 100)}%</span>' in panel
    assert f'{risk["model_tier"]} · {risk["model_version"]}' in panel
    types = panel.split('id="risk-types"')[1].split("</p>")[0]
    # both histories' causes, in the order and shares of the risk object
    assert [t["type"] for t in risk["likely_blocker_types"]][:2] == ["dependency", "missing_requirement"]
    positions = [types.index(f'{t["type"]} <span class="omoi-muted">({round(t["share"] * 100)}%)') for t in risk["likely_blocker_types"]]
    assert positions == sorted(positions)
    listed = {d.id for d in discoveries if reverse("admin:tasks_discovery_change", args=[d.id]) + '"' in panel}
    assert listed and "Missing API credentials" in panel
    suggested = panel.split('id="risk-suggested"')[1].split("</ul>")[0]
    assert open_credentials.public_id in suggested and open_credentials.title in suggested

    # the suggestion's button is the cockpit's blocker-add step
    added = client.post(reverse("admin:tickets_ticket_triage", args=[ticket.pk]),
                        {"op": "blocker_add", "blocked_by": open_credentials.public_id}, follow=True)
    assert TicketDependency.objects.filter(ticket=ticket, blocker=open_credentials).exists()
    after = added.content.decode().split('id="risk-suggested"')[1].split("</ul>")[0]
    assert "already a blocker" in after and f'value="{open_credentials.public_id}"' not in after


def test_the_admin_cockpit_shows_no_risk_for_a_shadow_holdout_ticket(agent, workflow, admin_user, settings):
    from django.contrib.messages import get_messages
    from django.urls import reverse

    from tasks.blockers import blocker_prediction_record
    from tasks.models import BlockerPrediction
    from tickets.services import ticket_create

    _history(agent[0], workflow)
    settings.BLOCKER_SHADOW_HOLDOUT_PERCENT = 100
    held = ticket_create(actor=agent[0], workflow=workflow, title="Payment webhook for gift cards",
                         description="Gift card payment webhook events.")
    blocker_prediction_record(ticket=held)
    client = Client()
    client.force_login(admin_user)

    held_page = client.get(reverse("admin:tickets_ticket_change", args=[held.pk])).content.decode()
    forecast = client.post(reverse("admin:tickets_ticket_triage", args=[held.pk]), {"op": "risk_predict"}, follow=True)

    assert 'id="risk-none"' in held_page and 'id="risk-p"' not in held_page and "Missing API credentials" not in held_page
    # asking for a forecast records one and still shows nothing
    assert [str(m) for m in get_messages(forecast.wsgi_request)] == [
        f"Forecast for {held.public_id} recorded: no estimate is shown for this ticket."]
    assert 'id="risk-none"' in forecast.content.decode() and 'id="risk-p"' not in forecast.content.decode()
    rows = BlockerPrediction.objects.filter(ticket=held)
    assert sorted(rows.values_list("moment", "shown")) == [("created", False), ("requested", False)]
    assert all(p is not None for p in rows.values_list("p_blocked", flat=True))
    # the same history and kind of ticket outside the holdout does show its risk (so the test can fail)
    settings.BLOCKER_SHADOW_HOLDOUT_PERCENT = 0
    shown = ticket_create(actor=agent[0], workflow=workflow, title="Payment webhook for vouchers",
                          description="Voucher payment webhook events.")
    blocker_prediction_record(ticket=shown)
    shown_page = client.get(reverse("admin:tickets_ticket_change", args=[shown.pk])).content.decode()
    assert 'id="risk-p"' in shown_page and 'id="risk-none"' not in shown_page and "Missing API credentials" in shown_page


def test_a_ticket_filed_in_the_admin_gets_its_creation_forecast_like_create_ticket(agent, workflow, admin_user, settings):
    from django.urls import reverse

    from tasks.models import BlockerPrediction
    from tickets.models import Ticket

    settings.BLOCKER_SHADOW_HOLDOUT_PERCENT = 0
    _history(agent[0], workflow)
    client = Client()
    client.force_login(admin_user)
    form = {"workflow": workflow.pk, "title": "Payment webhook for Google Pay", "priority": "medium", "ticket_type": "task",
            "description": "Handle the payment provider's webhook for Google Pay charges.", "tags": ""}

    first = client.post(reverse("admin:tickets_ticket_add"), form)
    if first.status_code == 200:  # the duplicate check asks once; saving again files it
        form["similar_checked"] = f"{workflow.pk}:{form['title']}"
        first = client.post(reverse("admin:tickets_ticket_add"), form)

    assert first.status_code == 302, first.content.decode()[:2000]
    ticket = Ticket.objects.get(title="Payment webhook for Google Pay")
    prediction = BlockerPrediction.objects.get(ticket=ticket)
    assert (prediction.moment, prediction.shown, prediction.t0) == ("created", True, ticket.created_at)
    page = client.get(reverse("admin:tickets_ticket_change", args=[ticket.pk])).content.decode()
    assert f'data-band="{prediction.band}"' in page and prediction.band in ("medium", "high")


def _retrain_jobs():
    from django_tasks_db.models import DBTaskResult

    return DBTaskResult.objects.filter(task_path="tasks.blockers.train_blocker_model_now").count()


def test_the_models_page_lists_versions_with_metrics_the_serving_model_and_the_ledger(agent, workflow, admin_user, settings):
    from django.urls import reverse

    from tasks.blockers import blocker_model_train, blocker_prediction_record
    from tasks.services import task_create
    from tickets.services import ticket_create, ticket_resolve

    settings.BLOCKER_SHADOW_HOLDOUT_PERCENT = 0
    _history(agent[0], workflow)
    older, _ = blocker_model_train()
    blocked = ticket_create(actor=agent[0], workflow=workflow, title="Payment webhook for chargebacks",
                            description="Chargeback events from the payment webhook.")
    clean = ticket_create(actor=agent[0], workflow=workflow, title="Fix the CSS of the login footer",
                          description="The footer overlaps on small screens.")
    for ticket in (blocked, clean):
        blocker_prediction_record(ticket=ticket)
    task, _ = task_create(actor=agent[0], ticket_id=blocked.public_id, phase_id="PHASE_IMPLEMENTATION", description="Implement chargebacks.")
    task_create(actor=agent[0], ticket_id=blocked.public_id, phase_id="PHASE_IMPLEMENTATION", description="Get the credentials.",
                discovery_type="missing_requirement", discovery_description=CREDENTIALS, source_task_id=task.public_id)
    for ticket in (blocked, clean):
        ticket_resolve(actor=agent[0], ticket_id=ticket.public_id, resolution_comment="Finished and verified.")
    newer, _ = blocker_model_train()
    client = Client()
    client.force_login(admin_user)

    page = client.get(reverse("admin:tasks_blockermodel_changelist"))

    assert page.status_code == 200
    rows = {row.pk: row for row in page.context["cl"].result_list}
    assert set(rows) == {older.pk, newer.pk}
    html = page.content.decode()
    newer_row = html.split(f">{newer.version}</a>")[1].split("</tr>")[0]
    older_row = html.split(f">{older.version}</a>")[1].split("</tr>")[0]
    assert "all workflows" in newer_row and ">14<" in newer_row and ">7<" in newer_row  # examples, positives
    assert 'alt="True"' in newer_row and 'alt="False"' in older_row  # the newest serves
    ledger = html.split('id="blocker-ledger"')[1].split("</div>")[0]
    assert "shown 2 (1 blocked; Brier" in ledger and "ROC-AUC 1.000" in ledger and "held back 0 (0 blocked)" in ledger
    assert 'id="retrain-now"' in html  # a superuser may retrain
    detail = client.get(reverse("admin:tasks_blockermodel_change", args=[newer.pk])).content.decode()
    assert '&quot;examples&quot;: 14' in detail


def test_retrain_now_queues_the_training_job_for_an_allowed_user_only(agent, workflow, other_workflow, admin_user):
    from django.contrib.auth.models import Group, Permission, User
    from django.contrib.messages import get_messages
    from django.core.management import call_command
    from django.urls import reverse

    from tasks.models import BlockerModel

    _history(agent[0], workflow)
    retrain = reverse("admin:tasks_blockermodel_retrain")
    changelist = reverse("admin:tasks_blockermodel_changelist")
    view = Permission.objects.get(codename="view_blockermodel")
    may_retrain = Permission.objects.get(codename="retrain_blockermodel")
    viewer = User.objects.create_user("model-viewer", password="pw-model-viewer-1", is_staff=True)
    viewer.user_permissions.add(view)
    limited = User.objects.create_user("flow-retrainer", password="pw-flow-retrainer-1", is_staff=True)
    limited.user_permissions.add(view, may_retrain)
    limited.groups.add(Group.objects.create(name=f"workflow:{workflow.slug}"))
    trainer = User.objects.create_user("model-trainer", password="pw-model-trainer-1", is_staff=True)
    trainer.user_permissions.add(view, may_retrain)

    def attempt(user):
        client = Client()
        client.force_login(user)
        listed = client.get(changelist)
        assert listed.status_code == 200
        response = client.post(retrain, follow=True)
        return listed.content.decode(), [str(m) for m in get_messages(response.wsgi_request)]

    # refused, nothing queued, and the page says why instead of offering the button
    for user, reason in ((viewer, "needs the permission “Can retrain the blocker model”"),
                         (limited, "shared by every workflow")):
        page, said = attempt(user)
        assert 'id="retrain-now"' not in page and reason in page
        assert len(said) == 1 and said[0].startswith("Nothing was queued:") and reason in said[0]
        assert _retrain_jobs() == 0 and BlockerModel.objects.count() == 0
    assert Client().post(retrain).status_code == 302 and _retrain_jobs() == 0  # anonymous: to the login page
    # allowed: queued, and the worker trains
    page, said = attempt(trainer)
    assert 'id="retrain-now"' in page and said[0].startswith("Retraining is queued")
    assert _retrain_jobs() == 1 and BlockerModel.objects.count() == 0
    call_command("db_worker", "--batch", "--no-reload", "--no-startup-delay")
    model = BlockerModel.objects.get()
    assert (model.examples, model.positives) == (12, 6)
    # again on the same data (a superuser this time): the job runs and keeps the same model
    _, said = attempt(admin_user)
    assert said[0].startswith("Retraining is queued")
    call_command("db_worker", "--batch", "--no-reload", "--no-startup-delay")
    assert list(BlockerModel.objects.values_list("pk", flat=True)) == [model.pk]


def test_the_ledger_page_hides_a_held_back_prediction_until_it_is_graded(agent, workflow, admin_user, settings):
    from django.urls import reverse

    from tasks.blockers import blocker_prediction_record
    from tickets.services import ticket_create, ticket_resolve

    _history(agent[0], workflow)
    settings.BLOCKER_SHADOW_HOLDOUT_PERCENT = 100
    held_ticket = ticket_create(actor=agent[0], workflow=workflow, title="Payment webhook for gift cards",
                                description="Gift card payment webhook events.")
    held = blocker_prediction_record(ticket=held_ticket)
    settings.BLOCKER_SHADOW_HOLDOUT_PERCENT = 0
    shown = blocker_prediction_record(ticket=ticket_create(actor=agent[0], workflow=workflow, title="Payment webhook for vouchers",
                                                           description="Voucher payment webhook events."))
    client = Client()
    client.force_login(admin_user)

    listed = client.get(reverse("admin:tasks_blockerprediction_changelist")).content.decode()
    held_page = client.get(reverse("admin:tasks_blockerprediction_change", args=[held.pk])).content.decode()

    held_row = listed.split(f'/blockerprediction/{held.pk}/change/')[1].split("</tr>")[0]
    shown_row = listed.split(f'/blockerprediction/{shown.pk}/change/')[1].split("</tr>")[0]
    assert "held back (shadow holdout)" in held_row and f"{held.p_blocked:.3f}" not in held_row
    assert f"{shown.p_blocked:.3f}" in shown_row and shown.band in shown_row
    assert "Missing API credentials" not in held_page and f"{held.p_blocked:.3f}" not in held_page
    # once its ticket is done and graded, showing it can no longer change its outcome
    ticket_resolve(actor=agent[0], ticket_id=held_ticket.public_id, resolution_comment="Finished and verified.")
    graded_page = client.get(reverse("admin:tasks_blockerprediction_change", args=[held.pk])).content.decode()
    assert f"{held.p_blocked:.3f}" in graded_page and "held back (shadow holdout)" not in graded_page
    searched = client.get(reverse("admin:tasks_blockerprediction_changelist"), {"q": held_ticket.public_id})
    assert [row.pk for row in searched.context["cl"].result_list] == [held.pk]
