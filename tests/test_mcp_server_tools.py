"""Every MCP tool through the real `mcp` streamable-HTTP client: happy paths, error paths, database after."""

import httpx
import pytest

from collaboration.models import Handoff, Message, MessageReceipt
from tasks.models import Discovery, Task
from tickets.models import Ticket, TicketDependency, TicketEvent


def _pk(public_id: str) -> int:
    return int(public_id.split("-")[1])


@pytest.fixture
def agents(make_agent, workflow, other_workflow):
    """Three agents in test-flow, one in other-flow; returns their MCP clients."""
    return {
        "alice": make_agent("alice", workflow),
        "bob": make_agent("bob", workflow),
        "carol": make_agent("carol", workflow),
        "mallory": make_agent("mallory", other_workflow),
    }


@pytest.fixture
def clients(agents, mcp_for):
    return {name: mcp_for(token) for name, (_, token) in agents.items()}


def _ticket(client, agent="alice", **overrides):
    arguments = dict(workflow_id="test-flow", agent_id=agent, title="Cache warms too slowly",
                     description="The cache warm-up takes 40 seconds after each deploy.")
    arguments.update(overrides)
    return client.call("create_ticket", **arguments)["ticket"]


def test_server_lists_all_seed_tools_and_coordination_tools_with_strict_schemas(clients):
    tools = {tool.name: tool for tool in clients["alice"].list_tools()}
    seed = {
        "create_ticket", "get_ticket", "get_tickets", "get_ticket_history", "update_ticket", "change_ticket_status",
        "resolve_ticket", "search_tickets", "add_ticket_comment", "add_ticket_dependency", "remove_ticket_dependency",
        "link_commit", "create_task", "update_task_status", "get_task", "get_task_discoveries", "get_workflow_graph",
        "broadcast_message", "send_message", "get_messages", "request_handoff", "get_phase_history", "get_task_timeline",
        "get_agent_trajectory", "get_discoveries_by_type",
    }
    extras = {"claim_next_task", "heartbeat_task", "release_task", "accept_handoff", "decline_handoff",
              "get_ready_tickets", "register_conversation", "report_agent_event"}
    assert seed | extras <= set(tools)
    assert tools["get_ticket"].annotations.readOnlyHint is True
    assert tools["create_ticket"].inputSchema["additionalProperties"] is False
    assert set(tools["create_ticket"].inputSchema["required"]) == {"workflow_id", "title", "description"}  # agent_id: optional
    assert all(tool.description for tool in tools.values())


