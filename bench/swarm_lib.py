"""The reusable core of the swarm benchmark (bench/swarm.py) and its small test (tests/test_swarm.py).

Three parts, importable separately:

- `generate_plan(...)`: a seeded, reproducible dependency graph of tickets and tasks with mixed
  durations, which tasks record a discovery (each spawns exactly one follow-up task), which hand off
  half-way, and which agents crash on which claim. It computes the critical path (longest path by
  duration, follow-ups released half-way through their source), the work bound (total work / agents)
  and the makespan lower bound max(both). Durations are in abstract units; `scale` turns them into
  seconds.
- `create_plan(...)` (needs Django): agents, tokens, tickets and tasks with dependencies, through the
  project's services, in-process.
- `run_swarm(...)` (no Django): N scripted agents, each with its own token and HTTP connection, driving
  raw MCP JSON-RPC: claim_next_task → heartbeat every lease/3 while "working" → create_task with a
  discovery → update_task_status completed with the fencing token; now and then request_handoff to an
  idle agent, which accept_handoff's (new fencing token) and finishes the task, or declines it. Crashing
  agents stop heartbeating without releasing (a kill); once another agent re-claimed the task they wake
  up as zombies and try to complete with their stale token, which the server must refuse.
- `check_executions(...)`, `crosscheck_database(...)` (needs Django), `format_report(...)`.

Idle agents poll claim_next_task with capped, jittered exponential backoff. Handoff requests reach the
target through an in-process mailbox (standing in for the realtime push a real agent would get); the
request and the acceptance themselves go through MCP.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import re
import statistics
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime

import httpx

PROTOCOL_VERSION = "2025-06-18"
DESCRIPTION_TAG = re.compile(r"\[swarm key=(?P<key>[\w.-]+) units=(?P<units>[\d.]+)\]")


# --- the plan ------------------------------------------------------------------------------------------


@dataclass
class PlannedTask:
    key: str
    ticket: int
    units: float
    depends_on: list[str] = field(default_factory=list)
    discovery_units: float | None = None  # records a discovery half-way; the follow-up takes this long
    handoff: str | None = None  # None | "accept" | "decline": asks an idle agent to take over half-way
    priority: str = "MEDIUM"


@dataclass
class Plan:
    seed: int
    tickets: int
    tasks: list[PlannedTask]
    agents: int
    crash_points: dict[int, tuple[int, float]]  # agent index -> (crash on its n-th task, at this fraction)
    critical_path_units: float = 0.0
    critical_path: list[str] = field(default_factory=list)
    total_units: float = 0.0

    @property
    def follow_up_count(self) -> int:
        return sum(1 for task in self.tasks if task.discovery_units is not None)

    @property
    def work_bound_units(self) -> float:
        return self.total_units / self.agents

    @property
    def lower_bound_units(self) -> float:
        return max(self.critical_path_units, self.work_bound_units)


def _draw_units(rng: random.Random) -> float:
    """Mixed durations: 60 % short, 30 % medium, 10 % long (mean ≈ 2.5 units)."""
    roll = rng.random()
    if roll < 0.6:
        return round(rng.uniform(0.5, 1.5), 2)
    if roll < 0.9:
        return round(rng.uniform(2.0, 4.0), 2)
    return round(rng.uniform(6.0, 10.0), 2)


def generate_plan(
    *,
    seed: int = 7,
    tasks: int = 1000,
    tickets: int = 50,
    agents: int = 50,
    crash_agents: int = 2,
    discovery_rate: float = 0.05,
    handoff_rate: float = 0.03,
    cross_ticket_rate: float = 0.04,
    prioritise_critical_path: bool = True,
) -> Plan:
    """A reproducible DAG: tasks come in topological order; each ticket is a contiguous block whose tasks
    mostly depend on one or two recent tasks of the same ticket, sometimes on a task of an earlier ticket."""
    rng = random.Random(seed)
    planned: list[PlannedTask] = []
    for index in range(tasks):
        ticket = index * tickets // tasks
        first_of_ticket = next(i for i in range(index + 1) if i * tickets // tasks == ticket)
        task = PlannedTask(key=f"t{index}", ticket=ticket, units=_draw_units(rng))
        same_ticket = list(range(first_of_ticket, index))
        if same_ticket and rng.random() < 0.7:
            window = same_ticket[-3:]
            task.depends_on += [f"t{i}" for i in rng.sample(window, k=min(len(window), rng.choice((1, 1, 2))))]
        if first_of_ticket > 0 and rng.random() < cross_ticket_rate:
            task.depends_on.append(f"t{rng.randrange(0, first_of_ticket)}")
        task.depends_on = sorted(set(task.depends_on), key=lambda key: int(key[1:]))
        if rng.random() < discovery_rate:
            task.discovery_units = round(rng.uniform(0.5, 2.0), 2)
        roll = rng.random()
        if roll < handoff_rate:
            task.handoff = "decline" if roll < handoff_rate / 5 else "accept"
        planned.append(task)
    crash_points = {}
    for agent_index in rng.sample(range(agents), k=min(crash_agents, max(agents - 1, 0))):
        crash_points[agent_index] = (rng.randint(1, 3), round(rng.uniform(0.2, 0.8), 2))
    plan = Plan(seed=seed, tickets=tickets, tasks=planned, agents=agents, crash_points=crash_points)
    _compute_bounds(plan)
    if prioritise_critical_path:
        _assign_priorities(plan)
    return plan


def _compute_bounds(plan: Plan) -> None:
    finish: dict[str, float] = {}
    best_parent: dict[str, str | None] = {}
    for task in plan.tasks:  # topological order by construction
        start, parent = 0.0, None
        for dependency in task.depends_on:
            if finish[dependency] > start:
                start, parent = finish[dependency], dependency
        finish[task.key] = start + task.units
        best_parent[task.key] = parent
        if task.discovery_units is not None:
            # The follow-up exists from the source's midpoint on and depends on nothing.
            follow_key = f"{task.key}.f"
            finish[follow_key] = start + task.units / 2 + task.discovery_units
            best_parent[follow_key] = task.key
    end_key = max(finish, key=finish.get)
    path, key = [], end_key
    while key is not None:
        path.append(key)
        key = best_parent[key]
    plan.critical_path = list(reversed(path))
    plan.critical_path_units = round(finish[end_key], 3)
    plan.total_units = round(sum(t.units + (t.discovery_units or 0.0) for t in plan.tasks), 3)


def _assign_priorities(plan: Plan) -> None:
    """Priority by bottom level (longest path from the task to the end): what a planner would do so that
    claim_next_task, which orders by priority, starts the long chains first."""
    dependents = defaultdict(list)
    for task in plan.tasks:
        for dependency in task.depends_on:
            dependents[dependency].append(task.key)
    by_key = {task.key: task for task in plan.tasks}
    bottom: dict[str, float] = {}
    for task in reversed(plan.tasks):
        tail = max((bottom[d] for d in dependents[task.key]), default=0.0)
        bottom[task.key] = task.units + tail
    ranked = sorted(bottom.values(), reverse=True)
    cut = [ranked[int(len(ranked) * share)] for share in (0.05, 0.2, 0.5)]
    for key, level in bottom.items():
        by_key[key].priority = (
            "CRITICAL" if level >= cut[0] else "HIGH" if level >= cut[1] else "MEDIUM" if level >= cut[2] else "LOW"
        )


def describe(key: str, units: float, text: str) -> str:
    return f"[swarm key={key} units={units}] {text}"


def parse_description(description: str) -> tuple[str, float]:
    match = DESCRIPTION_TAG.search(description or "")
    if not match:
        raise ValueError(f"not a swarm task: {description[:80]!r}")
    return match["key"], float(match["units"])


# --- creating the plan in the database (Django) ------------------------------------------------------


def create_plan(
    plan: Plan, *, workflow_slug: str, agent_prefix: str = "swarm"
) -> tuple[list[tuple[str, str]], dict[str, str]]:
    """Create agents (with tokens), tickets and tasks through the services. Returns ([(agent_id, token)],
    {plan key: task id})."""
    from django.db import transaction

    with transaction.atomic():  # one commit instead of thousands; events go out after it
        return _create_plan(plan, workflow_slug=workflow_slug, agent_prefix=agent_prefix)


def _create_plan(plan: Plan, *, workflow_slug: str, agent_prefix: str) -> tuple[list[tuple[str, str]], dict[str, str]]:
    from agents import services as agent_services
    from tasks.services import task_create
    from tickets.services import ticket_create, workflow_get_or_create

    workflow = workflow_get_or_create(slug=workflow_slug)
    agents = []
    for index in range(plan.agents):
        agent = agent_services.agent_create_or_update(agent_id=f"{agent_prefix}-{index}", workflows=[workflow])
        agents.append((agent.agent_id, agent_services.agent_token_issue(agent=agent, label="swarm")))
    planner = agent_services.agent_create_or_update(
        agent_id=f"{agent_prefix}-planner", workflows=[workflow], agent_type="coordinator"
    )
    ticket_ids = {}
    for ticket_index in range(plan.tickets):
        ticket = ticket_create(
            actor=planner,
            workflow=workflow,
            title=f"Swarm ticket {ticket_index}",
            description=f"Synthetic ticket {ticket_index} of the swarm benchmark (seed {plan.seed}).",
        )
        ticket_ids[ticket_index] = ticket.id
    task_ids: dict[str, str] = {}
    for planned in plan.tasks:
        task, _ = task_create(
            actor=planner,
            ticket_id=ticket_ids[planned.ticket],
            phase_id="PHASE_IMPLEMENTATION",
            description=describe(planned.key, planned.units, "synthetic unit of work"),
            priority=planned.priority,
            dependencies=[task_ids[d] for d in planned.depends_on],
        )
        task_ids[planned.key] = task.public_id
    return agents, task_ids


# --- the swarm (no Django) -----------------------------------------------------------------------------


@dataclass
class Segment:
    """One agent working one task under one fencing token."""

    task_id: str
    agent_id: str
    fencing_token: int
    start: float
    end: float | None = None
    last_renewal_sent: float = 0.0  # send time of the last accepted claim/heartbeat/accept (schedules heartbeats)
    lease_valid_until: float = 0.0  # the server's lease_expires_at (whole seconds, rounded down): a lower bound
    outcome: str = "working"  # completed | handed_off | crashed | lease_lost | stale_refused
    valid_end: float | None = None


@dataclass
class SwarmConfig:
    scale: float = 1.0  # seconds per unit
    lease_seconds: float = 5.0
    idle_backoff_start: float = 0.1
    idle_backoff_cap: float = 2.0
    timeout: float = 600.0
    workflow: str = "swarm"
    # > 0: agents ride out outages as a real agent would (bench/chaos.py): a dropped connection, HTTP 502/503/504
    # or "database unavailable" is retried with backoff for up to this many seconds, every write carrying an
    # idempotency_key so that a retried write is applied once.
    outage_patience: float = 0.0


@dataclass
class SwarmResult:
    segments: list[Segment] = field(default_factory=list)
    completions: list[tuple[str, str, int, float]] = field(default_factory=list)  # task, agent, token, time
    known_tasks: set[str] = field(default_factory=set)
    completed: set[str] = field(default_factory=set)
    spawned: dict[str, str] = field(default_factory=dict)  # follow-up task id -> source task id
    calls: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    call_errors: Counter = field(default_factory=Counter)
    unexpected_errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # refusals that are legitimate but worth reading
    crashes: list[dict] = field(default_factory=list)
    stale_refusals: Counter = field(default_factory=Counter)  # a stale holder's write refused: expected
    stale_accepted: list[str] = field(default_factory=list)  # a stale holder's write accepted: a bug
    handoffs: Counter = field(default_factory=Counter)
    empty_claims: int = 0
    started: float = 0.0
    finished: float = 0.0
    timed_out: bool = False
    aborted: bool = False  # an agent hit an unexpected error (e.g. HTTP 500) and the run was stopped
    outage_retries: Counter = field(default_factory=Counter)  # what made an agent retry (chaos runs only)
    write_tools: set[str] = field(default_factory=set)  # tools taking an idempotency_key (from tools/list)

    @property
    def makespan(self) -> float:
        return self.finished - self.started

    @property
    def total_calls(self) -> int:
        return sum(len(v) for v in self.calls.values())


class _Outage(Exception):
    """The server answered that it cannot serve right now (HTTP 502/503/504, database unavailable)."""


def _outage_kind(error: Exception) -> str:
    return str(error) if isinstance(error, _Outage) else type(error).__name__


class ToolRefused(Exception):
    """The tool ran and answered isError (a domain refusal: stale holder, not ready, …)."""


class Connection:
    """One agent's MCP connection: raw JSON-RPC over its own httpx client (stateless server)."""

    def __init__(self, url: str, token: str, result: SwarmResult, *, outage_patience: float = 0.0):
        self.outage_patience = outage_patience
        self.client = httpx.AsyncClient(
            base_url=url.rstrip("/"),
            timeout=httpx.Timeout(60.0),
            headers={
                "Authorization": f"Bearer {token}",
                "Accept": "application/json, text/event-stream",
                "Content-Type": "application/json",
                "MCP-Protocol-Version": PROTOCOL_VERSION,
            },
            limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
        )
        self.result = result
        self.request_id = 0

    async def rpc(self, method: str, params: dict | None = None) -> dict:
        self.request_id += 1
        body = {"jsonrpc": "2.0", "id": self.request_id, "method": method, "params": params or {}}
        deadline = time.monotonic() + self.outage_patience
        pause = 0.2
        while True:
            try:
                return await self._rpc_once(method, body)
            except (httpx.TransportError, _Outage) as error:
                if time.monotonic() >= deadline:
                    raise
                self.result.outage_retries[_outage_kind(error)] += 1
                await asyncio.sleep(pause)
                pause = min(2.0, pause * 2)

    async def _rpc_once(self, method: str, body: dict) -> dict:
        response = await self.client.post("/mcp/", content=json.dumps(body))
        if self.outage_patience and response.status_code in (502, 503, 504):
            raise _Outage(f"HTTP {response.status_code}")
        response.raise_for_status()
        payload = response.json()
        if "error" in payload:
            raise RuntimeError(f"{method}: {payload['error']}")
        result = payload["result"]
        if self.outage_patience and result.get("isError") and "database unavailable" in result["content"][0]["text"]:
            raise _Outage("tool error: database unavailable")
        return result

    async def initialize(self) -> None:
        await self.rpc(
            "initialize",
            {
                "protocolVersion": PROTOCOL_VERSION,
                "capabilities": {},
                "clientInfo": {"name": "omoios-swarm", "version": "1"},
            },
        )
        self.request_id += 1
        await self.client.post("/mcp/", content=json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}))

    async def tool(self, name: str, **arguments) -> dict:
        """Call a tool; returns its JSON result or raises ToolRefused with the server's text."""
        if self.outage_patience and name in self.result.write_tools:
            arguments = {**arguments, "idempotency_key": uuid.uuid4().hex}  # one key for all retries of this call
        started = time.perf_counter()
        try:
            result = await self.rpc("tools/call", {"name": name, "arguments": arguments})
        finally:
            self.result.calls[name].append(time.perf_counter() - started)
        text = result["content"][0]["text"]
        if result.get("isError"):
            self.result.call_errors[name] += 1
            raise ToolRefused(text)
        return json.loads(text)

    async def close(self) -> None:
        await self.client.aclose()


