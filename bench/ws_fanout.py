"""Websocket fan-out benchmark: N dashboard sockets on one workflow board, events published through the
real services, delivery latency (event `at` → client receive time) and delivered/expected counts.

    REDIS_URL=redis://127.0.0.1:6379/0 .venv/bin/python bench/ws_fanout.py --clients 200 --rate 20 --duration 10 --servers 2

Without --url it serves the ASGI app with `--servers` uvicorn processes (default 2, each on a free loopback
port, as replicas behind a load balancer) and spreads the sockets over them round-robin; events published
here reach them through Redis, as in production. With --url it targets a running
server that shares this machine's database and Redis. It uses the project database (the embedded
PostgreSQL unless DATABASE_URL is set): it creates workflow `bench-fanout`, staff user `bench-staff`,
agent `bench-agent` and a pool of tickets it moves backlog ⇄ analyzing with `ticket_change_status`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "omoi_site.settings")
os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/0")

WORKFLOW = "bench-fanout"
TICKET_POOL = 40


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--rate", type=float, default=20.0, help="events per second published through the services")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of publishing")
    parser.add_argument("--grace", type=float, default=5.0, help="seconds to wait for late deliveries")
    parser.add_argument("--url", help="target server, e.g. http://127.0.0.1:8000 (default: start --servers here)")
    parser.add_argument("--servers", type=int, default=2, help="web processes to start when --url is not given")
    return parser.parse_args()


def start_server() -> tuple[str, subprocess.Popen]:
    """uvicorn in its own process (as in production), so the 200 bench clients do not share its GIL."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "omoi_site.asgi:application", "--host", "127.0.0.1", "--port", str(port),
         "--lifespan", "off", "--log-level", "warning"],
        cwd=Path(__file__).resolve().parent.parent, env=os.environ.copy(),
    )
    deadline = time.monotonic() + 60
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("uvicorn did not start") from None
            time.sleep(0.1)
    return f"http://127.0.0.1:{port}", server


def prepare():
    """Workflow, staff session cookie, agent and the ticket pool (all reset to backlog)."""
    from django.contrib.auth.models import User
    from django.test import Client

    from agents.services import agent_create_or_update
    from tickets.models import Ticket
    from tickets.selectors import ticket_list
    from tickets.services import ticket_change_status, ticket_create, workflow_get_or_create

    workflow = workflow_get_or_create(slug=WORKFLOW, name="Websocket fan-out bench")
    user, _ = User.objects.get_or_create(username="bench-staff", defaults={"is_staff": True})
    client = Client()
    client.force_login(user)
    agent = agent_create_or_update(agent_id="bench-agent", workflows=[workflow])
    tickets, _ = ticket_list(workflow=workflow, limit=TICKET_POOL, include_completed=False, sort_by="created_at", sort_order="asc")
    for index in range(len(tickets), TICKET_POOL):
        tickets.append(ticket_create(actor=agent, workflow=workflow, title=f"Bench ticket {index}",
                                     description="A ticket the fan-out bench moves back and forth."))
    for ticket in tickets:
        if ticket.status != Ticket.Status.BACKLOG:
            ticket_change_status(actor=agent, ticket_id=ticket.pk, new_status="backlog", comment="Reset by the fan-out bench.")
    return client.cookies["sessionid"].value, agent, [t.pk for t in tickets]


def publish(agent, ticket_ids: list[int], rate: float, duration: float, published: list[float], stop: threading.Event):
    """Toggle tickets backlog ⇄ analyzing at `rate` per second; each call commits and publishes one event."""
    from django.db import close_old_connections

    from tickets.services import ticket_change_status

    status = dict.fromkeys(ticket_ids, "backlog")
    interval = 1.0 / rate
    start = time.monotonic()
    count = 0
    while not stop.is_set():
        due = start + count * interval
        if due - start >= duration:
            break
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        ticket_id = ticket_ids[count % len(ticket_ids)]
        target = "analyzing" if status[ticket_id] == "backlog" else "backlog"
        ticket_change_status(actor=agent, ticket_id=ticket_id, new_status=target, comment="Moved by the fan-out bench.")
        status[ticket_id] = target
        published.append(time.monotonic())
        count += 1
    close_old_connections()