def test_no_token_is_401_and_get_is_405(asgi_server, transactional_db):
    response = httpx.post(f"{asgi_server.url}/mcp/", json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    bad = httpx.post(f"{asgi_server.url}/mcp/", json={}, headers={"Authorization": "Bearer omoi_not-a-token"})
    assert bad.status_code == 401
    assert httpx.get(f"{asgi_server.url}/mcp/", headers={"Authorization": "Bearer x"}, timeout=5).status_code in (401, 405)


def test_revoked_token_is_refused(agents, asgi_server):
    from agents.services import agent_tokens_revoke

    agent, token = agents["alice"]
    agent_tokens_revoke(agent=agent)
    response = httpx.post(f"{asgi_server.url}/mcp/", json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
                          headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401


def test_acting_as_another_agent_is_refused_and_changes_nothing(clients):
    error = clients["alice"].error("create_ticket", workflow_id="test-flow", agent_id="bob", title="Impersonation",
                                   description="Trying to act as bob here.")
    assert "your token belongs to 'alice'" in error and "agent_id" in error
    assert Ticket.objects.count() == 0


def test_agent_of_another_workflow_sees_nothing(clients):
    ticket = _ticket(clients["alice"])
    error = clients["mallory"].error("get_ticket", ticket_id=ticket["ticket_id"])
    assert f"No ticket {ticket['ticket_id']}" in error
    assert "No workflow 'test-flow'" in clients["mallory"].error("get_tickets", workflow_id="test-flow")
    assert clients["mallory"].error("create_task", ticket_id=ticket["ticket_id"], phase_id="PHASE_IMPLEMENTATION",
                                    description="Sneaky task from outside").startswith("No ticket")
    assert Task.objects.count() == 0


def test_validation_errors_name_the_argument_without_library_boilerplate(clients):
    alice = clients["alice"]
    short = alice.error("create_ticket", workflow_id="test-flow", agent_id="alice", title="ab", description="long enough text")
    assert "title" in short and "at least 3" in short
    assert "pydantic" not in short and "http" not in short
    unknown = alice.error("get_ticket", ticket_id="TKT-1", colour="blue")
    assert "Unknown argument 'colour'" in unknown and "ticket_id" in unknown
    missing = alice.error("get_ticket")
    assert "Missing required argument 'ticket_id'" in missing
    wrong_type = alice.error("get_tickets", workflow_id="test-flow", limit="many")
    assert "limit" in wrong_type
    enum = alice.error("create_ticket", workflow_id="test-flow", agent_id="alice", title="Title ok", description="long enough text",
                       priority="urgent")
    assert "priority" in enum and "'low'" in enum
    bad_id = alice.error("get_ticket", ticket_id="banana")
    assert "TKT-42" in bad_id
    assert "Unknown tool 'nope'" in alice.error("nope")
    assert Ticket.objects.count() == 0


def test_create_get_list_and_paginate_tickets(clients):
    alice = clients["alice"]
    created = [_ticket(alice, title=f"Ticket number {i}", priority=["low", "high"][i % 2]) for i in range(5)]
    detail = alice.call("get_ticket", ticket_id=created[0]["ticket_id"])
    assert detail["status"] == "backlog" and detail["allowed_next_statuses"] == ["analyzing"]
    page = alice.call("get_tickets", workflow_id="test-flow", limit=2, sort_by="created_at", sort_order="asc")
    assert [t["ticket_id"] for t in page["tickets"]] == [c["ticket_id"] for c in created[:2]]
    assert page["total"] == 5 and page["next_offset"] == 2
    last = alice.call("get_tickets", workflow_id="test-flow", limit=2, offset=4)
    assert last["next_offset"] is None and len(last["tickets"]) == 1
    high = alice.call("get_tickets", workflow_id="test-flow", priority="high")
    assert {t["priority"] for t in high["tickets"]} == {"high"} and high["total"] == 2


def test_status_machine_is_enforced_with_the_current_state_in_the_error(clients):
    alice = clients["alice"]
    ticket = _ticket(alice)
    error = alice.error("change_ticket_status", ticket_id=ticket["ticket_id"], agent_id="alice", new_status="testing",
                        comment="Skipping ahead to testing now.")
    assert error == f"ticket {ticket['ticket_id']} is in 'backlog'; allowed next: analyzing."
    assert Ticket.objects.get(pk=_pk(ticket["ticket_id"])).status == "backlog"
    for status in ["analyzing", "building", "building-done", "testing", "building", "building-done", "testing", "done"]:
        result = alice.call("change_ticket_status", ticket_id=ticket["ticket_id"], agent_id="alice", new_status=status,
                            comment=f"Moving the ticket to {status}.")
        assert result["ticket"]["status"] == status
    row = Ticket.objects.get(pk=_pk(ticket["ticket_id"]))
    assert (row.status, row.phase, row.resolved_at is not None) == ("done", "PHASE_DONE", True)
    done_error = alice.error("change_ticket_status", ticket_id=ticket["ticket_id"], agent_id="alice", new_status="building",
                             comment="Reopening the ticket now.")
    assert "allowed next: none" in done_error


def test_update_ticket_writes_one_history_row_per_field_and_refuses_status(clients):
    alice = clients["alice"]
    ticket = _ticket(alice)
    result = alice.call("update_ticket", ticket_id=ticket["ticket_id"], agent_id="alice",
                        updates={"priority": "critical", "tags": ["Perf", "cache"], "assigned_agent_id": "bob"},
                        update_comment="Triage")
    assert sorted(result["changed"]) == ["assigned_agent", "priority", "tags"]
    events = TicketEvent.objects.filter(ticket_id=_pk(ticket["ticket_id"]), event_type="updated")
    assert {(e.field, str(e.old_value), str(e.new_value)) for e in events} == {
        ("priority", "medium", "critical"), ("tags", "[]", "['perf', 'cache']"), ("assigned_agent", "None", "bob")
    }
    assert "change_ticket_status" in alice.error("update_ticket", ticket_id=ticket["ticket_id"], agent_id="alice",
                                                 updates={"status": "done"})
    assert "unknown or read-only" in alice.error("update_ticket", ticket_id=ticket["ticket_id"], agent_id="alice",
                                                 updates={"version": 9})
    stale = alice.error("update_ticket", ticket_id=ticket["ticket_id"], agent_id="alice", updates={"priority": "low"},
                        expected_version=1)
    assert "changed since you read it" in stale
    assert Ticket.objects.get(pk=_pk(ticket["ticket_id"])).priority == "critical"


def test_dependencies_reject_self_loops_and_cycles_naming_the_cycle(clients):
    alice = clients["alice"]
    a, b, c = (_ticket(alice, title=f"Ticket {n}") for n in "ABC")
    alice.call("add_ticket_dependency", ticket_id=b["ticket_id"], agent_id="alice", blocked_by_ticket_id=a["ticket_id"])
    alice.call("add_ticket_dependency", ticket_id=c["ticket_id"], agent_id="alice", blocked_by_ticket_id=b["ticket_id"])
    cycle = alice.error("add_ticket_dependency", ticket_id=a["ticket_id"], agent_id="alice", blocked_by_ticket_id=c["ticket_id"])
    assert f"{a['ticket_id']} → {c['ticket_id']} → {b['ticket_id']} → {a['ticket_id']}" in cycle
    assert "cannot block itself" in alice.error("add_ticket_dependency", ticket_id=a["ticket_id"], agent_id="alice",
                                                blocked_by_ticket_id=a["ticket_id"])
    assert "already blocked" in alice.error("add_ticket_dependency", ticket_id=b["ticket_id"], agent_id="alice",
                                            blocked_by_ticket_id=a["ticket_id"])
    assert TicketDependency.objects.count() == 2
    assert Ticket.objects.get(pk=_pk(a["ticket_id"])).is_blocked is False
    blocked_move = alice.error("change_ticket_status", ticket_id=b["ticket_id"], agent_id="alice", new_status="analyzing",
                               comment="Starting although blocked.")
    assert f"blocked by {a['ticket_id']}" in blocked_move
    removed = alice.call("remove_ticket_dependency", ticket_id=b["ticket_id"], agent_id="alice", blocked_by_ticket_id=a["ticket_id"])
    assert removed["ticket"].get("blocked") is None and removed["blocked_by"] == []
    assert "not blocked by" in alice.error("remove_ticket_dependency", ticket_id=b["ticket_id"], agent_id="alice",
                                           blocked_by_ticket_id=a["ticket_id"])


def test_resolve_unblocks_only_dependents_without_other_open_blockers(clients):
    alice = clients["alice"]
    first, second = _ticket(alice, title="First blocker"), _ticket(alice, title="Second blocker")
    both = _ticket(alice, title="Needs both", blocked_by_ticket_ids=[first["ticket_id"], second["ticket_id"]])
    only_first = _ticket(alice, title="Needs first", blocked_by_ticket_ids=[first["ticket_id"]])
    result = alice.call("resolve_ticket", ticket_id=first["ticket_id"], agent_id="alice", resolution_comment="Done with the first.")
    assert result["unblocked"] == [only_first["ticket_id"]]
    assert Ticket.objects.get(pk=_pk(both["ticket_id"])).is_blocked is True
    assert "already done" in alice.error("resolve_ticket", ticket_id=first["ticket_id"], agent_id="alice",
                                         resolution_comment="Resolving a second time.")
    blocked = alice.error("resolve_ticket", ticket_id=both["ticket_id"], agent_id="alice", resolution_comment="Close it anyway now.")
    assert second["ticket_id"] in blocked
    ready = alice.call("get_ready_tickets", workflow_id="test-flow")
    assert {t["ticket_id"] for t in ready["ready"]} == {second["ticket_id"], only_first["ticket_id"]}
    assert ready["not_ready"][0]["waiting_for"] == [second["ticket_id"]]


def test_comments_commits_and_history(clients):
    alice = clients["alice"]
    ticket = _ticket(alice)
    alice.call("add_ticket_comment", ticket_id=ticket["ticket_id"], agent_id="alice", comment_text="Looks like a cold cache.",
               mentions=["bob"])
    assert "mentions" in alice.error("add_ticket_comment", ticket_id=ticket["ticket_id"], agent_id="alice",
                                     comment_text="hello", mentions=["mallory"])
    first = alice.call("link_commit", ticket_id=ticket["ticket_id"], agent_id="alice", commit_sha="ABCDEF1234", commit_message="Warm cache")
    again = alice.call("link_commit", ticket_id=ticket["ticket_id"], agent_id="alice", commit_sha="abcdef1234")
    assert (first["already_linked"], again["already_linked"]) == (False, True)
    assert "commit_sha" in alice.error("link_commit", ticket_id=ticket["ticket_id"], agent_id="alice", commit_sha="not-a-sha")
    detail = alice.call("get_ticket", ticket_id=ticket["ticket_id"])
    assert detail["comments"][0]["text"] == "Looks like a cold cache." and detail["commits"] == [{"sha": "abcdef1234", "message": "Warm cache"}]
    history = alice.call("get_ticket_history", ticket_id=ticket["ticket_id"])["events"]
    assert [e["event"] for e in history] == ["created", "commented", "commit_linked"]


def test_discovery_spawns_exactly_one_boosted_task_and_graph_shows_both_edge_kinds(clients):
    alice = clients["alice"]
    ticket = _ticket(alice)
    base = alice.call("create_task", ticket_id=ticket["ticket_id"], phase_id="PHASE_IMPLEMENTATION",
                      description="Implement the cache warmer")["task"]
    follow = alice.call("create_task", ticket_id=ticket["ticket_id"], phase_id="PHASE_TESTING",
                        description="Test the cache warmer end to end", dependencies=[base["task_id"]])["task"]
    spawned = alice.call("create_task", ticket_id=ticket["ticket_id"], phase_id="PHASE_IMPLEMENTATION",
                         description="Fix the race in cache invalidation", priority="HIGH", discovery_type="bug",
                         discovery_description="Invalidation races with warm-up", source_task_id=base["task_id"], priority_boost=True)
    assert spawned["task"]["priority"] == "critical"
    assert Discovery.objects.get().spawned_task_id == _pk(spawned["task"]["task_id"])
    discoveries = alice.call("get_task_discoveries", task_id=base["task_id"])["discoveries"]
    assert [d["spawned_task_id"] for d in discoveries] == [spawned["task"]["task_id"]]
    assert alice.call("get_discoveries_by_type", discovery_type="bug")["discoveries"][0]["discovery_type"] == "bug"
    assert clients["mallory"].call("get_discoveries_by_type", discovery_type="bug")["discoveries"] == []
    graph = alice.call("get_workflow_graph", ticket_id=ticket["ticket_id"])
    assert {(e["from"], e["to"], e["type"]) for e in graph["edges"]} == {
        (base["task_id"], follow["task_id"], "depends_on"), (base["task_id"], spawned["task"]["task_id"], "discovery")
    }
    assert len(graph["nodes"]) == 3
    assert "source_task_id" in alice.error("create_task", ticket_id=ticket["ticket_id"], phase_id="PHASE_IMPLEMENTATION",
                                           description="Discovery without a source", discovery_type="bug")
    assert Task.objects.count() == 3 and Discovery.objects.count() == 1


def test_claims_follow_priority_and_dependencies_and_leases_fence_stale_holders(clients, settings):
    alice, bob = clients["alice"], clients["bob"]
    ticket = _ticket(alice)
    low = alice.call("create_task", ticket_id=ticket["ticket_id"], phase_id="PHASE_IMPLEMENTATION", description="Low priority work", priority="LOW")["task"]
    high = alice.call("create_task", ticket_id=ticket["ticket_id"], phase_id="PHASE_IMPLEMENTATION", description="High priority work", priority="HIGH")["task"]
    alice.call("create_task", ticket_id=ticket["ticket_id"], phase_id="PHASE_TESTING", description="Waits for the high one",
               priority="CRITICAL", dependencies=[high["task_id"]])
    first = alice.call("claim_next_task", agent_id="alice", workflow_id="test-flow")
    assert first["task"]["task_id"] == high["task_id"]
    token = first["task"]["fencing_token"]
    second = bob.call("claim_next_task", agent_id="bob", workflow_id="test-flow")
    assert second["task"]["task_id"] == low["task_id"]
    assert bob.call("claim_next_task", agent_id="bob", workflow_id="test-flow") == {"task": None}
    assert "you do not hold" in bob.error("heartbeat_task", task_id=high["task_id"], agent_id="bob")
    # alice's lease expires; bob reclaims the task; alice's late write is refused (fencing)
    Task.objects.filter(pk=_pk(high["task_id"])).update(lease_expires_at="2000-01-01T00:00:00Z")
    bob.call("release_task", task_id=low["task_id"], agent_id="bob")
    reclaimed = bob.call("claim_next_task", agent_id="bob", workflow_id="test-flow")
    assert reclaimed["task"]["task_id"] == high["task_id"] and reclaimed["task"]["fencing_token"] == token + 1
    stale = alice.error("update_task_status", task_id=high["task_id"], status="completed", fencing_token=token)
    assert "you do not hold" in stale
    assert Task.objects.get(pk=_pk(high["task_id"])).status == "claimed"
    bob.call("heartbeat_task", task_id=high["task_id"], agent_id="bob", fencing_token=token + 1)
    done = bob.call("update_task_status", task_id=high["task_id"], status="completed", result={"ok": True}, fencing_token=token + 1)
    assert done["task"]["status"] == "completed"
    unlocked = alice.call("claim_next_task", agent_id="alice", workflow_id="test-flow")
    assert unlocked["task"]["priority"] == "critical"
    timeline = alice.call("get_task_timeline", task_id=high["task_id"])["timeline"]
    assert [e["event"] for e in timeline] == ["created", "claimed", "lease_expired", "claimed", "status_changed"]


def test_illegal_task_transition_reports_allowed_next(clients):
    alice = clients["alice"]
    ticket = _ticket(alice)
    task = alice.call("create_task", ticket_id=ticket["ticket_id"], phase_id="PHASE_IMPLEMENTATION", description="Some real work")["task"]
    error = alice.error("update_task_status", task_id=task["task_id"], status="completed")
    assert error == f"task {task['task_id']} is 'pending'; allowed next: cancelled, claimed, running."


def test_messages_direct_broadcast_receipts_and_threads(clients):
    alice, bob, carol = clients["alice"], clients["bob"], clients["carol"]
    broadcast = alice.call("broadcast_message", sender_agent_id="alice", message="Deploy freeze at 5pm", message_type="warning")
    assert broadcast["recipients"] == 2
    direct = alice.call("send_message", sender_agent_id="alice", recipient_agent_id="bob", message="Can you review TKT-1?",
                        message_type="question")
    bob_inbox = bob.call("get_messages", agent_id="bob")["messages"]
    assert [m["message"] for m in bob_inbox] == ["Can you review TKT-1?", "Deploy freeze at 5pm"]
    assert all(m["read"] is False for m in bob_inbox)
    carol_inbox = carol.call("get_messages", agent_id="carol", mark_read=True)
    assert [m["to"] for m in carol_inbox["messages"]] == ["*"] and carol_inbox["marked_read"] == 1
    assert carol.call("get_messages", agent_id="carol", unread_only=True)["messages"] == []
    assert bob.call("get_messages", agent_id="bob", unread_only=True)["messages"][0]["message_id"] == direct["message_id"]
    assert alice.call("get_messages", agent_id="alice")["messages"] == []
    bob.call("send_message", sender_agent_id="bob", recipient_agent_id="alice", message="Sure, on it.", thread_id=direct["thread_id"])
    thread = alice.call("get_messages", agent_id="alice", thread_id=direct["thread_id"])["messages"]
    assert [m["from"] for m in thread] == ["alice", "bob"]
    assert "No agent 'mallory'" in alice.error("send_message", sender_agent_id="alice", recipient_agent_id="mallory", message="hi")
    assert "sender_agent_id" in bob.error("broadcast_message", sender_agent_id="alice", message="spoof")
    assert MessageReceipt.objects.filter(message__recipient__isnull=True).count() == 2
    assert Message.objects.count() == 3


def test_handoff_decline_keeps_task_and_second_answer_conflicts(clients):
    alice, bob = clients["alice"], clients["bob"]
    ticket = _ticket(alice)
    alice.call("create_task", ticket_id=ticket["ticket_id"], phase_id="PHASE_IMPLEMENTATION", description="Work to hand over")
    task = alice.call("claim_next_task", agent_id="alice", workflow_id="test-flow")["task"]
    assert "do not hold" in bob.error("request_handoff", from_agent_id="bob", to_agent_id="alice", task_id=task["task_id"],
                                      reason="I never held this task at all.")
    handoff = alice.call("request_handoff", from_agent_id="alice", to_agent_id="bob", task_id=task["task_id"],
                         reason="Bob knows this module better than me.")
    assert "already has an open hand-off" in alice.error("request_handoff", from_agent_id="alice", to_agent_id="carol",
                                                         task_id=task["task_id"], reason="Asking carol as well now.")
    assert "addressed to bob" in clients["carol"].error("accept_handoff", handoff_id=handoff["handoff_id"], agent_id="carol")
    declined = bob.call("decline_handoff", handoff_id=handoff["handoff_id"], agent_id="bob", reason="Busy")
    assert declined["status"] == "declined"
    assert "already 'declined'" in bob.error("accept_handoff", handoff_id=handoff["handoff_id"], agent_id="bob")
    row = Task.objects.get(pk=_pk(task["task_id"]))
    assert row.claimed_by_id == "alice" and Handoff.objects.get().status == "declined"
    assert [m["message_type"] for m in alice.call("get_messages", agent_id="alice")["messages"]] == ["handoff_declined"]


def test_idempotency_key_returns_first_result_and_creates_nothing_new(clients):
    alice = clients["alice"]
    first = alice.call("create_ticket", workflow_id="test-flow", agent_id="alice", title="Idempotent ticket",
                       description="Created once even if retried.", idempotency_key="k-1")
    again = alice.call("create_ticket", workflow_id="test-flow", agent_id="alice", title="Idempotent ticket",
                       description="Created once even if retried.", idempotency_key="k-1")
    assert first == again and Ticket.objects.count() == 1
    reuse = alice.error("broadcast_message", sender_agent_id="alice", message="hello", idempotency_key="k-1")
    assert "already used for create_ticket" in reuse


def test_trajectory_and_reported_events(clients):
    alice = clients["alice"]
    alice.call("report_agent_event", agent_id="alice", event_type="thought", payload={"text": "start with the cache"})
    ticket = _ticket(alice)
    alice.call("create_task", ticket_id=ticket["ticket_id"], phase_id="PHASE_IMPLEMENTATION", description="Implement the warmer")
    alice.call("claim_next_task", agent_id="alice", workflow_id="test-flow")
    steps = clients["bob"].call("get_agent_trajectory", agent_id="alice")["steps"]
    assert [s["event"] for s in steps] == ["thought", "task_created", "task_claimed"]
    assert "No agent 'alice'" in clients["mallory"].error("get_agent_trajectory", agent_id="alice")


def test_starting_a_task_directly_claims_it_but_respects_dependencies(clients):
    alice, bob = clients["alice"], clients["bob"]
    ticket = _ticket(alice)
    first = alice.call("create_task", ticket_id=ticket["ticket_id"], phase_id="PHASE_IMPLEMENTATION", description="First piece of work")["task"]
    second = alice.call("create_task", ticket_id=ticket["ticket_id"], phase_id="PHASE_TESTING", description="Second piece of work",
                        dependencies=[first["task_id"]])["task"]
    assert f"waits for {first['task_id']} (pending)" in alice.error("update_task_status", task_id=second["task_id"], status="running")
    claimed = alice.call("update_task_status", task_id=first["task_id"], status="claimed")["task"]
    assert claimed["claimed_by"] == "alice" and claimed["status"] == "claimed"
    assert "you do not hold" in bob.error("update_task_status", task_id=first["task_id"], status="completed")
    assert Task.objects.get(pk=_pk(first["task_id"])).status == "claimed"


def test_search_through_mcp_finds_paraphrases_error_strings_and_duplicates(clients):
    alice = clients["alice"]
    login = _ticket(alice, title="Fix login timeout bug",
                    description="Users get logged out after five minutes of inactivity; the session cookie lapses.")
    _ticket(alice, title="Dark mode for the dashboard", description="Add a dark colour scheme to every dashboard page.")
    crash = _ticket(alice, title="Exporter crashes on empty reports",
                    description="Export fails with KeyError: 'rows' in report_exporter.py line 88 when a report is empty.")
    semantic = alice.call("search_tickets", workflow_id="test-flow", agent_id="alice", query="sessions expire too early",
                          search_type="semantic", limit=3)["results"]
    assert semantic[0]["ticket_id"] == login["ticket_id"] and "semantic" in semantic[0]["matched"]
    keyword = alice.call("search_tickets", workflow_id="test-flow", agent_id="alice", query="KeyError: 'rows'",
                         search_type="keyword")["results"]
    assert keyword[0]["ticket_id"] == crash["ticket_id"]
    hybrid = alice.call("search_tickets", workflow_id="test-flow", agent_id="alice", query="people are signed out too soon")["results"]
    assert hybrid[0]["ticket_id"] == login["ticket_id"]
    duplicate = alice.call("create_ticket", workflow_id="test-flow", agent_id="alice", title="Login session times out too fast",
                           description="After a few minutes idle users are logged out and must sign in again.")
    assert duplicate["similar_tickets"][0]["ticket_id"] == login["ticket_id"]
    assert "search_type" in alice.error("search_tickets", workflow_id="test-flow", agent_id="alice", query="login", search_type="fuzzy")
    assert "filters" in alice.error("search_tickets", workflow_id="test-flow", agent_id="alice", query="login", filters={"colour": "red"})


def test_related_tasks_are_checked_and_recorded_on_creation(clients):
    alice = clients["alice"]
    origin = _ticket(alice, title="Origin ticket")
    task = alice.call("create_task", ticket_id=origin["ticket_id"], phase_id="PHASE_IMPLEMENTATION", description="The task that noticed it")["task"]
    assert "No task TSK-999999" in alice.error("create_ticket", workflow_id="test-flow", agent_id="alice", title="Follow-up",
                                               description="Found while working elsewhere.", related_task_ids=["TSK-999999"])
    assert Ticket.objects.count() == 1
    follow_up = _ticket(alice, title="Follow-up", related_task_ids=[task["task_id"]])
    created = alice.call("get_ticket_history", ticket_id=follow_up["ticket_id"])["events"][0]
    assert created["new"]["related_tasks"] == [task["task_id"]]
