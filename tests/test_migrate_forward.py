"""Migrations apply on a database that the previous main created, and the seed's workflow then runs on it.

The previous main (before the one-casing priorities and the floors' data migrations) is taken from this
repository's own history with `git archive`, into a temporary folder. Its own `manage.py migrate` and
`manage.py demo` build a database with real rows (tasks stored with upper-case priorities, a resolved
ticket, a hand-off, events). Then this checkout's `migrate` moves it forward and this checkout's `demo` runs
the whole workflow on it through MCP, and the old rows read correctly through the new code.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
import tempfile
import uuid
from io import BytesIO
from pathlib import Path

import psycopg
import pytest
from django.db import connection

from tests.served_process import BASE_DIR, child_environment

pytestmark = [pytest.mark.slow, pytest.mark.django_db]

# The last main before issue 14's schema and data changes (tasks 0005 lowercases stored task priorities).
PREVIOUS_MAIN = "5759020"


def _git(*arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "-C", str(BASE_DIR), *arguments], capture_output=True, timeout=60)


def _previous_main_tree(into: Path) -> Path:
    if shutil.which("git") is None or _git("cat-file", "-e", f"{PREVIOUS_MAIN}^{{commit}}").returncode != 0:
        pytest.skip(f"this checkout has no git history with {PREVIOUS_MAIN} (a shallow copy); nothing to migrate from")
    archive = _git("archive", "--format=tar", PREVIOUS_MAIN)
    assert archive.returncode == 0, archive.stderr
    with tarfile.open(fileobj=BytesIO(archive.stdout)) as tar:
        tar.extractall(into, filter="data")
    return into


def _server_dsn(dbname: str) -> str:
    connection.ensure_connection()
    info = connection.connection.info
    return f"postgresql://{info.user}@/{dbname}?host={info.host}&port={info.port}"


def _run(cwd: Path, environment: dict, *arguments: str, timeout: float = 600) -> str:
    process = subprocess.run([sys.executable, "manage.py", *arguments], cwd=cwd, env=environment,
                             capture_output=True, text=True, timeout=timeout)
    assert process.returncode == 0, (str(cwd), arguments, process.stdout[-3000:], process.stderr[-3000:])
    return process.stdout


@pytest.fixture
def scratch_database():
    """An empty database on the test server, dropped afterwards."""
    name = f"omoi_migrate_{uuid.uuid4().hex[:10]}"
    admin_dsn = _server_dsn(connection.connection.info.dbname)
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield _server_dsn(name)
    finally:
        with psycopg.connect(admin_dsn, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_the_previous_main_database_migrates_forward_and_runs_the_seed_workflow(scratch_database):
    environment = child_environment(DATABASE_URL=scratch_database, REDIS_URL=None, MCP_SERVER_URL="http://127.0.0.1:9/mcp/",
                                    EMBEDDINGS_SYNC="true", CI=None)
    with tempfile.TemporaryDirectory(prefix="omoi-previous-main-") as folder:
        old = _previous_main_tree(Path(folder))
        # the previous main builds its database and runs its own workflow on it
        _run(old, environment, "migrate", "--noinput", "-v", "0")
        old_demo = _run(old, environment, "demo")
        assert "unblocked" in old_demo.lower()
    with psycopg.connect(scratch_database) as database:
        stored = {row[0] for row in database.execute("SELECT DISTINCT priority FROM tasks_task")}
    assert stored & {"HIGH", "MEDIUM"}, stored  # what the old code stored

    # this checkout migrates it forward and runs the workflow again, beside the old rows
    _run(BASE_DIR, environment, "migrate", "--noinput", "-v", "0")
    new_demo = _run(BASE_DIR, environment, "demo")
    assert "unblocked" in new_demo.lower()

    with psycopg.connect(scratch_database) as database:
        priorities = {row[0] for row in database.execute("SELECT DISTINCT priority FROM tasks_task")}
        resolved = database.execute("SELECT count(*) FROM tickets_ticket WHERE status = 'done'").fetchone()[0]
        pending_migrations = _run(BASE_DIR, environment, "showmigrations", "--plan")
    assert priorities <= {"low", "medium", "high", "critical"}, priorities
    assert resolved >= 2  # the bug ticket of each demo run
    assert "[ ]" not in pending_migrations
