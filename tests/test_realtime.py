"""Websocket doors over the real ASGI app and the real Redis channel layer.

Events are produced the way production produces them — an agent's MCP tool call through the live
server — and read by `channels.testing.WebsocketCommunicator` sockets on `omoi_site.asgi.application`.
Each test uses its own workflow slug so concurrent runs sharing one Redis cannot cross-talk.
"""

from __future__ import annotations

import uuid

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from channels.testing import WebsocketCommunicator
from django.db import transaction

ORIGIN = (b"origin", b"http://127.0.0.1")
QUIET_SECONDS = 1.0

pytestmark = pytest.mark.django_db(transaction=True)


def _application():
    from omoi_site.asgi import application

    return application


@pytest.fixture
def flow(transactional_db):
    from tickets.services import workflow_get_or_create

    return workflow_get_or_create(slug=f"rt-{uuid.uuid4().hex[:10]}")


@pytest.fixture
def staff_cookie(transactional_db):
    """A logged-in staff user's session cookie header (the real session path of AuthMiddlewareStack)."""
    from django.contrib.auth.models import User
    from django.test import Client

    user = User.objects.create_user(f"staff-{uuid.uuid4().hex[:6]}", password="pw-123456", is_staff=True)
    client = Client()
    client.force_login(user)
    return (b"cookie", f"sessionid={client.cookies['sessionid'].value}".encode())


def _dashboard(query: str, *headers) -> WebsocketCommunicator:
    return WebsocketCommunicator(_application(), f"/ws/dashboard/?{query}", headers=[ORIGIN, *headers])


def _agent_socket(agent_id: str, token: str | None = None, *, via_query: bool = False) -> WebsocketCommunicator:
    headers = [ORIGIN]
    path = f"/ws/agents/{agent_id}/"
    if token and via_query:
        path += f"?token={token}"
    elif token:
        headers.append((b"authorization", f"Bearer {token}".encode()))
    return WebsocketCommunicator(_application(), path, headers=headers)


async def _open(communicator: WebsocketCommunicator) -> dict:
    connected, _ = await communicator.connect(timeout=5)
    assert connected
    hello = await communicator.receive_json_from(timeout=5)
    assert hello["type"] == "subscribed", hello
    return hello


async def _refused(communicator: WebsocketCommunicator) -> tuple[int, str]:
    """The consumer accepts, says why, and closes with a 44xx code."""
    connected, _ = await communicator.connect(timeout=5)
    assert connected
    error = await communicator.receive_json_from(timeout=5)
    closing = await communicator.receive_output(timeout=5)
    assert error["type"] == "error" and closing["type"] == "websocket.close"
    return closing["code"], error["message"]


async def _next_event(communicator: WebsocketCommunicator, timeout: float = 10) -> dict:
    message = await communicator.receive_json_from(timeout=timeout)
    assert message["type"] == "omoi.event", message
    return message


def _mcp(client, tool, **arguments):
    return sync_to_async(client.call, thread_sensitive=False)(tool, **arguments)


def _ticket(flow, agent, title="Login times out after five minutes"):
    from tickets.services import ticket_create

    return ticket_create(actor=agent, workflow=flow, title=title, description="Sessions expire far too early for users.")


def test_dashboard_socket_receives_the_status_change_an_agent_makes_through_mcp(flow, make_agent, mcp_for, staff_cookie):
    # given a ticket and a staff dashboard subscribed to its workflow
    agent, token = make_agent("rt-worker", flow)
    ticket = _ticket(flow, agent)
    worker = mcp_for(token)

    async def scenario():
        socket = _dashboard(f"workflow={flow.slug}", staff_cookie)
        await _open(socket)
        # when the agent moves the ticket through MCP
        await _mcp(worker, "change_ticket_status", ticket_id=ticket.public_id, agent_id="rt-worker",
                   new_status="analyzing", comment="Starting the analysis of the timeout.")
        event = await _next_event(socket)
        await socket.disconnect()
        return event

    event = async_to_sync(scenario)()
    # then the dashboard got the committed change, in the shared envelope
    assert event["event"] == "ticket.status_changed"
    assert (event["workflow"], event["ticket"]) == (flow.slug, ticket.public_id)
    assert (event["payload"]["old_status"], event["payload"]["status"], event["payload"]["by"]) == ("backlog", "analyzing", "rt-worker")
    assert event["at"]


