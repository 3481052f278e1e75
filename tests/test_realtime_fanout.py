"""The process-local fan-out (collaboration/fanout.py) with real parts: the real Redis channel layer, the real
ASGI app (WebsocketCommunicator sockets share one event loop, as the sockets of one web process do), a real
uvicorn with real websocket clients, and a private `redis-server` that is stopped under live sockets.

Waits are event-driven with generous timeouts; nothing is timed.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from channels.layers import channel_layers
from channels.testing import WebsocketCommunicator

from tests.served_process import free_port

ORIGIN = (b"origin", b"http://127.0.0.1")

pytestmark = pytest.mark.django_db(transaction=True)


def _application():
    from omoi_site.asgi import application

    return application


@pytest.fixture
def flow(transactional_db):
    from tickets.services import workflow_get_or_create

    return workflow_get_or_create(slug=f"fo-{uuid.uuid4().hex[:10]}")


def _login_cookie() -> tuple[str, tuple[bytes, bytes]]:
    from django.contrib.auth.models import User
    from django.test import Client

    user = User.objects.create_user(f"staff-{uuid.uuid4().hex[:6]}", password="pw-123456", is_staff=True)
    client = Client()
    client.force_login(user)
    session = client.cookies["sessionid"].value
    return session, (b"cookie", f"sessionid={session}".encode())


def _dashboard(query: str, cookie) -> WebsocketCommunicator:
    return WebsocketCommunicator(_application(), f"/ws/dashboard/?{query}", headers=[ORIGIN, cookie])


async def _open(socket: WebsocketCommunicator) -> None:
    connected, _ = await socket.connect(timeout=10)
    assert connected
    hello = await socket.receive_json_from(timeout=10)
    assert hello["type"] == "subscribed", hello


async def _events(socket: WebsocketCommunicator, count: int) -> list[tuple[str, int]]:
    """The next `count` events (generous timeout each), then proof that no further copy follows."""
    seen = []
    while len(seen) < count:
        message = await socket.receive_json_from(timeout=20)
        if message["type"] == "omoi.event":
            seen.append((message["event"], message["id"]))
    assert await socket.receive_nothing(timeout=1.0), "an event arrived twice or unasked"
    return seen


def _ticket(flow, agent):
    from tickets.services import ticket_create

    return ticket_create(actor=agent, workflow=flow, title="Login times out after five minutes",
                         description="Sessions expire far too early for users.")


def _group_members(group: str) -> int:
    """How many layer channels are in a group, read from Redis itself (channels-redis keeps a group as the
    sorted set `asgi:group:<name>` of channel names)."""
    import redis
    from django.conf import settings

    client = redis.Redis.from_url(settings.CHANNEL_LAYERS["default"]["CONFIG"]["hosts"][0]["address"])
    try:
        return client.zcard(f"asgi:group:{group}")
    finally:
        client.close()


def test_sockets_of_one_process_share_one_group_membership_and_each_get_every_event_once(flow, make_agent):
    """Twenty sockets on one board and one socket on a ticket: Redis holds ONE channel per group for the
    process; every socket gets each event once (the socket on both groups too); the groups are left with the
    last socket."""
    from omoi_site.events import ticket_group, workflow_group
    from tickets.services import comment_add, ticket_change_status

    agent, _ = make_agent("fo-agent", flow)
    ticket = _ticket(flow, agent)
    _, cookie = _login_cookie()
    board_group, ticket_group_name = workflow_group(flow.slug), ticket_group(ticket.public_id)

    async def scenario():
        board = [_dashboard(f"workflow={flow.slug}", cookie) for _ in range(20)]
        both = _dashboard(f"workflow={flow.slug}&ticket={ticket.public_id}", cookie)
        comments_only = _dashboard(f"ticket={ticket.public_id}&events=ticket.commented", cookie)
        sockets = [*board, both, comments_only]
        for socket in sockets:
            await _open(socket)
        members_while_open = await sync_to_async(_group_members)(board_group), await sync_to_async(_group_members)(ticket_group_name)
        await sync_to_async(ticket_change_status)(actor=agent, ticket_id=ticket.public_id, new_status="analyzing",
                                                  comment="Twenty-two sockets are watching this move.")
        await sync_to_async(comment_add)(actor=agent, ticket_id=ticket.public_id, comment_text="Seen by all of them once.")
        received = [await _events(socket, 1 if socket is comments_only else 2) for socket in sockets]
        for socket in sockets:
            await socket.disconnect()
        members_after = await sync_to_async(_group_members)(board_group), await sync_to_async(_group_members)(ticket_group_name)
        return members_while_open, received, members_after

    members_while_open, received, members_after = async_to_sync(scenario)()
    assert members_while_open == (1, 1)
    expected = ["ticket.status_changed", "ticket.commented"]
    for seen in received[:21]:  # the board sockets and the socket on both groups
        assert [name for name, _ in seen] == expected
    assert len({tuple(seen) for seen in received[:21]}) == 1  # the same two event ids everywhere
    assert [name for name, _ in received[21]] == ["ticket.commented"]
    assert members_after == (0, 0)


def test_logging_out_closes_only_that_sessions_sockets(flow, make_agent):
    """Credentials are re-checked for all sockets of a process at once: the two sockets of the session that
    ended close with 4401; another manager's socket stays open and still gets events."""
    from django.contrib.sessions.backends.db import SessionStore

    from tickets.services import comment_add

    agent, _ = make_agent("fo-logout", flow)
    ticket = _ticket(flow, agent)
    leaving_session, leaving_cookie = _login_cookie()
    _, staying_cookie = _login_cookie()

    async def closed_with(socket) -> int:
        while True:
            output = await socket.receive_output(timeout=15)
            if output["type"] == "websocket.close":
                return output["code"]

    async def scenario():
        leaving = [_dashboard(f"workflow={flow.slug}", leaving_cookie) for _ in range(2)]
        staying = _dashboard(f"workflow={flow.slug}", staying_cookie)
        for socket in (*leaving, staying):
            await _open(socket)
        await sync_to_async(SessionStore(session_key=leaving_session).delete)()
        codes = [await closed_with(socket) for socket in leaving]
        await sync_to_async(comment_add)(actor=agent, ticket_id=ticket.public_id, comment_text="Still watched by one manager.")
        while True:
            message = await staying.receive_json_from(timeout=15)
            if message["type"] == "omoi.event":
                break
        await staying.disconnect()
        return codes, message

    codes, message = async_to_sync(scenario)()
    assert codes == [4401, 4401]
    assert message["event"] == "ticket.commented"