@dataclass
class HandoffOffer:
    handoff_id: str
    task_id: str
    remaining_units: float
    decline: bool
    answered: asyncio.Future  # resolves to (accepted: bool, accept_sent_at: float)
    accept_sent_at: float | None = None  # set just before the target sends accept_handoff


def _lease_until(lease_expires_at: str | None, fallback: float) -> float:
    """The server's lease expiry as a timestamp (same machine, same clock). The payload has whole seconds,
    so this is at most a second early: a conservative bound for the overlap check."""
    if not lease_expires_at:
        return fallback
    return datetime.fromisoformat(lease_expires_at).timestamp()


class Swarm:
    def __init__(self, url: str, agents: list[tuple[str, str]], plan: Plan, config: SwarmConfig):
        self.url, self.plan, self.config = url, plan, config
        self.agent_tokens = agents
        self.result = SwarmResult()
        self.planned_by_key = {task.key: task for task in plan.tasks}
        self.done = asyncio.Event()
        self.idle: dict[str, asyncio.Event] = {}  # agent id -> its wake-up event, while idle-polling
        self.reserved: set[str] = set()  # agents chosen as a handoff target, until they read their mailbox
        self.waiting: set[str] = set()  # agents waiting for the answer to their own handoff request
        self.mailboxes: dict[str, list[HandoffOffer]] = defaultdict(list)
        self.crashing = {agents[i][0]: point for i, point in plan.crash_points.items() if i < len(agents)}
        self.claimed_by_others: dict[str, asyncio.Event] = defaultdict(asyncio.Event)
        self.segments_by_task: dict[str, list[Segment]] = defaultdict(list)

    # -- bookkeeping

    def _open_segment(
        self, task_id: str, agent_id: str, token: int, sent_at: float, lease_expires_at: str | None
    ) -> Segment:
        segment = Segment(
            task_id=task_id,
            agent_id=agent_id,
            fencing_token=token,
            start=time.time(),
            last_renewal_sent=sent_at,
            lease_valid_until=_lease_until(lease_expires_at, sent_at + self.config.lease_seconds),
        )
        self.result.segments.append(segment)
        for other in self.segments_by_task[task_id]:
            if other.agent_id != agent_id and other.outcome == "crashed":
                self.claimed_by_others[task_id].set()
        self.segments_by_task[task_id].append(segment)
        return segment

    def _close(self, segment: Segment, outcome: str, *, valid_end: float | None = None) -> None:
        segment.end = time.time()
        segment.outcome = outcome
        segment.valid_end = valid_end if valid_end is not None else min(segment.end, segment.lease_valid_until)

    def _check_done(self) -> None:
        if self.result.known_tasks and self.result.completed >= self.result.known_tasks:
            self.done.set()
            for event in self.idle.values():
                event.set()

    # -- one agent

    async def run_agent(self, agent_id: str, token: str) -> None:
        connection = Connection(self.url, token, self.result, outage_patience=self.config.outage_patience)
        rng = random.Random(f"{self.plan.seed}:{agent_id}")
        claims = 0
        backoff = self.config.idle_backoff_start
        wake = asyncio.Event()
        try:
            await connection.initialize()
            while not self.done.is_set():
                if agent_id in self.reserved and not self.mailboxes[agent_id]:
                    await asyncio.sleep(0.01)  # chosen as a hand-off target: the request is on its way
                    continue
                if self.mailboxes[agent_id]:
                    offer = self.mailboxes[agent_id].pop(0)
                    self.reserved.discard(agent_id)
                    await self._answer_handoff(connection, agent_id, offer)
                    continue
                sent_at = time.time()
                claim = await connection.tool("claim_next_task", agent_id=agent_id, workflow_id=self.config.workflow)
                task = claim.get("task")
                if task is None:
                    self.result.empty_claims += 1
                    if self.done.is_set():
                        break
                    wake.clear()
                    self.idle[agent_id] = wake
                    try:
                        await asyncio.wait_for(wake.wait(), timeout=backoff * rng.uniform(0.5, 1.0))
                    except TimeoutError:
                        pass
                    finally:
                        self.idle.pop(agent_id, None)
                    backoff = min(backoff * 2, self.config.idle_backoff_cap)
                    continue
                backoff = self.config.idle_backoff_start
                claims += 1
                segment = self._open_segment(
                    task["task_id"], agent_id, task["fencing_token"], sent_at, task.get("lease_expires_at")
                )
                crash = self.crashing.get(agent_id)
                if crash and crash[0] == claims:
                    await self._crash(connection, segment, task, crash[1])
                    return
                await self._work_claimed(connection, agent_id, task, segment, rng)
        except Exception as error:  # reported, never swallowed; the run stops at once (fail fast)
            self.result.unexpected_errors.append(f"{agent_id}: {type(error).__name__}: {error}")
            self.result.aborted = True
            self.done.set()
        finally:
            await connection.close()

    async def _work(self, connection: Connection, segment: Segment, units: float) -> bool:
        """Work `units` × scale seconds of wall time, renewing the lease every lease/3 meanwhile (a heartbeat's
        latency overlaps the work, as in a real agent). False when the lease was lost."""
        deadline = time.time() + units * self.config.scale
        interval = self.config.lease_seconds / 3
        next_heartbeat = segment.last_renewal_sent + interval
        while (now := time.time()) < deadline:
            if now >= next_heartbeat:
                if not await self._heartbeat(connection, segment):
                    return False
                next_heartbeat = segment.last_renewal_sent + interval
                continue
            await asyncio.sleep(min(deadline, next_heartbeat) - now)
        return True

    async def _heartbeat(self, connection: Connection, segment: Segment) -> bool:
        sent_at = time.time()
        try:
            renewed = await connection.tool(
                "heartbeat_task",
                task_id=segment.task_id,
                agent_id=segment.agent_id,
                fencing_token=segment.fencing_token,
            )
        except ToolRefused:
            self.result.stale_refusals["heartbeat (lease lost)"] += 1
            self._close(segment, "lease_lost")
            return False
        self._renewed(segment, sent_at, renewed)
        return True

    def _renewed(self, segment: Segment, sent_at: float, renewed: dict) -> None:
        segment.last_renewal_sent = sent_at
        segment.lease_valid_until = max(
            segment.lease_valid_until,
            _lease_until(renewed.get("lease_expires_at"), sent_at + self.config.lease_seconds),
        )

    async def _work_claimed(
        self, connection: Connection, agent_id: str, task: dict, segment: Segment, rng: random.Random
    ) -> None:
        key, units = parse_description(task["description"])
        planned = self.planned_by_key.get(key)
        if not await self._work(connection, segment, units / 2):
            return
        if planned is not None and planned.discovery_units is not None:
            created = await connection.tool(
                "create_task",
                ticket_id=task["ticket_id"],
                phase_id="PHASE_IMPLEMENTATION",
                description=describe(f"{key}.f", planned.discovery_units, "follow-up found while working"),
                discovery_type=rng.choice(["bug", "technical_debt", "missing_requirement", "optimization"]),
                discovery_description=f"Found while working {task['task_id']} in the swarm benchmark.",
                source_task_id=task["task_id"],
            )
            spawned_id = created["task"]["task_id"]
            self.result.spawned[spawned_id] = task["task_id"]
            self.result.known_tasks.add(spawned_id)
        if (
            planned is not None
            and planned.handoff
            and await self._hand_off(connection, segment, units / 2, planned.handoff == "decline")
        ):
            return
        if not await self._work(connection, segment, units / 2):
            return
        await self._complete(connection, segment)

    async def _complete(self, connection: Connection, segment: Segment) -> None:
        try:
            await connection.tool(
                "update_task_status",
                task_id=segment.task_id,
                status="completed",
                result={"by": segment.agent_id, "fencing_token": segment.fencing_token},
                fencing_token=segment.fencing_token,
            )
        except ToolRefused:
            self.result.stale_refusals["complete (lease lost)"] += 1
            self._close(segment, "lease_lost")
            return
        self._close(segment, "completed", valid_end=time.time())
        self.result.completions.append((segment.task_id, segment.agent_id, segment.fencing_token, time.time()))
        self.result.completed.add(segment.task_id)
        self._check_done()

    # -- handoffs

    async def _hand_off(self, connection: Connection, segment: Segment, remaining_units: float, decline: bool) -> bool:
        """Ask an idle agent to finish the task. True when it took it over (this agent is done with it)."""
        # Prefer an idle agent; else a busy one, which answers after its current task. Never one that is
        # itself waiting for an answer: waits then always point at a non-waiting agent, so no cycle.
        eligible = [
            a
            for a, _ in self.agent_tokens
            if a != segment.agent_id and a not in self.crashing and a not in self.waiting and a not in self.reserved
        ]
        idle = sorted(a for a in eligible if a in self.idle)
        candidates = idle or eligible
        if not candidates:
            self.result.handoffs["skipped (nobody free)"] += 1
            return False
        self.result.handoffs["to an idle agent" if idle else "to a busy agent"] += 1
        target = random.Random(segment.task_id).choice(candidates)
        self.reserved.add(target)
        try:
            handoff = await connection.tool(
                "request_handoff",
                from_agent_id=segment.agent_id,
                to_agent_id=target,
                task_id=segment.task_id,
                reason="Swarm benchmark: handing the second half of this task to an idle agent.",
                context={"remaining_units": remaining_units},
            )
        except ToolRefused as refusal:
            # E.g. an earlier holder's request is still open: this holder finishes the task itself.
            self.reserved.discard(target)
            self.result.handoffs["request refused"] += 1
            self.result.notes.append(f"request_handoff {segment.task_id} by {segment.agent_id}: {refusal}")
            return False
        self.result.handoffs["requested"] += 1
        answered = asyncio.get_running_loop().create_future()
        offer = HandoffOffer(handoff["handoff_id"], segment.task_id, remaining_units, decline, answered)
        self.mailboxes[target].append(offer)
        if target in self.idle:
            self.idle[target].set()
        # Keep the lease alive until the target answers.
        interval = self.config.lease_seconds / 3
        self.waiting.add(segment.agent_id)
        try:
            while True:
                wait = max(0.0, segment.last_renewal_sent + interval - time.time())
                try:
                    accepted, accept_sent_at = await asyncio.wait_for(asyncio.shield(answered), timeout=wait)
                    break
                except TimeoutError:
                    if answered.done():
                        continue
                    sent_at = time.time()
                    try:
                        renewed = await connection.tool(
                            "heartbeat_task",
                            task_id=segment.task_id,
                            agent_id=segment.agent_id,
                            fencing_token=segment.fencing_token,
                        )
                        self._renewed(segment, sent_at, renewed)
                    except ToolRefused as refusal:
                        if offer.accept_sent_at is None:  # nobody took it over: the lease really ran out
                            self.result.stale_refusals["heartbeat (lease lost) awaiting a hand-off"] += 1
                            self.result.notes.append(
                                f"{segment.agent_id} lost {segment.task_id} while HND {offer.handoff_id} was open: {refusal}"
                            )
                            self._close(segment, "lease_lost")
                            return True
                        # The target's acceptance overtook this heartbeat; its answer is on its way.
                        self.result.stale_refusals["heartbeat racing the acceptance"] += 1
        finally:
            self.waiting.discard(segment.agent_id)
        if not accepted:
            self.result.handoffs["declined"] += 1
            return False
        self._close(segment, "handed_off", valid_end=accept_sent_at)
        self.result.handoffs["accepted"] += 1
        # The old holder's token must now be stale.
        try:
            await connection.tool(
                "heartbeat_task",
                task_id=segment.task_id,
                agent_id=segment.agent_id,
                fencing_token=segment.fencing_token,
            )
            self.result.stale_accepted.append(
                f"heartbeat by {segment.agent_id} on {segment.task_id} after its hand-off was accepted"
            )
        except ToolRefused:
            self.result.stale_refusals["heartbeat after hand-off"] += 1
        return True

    async def _answer_handoff(self, connection: Connection, agent_id: str, offer: HandoffOffer) -> None:
        if offer.decline:
            try:
                await connection.tool(
                    "decline_handoff",
                    handoff_id=offer.handoff_id,
                    agent_id=agent_id,
                    reason="Busy with my own queue, sorry.",
                )
            except ToolRefused as refusal:
                self.result.notes.append(f"decline_handoff {offer.handoff_id} by {agent_id}: {refusal}")
            if not offer.answered.done():
                offer.answered.set_result((False, 0.0))
            return
        sent_at = offer.accept_sent_at = time.time()
        try:
            accepted = await connection.tool("accept_handoff", handoff_id=offer.handoff_id, agent_id=agent_id)
        except ToolRefused as refusal:
            self.result.handoffs["accept refused"] += 1
            self.result.notes.append(f"accept_handoff {offer.handoff_id} by {agent_id}: {refusal}")
            if not offer.answered.done():
                offer.answered.set_result((False, 0.0))
            return
        segment = self._open_segment(offer.task_id, agent_id, accepted["fencing_token"], sent_at, None)
        if not offer.answered.done():
            offer.answered.set_result((True, sent_at))
        if await self._work(connection, segment, offer.remaining_units):
            await self._complete(connection, segment)

    # -- crashes

    async def _crash(self, connection: Connection, segment: Segment, task: dict, fraction: float) -> None:
        _, units = parse_description(task["description"])
        if not await self._work(connection, segment, units * fraction):
            return
        crashed_at = time.time()
        # Killed: no release, no more heartbeats; the lease stays valid until it runs out.
        self._close(segment, "crashed", valid_end=segment.lease_valid_until)
        record = {
            "agent_id": segment.agent_id,
            "task_id": segment.task_id,
            "crashed_at": crashed_at,
            "lease_expired_by": segment.valid_end,
            "reclaimed_at": None,
            "reclaimed_by": None,
        }
        self.result.crashes.append(record)
        # Dead until another agent holds the task, then a zombie with a stale fencing token.
        waiters = {
            asyncio.ensure_future(self.claimed_by_others[segment.task_id].wait()),
            asyncio.ensure_future(self.done.wait()),
        }
        _, pending = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        for waiter in pending:
            waiter.cancel()
        later = [s for s in self.segments_by_task[segment.task_id] if s.agent_id != segment.agent_id]
        if later:
            record["reclaimed_at"], record["reclaimed_by"] = later[0].start, later[0].agent_id
            try:
                await connection.tool(
                    "update_task_status",
                    task_id=segment.task_id,
                    status="completed",
                    result={"by": segment.agent_id, "zombie": True},
                    fencing_token=segment.fencing_token,
                )
                self.result.stale_accepted.append(
                    f"zombie {segment.agent_id} completed {segment.task_id} with stale token {segment.fencing_token}"
                )
                self.result.completions.append((segment.task_id, segment.agent_id, segment.fencing_token, time.time()))
            except ToolRefused:
                self.result.stale_refusals["zombie completion"] += 1

    # -- the whole run

    async def run(self, task_ids: dict[str, str]) -> SwarmResult:
        self.result.known_tasks = set(task_ids.values())
        if self.config.outage_patience:
            probe = Connection(self.url, self.agent_tokens[0][1], self.result)
            listed = await probe.rpc("tools/list")
            await probe.close()
            self.result.write_tools = {tool["name"] for tool in listed["tools"]
                                       if "idempotency_key" in tool["inputSchema"].get("properties", {})}
        self.result.started = time.time()
        runners = [asyncio.ensure_future(self.run_agent(agent_id, token)) for agent_id, token in self.agent_tokens]
        try:
            await asyncio.wait_for(self.done.wait(), timeout=self.config.timeout)
        except TimeoutError:
            self.result.timed_out = True
            self.done.set()
        self.result.finished = time.time()
        for event in self.idle.values():
            event.set()
        _, pending = await asyncio.wait(runners, timeout=self.config.lease_seconds * 3 + 30)
        for runner in pending:
            runner.cancel()
        return self.result


