"""Hostile input on the REST door: text PostgreSQL cannot store, integers beyond 64 bits and absurd nesting
are refused with a 400 that names the place, and nothing changes. Tag edits are atomic under races."""

from __future__ import annotations

import json
import threading

import pytest
from django.db import connection
from django.test import Client

from tickets.models import Ticket, TicketEvent


@pytest.fixture
def alice(db, workflow, make_agent):
    _agent, token = make_agent("alice", workflow)
    return token


def _post(token, path, raw_body: str):
    return Client().generic(
        "POST", path, raw_body, content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {token}"
    )


def _state():
    return Ticket.objects.count(), TicketEvent.objects.count()


TICKET = {"workflow_id": "test-flow", "title": "Hostile ticket", "description": "A ticket body that is long enough."}


@pytest.mark.parametrize(
    ("raw_body", "named"),
    [
        (json.dumps({**TICKET, "tags": ["ok", "\ud800"]}), "tags[1]"),
        (json.dumps({**TICKET, "assigned_agent_id": "\udfff"}), "assigned_agent_id"),
        (json.dumps({**TICKET, "title": "bad \ud83d title"}), "title"),
        (json.dumps({**TICKET, "priority": 2**64}), "priority"),
        (
            json.dumps({**TICKET, "tags": [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["x"]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}),
            "nested",
        ),
        ("[" * 2000 + "]" * 2000, "nested"),
        ('{"a":' * 5000 + "1" + "}" * 5000, "nested"),
    ],
    ids=[
        "surrogate-in-list",
        "surrogate-agent",
        "surrogate-title",
        "huge-int",
        "deep-40",
        "deep-2000-array",
        "deep-5000-object",
    ],
)
def test_rest_refuses_hostile_bodies_with_a_clear_400_and_changes_nothing(alice, raw_body, named):
    before = _state()

    response = _post(alice, "/api/tickets", raw_body)

    assert response.status_code == 400, response.content
    message = response.json()["error"]["message"]
    assert named in message
    assert _state() == before


def test_rest_answers_invalid_utf8_and_huge_numbers_in_the_url_without_a_5xx(alice):
    client = Client()
    headers = {"HTTP_AUTHORIZATION": f"Bearer {alice}"}

    # the bytes of a UTF-16 surrogate, percent-encoded, as a hostile client would send them
    search = client.get("/api/tickets/search?workflow_id=test-flow&query=abc%ED%A0%80def", **headers)
    listing = client.get("/api/tickets", {"workflow_id": "test-flow", "limit": str(2**70)}, **headers)
    detail = client.get(f"/api/tickets/TKT-{2**70}", **headers)

    assert search.status_code in (200, 400), search.content
    assert listing.status_code == 400 and "limit" in listing.json()["error"]["message"]
    assert detail.status_code in (400, 404) and detail.json()["error"]["message"]


def test_rest_patch_with_a_huge_version_is_a_clear_400(alice):
    created = _post(alice, "/api/tickets", json.dumps(TICKET)).json()
    ticket_id = created["ticket"]["ticket_id"] if "ticket" in created else created["ticket_id"]
    before = _state()

    response = Client().patch(
        f"/api/tickets/{ticket_id}",
        json.dumps({"title": "New title here", "version": 2**80}),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {alice}",
    )

    assert response.status_code == 400 and response.json()["error"]["message"]
    assert _state() == before


# --- atomic tag edits -----------------------------------------------------------------------------------


def test_two_agents_adding_tags_at_once_keep_every_tag(transactional_db, workflow, make_agent):
    from tickets.services import ticket_create, ticket_update

    first, _ = make_agent("first", workflow)
    second, _ = make_agent("second", workflow)
    ticket = ticket_create(actor=first, workflow=workflow, title="Tag race", description="Both agents tag it at once")
    barrier = threading.Barrier(2)
    errors = []

    def tagger(agent, prefix):
        try:
            barrier.wait()
            for number in range(8):
                ticket_update(actor=agent, ticket_id=ticket.public_id, updates={"add_tags": [f"{prefix}-{number}"]})
        except Exception as error:  # asserted below
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=tagger, args=(first, "a")), threading.Thread(target=tagger, args=(second, "b"))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert errors == []
    tags = Ticket.objects.get(pk=ticket.pk).tags
    assert sorted(tags) == sorted([f"a-{n}" for n in range(8)] + [f"b-{n}" for n in range(8)])


