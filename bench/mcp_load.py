"""MCP load benchmark: our server beside a bare FastMCP server of the official `mcp` SDK, same run.

Starts, on free loopback ports, our ASGI server (uvicorn + uvloop + httptools, DEBUG off, embedded
PostgreSQL unless DATABASE_URL) and `bench/bare_fastmcp_server.py` (official SDK, stateless, JSON
responses, a `get_ticket` reading the same row), with the same number of workers. Then it prints:

1. serial (one client) p50/p95 of `ping` and `get_ticket` on both, with ours ÷ bare ratios;
2. 16-client throughput of `ping` and `get_ticket` on both, with ratios;
3. our realistic 16-client mix (get_ticket, get_tickets, create_ticket, claim+heartbeat+release,
   send_message, ping) with each operation's p50 ÷ ping;
4. 64 clients racing `claim_next_task` (each claim is released again, untimed, to keep the queue full);
5. REST ticket detail p50 ÷ `/healthz` p50, serially.

    .venv/bin/python bench/mcp_load.py [--clients 16 --seconds 20 --workers 2 --claimers 64]
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
    def __init__(self, base_url: str, agent_id: str, token: str, workflow: str, path: str = "/mcp/"):
        self.agent_id, self.workflow, self.path = agent_id, workflow, path
        self.client = httpx.AsyncClient(base_url=base_url, headers={
            "Authorization": f"Bearer {token}", "Accept": "application/json, text/event-stream",
            "Content-Type": "application/json", "MCP-Protocol-Version": "2025-06-18"}, timeout=30)
        self.request_id = 0

    async def rpc(self, method: str, params: dict | None = None):
        self.request_id += 1
        body = {"jsonrpc": "2.0", "id": self.request_id, "method": method, "params": params or {}}
        response = await self.client.post(self.path, content=json.dumps(body))
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
    # Warm every worker process for create_ticket (its first call loads the local embedding model, seconds
    # of CPU that would otherwise land inside the measured window): one untimed create per client.
    warmers = [Agent(base_url, a, t, args.workflow) for a, t in agents]
    await asyncio.gather(*(w.tool("create_ticket", workflow_id=w.workflow, title=f"Warm-up ticket from {w.agent_id}",
                                  description="Created before the measured mix.") for w in warmers))
    for warmer in warmers:
        await warmer.client.aclose()
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


def summary(values: list[float]) -> tuple[float, float, float]:
    return percentile(values, 0.5) * 1000, percentile(values, 0.95) * 1000, percentile(values, 0.99) * 1000


async def serial(agent: Agent, operation: str, count: int, ticket_id: str) -> list[float]:
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        if operation == "ping":
            await agent.rpc("ping")
        else:
            _, error = await agent.tool("get_ticket", ticket_id=ticket_id)
            assert error is None, error
        samples.append(time.perf_counter() - started)
    return samples


async def throughput(agents: list[Agent], operation: str, seconds: float, ticket_ids: list[str]) -> tuple[float, list[float]]:
    samples: list[float] = []
    deadline = time.monotonic() + seconds

    async def loop(agent: Agent, index: int):
        while time.monotonic() < deadline:
            started = time.perf_counter()
            if operation == "ping":
                await agent.rpc("ping")
            else:
                await agent.tool("get_ticket", ticket_id=ticket_ids[index % len(ticket_ids)])
            samples.append(time.perf_counter() - started)
            index += 1

    started = time.monotonic()
    await asyncio.gather(*(loop(agent, index) for index, agent in enumerate(agents)))
    return len(samples) / (time.monotonic() - started), samples


async def claim_race(agents: list[Agent], seconds: float) -> tuple[float, list[float], int]:
    claims: list[float] = []
    empty = 0
    deadline = time.monotonic() + seconds

    async def loop(agent: Agent):
        nonlocal empty
        while time.monotonic() < deadline:
            started = time.perf_counter()
            claimed, error = await agent.tool("claim_next_task", workflow_id=agent.workflow)
            claims.append(time.perf_counter() - started)
            task = (claimed or {}).get("task")
            if not task:
                empty += 1
                continue
            await agent.tool("release_task", task_id=task["task_id"], fencing_token=task["fencing_token"])

    started = time.monotonic()
    await asyncio.gather(*(loop(agent) for agent in agents))
    return len(claims) / (time.monotonic() - started), claims, empty


async def head_to_head(args, agents: list[tuple[str, str]], bare_url: str):
    ours = [Agent(args.url, a, t, args.workflow) for a, t in agents]
    bare = [Agent(bare_url, a, "unused", args.workflow, path="/mcp") for a, t in agents]
    for agent in ours + bare:
        await agent.rpc("initialize", {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "bench", "version": "1"}})
    listing, _ = await ours[0].tool("get_tickets", workflow_id=args.workflow, limit=100)
    ticket_ids = [t["ticket_id"] for t in listing["tickets"]]
    for agent in (ours[0], bare[0]):  # warm both
        await serial(agent, "ping", 50, ticket_ids[0])
        await serial(agent, "get_ticket", 50, ticket_ids[0])
    print(f"\n1. serial, one client, {args.serial} calls each (p50 / p95 ms; ratio = ours / bare SDK)")
    print(f"{'operation':<12}{'ours p50':>10}{'ours p95':>10}{'bare p50':>10}{'bare p95':>10}{'p50 ratio':>11}")
    for operation in ("ping", "get_ticket"):
        mine = summary(await serial(ours[0], operation, args.serial, ticket_ids[0]))
        theirs = summary(await serial(bare[0], operation, args.serial, ticket_ids[0]))
        print(f"{operation:<12}{mine[0]:>10.2f}{mine[1]:>10.2f}{theirs[0]:>10.2f}{theirs[1]:>10.2f}{mine[0] / theirs[0]:>10.2f}x")
    print(f"\n2. {len(ours)} clients, {args.seconds:.0f} s each (calls/s; ratio = ours / bare SDK)")
    print(f"{'operation':<12}{'ours/s':>9}{'p50 ms':>8}{'p99 ms':>8}{'bare/s':>9}{'p50 ms':>8}{'p99 ms':>8}{'ratio':>8}")
    for operation in ("ping", "get_ticket"):
        mine_rate, mine = await throughput(ours, operation, args.seconds, ticket_ids)
        bare_rate, theirs = await throughput(bare, operation, args.seconds, ticket_ids)
        m, t = summary(mine), summary(theirs)
        print(f"{operation:<12}{mine_rate:>9.0f}{m[0]:>8.1f}{m[2]:>8.1f}{bare_rate:>9.0f}{t[0]:>8.1f}{t[2]:>8.1f}{mine_rate / bare_rate:>7.2f}x")
    for agent in ours + bare:
        await agent.client.aclose()


async def claims_and_rest(args, claimers: list[tuple[str, str]], rest_token: str, ticket_id: str):
    agents = [Agent(args.url, a, t, args.workflow + "-claims") for a, t in claimers]
    for agent in agents:
        await agent.rpc("initialize", {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "bench", "version": "1"}})
    rate, samples, empty = await claim_race(agents, args.seconds)
    p50, p95, p99 = summary(samples)
    print(f"\n4. {len(agents)} clients racing claim_next_task for {args.seconds:.0f} s: {rate:.0f} claims/s, "
          f"p50 {p50:.1f} / p95 {p95:.1f} / p99 {p99:.1f} ms ({empty} found nothing ready)")
    for agent in agents:
        await agent.client.aclose()
    async with httpx.AsyncClient(base_url=args.url, headers={"Authorization": f"Bearer {rest_token}"}, timeout=30) as client:
        timings: dict[str, list[float]] = {"rest": [], "healthz": []}
        for index in range(args.serial + 50):
            for name, path in (("rest", f"/api/tickets/{ticket_id}"), ("healthz", "/healthz")):
                started = time.perf_counter()
                response = await client.get(path)
                elapsed = time.perf_counter() - started
                assert response.status_code in (200, 503), (path, response.status_code, response.text[:200])
                if index >= 50:
                    timings[name].append(elapsed)
        rest, health = summary(timings["rest"]), summary(timings["healthz"])
        print(f"\n5. serial: REST ticket detail p50 {rest[0]:.2f} ms, /healthz p50 {health[0]:.2f} ms, ratio {rest[0] / health[0]:.2f}x")


def start(command: list[str], env: dict, url: str, probe: str) -> subprocess.Popen:
    process = subprocess.Popen(command, cwd=ROOT, env=env)
    for _ in range(600):
        try:
            httpx.get(f"{url}{probe}", timeout=1)
            return process
        except httpx.HTTPError:
            time.sleep(0.1)
    process.terminate()
    raise SystemExit(f"server did not start: {' '.join(command)}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--claimers", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--serial", type=int, default=300, help="calls per serial measurement")
    parser.add_argument("--workers", type=int, default=2, help="uvicorn worker processes of each server")
    parser.add_argument("--workflow", default="bench-load")
    args = parser.parse_args()
    agents = prepare(args.workflow, args.clients, tickets=200, tasks=400)
    claimers = prepare(args.workflow + "-claims", args.claimers, tickets=20, tasks=2000)
    from django.conf import settings

    from tickets.models import Ticket

    ticket_id = Ticket.objects.filter(workflow__slug=args.workflow).order_by("id").first().public_id
    env = {**os.environ, "DEBUG": "false", "MCP_RATE_LIMIT": "1000000/min", "API_RATE_LIMIT": "1000000/min",
           "BARE_DATABASE_URL": settings.DATABASE_URL, "PYTHONPATH": str(ROOT)}
    port, bare_port = free_port(), free_port()
    args.url = f"http://127.0.0.1:{port}"
    bare_url = f"http://127.0.0.1:{bare_port}"
    fast = ["--loop", "uvloop", "--http", "httptools", "--workers", str(args.workers), "--log-level", "warning"]
    ours = start([sys.executable, "-m", "uvicorn", "omoi_site.asgi:application", "--host", "127.0.0.1", "--port", str(port),
                  "--lifespan", "off", *fast], env, args.url, "/healthz")
    bare = start([sys.executable, "-m", "uvicorn", "bench.bare_fastmcp_server:app", "--host", "127.0.0.1", "--port",
                  str(bare_port), *fast], env, bare_url, "/mcp")
    try:
        print(f"servers: ours {args.url} and the bare SDK {bare_url}, {args.workers} uvicorn workers each, DEBUG off")
        asyncio.run(head_to_head(args, agents, bare_url))
        print("\n3. our mix")
        asyncio.run(run(args, agents))
        asyncio.run(claims_and_rest(args, claimers, agents[0][1], ticket_id))
    finally:
        for process in (ours, bare):
            process.terminate()
            process.wait(timeout=20)


if __name__ == "__main__":
    main()
