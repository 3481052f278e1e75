"""The baseline for bench/mcp_load.py: a bare FastMCP server of the official `mcp` SDK (stateless, JSON
responses) with one tool, `get_ticket`, that reads one row of the same tickets table through a psycopg
connection pool. No Django, no auth, no validation beyond the SDK's own.

    BARE_DATABASE_URL=postgresql://… uvicorn bench.bare_fastmcp_server:app --port 8399
"""

from __future__ import annotations

import os

from mcp.server.fastmcp import FastMCP
from psycopg_pool import ConnectionPool

pool = ConnectionPool(os.environ["BARE_DATABASE_URL"], min_size=1, max_size=10, open=True)
server = FastMCP("bare", stateless_http=True, json_response=True, log_level="WARNING")


@server.tool()
def get_ticket(ticket_id: str) -> dict:
    """Read one ticket row."""
    with pool.connection() as connection:
        row = connection.execute(
            "SELECT id, title, status, priority, description FROM tickets_ticket WHERE id = %s",
            (int(ticket_id.split("-")[-1]),),
        ).fetchone()
    if row is None:
        raise ValueError(f"no ticket {ticket_id}")
    return {"ticket_id": f"TKT-{row[0]}", "title": row[1], "status": row[2], "priority": row[3], "description": row[4]}


app = server.streamable_http_app()
