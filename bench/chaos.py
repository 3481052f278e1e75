"""Chaos benchmark: the swarm keeps its promises while the worker is killed, Redis and PostgreSQL restarted.

Runs bench/swarm_lib's scripted agents (20 by default) over MCP against a real `manage.py serve` (web server +
supervised background worker) on an embedded PostgreSQL and a Redis of its own (a data directory under
.data/chaos and a redis-server on a free port, so nothing shared is touched). As the swarm progresses it

1. kills the background worker with SIGKILL (at 20 % of the tasks completed),
2. kills redis-server and starts it again on the same port after 1 s (at 45 %),
3. shuts PostgreSQL down (SIGINT, its fast shutdown) and lets `serve` start it again (at 70 %),

and prints the recovery time of each (until a new worker heartbeats; until /healthz's channel layer answers;
until a REST call succeeds), what the agents retried, and the swarm's invariants: 0 duplicate executions,
0 lost tasks, every success an agent was told about present in the database. Exit status 1 if one fails.

Agents ride out outages as the project's own MCP client does: a dropped connection, 503 or "database
unavailable" is retried with backoff, each write carrying an idempotency_key.

    .venv/bin/python bench/chaos.py
    .venv/bin/python bench/chaos.py --tasks 400 --agents 20 --scale 0.4
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "omoi_site.settings")

from bench.swarm import free_port  # noqa: E402
from bench.swarm_lib import (  # noqa: E402
    Swarm,
    SwarmConfig,
    check_executions,
    create_plan,
    crosscheck_database,
    format_report,
    generate_plan,
)


def start_redis(port: int) -> subprocess.Popen:
    redis = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                              "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        probe = subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True, text=True)
        if probe.stdout.strip() == "PONG":
            return redis
        time.sleep(0.1)
    raise RuntimeError("redis-server did not start")


class Chaos:
    """The faults, injected as the swarm progresses, and how long each took to heal."""

    def __init__(self, url: str, token: str, workflow: str, serve: subprocess.Popen, redis_port: int, pgdata: Path):
        self.url, self.token, self.workflow = url, token, workflow
        self.serve, self.redis_port, self.pgdata = serve, redis_port, pgdata
        self.redis: subprocess.Popen | None = None
        self.recovery: dict[str, float] = {}
        self.http = httpx.AsyncClient(base_url=url, timeout=10, headers={"Authorization": f"Bearer {token}"})

    async def run(self, swarm: Swarm) -> None:
        faults = [(0.20, "worker killed (SIGKILL)", self.kill_worker),
                  (0.45, "Redis restarted", self.restart_redis),
                  (0.70, "PostgreSQL restarted", self.restart_postgres)]
        for fraction, name, fault in faults:
            while len(swarm.result.completed) < fraction * len(swarm.result.known_tasks):
                if swarm.done.is_set():
                    print(f"chaos: the swarm finished before '{name}'", flush=True)
                    return
                await asyncio.sleep(0.2)
            print(f"chaos: {name} at {len(swarm.result.completed)}/{len(swarm.result.known_tasks)} tasks completed",
                  flush=True)
            self.recovery[name] = await fault()
            print(f"chaos: recovered from '{name}' in {self.recovery[name]:.1f} s", flush=True)

    async def _until(self, condition, timeout: float = 120) -> float:
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            try:
                if await condition():
                    return time.monotonic() - started
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.2)
        raise RuntimeError(f"no recovery within {timeout} s")

    def _worker_pids(self) -> set[int]:
        import psutil

        return {child.pid for child in psutil.Process(self.serve.pid).children()
                if "worker" in " ".join(child.cmdline()) and child.status() != psutil.STATUS_ZOMBIE}

    async def kill_worker(self) -> float:
        from agents.models import WorkerHeartbeat

        (victim,) = self._worker_pids()
        os.kill(victim, signal.SIGKILL)
        killed = time.time()

        async def new_worker_beats():
            beats = await asyncio.to_thread(lambda: list(WorkerHeartbeat.objects.all()))
            return any(beat.beat_at.timestamp() > killed and not beat.worker_name.endswith(f":{victim}")
                       for beat in beats)

        return await self._until(new_worker_beats)

    async def restart_redis(self) -> float:
        subprocess.run(["redis-cli", "-p", str(self.redis_port), "shutdown", "nosave"], capture_output=True)
        started = time.monotonic()
        await asyncio.sleep(1.0)
        self.redis = await asyncio.to_thread(start_redis, self.redis_port)

        async def channel_layer_ok():
            health = (await self.http.get("/healthz")).json()
            return health["channel_layer"]["status"] == "ok" and not any("Redis" in r for r in health["reasons"])

        await self._until(channel_layer_ok)
        return time.monotonic() - started

    async def restart_postgres(self) -> float:
        postmaster = int((self.pgdata / "postmaster.pid").read_text().split()[0])
        os.kill(postmaster, signal.SIGINT)  # fast shutdown: sessions are cut; `serve` starts it again
        started = time.monotonic()

        async def rest_answers():
            return (await self.http.get("/api/tickets", params={"workflow": self.workflow})).status_code == 200

        await asyncio.sleep(0.5)
        await self._until(rest_answers)
        return time.monotonic() - started


async def run(url, agents, plan, task_ids, config, chaos: Chaos):
    swarm = Swarm(url, agents, plan, config)
    injector = asyncio.ensure_future(chaos.run(swarm))
    result = await swarm.run(task_ids)
    if not injector.done():
        injector.cancel()
    elif injector.exception():
        raise injector.exception()
    await chaos.http.aclose()
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=400)
    parser.add_argument("--tickets", type=int, default=25)
    parser.add_argument("--agents", type=int, default=20)
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--lease", type=int, default=6)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--patience", type=float, default=90, help="how long an agent rides out an outage")
    parser.add_argument("--timeout", type=float, default=900)
    parser.add_argument("--data-dir", default=str(ROOT / ".data" / "chaos"))
    args = parser.parse_args()

    if not shutil.which("redis-server"):
        print("redis-server is needed (bash .ci/run installs it)")
        return 2
    data_dir = Path(args.data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    redis_port = free_port()
    environment = {"OMOIOS_DATA_DIR": str(data_dir), "XDG_RUNTIME_DIR": str(data_dir / "run"),
                   "OMOIOS_EMBEDDED_PG_CLEANUP": "", "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
                   "TASK_LEASE_SECONDS": str(args.lease), "MAINTENANCE_INTERVAL_SECONDS": "1",
                   "MCP_TOKEN_CACHE_SECONDS": "5"}
    os.environ.pop("DATABASE_URL", None)
    os.environ.update(environment)
    (data_dir / "run").mkdir(mode=0o700, exist_ok=True)
    redis = start_redis(redis_port)

    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    plan = generate_plan(seed=args.seed, tasks=args.tasks, tickets=args.tickets, agents=args.agents, crash_agents=2,
                         discovery_rate=0.05, handoff_rate=0.03, prioritise_critical_path=True)
    workflow = f"chaos-{args.seed}-{int(time.time())}"
    agents, task_ids = create_plan(plan, workflow_slug=workflow)
    print(f"created workflow {workflow}: {len(task_ids)} tasks, {len(agents)} agents", flush=True)

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    serve = subprocess.Popen([sys.executable, "manage.py", "serve", "--port", str(port)], cwd=ROOT,
                             env={**os.environ}, start_new_session=True)
    chaos = None
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=2).json()["worker"]["status"] == "ok":
                    break
            except (httpx.HTTPError, ValueError, KeyError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("serve did not become healthy (with a worker) within 90 s")
            time.sleep(0.3)
        print(f"server: {url} (manage.py serve: web + supervised worker), Redis on port {redis_port}", flush=True)
        config = SwarmConfig(scale=args.scale, lease_seconds=float(args.lease), timeout=args.timeout,
                             workflow=workflow, outage_patience=args.patience)
        chaos = Chaos(url, agents[0][1], workflow, serve, redis_port, data_dir / "pg")
        result = asyncio.run(run(url, agents, plan, task_ids, config, chaos))
    finally:
        os.killpg(serve.pid, signal.SIGINT)
        try:
            serve.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(serve.pid, signal.SIGKILL)
        for process in (redis, chaos.redis if chaos else None):
            if process is not None and process.poll() is None:
                process.terminate()
                process.wait(timeout=10)

    from django.db import connections

    connections.close_all()  # this process's connection did not survive the PostgreSQL restart
    checks = check_executions(result)
    database = crosscheck_database(workflow, result)
    from tasks.models import Task

    completed_in_database = {task.public_id for task in Task.objects.filter(workflow__slug=workflow,
                                                                            status=Task.Status.COMPLETED)}
    reported_missing = sorted({task_id for task_id, *_ in result.completions} - completed_in_database)
    print()
    print(format_report(plan, config, result, checks, database, None))
    print("\nchaos")
    for name, seconds in chaos.recovery.items():
        print(f"  {name:<34} recovered in {seconds:5.1f} s")
    print(f"  {'agent retries during outages':<34} {dict(result.outage_retries)}")
    print(f"  {'successes missing from the database':<34} {len(reported_missing)}")
    print(f"\nmachine: {os.cpu_count()} cores, load average {' / '.join(f'{x:.1f}' for x in os.getloadavg())}")
    failures = {
        "duplicate_executions": checks["duplicate_executions"],
        "tasks_lost": len(checks["tasks_lost"]),
        "unexpected_errors": len(result.unexpected_errors),
        "not_completed": len(database["not_completed"]),
        "several_completion_events": len(database["tasks_with_several_completion_events"]),
        "claims_while_held": len(database["claims_while_held"]),
        "reported_successes_missing": len(reported_missing),
        "faults_not_injected": 3 - len(chaos.recovery),
        "timed_out": int(result.timed_out),
    }
    if any(failures.values()):
        print("\nINVARIANT FAILED:", {k: v for k, v in failures.items() if v}, flush=True)
        return 1
    print("\nall invariants held: 0 duplicate executions, 0 lost tasks, every reported success in the database")
    return 0


if __name__ == "__main__":
    sys.exit(main())
