"""`manage.py demo`: the seed's multi-agent bug-fix workflow, end to end through the MCP endpoint.

coordinator files "Fix login timeout bug" (and a release ticket blocked by it) → launches worker-1 in a
local sandbox with a scripted LLM (no network) → worker-1 reads the ticket, creates an investigation task,
runs commands in its sandbox, broadcasts a discovery and requests a hand-off to db-specialist →
db-specialist accepts, completes the task, links a commit and resolves the ticket → the release ticket is
unblocked. Uses the running server (settings.MCP_SERVER_URL) when it answers, else serves in-process.
"""

from __future__ import annotations

import socket
import threading
import time

import httpx
from django.conf import settings
from django.core.management.base import BaseCommand

from agents import services as agent_services
from agents.models import Agent
from omoi_site.domain import TICKET_PREFIX, parse_public_id, task_public_id
from tasks.models import Task
from tickets.models import Ticket
from tickets.services import workflow_get_or_create

WORKFLOW = "demo"


def _server_answers(mcp_url: str) -> bool:
    base = mcp_url.split("/mcp")[0]
    try:
        return httpx.get(f"{base}/healthz", timeout=2).status_code in (200, 503)
    except httpx.HTTPError:
        return False


def _serve_in_process() -> str:
    import uvicorn

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config("omoi_site.asgi:application", host="127.0.0.1", port=port, lifespan="off", log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    return f"http://127.0.0.1:{port}/mcp/"


def worker_playbook(*, ticket_id: str, launch_task_id: str):
    """worker-1's scripted brain (what an LLM would do, played through the real OpenHands loop)."""
    return [
        ("ticket", "mcp__get_ticket", {"ticket_id": ticket_id}),
        ("start", "mcp__update_task_status", {"task_id": launch_task_id, "status": "running"}),
        ("investigation", "mcp__create_task", {
            "ticket_id": ticket_id, "phase_id": "PHASE_IMPLEMENTATION", "task_type": "investigation", "priority": "high",
            "description": "Investigate why sessions expire after 5 minutes instead of 8 hours"}),
        ("claim", "mcp__update_task_status", lambda m: {"task_id": m["investigation"]["task"]["task_id"], "status": "running"}),
        ("reproduce", "terminal", {"command": "printf 'SESSION_TTL = 300  # seconds\\nCACHE_BACKEND = \"db\"\\n' > settings.py && grep -n SESSION_TTL settings.py && uname -s"}),
        ("discovery", "mcp__broadcast_message", {
            "sender_agent_id": "worker-1", "message_type": "discovery", "ticket_id": ticket_id,
            "message": "Found it: SESSION_TTL is hard-coded to 300 s and sessions live in the DB cache table."}),
        ("handoff", "mcp__request_handoff", lambda m: {
            "from_agent_id": "worker-1", "to_agent_id": "db-specialist", "task_id": m["investigation"]["task"]["task_id"],
            "reason": "The session store is a PostgreSQL cache table; a DB specialist should fix the expiry.",
            "context": {"file": "settings.py", "finding": "SESSION_TTL = 300"}}),
        ("done", "mcp__update_task_status", {"task_id": launch_task_id, "status": "completed",
                                              "result": {"summary": "triaged; investigation handed to db-specialist"}}),
    ]


class Command(BaseCommand):
    help = "Run the multi-agent bug-fix demo end to end through MCP, printing each step."

    def add_arguments(self, parser):
        parser.add_argument("--url", help="MCP endpoint of a running server (default: settings.MCP_SERVER_URL, else in-process)")

    def step(self, text: str) -> None:
        self.stdout.write(f"[{time.monotonic() - self.started:6.2f}s] {text}")

    def handle(self, *args, **options):
        from agents.agent_side.mcp_client import MCPClient
        from agents.agent_side.scripted_brain import scripted_llm
        from agents.launcher import execute_run, launch_worker

        self.started = time.monotonic()
        mcp_url = options["url"] or settings.MCP_SERVER_URL
        if not _server_answers(mcp_url):
            mcp_url = _serve_in_process()
            self.step(f"no server at {settings.MCP_SERVER_URL}; serving in-process at {mcp_url}")
        else:
            self.step(f"using the running server at {mcp_url}")
        settings.MCP_SERVER_URL = mcp_url
        workflow = workflow_get_or_create(slug=WORKFLOW, name="Demo project")
        tokens = {}
        for agent_id, agent_type in (("coordinator", "coordinator"), ("worker-1", "implementer"), ("db-specialist", "specialist")):
            agent = agent_services.agent_create_or_update(agent_id=agent_id, workflows=[workflow], agent_type=agent_type)
            tokens[agent_id] = agent_services.agent_token_issue(agent=agent, label="demo", ttl_seconds=3600)
        coordinator = MCPClient(mcp_url, tokens["coordinator"])
        specialist = MCPClient(mcp_url, tokens["db-specialist"])

        bug = coordinator.call_tool("create_ticket", {
            "workflow_id": WORKFLOW, "agent_id": "coordinator", "title": "Fix login timeout bug", "ticket_type": "bug", "priority": "high",
            "description": "Users are logged out after 5 minutes although sessions should last 8 hours."})
        bug_id = bug["ticket"]["ticket_id"]
        similar = ", ".join(s["ticket_id"] for s in bug["similar_tickets"]) or "none"
        self.step(f"coordinator: created {bug_id} 'Fix login timeout bug' (similar tickets: {similar})")
        release = coordinator.call_tool("create_ticket", {
            "workflow_id": WORKFLOW, "agent_id": "coordinator", "title": "Release 2.4 to production",
            "description": "Ship release 2.4 once the login timeout bug is fixed.", "blocked_by_ticket_ids": [bug_id]})
        release_id = release["ticket"]["ticket_id"]
        self.step(f"coordinator: created {release_id} 'Release 2.4', blocked by {bug_id}")

        ticket = Ticket.objects.get(pk=parse_public_id(bug_id, TICKET_PREFIX, argument="ticket_id"))
        run = launch_worker(actor=Agent.objects.get(pk="coordinator"), template="implementer", ticket=ticket, agent_id="worker-1",
                            provider="local", enqueue=False)
        self.step(f"coordinator: launched worker-1 (run {run.pk}, {run.provider} sandbox — NOT isolated) on {task_public_id(run.task_id)}")

        def narrate(name, tool, arguments):
            self.step(f"worker-1 → {tool}({', '.join(f'{k}={v!r}'[:60] for k, v in arguments.items())})")

        llm = scripted_llm(worker_playbook(ticket_id=bug_id, launch_task_id=task_public_id(run.task_id)), on_step=narrate,
                           final_message="Triage done; hand-off requested.")
        run = execute_run(run.pk, llm=llm)
        self.step(f"worker-1: sandbox run {run.pk} {run.status} in {run.sandbox_seconds:.1f}s; sandbox {run.sandbox_id} torn down")

        inbox = specialist.call_tool("get_messages", {"agent_id": "db-specialist", "unread_only": True, "mark_read": True})["messages"]
        for message in inbox:
            self.step(f"db-specialist: inbox {message['message_type']} from {message['from']}: {message['message'][:70]}")
        request = next(m for m in inbox if m["message_type"] == "handoff_request")
        handoff_id = request["message"].split()[1]
        accepted = specialist.call_tool("accept_handoff", {"handoff_id": handoff_id, "agent_id": "db-specialist", "note": "On it."})
        task_id = accepted["task_id"]
        self.step(f"db-specialist: accepted {handoff_id}; now holds {task_id} (fencing token {accepted['fencing_token']})")
        specialist.call_tool("update_task_status", {"task_id": task_id, "status": "completed", "fencing_token": accepted["fencing_token"],
                                                    "result": {"fix": "SESSION_TTL read from settings (8 h); cache rows expire by TTL"}})
        self.step(f"db-specialist: completed {task_id}")
        specialist.call_tool("link_commit", {"ticket_id": bug_id, "agent_id": "db-specialist", "commit_sha": "3f9c2ab71d",
                                             "commit_message": "Read SESSION_TTL from settings; default 8 hours"})
        self.step(f"db-specialist: linked commit 3f9c2ab71d to {bug_id}")
        resolved = specialist.call_tool("resolve_ticket", {"ticket_id": bug_id, "agent_id": "db-specialist",
                                                           "resolution_comment": "Session TTL fixed: sessions last 8 hours again."})
        self.step(f"db-specialist: resolved {bug_id}; unblocked {', '.join(resolved['unblocked']) or 'nothing'}")
        release_now = coordinator.call_tool("get_ticket", {"ticket_id": release_id})
        history = coordinator.call_tool("get_ticket_history", {"ticket_id": bug_id})["events"]
        self.step(f"{release_id} blocked={release_now['blocked']}; {bug_id} history has {len(history)} events by "
                  f"{', '.join(sorted({e['actor'] for e in history if e.get('actor')}))}")
        completed = Task.objects.filter(ticket=ticket, status="completed").count()
        self.stdout.write(self.style.SUCCESS(
            f"demo complete: {bug_id} done, {release_id} unblocked, {completed} tasks completed. "
            f"See /dashboard/{WORKFLOW}/ and /admin/tickets/ticket/{ticket.pk}/change/"))
        coordinator.close()
        specialist.close()