async def run_swarm(
    url: str, agents: list[tuple[str, str]], plan: Plan, task_ids: dict[str, str], config: SwarmConfig
) -> SwarmResult:
    return await Swarm(url, agents, plan, config).run(task_ids)


# --- checking --------------------------------------------------------------------------------------------


def check_executions(result: SwarmResult) -> dict:
    """Duplicates = a task completed by more than one agent, or two agents working it while both leases were
    valid. Conservatively: a segment counts from the claim's response until the earliest of the agent
    stopping and the lease expiry the server last granted (rounded down to the second); a completed
    segment until its completion; a handed-off one until the acceptor sent accept_handoff."""
    completions_per_task = Counter(task_id for task_id, *_ in result.completions)
    multiply_completed = sorted(t for t, n in completions_per_task.items() if n > 1)
    overlaps = []
    by_task = defaultdict(list)
    for segment in result.segments:
        by_task[segment.task_id].append(segment)
    for task_id, segments in by_task.items():
        for i, first in enumerate(segments):
            for second in segments[i + 1 :]:
                if first.agent_id == second.agent_id:
                    continue
                first_end = first.valid_end if first.valid_end is not None else math.inf
                second_end = second.valid_end if second.valid_end is not None else math.inf
                if first.start < second_end and second.start < first_end:
                    overlaps.append(
                        (task_id, first.agent_id, first.fencing_token, second.agent_id, second.fencing_token)
                    )
    lost = sorted(result.known_tasks - result.completed)
    unreclaimed = [c["task_id"] for c in result.crashes if c["reclaimed_at"] is None]
    return {
        "duplicate_executions": len(multiply_completed) + len(overlaps),
        "multiply_completed": multiply_completed,
        "overlapping_leases": overlaps,
        "tasks_lost": lost,
        "unreclaimed_crashes": unreclaimed,
        "stale_writes_accepted": list(result.stale_accepted),
    }