async def client_task(ws_url: str, cookie: str, origin: str, ready: asyncio.Event, ready_count: list[int], total: int,
                      latencies: list[float], counts: list[int], index: int, done: asyncio.Event):
    import websockets

    async with websockets.connect(ws_url, additional_headers={"Cookie": f"sessionid={cookie}"}, origin=origin,
                                  max_queue=None, open_timeout=30) as ws:
        hello = json.loads(await ws.recv())
        assert hello["type"] == "subscribed", hello
        ready_count[0] += 1
        if ready_count[0] == total:
            ready.set()
        while not done.is_set():
            try:
                raw = await asyncio.wait_for(ws.recv(), timeout=0.5)
            except TimeoutError:
                continue
            received = datetime.now(UTC)
            message = json.loads(raw)
            if message.get("type") == "omoi.event" and message.get("event") == "ticket.status_changed":
                latencies.append((received - datetime.fromisoformat(message["at"])).total_seconds() * 1000)
                counts[index] += 1


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


async def run(args, base_urls: list[str], cookie: str, agent, ticket_ids: list[int]):
    def ws_url(base_url: str) -> str:
        return base_url.replace("http://", "ws://").replace("https://", "wss://") + f"/ws/dashboard/?workflow={WORKFLOW}&events=ticket.status_changed"

    ready, done = asyncio.Event(), asyncio.Event()
    ready_count = [0]
    latencies: list[float] = []
    counts = [0] * args.clients
    connect_started = time.monotonic()
    tasks = [asyncio.create_task(client_task(ws_url(base_urls[i % len(base_urls)]), cookie, base_urls[i % len(base_urls)], ready,
                                             ready_count, args.clients, latencies, counts, i, done))
             for i in range(args.clients)]
    await asyncio.wait_for(ready.wait(), timeout=60)
    connect_seconds = time.monotonic() - connect_started
    published: list[float] = []
    stop = threading.Event()
    publisher = threading.Thread(target=publish, args=(agent, ticket_ids, args.rate, args.duration, published, stop))
    publish_started = time.monotonic()
    publisher.start()
    while publisher.is_alive():
        await asyncio.sleep(0.1)
    publish_seconds = time.monotonic() - publish_started
    expected = len(published) * args.clients
    deadline = time.monotonic() + args.grace
    while sum(counts) < expected and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    done.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    delivered = sum(counts)
    print(f"web processes      {len(base_urls)}")
    print(f"clients            {args.clients} (all subscribed in {connect_seconds:.2f} s)")
    print(f"events published   {len(published)} in {publish_seconds:.2f} s ({len(published) / publish_seconds:.1f}/s, target {args.rate}/s)")
    print(f"delivered/expected {delivered}/{expected} ({100 * delivered / max(expected, 1):.2f} %)")
    if latencies:
        print(f"latency ms         p50 {percentile(latencies, 0.50):.1f}  p95 {percentile(latencies, 0.95):.1f}  "
              f"p99 {percentile(latencies, 0.99):.1f}  max {max(latencies):.1f}  mean {statistics.fmean(latencies):.1f}")
    print(f"channel layer      {os.environ.get('REDIS_URL') or 'in-memory'}")
    return delivered == expected


def main():
    args = parse_args()
    import django

    django.setup()

    from django.core.management import call_command


    call_command("migrate", verbosity=0)  # benches run on the current schema
    cookie, agent, ticket_ids = prepare()
    servers = []
    if args.url:
        base_urls = [args.url.rstrip("/")]
    else:
        started = [start_server() for _ in range(max(1, args.servers))]
        base_urls, servers = [url for url, _ in started], [process for _, process in started]
    try:
        complete = asyncio.run(run(args, base_urls, cookie, agent, ticket_ids))
    finally:
        for server in servers:
            server.terminate()
            server.wait(timeout=20)
    sys.exit(0 if complete else 1)


if __name__ == "__main__":
    main()
