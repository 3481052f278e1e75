"""MCP load benchmark: N concurrent agents doing a realistic mix of tool calls against a real server.

Starts the ASGI server (uvicorn, embedded PostgreSQL unless DATABASE_URL) on a free loopback port, or
uses --url. Each simulated agent has its own token and HTTP connection and loops over a weighted mix:
get_ticket, get_tickets, create_ticket, claim_next_task + heartbeat_task, send_message. The baseline in
the same run is MCP `ping` (the whole stack: HTTP, auth, JSON-RPC, no tool) — ratios are tool / ping.

    .venv/bin/python bench/mcp_load.py --clients 16 --seconds 20 [--workers 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "omoi_site.settings")

MIX = [("get_ticket", 30), ("get_tickets", 15), ("create_ticket", 10), ("claim_heartbeat", 15), ("send_message", 10), ("ping", 20)]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def prepare(workflow_slug: str, clients: int, tickets: int, tasks: int) -> list[tuple[str, str]]:
    import django

    django.setup()

    from django.core.management import call_command


    call_command("migrate", verbosity=0)  # benches run on the current schema
    from agents import services as agent_services
    from tasks.services import task_create
    from tickets.models import Ticket
    from tickets.services import ticket_create, workflow_get_or_create

    workflow = workflow_get_or_create(slug=workflow_slug)
    agents = []
    for index in range(clients):
        agent = agent_services.agent_create_or_update(agent_id=f"load-{index}", workflows=[workflow])
        agents.append((agent.agent_id, agent_services.agent_token_issue(agent=agent, label="bench")))
    owner = agent_services.agent_create_or_update(agent_id="load-owner", workflows=[workflow])
    existing = Ticket.objects.filter(workflow=workflow).count()
    for index in range(existing, tickets):
        ticket = ticket_create(actor=owner, workflow=workflow, title=f"Load ticket {index}",
                               description=f"Synthetic ticket number {index} for the load benchmark.")
        for task_index in range(tasks // max(tickets, 1)):
            task_create(actor=owner, ticket_id=ticket.id, phase_id="PHASE_IMPLEMENTATION",
                        description=f"Synthetic task {task_index} of ticket {index}")
    return agents


class Agent:
    def __init__(self, base_url: str, agent_id: str, token: str, workflow: str):
        self.agent_id, self.workflow = agent_id, workflow
        self.client = httpx.AsyncClient(base_url=base_url, headers={
            "Authorization": f"Bearer {token}", "Accept": "application/json, text/event-stream",
            "Content-Type": "application/json", "MCP-Protocol-Version": "2025-06-18"}, timeout=30)
        self.request_id = 0

    async def rpc(self, method: str, params: dict | None = None):
        self.request_id += 1
        body = {"jsonrpc": "2.0", "id": self.request_id, "method": method, "params": params or {}}
        response = await self.client.post("/mcp/", content=json.dumps(body))
        response.raise_for_status()
        payload = response.json()
        if "error" in payload:
            raise RuntimeError(payload["error"])
        return payload["result"]

    async def tool(self, name: str, **arguments):
        result = await self.rpc("tools/call", {"name": name, "arguments": arguments})
        text = result["content"][0]["text"]
        if result.get("isError"):
            return None, text
        return json.loads(text), None


async def agent_loop(agent: Agent, deadline: float, samples: dict, errors: dict, ticket_ids: list[str], peers: list[str]):
    await agent.rpc("initialize", {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "bench", "version": "1"}})
    names = [name for name, _ in MIX]
    weights = [weight for _, weight in MIX]
    rng = random.Random(agent.agent_id)
    while time.monotonic() < deadline:
        operation = rng.choices(names, weights)[0]
        started = time.perf_counter()
        error = None
        if operation == "ping":
            await agent.rpc("ping")
        elif operation == "get_ticket":
            _, error = await agent.tool("get_ticket", ticket_id=rng.choice(ticket_ids))
        elif operation == "get_tickets":
            _, error = await agent.tool("get_tickets", workflow_id=agent.workflow, limit=20)
        elif operation == "create_ticket":
            _, error = await agent.tool("create_ticket", workflow_id=agent.workflow, agent_id=agent.agent_id,
                                        title=f"Load ticket from {agent.agent_id}", description="Created during the load benchmark run.")
        elif operation == "claim_heartbeat":
            claimed, error = await agent.tool("claim_next_task", agent_id=agent.agent_id, workflow_id=agent.workflow)
            if claimed and claimed.get("task"):
                task = claimed["task"]
                _, error = await agent.tool("heartbeat_task", task_id=task["task_id"], agent_id=agent.agent_id,
                                            fencing_token=task["fencing_token"])
                await agent.tool("release_task", task_id=task["task_id"], agent_id=agent.agent_id, fencing_token=task["fencing_token"])
        elif operation == "send_message":
            _, error = await agent.tool("send_message", sender_agent_id=agent.agent_id, recipient_agent_id=rng.choice([p for p in peers if p != agent.agent_id] or ["load-owner"]),
                                        message="Status update from the load benchmark.")
        samples[operation].append(time.perf_counter() - started)
        if error:
            errors[operation] += 1
    await agent.client.aclose()


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


async def run(args, agents: list[tuple[str, str]]):
    base_url = args.url
    bootstrap = Agent(base_url, agents[0][0], agents[0][1], args.workflow)
    await bootstrap.rpc("initialize", {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "bench", "version": "1"}})
    listing, _ = await bootstrap.tool("get_tickets", workflow_id=args.workflow, limit=100)
    ticket_ids = [t["ticket_id"] for t in listing["tickets"]]
    await bootstrap.client.aclose()
    samples, errors = defaultdict(list), defaultdict(int)
    peers = [agent_id for agent_id, _ in agents]
    started = time.monotonic()
    deadline = started + args.seconds
    await asyncio.gather(*(agent_loop(Agent(base_url, a, t, args.workflow), deadline, samples, errors, ticket_ids, peers) for a, t in agents))
    elapsed = time.monotonic() - started
    total = sum(len(v) for v in samples.values())
    baseline = statistics.median(samples["ping"]) if samples["ping"] else None
    print(f"\n{args.clients} clients, {elapsed:.1f} s, {total} operations, {total / elapsed:.0f} ops/s overall "
          f"(server workers: {args.workers})")
    print(f"{'operation':<16}{'count':>7}{'ops/s':>8}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'p50/ping':>10}{'errors':>8}")
    for name, _ in MIX:
        values = samples[name]
        if not values:
            continue
        p50 = percentile(values, 0.5)
        ratio = f"{p50 / baseline:.1f}x" if baseline else "-"
        print(f"{name:<16}{len(values):>7}{len(values) / elapsed:>8.0f}{p50 * 1000:>9.1f}{percentile(values, 0.95) * 1000:>9.1f}"
              f"{percentile(values, 0.99) * 1000:>9.1f}{ratio:>10}{errors[name]:>8}")
    print("(claim_heartbeat = claim_next_task + heartbeat_task + release_task; ping = MCP ping, the baseline)")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--workers", type=int, default=2, help="uvicorn worker processes when starting the server")
    parser.add_argument("--url", help="use a running server instead of starting one")
    parser.add_argument("--workflow", default="bench-load")
    args = parser.parse_args()
    agents = prepare(args.workflow, args.clients, tickets=200, tasks=400)
    server = None
    if not args.url:
        port = free_port()
        args.url = f"http://127.0.0.1:{port}"
        server = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "omoi_site.asgi:application", "--host", "127.0.0.1", "--port", str(port),
             "--workers", str(args.workers), "--lifespan", "off", "--log-level", "warning"], cwd=ROOT,
        )
        for _ in range(300):
            try:
                if httpx.get(f"{args.url}/healthz", timeout=1).status_code in (200, 503):
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
    try:
        asyncio.run(run(args, agents))
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=20)


if __name__ == "__main__":
    main()
