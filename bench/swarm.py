"""Swarm benchmark: many agents, one dependency graph, no duplicated work.

Generates a seeded dependency graph of tickets and tasks (mixed durations, discoveries that spawn
follow-ups, hand-offs, crashing agents), creates it through the services in-process, starts the ASGI
server (uvicorn, `--workers 2`, a short TASK_LEASE_SECONDS so crashed agents' tasks come back quickly;
embedded PostgreSQL unless DATABASE_URL; Redis channel layer when one answers on 127.0.0.1:6379) or
uses --url, and lets N scripted agents drain it over MCP. Then it checks the invariants client-side and
in the database and prints makespan against the critical-path and work bounds, claim latency, MCP
calls per second, crash-reclaim delays and database/Redis CPU. Exit status 1 when an invariant fails.

    .venv/bin/python bench/swarm.py                                  # 1,000 tasks, 50 agents
    .venv/bin/python bench/swarm.py --tasks 200 --agents 16 --scale 0.2
    .venv/bin/python bench/swarm.py --url http://127.0.0.1:8000 --lease 300   # a running server

The core lives in bench/swarm_lib.py (tests/test_swarm.py runs a small swarm with it).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "omoi_site.settings")

from bench.swarm_lib import (  # noqa: E402
    SwarmConfig,
    check_executions,
    create_plan,
    crosscheck_database,
    format_report,
    generate_plan,
    run_swarm,
)

BENCH_REDIS_URL = "redis://127.0.0.1:6379/5"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def redis_answers() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=0.5) as connection:
            connection.sendall(b"PING\r\n")
            return connection.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def start_server(workers: int, env: dict) -> tuple[subprocess.Popen, str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "omoi_site.asgi:application",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            str(workers),
            "--lifespan",
            "off",
            "--log-level",
            "warning",
            "--no-access-log",
        ],
        cwd=ROOT,
        env=env,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code in (200, 503):
                return server, url
        except httpx.HTTPError:
            time.sleep(0.2)
    server.terminate()
    raise RuntimeError("the server did not answer /healthz within 60 s")


# --- CPU accounting (psutil): a process's own time, its reaped children's and its live children's ----------


def cpu_seconds(process, *, include_children: bool = True) -> float:
    import psutil

    try:
        times = process.cpu_times()
        if not include_children:
            return times.user + times.system
        total = times.user + times.system + times.children_user + times.children_system
        for child in process.children(recursive=True):
            try:
                child_times = child.cpu_times()
                total += child_times.user + child_times.system
            except psutil.Error:
                pass
        return total
    except psutil.Error:
        return 0.0


def watched_processes(server_pid: int | None) -> dict:
    import psutil
    from django.conf import settings

    processes = {}
    if getattr(settings, "DATABASE_KIND", "") == "embedded":
        data_dir = Path(os.environ.get("OMOIOS_DATA_DIR", settings.BASE_DIR / ".data"))
        try:
            postmaster = int((data_dir / "pg" / "postmaster.pid").read_text().split()[0])
            processes["postgres (all backends, shared server)"] = psutil.Process(postmaster)
        except (OSError, ValueError, psutil.Error):
            pass
    for process in psutil.process_iter(["name"]):
        if process.info["name"] == "redis-server":
            processes["redis-server"] = process
            break
    if server_pid:
        processes["uvicorn (2 workers: Django + MCP)"] = psutil.Process(server_pid)
    processes["swarm client (this process)"] = psutil.Process()
    return processes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--tickets", type=int, default=50)
    parser.add_argument("--agents", type=int, default=50)
    parser.add_argument("--crash-agents", type=int, default=2, help="agents killed mid-task (no release, no heartbeat)")
    parser.add_argument("--discovery-rate", type=float, default=0.05)
    parser.add_argument("--handoff-rate", type=float, default=0.03)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--scale", type=float, default=1.0, help="seconds per duration unit (mean task ≈ 2.4 units)")
    parser.add_argument("--lease", type=int, default=4, help="TASK_LEASE_SECONDS for the server it starts")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--flat-priorities", action="store_true", help="all tasks MEDIUM instead of by critical path")
    parser.add_argument("--timeout", type=float, default=900)
    parser.add_argument("--url", help="use a running server (its TASK_LEASE_SECONDS must equal --lease)")
    parser.add_argument("--workflow", help="workflow slug (default: swarm-<seed>-<time>)")
    args = parser.parse_args()

    if not os.environ.get("REDIS_URL") and redis_answers():
        os.environ["REDIS_URL"] = BENCH_REDIS_URL
    os.environ["TASK_LEASE_SECONDS"] = str(args.lease)
    import django

    django.setup()

    from django.core.management import call_command


    call_command("migrate", verbosity=0)  # benches run on the current schema

    plan = generate_plan(
        seed=args.seed,
        tasks=args.tasks,
        tickets=args.tickets,
        agents=args.agents,
        crash_agents=args.crash_agents,
        discovery_rate=args.discovery_rate,
        handoff_rate=args.handoff_rate,
        prioritise_critical_path=not args.flat_priorities,
    )
    workflow = args.workflow or f"swarm-{args.seed}-{int(time.time())}"
    started = time.monotonic()
    agents, task_ids = create_plan(plan, workflow_slug=workflow)
    print(
        f"created workflow {workflow}: {len(task_ids)} tasks in {args.tickets} tickets, {len(agents)} agents "
        f"in {time.monotonic() - started:.1f} s; critical path {plan.critical_path_units:.1f} units, "
        f"work bound {plan.work_bound_units:.1f} units",
        flush=True,
    )

    server = None
    url = args.url
    if not url:
        server, url = start_server(args.workers, dict(os.environ))
        print(
            f"server: {url} (uvicorn --workers {args.workers}, TASK_LEASE_SECONDS={args.lease}, "
            f"channel layer {'redis' if os.environ.get('REDIS_URL') else 'in-memory'})",
            flush=True,
        )
    config = SwarmConfig(scale=args.scale, lease_seconds=float(args.lease), timeout=args.timeout, workflow=workflow)
    try:
        processes = watched_processes(server.pid if server else None)
        own = processes["swarm client (this process)"]
        measure = lambda process: cpu_seconds(process, include_children=process.pid != own.pid)  # noqa: E731
        cpu_before = {name: measure(process) for name, process in processes.items()}
        result = asyncio.run(run_swarm(url, agents, plan, task_ids, config))
        cpu = {name: measure(process) - cpu_before[name] for name, process in processes.items()}
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
    checks = check_executions(result)
    database = crosscheck_database(workflow, result)
    print()
    print(format_report(plan, config, result, checks, database, cpu))
    print(
        f"\nmachine: {os.cpu_count()} cores, load average {' / '.join(f'{x:.1f}' for x in os.getloadavg())} at the end"
    )
    failures = [
        checks["duplicate_executions"],
        len(checks["tasks_lost"]),
        len(checks["unreclaimed_crashes"]),
        len(checks["stale_writes_accepted"]),
        len(result.unexpected_errors),
        len(database["not_completed"]),
        len(database["tasks_with_several_completion_events"]),
        len(database["completer_mismatches"]),
        len(database["claims_while_held"]),
        len(database["handoffs_accepted_from_a_non_holder"]),
        database["discoveries_spawning_unknown_tasks"],
        len(database["crashed_tasks_without_lease_expired_event"]),
        int(result.timed_out),
        int(result.aborted),
    ]
    if any(failures):
        print("\nINVARIANT FAILED:", {k: v for k, v in checks.items() if v}, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
