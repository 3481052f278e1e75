"""Property-based test of the REST API against its own OpenAPI schema (schemathesis 4 + hypothesis).

For every operation of /api/schema/, schemathesis generates requests — valid ones (positive) and invalid
ones (negative) — sent with a real agent token through the WSGI app on the test database. Half the
generated cases get real ids/slugs substituted, so the happy paths run too. Each response must not be a
5xx, its status must be documented, its content type and body must match the schema.
"""

from __future__ import annotations

import json

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from drf_spectacular.generators import SchemaGenerator
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from omoi_site.wsgi import application

MAX_EXAMPLES = 8
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


def _load_schema():
    raw = json.loads(json.dumps(SchemaGenerator().get_schema(request=None, public=True), default=str))
    schema = schemathesis.openapi.from_dict(raw)
    schema.app = application
    return schema


SCHEMA = _load_schema()
OPERATIONS = [result.ok() for result in SCHEMA.get_all_operations()]


@pytest.fixture
def in_process_db():
    """Django's test client does this too: a request must not close the test's (transactional) connection."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.fixture
def world(db, in_process_db, workflow, other_workflow, make_agent):
    """A small populated workflow: tickets (one blocking another), a claimed task, a hand-off, messages."""
    from collaboration import services as collaboration
    from tasks import services as tasks
    from tickets import services as tickets

    alice, token = make_agent("alice", workflow)
    bob, _ = make_agent("bob", workflow)
    make_agent("stranger", other_workflow)
    blocker = tickets.ticket_create(
        actor=alice, workflow=workflow, title="Pool too small", description="The pool runs dry."
    )
    ticket = tickets.ticket_create(
        actor=alice,
        workflow=workflow,
        title="Login timeout",
        description="Login takes 30 seconds.",
        blocked_by_ticket_ids=[blocker.public_id],
    )
    task, _ = tasks.task_create(
        actor=alice,
        ticket_id=blocker.public_id,
        phase_id="PHASE_IMPLEMENTATION",
        description="Investigate the pool size.",
    )
    tasks.task_claim_next(agent=alice, workflow=workflow)
    handoff = collaboration.handoff_request(
        from_agent=alice, to_agent_id="bob", task_id=task.public_id, reason="Bob knows the database best."
    )
    collaboration.message_send(sender=bob, recipient_agent_id="alice", message="hello")
    return {
        "token": token,
        "path": {
            "ticket_id": [ticket.public_id, blocker.public_id],
            "blocker_id": [blocker.public_id],
            "task_id": [task.public_id],
            "handoff_id": [handoff.public_id],
            "agent_id": ["alice", "bob"],
            "run_id": ["RUN-1"],
        },
        "values": {
            "workflow": "test-flow",
            "workflow_id": "test-flow",
            "ticket_id": ticket.public_id,
            "ticket": ticket.public_id,
            "task_id": task.public_id,
            "blocked_by_ticket_id": blocker.public_id,
            "recipient_agent_id": "bob",
            "to_agent_id": "bob",
            "agent_id": "alice",
            "sender_agent_id": "alice",
            "from_agent_id": "alice",
        },
    }


def _use_real_ids(case, world, choose) -> None:
    for name in list(case.path_parameters or {}):
        if name in world["path"]:
            case.path_parameters[name] = choose(world["path"][name])
    for container in (case.query, case.body):
        if isinstance(container, dict):
            for key in list(container):
                if key in world["values"]:
                    container[key] = world["values"][key]


def _strategy(operation):
    strategies = [operation.as_strategy(generation_mode=GenerationMode.POSITIVE)]
    try:
        strategies.append(operation.as_strategy(generation_mode=GenerationMode.NEGATIVE))
    except Exception:  # an operation with nothing to negate
        pass
    return st.one_of(strategies)


@pytest.mark.slow
@pytest.mark.parametrize("operation", OPERATIONS, ids=[operation.label for operation in OPERATIONS])
def test_operation_conforms_to_schema(operation, world):
    headers = {"Authorization": f"Bearer {world['token']}"}

    @given(case=_strategy(operation), real=st.booleans(), data=st.data())
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    def run(case, real, data):
        if real:
            _use_real_ids(case, world, lambda options: data.draw(st.sampled_from(options)))
        case.call_and_validate(headers=headers, checks=CHECKS)

    run()


def test_schema_covers_the_api():
    labels = {operation.label for operation in OPERATIONS}
    assert len(labels) >= 38
    for label in (
        "POST /api/tickets/{ticket_id}/status",
        "PATCH /api/tickets/{ticket_id}",
        "POST /api/tasks/claim-next",
        "POST /api/handoffs/{handoff_id}/accept",
        "GET /api/sandbox-runs/{run_id}",
    ):
        assert label in labels


# --- hostile values in every request body ------------------------------------------------------------------

def _nested(depth: int):
    value: object = "x"
    for _ in range(depth):
        value = [value]
    return value


HOSTILE_VALUES = {"lone surrogate": "\ud800 text", "integer beyond 64 bits": 2**70, "nesting 40 deep": _nested(40)}
BODY_OPERATIONS = [operation for operation in OPERATIONS if operation.method.upper() in ("POST", "PATCH", "PUT")
                   and operation.body]


def _database_fingerprint() -> tuple:
    from collaboration.models import EventRecord, Handoff, Message
    from tasks.models import Discovery, Task, TaskEvent
    from tickets.models import Ticket, TicketComment, TicketEvent

    return (
        tuple(Ticket.objects.order_by("pk").values_list("pk", "version", "status", "title")),
        tuple(Task.objects.order_by("pk").values_list("pk", "status", "fencing_token", "claimed_by_id")),
        tuple(Handoff.objects.order_by("pk").values_list("pk", "status")),
        *(model.objects.count() for model in (Message, TicketComment, TicketEvent, TaskEvent, Discovery, EventRecord)),
    )


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(HOSTILE_VALUES))
@pytest.mark.parametrize("operation", BODY_OPERATIONS, ids=[operation.label for operation in BODY_OPERATIONS])
def test_hostile_values_in_any_body_field_are_refused_and_change_nothing(operation, kind, world):
    """Every field of every JSON body, in turn, replaced by a lone surrogate, an integer beyond 64 bits or a
    value nested 40 deep: a 4xx naming the problem, never a 5xx, and the database unchanged."""
    headers = {"Authorization": f"Bearer {world['token']}"}
    hostile = HOSTILE_VALUES[kind]

    @given(case=operation.as_strategy(generation_mode=GenerationMode.POSITIVE), data=st.data())
    @settings(max_examples=4, deadline=None, database=None, derandomize=True, suppress_health_check=list(HealthCheck))
    def run(case, data):
        _use_real_ids(case, world, lambda options: options[0])
        if not isinstance(case.body, dict) or not case.body:
            case.body = {}
        field = data.draw(st.sampled_from(sorted(case.body) or ["comment"]))
        case.body[field] = hostile
        before = _database_fingerprint()
        response = case.call(headers=headers)
        assert 400 <= response.status_code < 500, (field, response.status_code, response.text[:300])
        assert response.json()["error"]["message"], response.text[:300]
        assert _database_fingerprint() == before, field

    run()