def test_filtered_and_other_workflow_subscriptions_get_nothing(flow, make_agent, mcp_for, staff_cookie):
    from tickets.services import workflow_get_or_create

    other = workflow_get_or_create(slug=f"rt-other-{uuid.uuid4().hex[:8]}")
    agent, token = make_agent("rt-filter-worker", flow)
    make_agent("rt-filter-peer", flow)
    ticket = _ticket(flow, agent)
    worker = mcp_for(token)

    async def scenario():
        messages_only = _dashboard(f"workflow={flow.slug}&events=message.sent", staff_cookie)
        other_workflow = _dashboard(f"workflow={other.slug}", staff_cookie)
        await _open(messages_only)
        await _open(other_workflow)
        await _mcp(worker, "change_ticket_status", ticket_id=ticket.public_id, agent_id="rt-filter-worker",
                   new_status="analyzing", comment="Starting the analysis of the timeout.")
        assert await messages_only.receive_nothing(timeout=QUIET_SECONDS)
        assert await other_workflow.receive_nothing(timeout=0.2)
        # positive control: the filtered socket is alive and does get the event type it asked for
        await _mcp(worker, "broadcast_message", sender_agent_id="rt-filter-worker", message="Found the expiring cache key.")
        event = await _next_event(messages_only)
        assert await other_workflow.receive_nothing(timeout=0.5)
        await messages_only.disconnect()
        await other_workflow.disconnect()
        return event

    event = async_to_sync(scenario)()
    assert event["event"] == "message.sent" and event["payload"]["to"] == "*"


def test_dashboard_socket_refuses_anonymous_non_staff_and_unknown_workflows(flow, staff_cookie):
    from django.contrib.auth.models import User
    from django.test import Client

    plain = User.objects.create_user(f"plain-{uuid.uuid4().hex[:6]}", password="pw-123456")
    client = Client()
    client.force_login(plain)
    plain_cookie = (b"cookie", f"sessionid={client.cookies['sessionid'].value}".encode())

    async def scenario():
        return [
            await _refused(_dashboard(f"workflow={flow.slug}")),
            await _refused(_dashboard(f"workflow={flow.slug}", plain_cookie)),
            await _refused(_dashboard("workflow=no-such-flow", staff_cookie)),
            await _refused(_dashboard("", staff_cookie)),
            await _refused(_dashboard(f"workflow={flow.slug}&events=ticket.exploded", staff_cookie)),
        ]

    anonymous, not_staff, unknown, nothing, bad_event = async_to_sync(scenario)()
    assert anonymous[0] == 4401 and "log in" in anonymous[1]
    assert not_staff[0] == 4404  # a non-staff user sees no workflow; same answer as 'missing'
    assert unknown[0] == 4404
    assert nothing[0] == 4400
    assert bad_event[0] == 4400 and "ticket.exploded" in bad_event[1]


def test_socket_without_allowed_origin_is_rejected(flow, staff_cookie):
    async def scenario():
        socket = WebsocketCommunicator(_application(), f"/ws/dashboard/?workflow={flow.slug}",
                                       headers=[(b"origin", b"http://evil.example"), staff_cookie])
        connected, _ = await socket.connect(timeout=5)
        return connected

    assert async_to_sync(scenario)() is False


