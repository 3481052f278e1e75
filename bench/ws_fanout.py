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
    parser.add_argument("--publishers", type=int, default=1,
                        help="publishing threads, each moving its own share of the tickets at rate/N (their database "
                             "round trips overlap: one thread cannot keep 20 events/s on a loaded machine)")
    parser.add_argument("--client-processes", type=int, default=2,
                        help="processes the sockets are split over (0: in the bench process, beside the publisher)")
    parser.add_argument("--uvicorn-arg", action="append", default=[], metavar="ARG",
                        help="extra uvicorn command-line argument for the started web processes (repeatable), e.g. --uvicorn-arg=--ws=wsproto")
    return parser.parse_args()


def start_server(extra_args: list[str]) -> tuple[str, subprocess.Popen]:
    """uvicorn in its own process with production's websocket options (railway.json: no per-message deflate),
    so the 200 bench clients do not share its GIL."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "omoi_site.asgi:application", "--host", "127.0.0.1", "--port", str(port),
         "--lifespan", "off", "--log-level", "warning", "--ws-per-message-deflate", "false", *extra_args],
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


async def client_task(ws_url: str, cookie: str, origin: str, on_ready, latencies: list[float], counts: list[int], index: int):
    """One dashboard socket: wait for `subscribed`, then record the latency of every status change until
    cancelled. `async for` instead of `wait_for(recv(), timeout)` per message: that costs a timer and a task
    per message, and made the client the bottleneck it measures."""
    import websockets

    async with websockets.connect(ws_url, additional_headers={"Cookie": f"sessionid={cookie}"}, origin=origin,
                                  max_queue=None, open_timeout=60) as ws:
        hello = json.loads(await ws.recv())
        assert hello["type"] == "subscribed", hello
        on_ready()
        fromisoformat, now, loads = datetime.fromisoformat, datetime.now, json.loads
        async for raw in ws:
            received = now(UTC)
            message = loads(raw)
            if message.get("type") == "omoi.event" and message.get("event") == "ticket.status_changed":
                latencies.append((received - fromisoformat(message["at"])).total_seconds() * 1000)
                counts[index] += 1


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


def ws_url(base_url: str) -> str:
    return base_url.replace("http://", "ws://").replace("https://", "wss://") + f"/ws/dashboard/?workflow={WORKFLOW}&events=ticket.status_changed"


async def open_sockets(urls: list[str], cookie: str, latencies: list[float], counts: list[int]):
    """Open one socket per url (in this order); returns the tasks once all said `subscribed`."""
    ready = asyncio.Event()
    ready_count = [0]

    def on_ready():
        ready_count[0] += 1
        if ready_count[0] == len(urls):
            ready.set()

    tasks = [asyncio.create_task(client_task(ws_url(url), cookie, url, on_ready, latencies, counts, i)) for i, url in enumerate(urls)]
    waiter = asyncio.ensure_future(ready.wait())
    await asyncio.wait([waiter, *tasks], timeout=90, return_when=asyncio.FIRST_COMPLETED)
    if not ready.is_set():  # a socket failed (its task ended) or the timeout passed
        failed = [task.exception() for task in tasks if task.done() and not task.cancelled() and task.exception()]
        raise SystemExit(f"only {ready_count[0]}/{len(urls)} sockets subscribed; first error: {failed[:1]}")
    return tasks


async def close_sockets(tasks):
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def client_worker(config: dict):
    """`--client-worker`: a bench client process without Django. Protocol on stdin/stdout, one line each:
    → `ready`; ← `start`; ← `expect <events>`; → JSON {latencies, counts, cpu_seconds}."""
    loop = asyncio.get_running_loop()
    commands: asyncio.Queue[str] = asyncio.Queue()
    threading.Thread(target=lambda: [loop.call_soon_threadsafe(commands.put_nowait, line.strip()) for line in sys.stdin],
                     daemon=True).start()
    latencies: list[float] = []
    counts = [0] * len(config["urls"])
    tasks = await open_sockets(config["urls"], config["cookie"], latencies, counts)
    print("ready", flush=True)
    assert await commands.get() == "start"
    latencies.clear()
    counts[:] = [0] * len(counts)
    cpu_started = time.process_time()
    command = await commands.get()
    events = int(command.split()[1])
    deadline = time.monotonic() + config["grace"]
    while sum(counts) < events * len(counts) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    cpu_seconds = time.process_time() - cpu_started
    print(json.dumps({"latencies": latencies, "counts": counts, "cpu_seconds": cpu_seconds}), flush=True)
    await close_sockets(tasks)


def _process_cpu_seconds(pid: int) -> float:
    """utime + stime of a process from /proc (Linux), 0 when unreadable."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def _machine_busy_seconds() -> float:
    """CPU seconds the whole machine (all processes, all cores) spent busy so far, from /proc/stat."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
        return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError):
        return 0.0


def _redis_pid() -> int | None:
    try:
        import redis

        return int(redis.Redis.from_url(os.environ["REDIS_URL"]).info("server")["process_id"])
    except Exception:
        return None


async def run(args, base_urls: list[str], cookie: str, agent, ticket_ids: list[int], server_pids: list[int]):
    urls = [base_urls[i % len(base_urls)] for i in range(args.clients)]  # round-robin over the web processes
    connect_started = time.monotonic()
    workers: list[subprocess.Popen] = []
    latencies: list[float] = []
    counts = [0] * args.clients
    tasks = []
    if args.client_processes == 0:  # sockets in this process, beside the publisher thread
        tasks = await open_sockets(urls, cookie, latencies, counts)
    else:
        for k in range(args.client_processes):
            config = {"urls": urls[k::args.client_processes], "cookie": cookie, "grace": args.grace}
            workers.append(subprocess.Popen([sys.executable, __file__, "--client-worker", json.dumps(config)],
                                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True))
        for worker in workers:
            line = await asyncio.to_thread(worker.stdout.readline)
            if line.strip() != "ready":
                raise SystemExit(f"a bench client process failed to connect its sockets ({line.strip()!r})")
    connect_seconds = time.monotonic() - connect_started

    redis_pid = _redis_pid()
    watched = {"servers": server_pids, "redis": [redis_pid] if redis_pid else []}
    cpu_before = {name: [_process_cpu_seconds(pid) for pid in pids] for name, pids in watched.items()}
    machine_before, bench_before, window_started = _machine_busy_seconds(), time.process_time(), time.monotonic()
    load_before = os.getloadavg()
    for worker in workers:
        worker.stdin.write("start\n")
        worker.stdin.flush()
    published: list[float] = []
    stop = threading.Event()
    count = max(1, args.publishers)
    publishers = [threading.Thread(target=publish, args=(agent, ticket_ids[k::count], args.rate / count, args.duration, published, stop))
                  for k in range(count)]
    publish_started = time.monotonic()
    for publisher in publishers:
        publisher.start()
    while any(publisher.is_alive() for publisher in publishers):
        await asyncio.sleep(0.1)
    publish_seconds = time.monotonic() - publish_started
    expected = len(published) * args.clients
    client_cpu = 0.0
    if workers:
        for worker in workers:
            worker.stdin.write(f"expect {len(published)}\n")
            worker.stdin.flush()
        for worker in workers:
            result = json.loads(await asyncio.to_thread(worker.stdout.readline))
            latencies.extend(result["latencies"])
            counts.extend(result["counts"])
            client_cpu += result["cpu_seconds"]
        counts = counts[args.clients:]
    else:
        deadline = time.monotonic() + args.grace
        while sum(counts) < expected and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
    window = time.monotonic() - window_started
    bench_cpu = time.process_time() - bench_before
    machine_cpu = _machine_busy_seconds() - machine_before
    cpu = {name: [_process_cpu_seconds(pid) - before for pid, before in zip(watched[name], cpu_before[name], strict=True)] for name in watched}
    if workers:
        for worker in workers:
            worker.stdin.close()
            worker.wait(timeout=30)
    else:
        client_cpu = bench_cpu  # clients and publisher share this process: not separable
        await close_sockets(tasks)
    delivered = sum(counts)
    thousands = max(delivered, 1) / 1000
    print(f"web processes      {len(base_urls)}")
    print(f"clients            {args.clients} in {args.client_processes or 'the bench'} process(es) (all subscribed in {connect_seconds:.2f} s)")
    print(f"events published   {len(published)} in {publish_seconds:.2f} s ({len(published) / publish_seconds:.1f}/s, target {args.rate}/s)")
    print(f"delivered/expected {delivered}/{expected} ({100 * delivered / max(expected, 1):.2f} %)")
    if latencies:
        print(f"latency ms         p50 {percentile(latencies, 0.50):.1f}  p95 {percentile(latencies, 0.95):.1f}  "
              f"p99 {percentile(latencies, 0.99):.1f}  max {max(latencies):.1f}  mean {statistics.fmean(latencies):.1f}")
    servers_cpu = sum(cpu["servers"])
    print(f"cpu seconds        over {window:.1f} s: web processes {servers_cpu:.2f} ({' + '.join(f'{c:.2f}' for c in cpu['servers'])}), "
          f"bench clients {client_cpu:.2f}" + ("" if workers else " (with the publisher)") +
          (f", publisher {bench_cpu:.2f}" if workers else "") + f", redis {sum(cpu['redis']):.2f}, "
          f"whole machine {machine_cpu:.2f} ({machine_cpu / window:.2f} of {os.cpu_count()} cores busy)")
    print(f"cpu ms / 1000 deliv web processes {1000 * servers_cpu / thousands:.0f}, bench clients {1000 * client_cpu / thousands:.0f} "
          f"(clients {100 * client_cpu / max(machine_cpu, 1e-9):.0f} % of the machine's busy time)")
    load_after = os.getloadavg()
    print(f"machine load       (1/5/15 min, as `uptime`) at start {' '.join(f'{v:.2f}' for v in load_before)}, "
          f"at end {' '.join(f'{v:.2f}' for v in load_after)}")
    print(f"channel layer      {os.environ.get('REDIS_URL') or 'in-memory'}")
    return delivered == expected


def main():
    if sys.argv[1:2] == ["--client-worker"]:
        asyncio.run(client_worker(json.loads(sys.argv[2])))
        return
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
        started = [start_server(args.uvicorn_arg) for _ in range(max(1, args.servers))]
        base_urls, servers = [url for url, _ in started], [process for _, process in started]
    try:
        complete = asyncio.run(run(args, base_urls, cookie, agent, ticket_ids, [server.pid for server in servers]))
    finally:
        for server in servers:
            server.terminate()
            server.wait(timeout=20)
    sys.exit(0 if complete else 1)


if __name__ == "__main__":
    main()