def crosscheck_database(workflow_slug: str, result: SwarmResult) -> dict:
    """The database's view: every task completed, exactly one completion event each (by the agent the
    client saw complete it), one discovery per follow-up, and no claim granted while another lease held."""
    from collaboration.models import Handoff
    from tasks.models import Discovery, Task, TaskEvent

    tasks = Task.objects.filter(workflow__slug=workflow_slug)
    status_counts = Counter(tasks.values_list("status", flat=True))
    completion_events = defaultdict(list)
    held: dict[int, str | None] = {}
    claims_while_held, handoffs_from_a_non_holder = [], []
    requesters = dict(Handoff.objects.filter(workflow__slug=workflow_slug).values_list("id", "from_agent_id"))
    for event in TaskEvent.objects.filter(task__workflow__slug=workflow_slug).order_by("id"):
        if event.event_type in ("claimed", "handoff_accepted"):
            if event.event_type == "claimed" and held.get(event.task_id):
                claims_while_held.append((f"TSK-{event.task_id}", held[event.task_id], event.actor_agent_id))
            if event.event_type == "handoff_accepted":
                handoff_pk = int(str(event.details.get("handoff_id", "HND-0")).split("-")[-1])
                if held.get(event.task_id) != requesters.get(handoff_pk):
                    handoffs_from_a_non_holder.append(
                        (f"TSK-{event.task_id}", f"HND-{handoff_pk}", held.get(event.task_id), event.actor_agent_id)
                    )
            held[event.task_id] = event.actor_agent_id
        elif event.event_type in ("lease_expired", "released"):
            held[event.task_id] = None
        elif event.event_type == "status_changed" and event.new_status in (
            "completed",
            "failed",
            "cancelled",
            "pending",
        ):
            held[event.task_id] = None
            if event.new_status == "completed":
                completion_events[f"TSK-{event.task_id}"].append(event.actor_agent_id)
    client_completer = {}
    for task_id, agent, *_ in result.completions:
        client_completer.setdefault(task_id, agent)
    mismatched = [
        t for t, agents in completion_events.items() if len(agents) == 1 and client_completer.get(t) != agents[0]
    ]
    spawned_ids = {int(task_id.split("-")[1]) for task_id in result.spawned}
    discoveries = Discovery.objects.filter(source_task__workflow__slug=workflow_slug)
    crashed_ids = [int(c["task_id"].split("-")[1]) for c in result.crashes]
    expired = set(
        TaskEvent.objects.filter(task_id__in=crashed_ids, event_type="lease_expired").values_list("task_id", flat=True)
    )
    return {
        "task_rows": tasks.count(),
        "status_counts": dict(status_counts),
        "not_completed": [t.public_id for t in tasks.exclude(status=Task.Status.COMPLETED)[:20]],
        "completion_events": sum(len(v) for v in completion_events.values()),
        "tasks_with_several_completion_events": sorted(t for t, v in completion_events.items() if len(v) > 1),
        "completer_mismatches": mismatched,
        "claims_while_held": claims_while_held,
        "handoffs_accepted_from_a_non_holder": handoffs_from_a_non_holder,
        "discoveries": discoveries.count(),
        "discoveries_spawning_unknown_tasks": discoveries.exclude(spawned_task_id__in=spawned_ids).count(),
        "crashed_tasks_without_lease_expired_event": [f"TSK-{i}" for i in crashed_ids if i not in expired],
        "handoffs": dict(
            Counter(Handoff.objects.filter(workflow__slug=workflow_slug).values_list("status", flat=True))
        ),
    }


