"""Degrade, don't die: with Redis gone the doors keep serving; /healthz says what is missing.

The server is a real `manage.py serve` child process started with REDIS_URL pointing at a port where nothing
listens (its rate-limit counters and channel layer are Redis there, as in production), on the test database.
"""

from __future__ import annotations

import re
import time

import httpx
import pytest
from django.db import connection

from tests.conftest import McpClient
from tests.served_process import ServedProcess, child_environment, free_port

pytestmark = pytest.mark.django_db(transaction=True)


def _test_database_url() -> str:
    connection.ensure_connection()
    info = connection.connection.info
    return f"postgresql://{info.user}@/{info.dbname}?host={info.host}&port={info.port}"


def _admin_session(base: str, username: str, password: str) -> httpx.Client:
    browser = httpx.Client(base_url=base, timeout=15, follow_redirects=False)
    login_page = browser.get("/admin/login/")
    assert login_page.status_code == 200, login_page.text[:500]
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', login_page.text).group(1)
    answer = browser.post("/admin/login/?next=/admin/", data={"csrfmiddlewaretoken": token, "username": username,
                          "password": password, "next": "/admin/"}, headers={"Referer": f"{base}/admin/login/"})
    assert answer.status_code == 302 and answer.headers["location"] == "/admin/", answer.text[:500]
    return browser


def test_with_redis_down_mcp_rest_and_admin_serve_and_healthz_says_degraded(workflow, make_agent, django_user_model):
    from tickets.models import Ticket

    agent, token = make_agent("redis-down-worker", workflow)
    django_user_model.objects.create_superuser("redis-down-admin", "a@example.com", "pw-redis-down-1")
    dead_redis = f"redis://127.0.0.1:{free_port()}/0"
    server = ServedProcess(child_environment(DATABASE_URL=_test_database_url(), REDIS_URL=dead_redis), worker=False)
    try:
        mcp = McpClient(f"{server.url}/mcp/", token)
        created = [mcp.call("create_ticket", workflow_id=workflow.slug, title=f"Redis outage ticket {n}",
                            description="Filed while Redis is down.") for n in range(3)]
        read = mcp.call("get_ticket", ticket_id=created[0]["ticket"]["ticket_id"])
        assert read["title"] == "Redis outage ticket 0"

        api = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=15)
        posted = api.post("/api/tickets", json={"workflow_id": workflow.slug, "title": "Filed over REST, Redis down",
                                                "description": "REST keeps working."})
        assert posted.status_code == 201, posted.text
        listed = api.get("/api/tickets", params={"workflow": workflow.slug})
        assert listed.status_code == 200, listed.text

        admin = _admin_session(server.url, "redis-down-admin", "pw-redis-down-1")
        for page in ("/admin/", "/admin/tickets/ticket/", f"/dashboard/{workflow.slug}/"):
            assert admin.get(page).status_code == 200, page

        status, health = server.healthz()
        assert status == 200 and health["status"] == "degraded", health
        assert any("channel layer (redis)" in reason for reason in health["reasons"]), health
        assert any("rate-limit counters" in reason for reason in health["reasons"]), health

        time.sleep(0.5)
        log = server.output()
        # one warning per outage, not one per call (and no tracebacks for each dropped event)
        assert log.count("Redis (rate-limit counters) unavailable") == 1, log[-3000:]
        assert log.count("Redis (channel layer) unavailable") == 1, log[-3000:]
        assert "Traceback" not in log, log[-3000:]
    finally:
        server.stop()
    assert Ticket.objects.filter(workflow=workflow, title__startswith="Redis outage ticket").count() == 3
    assert Ticket.objects.filter(title="Filed over REST, Redis down").exists()


def test_create_ticket_over_mcp_calls_the_embedding_provider_with_no_transaction_open(
        workflow, make_agent, mcp_for, settings):
    """One rule whatever the door: the duplicate check's embedding (an HTTP call with EMBEDDING_PROVIDER=
    openai) happens before the call's transaction opens, as on REST — never while rows are locked."""
    import psycopg

    from tests.openai_embeddings_standin import OpenAIEmbeddingsStandIn
    from tickets.models import Ticket

    connection.ensure_connection()
    info = connection.connection.info
    observer_url = f"postgresql://{info.user}@/{info.dbname}?host={info.host}&port={info.port}"
    open_transactions_seen = []

    def count_open_transactions(body):
        with psycopg.connect(observer_url, autocommit=True) as observer:
            (count,) = observer.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND state LIKE 'idle in transaction%%' AND pid <> pg_backend_pid()").fetchone()
        open_transactions_seen.append(count)

    standin = OpenAIEmbeddingsStandIn()
    standin.on_request = count_open_transactions
    settings.EMBEDDING_PROVIDER = "openai"
    settings.EMBEDDING_BASE_URL = standin.base_url
    _, token = make_agent("embed-order-agent", workflow)
    try:
        mcp = mcp_for(token)
        mcp.call("create_ticket", workflow_id=workflow.slug, title="Webhook retries pile up",
                 description="Retries of failed webhooks are never dropped.")
        mcp.call("create_ticket", workflow_id=workflow.slug, title="Webhook retries pile up again",
                 description="Same thing, with an idempotency key.", idempotency_key="embed-order-1")
    finally:
        standin.stop()
    assert Ticket.objects.filter(workflow=workflow, title__startswith="Webhook retries pile up").count() == 2
    assert len(open_transactions_seen) >= 2  # the duplicate checks did reach the provider
    assert open_transactions_seen == [0] * len(open_transactions_seen), open_transactions_seen
