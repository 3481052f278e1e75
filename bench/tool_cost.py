"""In-process cost of the hot MCP tools: wall ms (median of N), CPU ms and queries per call, through the
door's own execution (`run_tool`) with DEBUG off — no HTTP, no thread hop. A profile target, not a test.

    .venv/bin/python bench/tool_cost.py [--calls 200] [--profile get_ticket]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "omoi_site.settings")
os.environ.setdefault("DEBUG", "false")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--profile", default="", help="case to profile with pyinstrument")
    parser.add_argument("--only", default="", help="run only this case (e.g. under py-spy)")
    args = parser.parse_args()
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    call_command("migrate", verbosity=0)
    from agents import services as agent_services
    from omoi_site.mcp_endpoint import load_tools, run_tool
    from tasks.services import task_create
    from tickets.services import comment_add, ticket_create, workflow_get_or_create

    workflow = workflow_get_or_create(slug="bench-cost")
    from agents.selectors import agent_with_membership

    # as the MCP door holds it: with its workflow ids from the (cached) token lookup
    agent = agent_with_membership(agent_services.agent_create_or_update(agent_id="cost-agent", workflows=[workflow]))
    peer = agent_services.agent_create_or_update(agent_id="cost-peer", workflows=[workflow])
    blocker = ticket_create(actor=agent, workflow=workflow, title="Cost blocker", description="A ticket for the cost bench.")
    ticket = ticket_create(actor=agent, workflow=workflow, title="Cost ticket", description="A ticket for the cost bench.",
                           blocked_by_ticket_ids=[blocker.public_id])
    comment_add(actor=agent, ticket_id=ticket.public_id, comment_text="A comment to read back.")
    for index in range(args.calls + 5):
        task_create(actor=agent, ticket_id=blocker.public_id, phase_id="PHASE_IMPLEMENTATION",
                    description=f"Cost task number {index}")
    tools = load_tools()

    def claim_release():
        import json

        _, text = run_tool(tools["claim_next_task"], agent, {"workflow_id": "bench-cost"})
        task = json.loads(text)["task"]
        run_tool(tools["heartbeat_task"], agent, {"task_id": task["task_id"], "fencing_token": task["fencing_token"]})
        run_tool(tools["release_task"], agent, {"task_id": task["task_id"], "fencing_token": task["fencing_token"]})

    cases = {
        "get_ticket": lambda: run_tool(tools["get_ticket"], agent, {"ticket_id": ticket.public_id}),
        "get_tickets": lambda: run_tool(tools["get_tickets"], agent, {"workflow_id": "bench-cost", "limit": 20}),
        "claim+heartbeat+release": claim_release,
        "send_message": lambda: run_tool(tools["send_message"], agent, {"recipient_agent_id": peer.agent_id, "message": "Status update."}),
        "create_ticket": lambda: run_tool(tools["create_ticket"], agent, {"workflow_id": "bench-cost", "title": "Cost ticket",
                                                                          "description": "Created by the cost bench."}),
    }
    if args.profile:
        from pyinstrument import Profiler

        profiler = Profiler(interval=0.0002)
        profiler.start()
        for _ in range(args.calls):
            cases[args.profile]()
        profiler.stop()
        print(profiler.output_text(unicode=False, color=False, show_all=False))
        return
    print(f"{'tool':<26}{'p50 ms':>9}{'CPU ms':>9}{'queries':>9}   (CPU = this process's CPU per call, mean)")
    for name, case in cases.items():
        if args.only and name != args.only:
            continue
        calls = args.calls if name != "create_ticket" else max(10, args.calls // 10)
        case()
        with CaptureQueriesContext(connection) as queries:
            case()
        timings = []
        cpu_started = time.process_time()
        for _ in range(calls):
            started = time.perf_counter()
            case()
            timings.append(time.perf_counter() - started)
        cpu = (time.process_time() - cpu_started) / calls
        print(f"{name:<26}{statistics.median(timings) * 1000:>9.2f}{cpu * 1000:>9.2f}{len(queries.captured_queries):>9}")


if __name__ == "__main__":
    main()