def test_a_client_that_stops_reading_does_not_hold_up_the_others_and_gets_everything_in_order(asgi_server, flow):
    """Real uvicorn, real websocket clients. One client stops reading, so its TCP buffers fill and the server
    has to queue its frames (each event carries 600 KB of base64 random bytes, ~450 KB even after the
    server's per-message deflate; 40 of them are more than the loopback socket buffers hold); the other
    client still receives every event, and once the stalled client reads again it gets all of them, in
    order. Were the fan-out waiting on the stalled socket, the reading client would wait too and fail."""
    from django.db import transaction
    from websockets.sync.client import connect

    from omoi_site.events import publish_on_commit

    _, cookie = _login_cookie()
    url = asgi_server.url.replace("http://", "ws://") + f"/ws/dashboard/?workflow={flow.slug}&events=sandbox.finished"
    headers = {"Cookie": cookie[1].decode()}
    count = 40

    def subscribed(client):
        assert json.loads(client.recv(timeout=15))["type"] == "subscribed"

    def events_from(client, how_many):
        steps = []
        while len(steps) < how_many:
            message = json.loads(client.recv(timeout=60))
            if message["type"] == "omoi.event":
                steps.append(message["payload"]["step"])
        return steps

    # max_queue=1: the stalled client's library stops reading from the socket after one buffered frame
    with connect(url, additional_headers=headers, origin=asgi_server.url, max_size=None, max_queue=1) as stalled, \
            connect(url, additional_headers=headers, origin=asgi_server.url, max_size=None) as reading:
        subscribed(stalled)
        subscribed(reading)
        for step in range(count):
            with transaction.atomic():
                publish_on_commit("sandbox.finished", workflow=flow.slug,
                                  payload={"step": step, "blob": base64.b64encode(os.urandom(450_000)).decode()})
        reading_steps = events_from(reading, count)
        stalled_steps = events_from(stalled, count)
    assert reading_steps == list(range(count))
    assert stalled_steps == list(range(count))


