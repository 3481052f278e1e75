"""Sockets that stay up, re-check who is listening, and catch up on what they missed.

Real parts throughout: the ASGI app with `channels.testing.WebsocketCommunicator`, the real Redis
channel layer (REDIS_URL), the real database, events produced by the services (the MCP door is covered
by test_realtime.py). Waits are event-driven with generous timeouts; nothing is timed.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from channels.testing import WebsocketCommunicator
from django.db import transaction

ORIGIN = (b"origin", b"http://127.0.0.1")

pytestmark = pytest.mark.django_db(transaction=True)


def _application():
    from omoi_site.asgi import application

    return application


@pytest.fixture
def flow(transactional_db):
    from tickets.services import workflow_get_or_create

    return workflow_get_or_create(slug=f"rs-{uuid.uuid4().hex[:10]}")


@pytest.fixture
def second_flow(transactional_db):
    from tickets.services import workflow_get_or_create

    return workflow_get_or_create(slug=f"rs2-{uuid.uuid4().hex[:10]}")


def _login_cookie(is_staff=True):
    from django.contrib.auth.models import User
    from django.test import Client

    user = User.objects.create_user(f"staff-{uuid.uuid4().hex[:6]}", password="pw-123456", is_staff=is_staff)
    client = Client()
    client.force_login(user)
    return client, (b"cookie", f"sessionid={client.cookies['sessionid'].value}".encode())


@pytest.fixture
def staff_cookie(transactional_db):
    return _login_cookie()[1]


def _dashboard(query: str, *headers) -> WebsocketCommunicator:
    return WebsocketCommunicator(_application(), f"/ws/dashboard/?{query}", headers=[ORIGIN, *headers])


def _agent_socket(agent_id: str, token: str, query: str = "") -> WebsocketCommunicator:
    path = f"/ws/agents/{agent_id}/" + (f"?{query}" if query else "")
    return WebsocketCommunicator(_application(), path, headers=[ORIGIN, (b"authorization", f"Bearer {token}".encode())])


async def _open(communicator: WebsocketCommunicator) -> dict:
    connected, _ = await communicator.connect(timeout=10)
    assert connected
    hello = await communicator.receive_json_from(timeout=10)
    assert hello["type"] == "subscribed", hello
    return hello


async def _next(communicator: WebsocketCommunicator, timeout: float = 15) -> dict:
    """The next event or error, skipping heartbeats."""
    while True:
        message = await communicator.receive_json_from(timeout=timeout)
        if message["type"] != "heartbeat":
            return message


async def _closed_with(communicator: WebsocketCommunicator, timeout: float = 10) -> tuple[int, list[dict]]:
    """Read until the server closes the socket; the close code and the JSON messages sent before it."""
    messages = []
    while True:
        output = await communicator.receive_output(timeout=timeout)
        if output["type"] == "websocket.close":
            return output["code"], messages
        import json

        messages.append(json.loads(output["text"]))


def _ticket(flow, agent, title="Login times out after five minutes"):
    from tickets.services import ticket_create

    return ticket_create(actor=agent, workflow=flow, title=title, description="Sessions expire far too early for users.")


def _comment(agent, ticket, text):
    from tickets.services import comment_add

    return comment_add(actor=agent, ticket_id=ticket.public_id, comment_text=text)


def _broadcast(agent, flow, text):
    from collaboration.services import message_broadcast

    assert list(agent.workflows.all()) == [flow]  # a broadcast goes to the sender's workflow
    return message_broadcast(sender=agent, message=text)


# --- idle sockets over Redis ------------------------------------------------------------------------


def test_socket_idle_for_30_seconds_over_redis_stays_open_and_then_receives_an_event(flow, make_agent, staff_cookie, settings):
    from django.conf import settings as live_settings

    assert live_settings.CHANNEL_LAYER_KIND == "redis"
    agent, _ = make_agent("rs-idle", flow)
    ticket = _ticket(flow, agent)

    async def scenario():
        socket = _dashboard(f"workflow={flow.slug}", staff_cookie)
        await _open(socket)
        frames = []
        loop = asyncio.get_running_loop()
        idle_until = loop.time() + 30
        # idle: anything but a heartbeat, or a close, during these 30 s is a failure
        while (remaining := idle_until - loop.time()) > 0:
            # receive_nothing peeks without cancelling the application (receive_output's timeout would)
            if not await socket.receive_nothing(timeout=remaining, interval=0.2):
                frames.append(await socket.receive_output(timeout=5))
        await sync_to_async(_comment)(agent, ticket, "Still here after a long quiet spell.")
        event = await _next(socket)
        await socket.disconnect()
        return frames, event

    frames, event = async_to_sync(scenario)()
    assert all(f["type"] == "websocket.send" and '"heartbeat"' in f["text"] for f in frames), frames
    assert len(frames) >= 1  # the server's heartbeat went out while idle (25 s default)
    assert event["type"] == "omoi.event" and event["event"] == "ticket.commented"


# --- credentials re-checked: the authorization matrix of open sockets ---------------------------------


def test_revoked_token_closes_its_open_socket_with_4401(flow, make_agent):
    from agents.services import agent_tokens_revoke

    agent, token = make_agent("rs-revoked", flow)

    async def scenario():
        socket = _agent_socket("rs-revoked", token)
        await _open(socket)
        await sync_to_async(agent_tokens_revoke)(agent=agent)
        return await _closed_with(socket)

    code, messages = async_to_sync(scenario)()
    assert code == 4401
    assert messages[-1]["type"] == "error" and "revoked or expired" in messages[-1]["message"]


def test_expired_token_closes_its_open_socket_with_4401(flow, make_agent):
    from agents.services import agent_token_issue

    agent, _ = make_agent("rs-expiring", flow)
    short_lived = agent_token_issue(agent=agent, label="short", ttl_seconds=2)

    async def scenario():
        socket = _agent_socket("rs-expiring", short_lived)
        await _open(socket)
        return await _closed_with(socket, timeout=15)

    code, messages = async_to_sync(scenario)()
    assert code == 4401 and "revoked or expired" in messages[-1]["message"]


def test_live_token_socket_stays_open_across_rechecks(flow, make_agent, settings):
    from django.conf import settings as live_settings

    _, token = make_agent("rs-live", flow)
    sender, _ = make_agent("rs-live-sender", flow)

    async def scenario():
        socket = _agent_socket("rs-live", token)
        await _open(socket)
        # several re-check rounds pass without a close
        silent = await socket.receive_nothing(timeout=live_settings.WEBSOCKET_RECHECK_SECONDS * 3, interval=0.1)
        await sync_to_async(_broadcast)(sender, flow, "Deploy freeze starts at noon.")
        event = await _next(socket)
        await socket.disconnect()
        return silent, event

    silent, event = async_to_sync(scenario)()
    assert silent is True
    assert event["event"] == "message.sent" and event["payload"]["message"] == "Deploy freeze starts at noon."


def test_agent_removed_from_a_workflow_stops_getting_its_events_at_once(flow, second_flow, make_agent):
    from tickets.services import ticket_create

    listener, token = make_agent("rs-member", flow, second_flow)
    author_one, _ = make_agent("rs-author-one", flow)
    author_two, _ = make_agent("rs-author-two", second_flow)
    # tickets assigned to the listener: their comments are addressed to its agent group
    def assigned(author, workflow, title):
        return ticket_create(actor=author, workflow=workflow, title=title, assigned_agent_id="rs-member",
                             description="Assigned to the listening agent for this test.")

    ticket_one = assigned(author_one, flow, "First workflow ticket")
    ticket_two = assigned(author_two, second_flow, "Second workflow ticket")

    async def scenario():
        socket = _agent_socket("rs-member", token)
        await _open(socket)
        await sync_to_async(_comment)(author_two, ticket_two, "Before leaving: second workflow news.")
        before = await _next(socket)
        await sync_to_async(listener.workflows.remove)(second_flow)
        # at once: no re-check interval passes between the removal and these events
        await sync_to_async(_comment)(author_two, ticket_two, "After leaving: must not arrive.")
        await sync_to_async(_comment)(author_one, ticket_one, "First workflow news still arrives.")
        after = await _next(socket)
        nothing_more = await socket.receive_nothing(timeout=1)
        await socket.disconnect()
        return before, after, nothing_more

    before, after, nothing_more = async_to_sync(scenario)()
    assert (before["workflow"], before["payload"]["text"]) == (second_flow.slug, "Before leaving: second workflow news.")
    assert (after["workflow"], after["payload"]["text"]) == (flow.slug, "First workflow news still arrives.")
    assert nothing_more is True


def test_logging_out_closes_the_dashboard_socket_with_4401(flow):
    client, cookie = _login_cookie()

    async def scenario():
        socket = _dashboard(f"workflow={flow.slug}", cookie)
        await _open(socket)
        await sync_to_async(client.logout)()
        return await _closed_with(socket)

    code, messages = async_to_sync(scenario)()
    assert code == 4401 and "session ended" in messages[-1]["message"]


def test_staff_rights_taken_away_stop_the_workflow_events(flow, make_agent):
    from django.contrib.auth.models import User

    client, cookie = _login_cookie()
    user = User.objects.get(pk=client.session["_auth_user_id"])
    agent, _ = make_agent("rs-demoted", flow)
    ticket = _ticket(flow, agent)

    async def scenario():
        socket = _dashboard(f"workflow={flow.slug}", cookie)
        await _open(socket)
        await sync_to_async(User.objects.filter(pk=user.pk).update)(is_staff=False)
        # wait for a heartbeat-free re-check round, then make a change the socket may no longer see
        await asyncio.sleep(0)
        from django.conf import settings as live_settings

        await socket.receive_nothing(timeout=live_settings.WEBSOCKET_RECHECK_SECONDS * 2 + 1)
        await sync_to_async(_comment)(agent, ticket, "Nobody outside the workflow may read this.")
        nothing = await socket.receive_nothing(timeout=1.5)
        await socket.disconnect()
        return nothing

    assert async_to_sync(scenario)() is True


# --- monotonic ids and replay ---------------------------------------------------------------------------


def test_events_carry_increasing_ids_and_a_reconnect_replays_exactly_what_was_missed(flow, second_flow, make_agent, staff_cookie):
    agent, _ = make_agent("rs-replay", flow)
    stranger, _ = make_agent("rs-stranger", second_flow)
    ticket = _ticket(flow, agent)

    async def scenario():
        socket = _dashboard(f"workflow={flow.slug}", staff_cookie)
        await _open(socket)
        await sync_to_async(_comment)(agent, ticket, "Seen live before the drop.")
        seen = await _next(socket)
        await socket.disconnect()
        # while no socket is open: three changes here, one elsewhere
        for text in ("Missed one.", "Missed two.", "Missed three."):
            await sync_to_async(_comment)(agent, ticket, text)
        await sync_to_async(_broadcast)(stranger, second_flow, "Another workflow's news.")
        # a fresh application instance stands in for a restarted server: only the database remembers
        again = _dashboard(f"workflow={flow.slug}&since={seen['id']}", staff_cookie)
        await _open(again)
        replayed = [await _next(again) for _ in range(3)]
        nothing_else = await again.receive_nothing(timeout=1)
        await sync_to_async(_comment)(agent, ticket, "Live again after the catch-up.")
        live = await _next(again)
        await again.disconnect()
        return seen, replayed, nothing_else, live

    seen, replayed, nothing_else, live = async_to_sync(scenario)()
    assert [e["payload"]["text"] for e in replayed] == ["Missed one.", "Missed two.", "Missed three."]
    ids = [seen["id"], *(e["id"] for e in replayed), live["id"]]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert nothing_else is True  # not the other workflow's broadcast, not the event seen before
    assert live["payload"]["text"] == "Live again after the catch-up."


def test_agent_socket_replays_since_an_id_only_its_own_events(flow, make_agent):
    from omoi_site.events import latest_event_id

    _, token = make_agent("rs-catchup", flow)
    sender, _ = make_agent("rs-catchup-sender", flow)
    _, bystander_token = make_agent("rs-bystander", flow)
    start = latest_event_id()
    from collaboration.services import message_send

    message_send(sender=sender, recipient_agent_id="rs-catchup", message="Only for rs-catchup.")
    message_send(sender=sender, recipient_agent_id="rs-bystander", message="Only for rs-bystander.")

    async def scenario():
        socket = _agent_socket("rs-catchup", token, f"since={start}")
        await _open(socket)
        replayed = await _next(socket)
        nothing_else = await socket.receive_nothing(timeout=1)
        await socket.disconnect()
        return replayed, nothing_else

    replayed, nothing_else = async_to_sync(scenario)()
    assert replayed["payload"]["message"] == "Only for rs-catchup."
    assert nothing_else is True


@pytest.mark.parametrize("since", ["-1", "abc", "1.5", "99999999999999999999"])
def test_bad_since_is_refused_with_4400(flow, staff_cookie, since):
    async def scenario():
        socket = _dashboard(f"workflow={flow.slug}&since={since}", staff_cookie)
        connected, _ = await socket.connect(timeout=10)
        assert connected
        return await _closed_with(socket)

    code, messages = async_to_sync(scenario)()
    assert code == 4400 and "since" in messages[-1]["message"]


def test_rolled_back_change_records_no_event(flow, make_agent):
    from collaboration.models import EventRecord

    agent, _ = make_agent("rs-rollback", flow)
    ticket = _ticket(flow, agent)
    before = EventRecord.objects.count()

    class Abort(Exception):
        pass

    with pytest.raises(Abort), transaction.atomic():
        _comment(agent, ticket, "This comment is rolled back.")
        raise Abort

    assert EventRecord.objects.count() == before
