"""The seed's multi-agent bug-fix workflow, end to end through the real MCP client over HTTP."""

from tasks.models import Task
from tickets.models import Ticket


def test_seed_bug_fix_workflow_runs_end_to_end_through_mcp(mcp_for, make_agent, workflow):
    _, coordinator_token = make_agent("coordinator", workflow, agent_type="coordinator")
    _, worker_token = make_agent("worker-1", workflow)
    _, specialist_token = make_agent("db-specialist", workflow, agent_type="specialist")
    coordinator, worker, specialist = mcp_for(coordinator_token), mcp_for(worker_token), mcp_for(specialist_token)

    # 1. coordinator files the bug and a ticket that depends on it
    bug = coordinator.call(
        "create_ticket", workflow_id="test-flow", agent_id="coordinator", title="Fix login timeout bug",
        description="Users are logged out after 5 minutes although the session should last 8 hours.",
        ticket_type="bug", priority="high", assigned_agent_id="worker-1",
    )["ticket"]
    release = coordinator.call(
        "create_ticket", workflow_id="test-flow", agent_id="coordinator", title="Release 2.4 to production",
        description="Ship the release once the login bug is fixed.", blocked_by_ticket_ids=[bug["ticket_id"]],
    )["ticket"]
    assert release["blocked"] is True

    # 2-3. worker-1 reads the ticket, starts analysis, creates an investigation task and claims it
    assert worker.call("get_ticket", ticket_id=bug["ticket_id"])["title"] == "Fix login timeout bug"
    worker.call("change_ticket_status", ticket_id=bug["ticket_id"], agent_id="worker-1", new_status="analyzing",
                comment="Starting to investigate the session expiry.")
    task = worker.call("create_task", ticket_id=bug["ticket_id"], phase_id="PHASE_IMPLEMENTATION",
                       description="Investigate why sessions expire after 5 minutes", task_type="investigation",
                       priority="HIGH")["task"]
    claimed = worker.call("claim_next_task", agent_id="worker-1", workflow_id="test-flow")["task"]
    assert claimed["task_id"] == task["task_id"]

    # 4. broadcasts a discovery, then 5. requests a hand-off to the db specialist
    sent = worker.call("broadcast_message", sender_agent_id="worker-1", message="Session TTL is read from a cache key that expires.",
                       message_type="discovery", ticket_id=bug["ticket_id"])
    assert sent["recipients"] == 2
    handoff = worker.call("request_handoff", from_agent_id="worker-1", to_agent_id="db-specialist", task_id=task["task_id"],
                          reason="The session store lives in PostgreSQL; needs a DB specialist.", context={"finding": "ttl"})

    # 6. db-specialist sees the broadcast and the request, accepts, completes the task
    inbox = specialist.call("get_messages", agent_id="db-specialist")["messages"]
    assert {m["message_type"] for m in inbox} >= {"discovery", "handoff_request"}
    accepted = specialist.call("accept_handoff", handoff_id=handoff["handoff_id"], agent_id="db-specialist")
    assert accepted["status"] == "accepted"
    specialist.call("update_task_status", task_id=task["task_id"], status="completed", result={"root_cause": "ttl 300s"},
                    fencing_token=accepted["fencing_token"])

    # 7. links the commit and resolves the ticket; 8. the dependent is unblocked
    specialist.call("link_commit", ticket_id=bug["ticket_id"], agent_id="db-specialist", commit_sha="a1b2c3d4e5f6",
                    commit_message="Read session TTL from settings")
    resolved = specialist.call("resolve_ticket", ticket_id=bug["ticket_id"], agent_id="db-specialist",
                               resolution_comment="Session TTL fixed; sessions last 8 hours again.", commit_sha="a1b2c3d4e5f6")
    assert resolved["unblocked"] == [release["ticket_id"]]

    # the database agrees, and the history is complete
    bug_row = Ticket.objects.get(pk=int(bug["ticket_id"].split("-")[1]))
    assert (bug_row.status, bug_row.phase) == ("done", "PHASE_DONE")
    assert Ticket.objects.get(pk=int(release["ticket_id"].split("-")[1])).is_blocked is False
    task_row = Task.objects.get(pk=int(task["task_id"].split("-")[1]))
    assert (task_row.status, task_row.claimed_by_id) == ("completed", "db-specialist")
    history = coordinator.call("get_ticket_history", ticket_id=bug["ticket_id"])["events"]
    kinds = [e["event"] for e in history]
    assert kinds[0] == "created" and "commit_linked" in kinds and kinds.count("status_changed") == 2
    assert {e["actor"] for e in history} == {"coordinator", "worker-1", "db-specialist"}
    phases = coordinator.call("get_phase_history", ticket_id=bug["ticket_id"])["transitions"]
    assert [(p["from_phase"], p["to_phase"]) for p in phases] == [
        ("PHASE_BACKLOG", "PHASE_REQUIREMENTS"), ("PHASE_REQUIREMENTS", "PHASE_DONE")
    ]
    timeline = coordinator.call("get_task_timeline", task_id=task["task_id"])["timeline"]
    task_events = [e["event"] for e in timeline if e["kind"] == "event"]
    assert task_events == ["created", "claimed", "handoff_requested", "handoff_accepted", "status_changed"]
    assert [e["status"] for e in timeline if e["kind"] == "handoff"] == ["accepted"]