@pytest.fixture
def private_redis(settings):
    """A redis-server of this test alone, as the channel layer of this process, so it can be stopped."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed")
    port = free_port()
    directory = tempfile.mkdtemp(prefix="omoi-redis-")

    def start():
        process = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                                    "--dir", directory], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        import redis

        client = redis.Redis(port=port)
        deadline = time.monotonic() + 20
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                assert time.monotonic() < deadline, "the private redis-server did not start"
                time.sleep(0.05)
        client.close()
        return process

    url = f"redis://127.0.0.1:{port}/0"
    settings.CHANNEL_LAYERS = {"default": {**settings.CHANNEL_LAYERS["default"], "CONFIG": {
        **settings.CHANNEL_LAYERS["default"]["CONFIG"],
        "hosts": [{**settings.CHANNEL_LAYERS["default"]["CONFIG"]["hosts"][0], "address": url}]}}}
    channel_layers.backends.clear()
    state = {"process": start()}

    class PrivateRedis:
        address = url

        def stop(self):
            state["process"].terminate()
            state["process"].wait(timeout=20)

        def restart(self):
            state["process"] = start()

    yield PrivateRedis()
    state["process"].terminate()
    state["process"].wait(timeout=20)
    channel_layers.backends.clear()
    shutil.rmtree(directory, ignore_errors=True)


def _publish_in_another_process(script: str, redis_url: str) -> None:
    """A `manage.py shell` publisher (its own outage bookkeeping, as the background worker has)."""
    from django.db import connection

    connection.ensure_connection()
    info = connection.connection.info
    environment = {**os.environ, "DATABASE_URL": f"postgresql://{info.user}@/{info.dbname}?host={info.host}&port={info.port}",
                   "REDIS_URL": redis_url}
    process = subprocess.run([sys.executable, "manage.py", "shell", "-c", script], env=environment,
                             capture_output=True, text=True, timeout=180)
    assert process.returncode == 0, process.stderr[-3000:]


def test_when_redis_goes_away_the_sockets_close_with_1011_and_a_reconnect_catches_up(flow, private_redis):
    """Redis stops under live sockets: the process' one reader fails, so every local socket is closed with
    1011 (not final: pages reconnect). Events committed meanwhile are in the event log; the reconnect with
    `?since=` replays them, and live events flow again."""
    _, cookie = _login_cookie()
    script = (
        "from django.db import transaction; from omoi_site.events import publish_on_commit\n"
        "for step in ('during-1', 'during-2'):\n"
        "    with transaction.atomic():\n"
        f"        publish_on_commit('sandbox.finished', workflow='{flow.slug}', payload={{'step': step}})\n"
    )

    async def closed_with(socket) -> int:
        while True:
            output = await socket.receive_output(timeout=30)
            if output["type"] == "websocket.close":
                return output["code"]

    async def scenario():
        from omoi_site.events import latest_event_id

        sockets = [_dashboard(f"workflow={flow.slug}", cookie) for _ in range(2)]
        for socket in sockets:
            await _open(socket)
        last_seen = await sync_to_async(latest_event_id)()
        private_redis.stop()
        codes = [await closed_with(socket) for socket in sockets]
        await sync_to_async(_publish_in_another_process, thread_sensitive=False)(script, private_redis.address)
        private_redis.restart()
        again = _dashboard(f"workflow={flow.slug}&since={last_seen}", cookie)
        await _open(again)
        replayed = [await again.receive_json_from(timeout=15) for _ in range(2)]
        from django.db import transaction

        from omoi_site.events import publish_on_commit

        def publish_live():
            with transaction.atomic():
                publish_on_commit("sandbox.finished", workflow=flow.slug, payload={"step": "after"})

        await sync_to_async(publish_live)()
        live = await again.receive_json_from(timeout=15)
        await again.disconnect()
        return codes, replayed, live

    codes, replayed, live = async_to_sync(scenario)()
    assert codes == [1011, 1011]
    assert [m["payload"]["step"] for m in replayed] == ["during-1", "during-2"]
    assert live["payload"]["step"] == "after"
