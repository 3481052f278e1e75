"""Supervision and a database that goes away: real `manage.py serve` children on a PostgreSQL of their own.

The spare PostgreSQL is the project's embedded server in a temporary data directory (never the suite's own
database), so the tests can stop it, kill it and start it again under a running server.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.served_process import ServedProcess, child_environment, manage, wait_for

SETUP_SCRIPT = """
import json
from datetime import timedelta
from django.utils import timezone
from agents import services as agent_services
from tasks import services as task_services
from tasks.models import Task
from tickets import services as ticket_services

workflow = ticket_services.workflow_get_or_create(slug="{slug}")
agent = agent_services.agent_create_or_update(agent_id="{agent_id}", workflows=[workflow], agent_type="implementer")
token = agent_services.agent_token_issue(agent=agent, label="test")
ticket = ticket_services.ticket_create(actor=agent, workflow=workflow, title="Supervised work item",
                                       description="Work that must not be lost when the worker dies.")
task, _ = task_services.task_create(actor=agent, ticket_id=ticket.pk, phase_id="PHASE_IMPLEMENTATION",
                                    description="Implement the supervised work item.")
claimed = task_services.task_claim_next(agent=agent, workflow=workflow)
print(json.dumps({{"token": token, "task_pk": claimed.pk if claimed else None}}))
"""


class SparePostgres:
    """The embedded PostgreSQL in `root`, migrated; left running between children (no cleanup on exit)."""

    def __init__(self, root: Path):
        self.root = root
        self.pgdata = root / "pg"
        self.embedded_env = child_environment(DATABASE_URL=None, OMOIOS_DATA_DIR=str(root),
                                              XDG_RUNTIME_DIR=str(root / "run"), OMOIOS_EMBEDDED_PG_CLEANUP="")
        manage("migrate", "--noinput", "-v", "0", environment=self.embedded_env, timeout=600)
        self.url = manage("shell", "-c", "from django.conf import settings; print(settings.DATABASE_URL)",
                          environment=self.embedded_env).strip().splitlines()[-1]
        self.external_env = {**self.embedded_env, "DATABASE_URL": self.url}

    def postmaster_pid(self) -> int | None:
        try:
            return int((self.pgdata / "postmaster.pid").read_text().splitlines()[0])
        except (FileNotFoundError, IndexError, ValueError):
            return None

    def is_running(self) -> bool:
        pid = self.postmaster_pid()
        if pid is None:
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True

    def stop(self, sig=signal.SIGINT) -> None:
        """SIGINT = PostgreSQL's fast shutdown; SIGKILL = a crash."""
        pid = self.postmaster_pid()
        os.kill(pid, sig)
        wait_for(lambda: not _pid_alive(pid), timeout=30, message="postmaster exit")

    def start(self) -> None:
        manage("shell", "-c", "pass", environment=self.embedded_env)  # settings start the embedded server

    def query(self, sql: str, *params):
        with psycopg.connect(self.url, autocommit=True, connect_timeout=3) as connection:
            cursor = connection.execute(sql, params)
            return cursor.fetchall() if cursor.description else []


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie of ours counts as gone
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


@pytest.fixture(scope="module")
def spare_postgres(tmp_path_factory):
    spare = SparePostgres(tmp_path_factory.mktemp("spare-pg"))
    yield spare
    if spare.is_running():
        spare.stop()


def _setup(spare: SparePostgres, slug: str, agent_id: str) -> dict:
    output = manage("shell", "-c", SETUP_SCRIPT.format(slug=slug, agent_id=agent_id), environment=spare.external_env)
    return json.loads(output.strip().splitlines()[-1])


def _mcp_call(url: str, token: str, name: str, arguments: dict) -> tuple[int, str]:
    """One stateless tools/call; (HTTP status, the tool's or the server's text)."""
    response = httpx.post(f"{url}/mcp/", timeout=30, headers={
        "Authorization": f"Bearer {token}", "Accept": "application/json, text/event-stream",
        "MCP-Protocol-Version": "2025-06-18"},
        json={"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": name, "arguments": arguments}})
    body = response.json()
    if "error" in body:
        return response.status_code, body["error"]["message"]
    return response.status_code, ("ERROR " if body["result"].get("isError") else "") + body["result"]["content"][0]["text"]