# --- reporting -------------------------------------------------------------------------------------------


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


def format_report(
    plan: Plan, config: SwarmConfig, result: SwarmResult, checks: dict, database: dict | None, cpu: dict | None
) -> str:
    scale = config.scale
    critical = plan.critical_path_units * scale
    work = plan.work_bound_units * scale
    bound = plan.lower_bound_units * scale
    makespan = result.makespan
    claims = result.calls.get("claim_next_task", [])
    lines = [
        f"swarm: {plan.agents} agents ({len(plan.crash_points)} crash), {len(plan.tasks)} planned tasks in {plan.tickets} tickets "
        f"+ {len(result.spawned)} discovery follow-ups, seed {plan.seed}, scale {scale} s/unit, lease {config.lease_seconds:g} s",
        "",
        f"{'tasks completed':<44}{len(result.completed)} / {len(result.known_tasks)}",
        f"{'duplicate executions (must be 0)':<44}{checks['duplicate_executions']}",
        f"{'tasks lost (must be 0)':<44}{len(checks['tasks_lost'])}",
        f"{'stale writes accepted (must be 0)':<44}{len(checks['stale_writes_accepted'])}",
        f"{'stale writes refused (expected)':<44}{sum(result.stale_refusals.values())} {dict(result.stale_refusals)}",
        f"{'hand-offs':<44}{dict(result.handoffs)}",
        f"{'unexpected errors':<44}{len(result.unexpected_errors)}",
        "",
        f"{'makespan':<44}{makespan:.1f} s"
        + ("  (TIMED OUT)" if result.timed_out else "")
        + ("  (ABORTED)" if result.aborted else ""),
        f"{'critical path (longest path by duration)':<44}{critical:.1f} s  ({len(plan.critical_path)} tasks)",
        f"{'work bound (total work / agents)':<44}{work:.1f} s  ({plan.total_units * scale:.0f} s of work)",
        f"{'makespan / critical path':<44}{makespan / critical:.2f}",
        f"{'makespan / max(critical path, work bound)':<44}{makespan / bound:.2f}",
        "",
        f"{'claim latency p50 / p95 / p99':<44}{percentile(claims, 0.5) * 1000:.0f} / {percentile(claims, 0.95) * 1000:.0f} / "
        f"{percentile(claims, 0.99) * 1000:.0f} ms  ({len(claims)} claims, {result.empty_claims} found nothing ready)",
        f"{'MCP tool calls':<44}{result.total_calls} ({result.total_calls / makespan:.0f}/s)  "
        + ", ".join(f"{name} {len(v)}" for name, v in sorted(result.calls.items(), key=lambda kv: -len(kv[1]))),
    ]
    all_latencies = [value for values in result.calls.values() for value in values]
    lines.append(
        f"{'any call p50 / p95 / p99':<44}{percentile(all_latencies, 0.5) * 1000:.0f} / {percentile(all_latencies, 0.95) * 1000:.0f} / "
        f"{percentile(all_latencies, 0.99) * 1000:.0f} ms"
    )
    if result.crashes:
        waits = [c["reclaimed_at"] - c["crashed_at"] for c in result.crashes if c["reclaimed_at"] is not None]
        after_expiry = [
            c["reclaimed_at"] - c["lease_expired_by"] for c in result.crashes if c["reclaimed_at"] is not None
        ]
        if waits:
            lines.append(
                f"{'crashed tasks: crash → reclaimed min/med/max':<46}{min(waits):.1f} / {statistics.median(waits):.1f} / {max(waits):.1f} s"
                f"  (lease expiry → reclaimed {min(after_expiry):.1f} / {statistics.median(after_expiry):.1f} / {max(after_expiry):.1f} s)"
            )
        lines.append(f"{'crashed tasks reclaimed':<44}{len(waits)} / {len(result.crashes)}")
    if database is not None:
        lines += [
            "",
            f"{'database: task rows / status':<44}{database['task_rows']} {database['status_counts']}",
            f"{'database: completion events':<44}{database['completion_events']} (several for one task: {len(database['tasks_with_several_completion_events'])}, "
            f"completer ≠ client: {len(database['completer_mismatches'])})",
            f"{'database: claims granted while leased':<44}{len(database['claims_while_held'])}",
            f"{'database: hand-offs taken from a non-holder':<44}{len(database['handoffs_accepted_from_a_non_holder'])} "
            f"{database['handoffs_accepted_from_a_non_holder'][:3]}",
            f"{'database: discoveries':<44}{database['discoveries']} (spawning unknown tasks: {database['discoveries_spawning_unknown_tasks']})",
            f"{'database: crashed tasks w/o lease_expired':<44}{len(database['crashed_tasks_without_lease_expired_event'])}",
            f"{'database: hand-offs by status':<44}{database['handoffs']}",
        ]
    if cpu:
        lines.append("")
        for name, seconds in cpu.items():
            lines.append(f"{'CPU ' + name:<44}{seconds:.1f} s ({seconds / makespan * 100:.0f} % of one core)")
    if result.notes:
        lines += ["", f"notes ({len(result.notes)}, first 10):"] + [f"  {note}" for note in result.notes[:10]]
    if result.unexpected_errors:
        lines += ["", "unexpected errors (first 10):"] + [f"  {e}" for e in result.unexpected_errors[:10]]
    return "\n".join(lines)