def test_agent_socket_receives_direct_message_and_broadcast_sent_by_another_agent(flow, make_agent, mcp_for):
    _, sender_token = make_agent("rt-sender", flow)
    _, receiver_token = make_agent("rt-receiver", flow)
    sender = mcp_for(sender_token)

    async def scenario():
        by_header = _agent_socket("rt-receiver", receiver_token)
        by_query = _agent_socket("rt-receiver", receiver_token, via_query=True)
        hello = await _open(by_header)
        await _open(by_query)
        await _mcp(sender, "send_message", sender_agent_id="rt-sender", recipient_agent_id="rt-receiver",
                   message="Can you look at the session table?", message_type="question")
        direct = await _next_event(by_header)
        await _mcp(sender, "broadcast_message", sender_agent_id="rt-sender", message="Deploy freeze starts at noon.",
                   message_type="warning")
        broadcast = await _next_event(by_header)
        via_query = [await _next_event(by_query), await _next_event(by_query)]
        await by_header.disconnect()
        await by_query.disconnect()
        return hello, direct, broadcast, via_query

    hello, direct, broadcast, via_query = async_to_sync(scenario)()
    assert hello["agent_id"] == "rt-receiver"
    assert direct["event"] == "message.sent" and "rt-receiver" in direct["agents"]
    assert (direct["payload"]["from"], direct["payload"]["to"], direct["payload"]["message"]) == (
        "rt-sender", "rt-receiver", "Can you look at the session table?")
    assert broadcast["payload"]["to"] == "*" and broadcast["payload"]["message"] == "Deploy freeze starts at noon."
    assert [e["payload"]["message_type"] for e in via_query] == ["question", "warning"]


def test_agent_socket_refuses_wrong_agent_and_bad_tokens(flow, make_agent):
    _, token_of_one = make_agent("rt-one", flow)
    make_agent("rt-two", flow)

    async def scenario():
        return [
            await _refused(_agent_socket("rt-two", token_of_one)),
            await _refused(_agent_socket("rt-two", token_of_one, via_query=True)),
            await _refused(_agent_socket("rt-two", "omoi_not-a-real-token")),
            await _refused(_agent_socket("rt-two")),
        ]

    wrong_header, wrong_query, bogus, missing = async_to_sync(scenario)()
    assert wrong_header[0] == wrong_query[0] == 4403 and "rt-one" in wrong_header[1]
    assert bogus[0] == missing[0] == 4401


def test_rolled_back_service_publishes_nothing(flow, make_agent, staff_cookie):
    from tickets.services import ticket_change_status

    agent, _ = make_agent("rt-rollback", flow)
    ticket = _ticket(flow, agent)

    class Abort(Exception):
        pass

    def change_then_roll_back():
        with pytest.raises(Abort), transaction.atomic():
            ticket_change_status(actor=agent, ticket_id=ticket.public_id, new_status="analyzing", comment="This change is rolled back.")
            raise Abort

    def change_and_commit():
        ticket_change_status(actor=agent, ticket_id=ticket.public_id, new_status="analyzing", comment="This change commits.")

    async def scenario():
        socket = _dashboard(f"workflow={flow.slug}&ticket={ticket.public_id}", staff_cookie)
        await _open(socket)
        await sync_to_async(change_then_roll_back)()
        silent = await socket.receive_nothing(timeout=QUIET_SECONDS)
        await sync_to_async(change_and_commit)()
        committed = await _next_event(socket)
        # subscribed to both the workflow and the ticket group: the event still arrives once
        duplicate_suppressed = await socket.receive_nothing(timeout=0.5)
        await socket.disconnect()
        return silent, committed, duplicate_suppressed

    silent, committed, duplicate_suppressed = async_to_sync(scenario)()
    assert silent is True
    assert committed["payload"]["status"] == "analyzing"
    assert duplicate_suppressed is True


def test_ping_is_answered_with_pong(flow, staff_cookie):
    async def scenario():
        socket = _dashboard(f"workflow={flow.slug}", staff_cookie)
        await _open(socket)
        await socket.send_json_to({"type": "ping", "id": 7})
        reply = await socket.receive_json_from(timeout=5)
        await socket.disconnect()
        return reply

    assert async_to_sync(scenario)() == {"type": "pong", "id": 7}