def test_database_down_fails_fast_with_a_clear_error_and_recovers_without_restart(spare_postgres):
    scene = _setup(spare_postgres, "pg-down-flow", "pg-down-agent")
    server = ServedProcess(spare_postgres.external_env, worker=False)
    api = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {scene['token']}"}, timeout=30)
    try:
        assert api.get("/api/tickets", params={"workflow": "pg-down-flow"}).status_code == 200
        status, text = _mcp_call(server.url, scene["token"], "get_ready_tickets", {"workflow_id": "pg-down-flow"})
        assert status == 200 and not text.startswith("ERROR"), text
        status, health = server.healthz()  # no worker runs beside this server
        assert status == 200 and health["status"] == "degraded"
        assert any(reason.startswith("background worker") for reason in health["reasons"]), health

        spare_postgres.stop()

        started = time.monotonic()
        rest = api.get("/api/tickets", params={"workflow": "pg-down-flow"})
        rest_seconds = time.monotonic() - started
        assert rest.status_code == 503, rest.text
        assert rest.json()["error"]["code"] == "database_unavailable"
        assert "retry in a few seconds" in rest.json()["error"]["message"] and rest.headers["retry-after"]
        assert rest_seconds <= 5, rest_seconds

        started = time.monotonic()
        status, text = _mcp_call(server.url, scene["token"], "get_ready_tickets", {"workflow_id": "pg-down-flow"})
        mcp_seconds = time.monotonic() - started
        assert "database unavailable; retry in a few seconds" in text, (status, text)
        assert mcp_seconds <= 5, mcp_seconds

        status, health = server.healthz()
        assert status == 503 and health["status"] == "down" and health["reasons"][0].startswith("database"), health

        spare_postgres.start()

        # the very next calls succeed: no restart of the server
        assert api.get("/api/tickets", params={"workflow": "pg-down-flow"}).status_code == 200
        status, text = _mcp_call(server.url, scene["token"], "get_ready_tickets", {"workflow_id": "pg-down-flow"})
        assert status == 200 and not text.startswith("ERROR"), text
        assert server.process.poll() is None
        print(f"database down: REST 503 after {rest_seconds:.2f} s, MCP error after {mcp_seconds:.2f} s")
    finally:
        server.stop()


def test_serve_restarts_a_killed_worker_and_idle_workflows_lose_expired_leases(spare_postgres):
    scene = _setup(spare_postgres, "idle-flow", "idle-agent")
    assert scene["task_pk"] is not None
    server = ServedProcess(spare_postgres.external_env, worker=True)
    try:
        def worker_pids():
            rows = spare_postgres.query("SELECT worker_name FROM agents_workerheartbeat "
                                        "WHERE beat_at > now() - interval '2 seconds'")
            return {int(name.rsplit(":", 1)[1]) for (name,) in rows}

        (first,), _ = wait_for(worker_pids, timeout=60, message="a worker heartbeat")

        # a lease that expires in a workflow where nobody calls claim_next_task
        spare_postgres.query("UPDATE tasks_task SET lease_expires_at = now() + interval '1 second' WHERE id = %s",
                             scene["task_pk"])
        expires = time.monotonic() + 1

        def returned_to_queue():
            ((status, holder),) = spare_postgres.query("SELECT status, claimed_by_id FROM tasks_task WHERE id = %s",
                                                       scene["task_pk"])
            return status == "pending" and holder is None

        _, waited = wait_for(returned_to_queue, timeout=30, interval=0.1, message="the expired lease returning")
        after_expiry = time.monotonic() - expires
        assert after_expiry <= 1 + 2.5, after_expiry  # one maintenance interval (1 s) + the job queue's poll

        os.kill(first, signal.SIGKILL)
        killed = time.monotonic()
        (second,), _ = wait_for(lambda: worker_pids() - {first}, timeout=10, message="a new worker after kill -9")
        restart_seconds = time.monotonic() - killed
        assert not _pid_alive(first)  # reaped, no zombie left behind
        assert "worker exited with code -9" in server.output()
        print(f"expired lease back in the queue {after_expiry:.2f} s after expiry; new worker {restart_seconds:.1f} s "
              f"after kill -9")
    finally:
        server.stop()
    assert not _pid_alive(second)


def test_make_run_restarts_a_killed_embedded_postgres(spare_postgres):
    if not spare_postgres.is_running():
        spare_postgres.start()
    scene = _setup(spare_postgres, "crash-flow", "crash-agent")
    server = ServedProcess(spare_postgres.embedded_env, worker=False)
    api = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {scene['token']}"}, timeout=30)
    try:
        assert api.get("/api/tickets", params={"workflow": "crash-flow"}).status_code == 200
        old_pid = spare_postgres.postmaster_pid()
        spare_postgres.stop(signal.SIGKILL)
        killed = time.monotonic()

        def serving_again():
            try:
                return api.get("/api/tickets", params={"workflow": "crash-flow"}).status_code == 200
            except httpx.HTTPError:
                return False

        _, waited = wait_for(serving_again, timeout=60, interval=0.5, message="serving after the database crash")
        assert spare_postgres.postmaster_pid() != old_pid
        # the supervisor reports the restart once its restart call returns, which can be just after the
        # database already answers the first request
        wait_for(lambda: "embedded PostgreSQL had stopped; started it again" in server.output(), timeout=30,
                 message="the supervisor's restart report")
        print(f"embedded PostgreSQL killed: serving again after {time.monotonic() - killed:.1f} s")
    finally:
        server.stop()