def test_rest_patch_adds_and_removes_tags_relative_to_the_stored_ones(alice):
    created = _post(alice, "/api/tickets", json.dumps({**TICKET, "tags": ["auth", "slow"]})).json()
    ticket_id = created["ticket"]["ticket_id"] if "ticket" in created else created["ticket_id"]

    response = Client().patch(
        f"/api/tickets/{ticket_id}",
        json.dumps({"add_tags": ["db", "auth"], "remove_tags": ["slow"]}),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {alice}",
    )
    both = Client().patch(
        f"/api/tickets/{ticket_id}",
        json.dumps({"tags": ["x"], "add_tags": ["y"]}),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {alice}",
    )

    assert response.status_code == 200, response.content
    assert Ticket.objects.get(pk=int(ticket_id.split("-")[1])).tags == ["auth", "db"]
    assert both.status_code == 400 and "not both" in both.json()["error"]["message"]
    assert Ticket.objects.get(pk=int(ticket_id.split("-")[1])).tags == ["auth", "db"]


def test_mcp_update_ticket_adds_tags_atomically(mcp_for, transactional_db, workflow, make_agent):
    _agent, token = make_agent("tagger", workflow)
    client = mcp_for(token)
    created = client.call(
        "create_ticket",
        workflow_id="test-flow",
        agent_id="tagger",
        title="MCP tags",
        description="A ticket tagged through MCP",
        tags=["one"],
    )
    ticket_id = created["ticket"]["ticket_id"]

    client.call("update_ticket", ticket_id=ticket_id, agent_id="tagger", updates={"add_tags": ["two"]})

    assert Ticket.objects.get(pk=int(ticket_id.split("-")[1])).tags == ["one", "two"]


# --- a deadlock is retried once by the door, invisibly -----------------------------------------------------


def test_rest_retries_a_call_that_postgresql_aborted_as_a_deadlock_victim(
    transactional_db, workflow, make_agent, caplog
):
    """A foreign transaction locks the ticket, the REST call (adding a blocker: workflow lock, then ticket
    lock) queues behind it, then the foreign transaction asks for the workflow lock: a real deadlock. The
    REST call waited longer, so PostgreSQL aborts it; the door retries and the caller just sees 201."""
    import time

    from django.db import connections, transaction

    from tickets.models import TicketDependency
    from tickets.services import ticket_create

    agent, token = make_agent("alice", workflow)
    blocked = ticket_create(actor=agent, workflow=workflow, title="Blocked one", description="Waits for the other")
    blocker = ticket_create(actor=agent, workflow=workflow, title="Blocking one", description="Must be done first")
    ticket_locked, rest_waiting, outcome = threading.Event(), threading.Event(), {}

    def foreign_transaction():
        try:
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute("SELECT id FROM tickets_ticket WHERE id = %s FOR UPDATE", [blocked.id])
                ticket_locked.set()
                rest_waiting.wait(30)
                time.sleep(0.3)  # the REST call has waited longer: PostgreSQL picks it as the victim
                cursor.execute("SELECT id FROM tickets_workflow WHERE id = %s FOR UPDATE", [workflow.id])
            outcome["foreign"] = "committed"
        except Exception as error:  # asserted below: the foreign transaction must not be the victim
            outcome["foreign"] = repr(error)
        finally:
            connection.close()

    def rest_call():
        try:
            outcome["response"] = Client().post(
                f"/api/tickets/{blocked.public_id}/dependencies",
                json.dumps({"blocked_by_ticket_id": blocker.public_id}),
                content_type="application/json",
                HTTP_AUTHORIZATION=f"Bearer {token}",
            )
        finally:
            connection.close()

    foreign = threading.Thread(target=foreign_transaction)
    foreign.start()
    assert ticket_locked.wait(30)
    rest = threading.Thread(target=rest_call)
    rest.start()
    with connections["default"].cursor() as cursor:
        for _ in range(300):
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
            if cursor.fetchone()[0] >= 1:
                break
            time.sleep(0.02)
    rest_waiting.set()
    foreign.join(60)
    rest.join(60)

    assert outcome["foreign"] == "committed"  # so the REST call was the deadlock victim, and was retried
    response = outcome["response"]
    assert response.status_code == 201, response.content
    assert TicketDependency.objects.filter(ticket=blocked, blocker=blocker).count() == 1
    assert any("retrying once" in record.getMessage() for record in caplog.records)
