"""The default set-up (no REDIS_URL): events published by another process — the background worker, a
management command — reach this process's sockets through the event log relay (an EventRecord row and a
NOTIFY in the publishing transaction; the web process LISTENs and feeds its in-memory layer).

The publisher is a real `manage.py shell` process started without REDIS_URL on the test database.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import pytest
from asgiref.sync import async_to_sync
from channels.layers import channel_layers
from channels.testing import WebsocketCommunicator
from django.db import connection

pytestmark = pytest.mark.django_db(transaction=True)



@pytest.fixture
def without_redis(settings):
    """This process as `make run` configures it when REDIS_URL is unset."""
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    settings.CHANNEL_LAYER_KIND = "in-memory"
    channel_layers.backends.clear()
    yield
    channel_layers.backends.clear()


def _publisher_environment() -> dict:
    connection.ensure_connection()
    info = connection.connection.info
    url = f"postgresql://{info.user}@/{info.dbname}?host={info.host}&port={info.port}"
    return {**os.environ, "DATABASE_URL": url, "REDIS_URL": ""}


def _publish_in_another_process(script: str) -> None:
    process = subprocess.run([sys.executable, "manage.py", "shell", "-c", script], env=_publisher_environment(),
                             capture_output=True, text=True, timeout=180)
    assert process.returncode == 0, process.stderr[-3000:]


def test_events_of_another_process_reach_a_dashboard_socket_without_redis(workflow, without_redis):
    from django.contrib.auth.models import User
    from django.test import Client

    from omoi_site.asgi import application

    user = User.objects.create_user(f"mgr-{uuid.uuid4().hex[:6]}", password="pw-123456", is_staff=True)
    client = Client()
    client.force_login(user)
    cookie = (b"cookie", f"sessionid={client.cookies['sessionid'].value}".encode())
    marker = uuid.uuid4().hex
    script = (
        "from django.conf import settings; assert settings.CHANNEL_LAYER_KIND == 'in-memory'\n"
        "from django.db import transaction; from omoi_site.events import publish_on_commit\n"
        "with transaction.atomic():\n"
        f"    publish_on_commit('sandbox.finished', workflow='{workflow.slug}', payload={{'marker': '{marker}', 'step': 1}})\n"
        f"    publish_on_commit('sandbox.finished', workflow='{workflow.slug}', payload={{'marker': '{marker}', 'step': 2}})\n"
        "try:\n"
        "    with transaction.atomic():\n"
        f"        publish_on_commit('sandbox.finished', workflow='{workflow.slug}', payload={{'marker': 'rolled back'}})\n"
        "        raise RuntimeError\n"
        "except RuntimeError:\n"
        "    pass\n"
    )

    async def scenario():
        socket = WebsocketCommunicator(application, f"/ws/dashboard/?workflow={workflow.slug}",
                                       headers=[(b"origin", b"http://127.0.0.1"), cookie])
        connected, _ = await socket.connect(timeout=10)
        assert connected
        assert (await socket.receive_json_from(timeout=10))["type"] == "subscribed"
        from asgiref.sync import sync_to_async

        await sync_to_async(_publish_in_another_process, thread_sensitive=False)(script)
        received = [await socket.receive_json_from(timeout=30) for _ in range(2)]
        nothing_more = await socket.receive_nothing(timeout=1.5)
        await socket.disconnect()
        return received, nothing_more

    received, nothing_more = async_to_sync(scenario)()
    assert [(m["event"], m["payload"].get("step")) for m in received] == [("sandbox.finished", 1), ("sandbox.finished", 2)]
    assert received[0]["id"] < received[1]["id"]
    assert nothing_more is True  # the rolled-back publish never arrives


def test_mcp_server_url_defaults_to_the_served_host_and_port():
    """Launched workers call back where the server listens (`PORT=8622` → :8622), not a fixed :8000."""
    environment = {key: value for key, value in os.environ.items() if key != "MCP_SERVER_URL"}
    script = "from django.conf import settings; print(settings.MCP_SERVER_URL)"
    served = subprocess.run([sys.executable, "manage.py", "shell", "-c", script], env={**environment, "PORT": "8622"},
                            capture_output=True, text=True, timeout=120, check=True).stdout.strip().splitlines()[-1]
    explicit = subprocess.run([sys.executable, "manage.py", "shell", "-c", script],
                              env={**environment, "PORT": "8622", "MCP_SERVER_URL": "https://omoi.example/mcp/"},
                              capture_output=True, text=True, timeout=120, check=True).stdout.strip().splitlines()[-1]
    assert served == "http://127.0.0.1:8622/mcp/"
    assert explicit == "https://omoi.example/mcp/"


def test_an_event_whose_transaction_commits_after_a_later_id_still_reaches_the_socket(workflow, without_redis):
    """Ids are allocated at insert, so transaction A (lower id) can commit after transaction B (higher id).
    The relay has then already moved past A's id; it must still deliver A once A commits."""
    import threading

    from django.contrib.auth.models import User
    from django.db import connections, transaction
    from django.test import Client

    from omoi_site.asgi import application
    from omoi_site.events import publish_on_commit

    user = User.objects.create_user(f"mgr-{uuid.uuid4().hex[:6]}", password="pw-123456", is_staff=True)
    client = Client()
    client.force_login(user)
    cookie = (b"cookie", f"sessionid={client.cookies['sessionid'].value}".encode())
    a_inserted, b_committed = threading.Event(), threading.Event()

    def slow_transaction():
        try:
            with transaction.atomic():
                publish_on_commit("sandbox.finished", workflow=workflow.slug, payload={"step": "A"})
                a_inserted.set()
                assert b_committed.wait(20)
                import time

                time.sleep(1.5)  # the relay has relayed B and moved past A's id by now
        finally:
            connections.close_all()

    def fast_transaction():
        try:
            assert a_inserted.wait(20)
            with transaction.atomic():
                publish_on_commit("sandbox.finished", workflow=workflow.slug, payload={"step": "B"})
            b_committed.set()
        finally:
            connections.close_all()

    async def scenario():
        socket = WebsocketCommunicator(application, f"/ws/dashboard/?workflow={workflow.slug}",
                                       headers=[(b"origin", b"http://127.0.0.1"), cookie])
        connected, _ = await socket.connect(timeout=10)
        assert connected
        assert (await socket.receive_json_from(timeout=10))["type"] == "subscribed"
        threads = [threading.Thread(target=slow_transaction), threading.Thread(target=fast_transaction)]
        for thread in threads:
            thread.start()
        received = [await socket.receive_json_from(timeout=20) for _ in range(2)]
        for thread in threads:
            thread.join(30)
        await socket.disconnect()
        return received

    received = async_to_sync(scenario)()
    assert [m["payload"]["step"] for m in received] == ["B", "A"]
    assert received[1]["id"] < received[0]["id"]  # A holds the lower id and arrives last