def test_agent_socket_is_pushed_its_task_assignment_by_a_handoff(flow, make_agent, mcp_for):
    _, worker_token = make_agent("rt-holder", flow)
    _, specialist_token = make_agent("rt-specialist", flow)
    worker = mcp_for(worker_token)

    async def scenario():
        ticket = await _mcp(worker, "create_ticket", workflow_id=flow.slug, agent_id="rt-holder", title="Slow report export",
                            description="The monthly report export takes ten minutes.")
        await _mcp(worker, "create_task", ticket_id=ticket["ticket"]["ticket_id"], phase_id="PHASE_IMPLEMENTATION",
                   description="Profile the report export query", task_type="investigation")
        task = (await _mcp(worker, "claim_next_task", agent_id="rt-holder", workflow_id=flow.slug))["task"]
        socket = _agent_socket("rt-specialist", specialist_token)
        await _open(socket)
        await _mcp(worker, "request_handoff", from_agent_id="rt-holder", to_agent_id="rt-specialist", task_id=task["task_id"],
                   reason="Needs someone who knows the query planner.")
        event = await _next_event(socket)
        await socket.disconnect()
        return task, event

    task, event = async_to_sync(scenario)()
    assert event["event"] == "handoff.requested"
    assert (event["payload"]["task_id"], event["payload"]["to_agent_id"]) == (task["task_id"], "rt-specialist")


def test_events_are_delivered_promptly(flow, make_agent, staff_cookie):
    """Sanity bound on commit → socket latency through Redis (the bench measures it properly)."""
    from django.utils import timezone
    from django.utils.dateparse import parse_datetime

    from tickets.services import ticket_change_status

    agent, _ = make_agent("rt-latency", flow)
    ticket = _ticket(flow, agent)

    async def scenario():
        socket = _dashboard(f"ticket={ticket.public_id}", staff_cookie)
        await _open(socket)
        await sync_to_async(ticket_change_status)(actor=agent, ticket_id=ticket.public_id, new_status="analyzing",
                                                  comment="Measuring the delivery latency.")
        event = await _next_event(socket)
        received = timezone.now()
        await socket.disconnect()
        return event, received

    event, received = async_to_sync(scenario)()
    assert (received - parse_datetime(event["at"])).total_seconds() < 2


def test_sockets_with_different_filters_each_get_exactly_their_events_once(flow, make_agent, staff_cookie):
    """Events reach every socket of one process from the same layer message (the consumers forward it
    without channels' per-message database hop): each socket still applies its own filter and de-duplicates,
    so a socket on both the workflow and the ticket group gets one copy, not two."""
    from collaboration.services import message_broadcast
    from tickets.services import ticket_change_status

    agent, _ = make_agent("rt-filters", flow)
    make_agent("rt-filters-peer", flow)
    ticket = _ticket(flow, agent)

    async def drain(socket) -> list[tuple[str, int]]:
        seen = []
        while not await socket.receive_nothing(timeout=QUIET_SECONDS):
            message = await socket.receive_json_from(timeout=5)
            if message["type"] == "omoi.event":
                seen.append((message["event"], message["id"]))
        return seen

    async def scenario():
        statuses = _dashboard(f"workflow={flow.slug}&events=ticket.status_changed", staff_cookie)
        messages = _dashboard(f"workflow={flow.slug}&events=message.*", staff_cookie)
        both_groups = _dashboard(f"workflow={flow.slug}&ticket={ticket.public_id}", staff_cookie)
        for socket in (statuses, messages, both_groups):
            await _open(socket)
        await sync_to_async(ticket_change_status)(actor=agent, ticket_id=ticket.public_id, new_status="analyzing",
                                                  comment="Checking the filters of three sockets.")
        await sync_to_async(message_broadcast)(sender=agent, message="Filters are being checked.")
        await sync_to_async(ticket_change_status)(actor=agent, ticket_id=ticket.public_id, new_status="backlog",
                                                  comment="Back to the backlog after the check.")
        received = [await drain(socket) for socket in (statuses, messages, both_groups)]
        for socket in (statuses, messages, both_groups):
            await socket.disconnect()
        return received

    statuses, messages, both_groups = async_to_sync(scenario)()
    assert [name for name, _ in statuses] == ["ticket.status_changed", "ticket.status_changed"]
    assert [name for name, _ in messages] == ["message.sent"]
    assert sorted(both_groups) == sorted(statuses + messages)  # everything, each event once
    assert len({event_id for _, event_id in both_groups}) == 3
