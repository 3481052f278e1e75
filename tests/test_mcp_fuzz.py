"""Fuzz every MCP tool through the real streamable-HTTP endpoint with hypothesis-generated arguments
derived from its inputSchema: plausible values and real ids mixed with wrong types, nulls, oversize and
unusual unicode strings, missing required and unknown arguments.

Every call must come back as a result or as a tool error with a non-empty, specific message — never a
transport/HTTP error and never "Internal error" — and afterwards the database must still satisfy the
domain's invariants (no dangling or cross-workflow blockers, no cycles, blocked flags match open
blockers, held tasks have a holder and a lease, nothing written into a workflow the caller is not in).
"""

from __future__ import annotations

import asyncio
import json

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

EXAMPLES_PER_TOOL = 12
# The Python client cannot encode lone surrogates, and NUL, surrogates, huge integers and deep nesting are
# sent raw (httpx) by test_hostile_values_…, which also checks that nothing changed.
ALPHABET = st.characters(exclude_categories=("Cs",), exclude_characters="\x00")

ID_FIELDS = {
    "ticket_id": "TKT",
    "parent_ticket_id": "TKT",
    "blocked_by_ticket_id": "TKT",
    "task_id": "TSK",
    "source_task_id": "TSK",
    "handoff_id": "HND",
}
AGENT_FIELDS = (
    "agent_id",
    "sender_agent_id",
    "from_agent_id",
    "to_agent_id",
    "recipient_agent_id",
    "assigned_agent_id",
)


def _hostile():
    return st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**70), max_value=2**70),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(ALPHABET, max_size=40),
        st.text(ALPHABET, min_size=30_000, max_size=40_000),
        st.lists(st.text(ALPHABET, max_size=10), max_size=5),
        st.dictionaries(st.text(ALPHABET, max_size=10), st.text(ALPHABET, max_size=10), max_size=4),
    )


def _plausible(name: str, schema: dict, world: dict):
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    kind = schema.get("type")
    if name in ID_FIELDS:
        prefix = ID_FIELDS[name]
        return st.one_of(st.sampled_from(world["ids"][prefix]), st.integers(1, 10**7).map(lambda n: f"{prefix}-{n}"))
    if name in AGENT_FIELDS:
        return st.sampled_from(["alice", "alice", "bob", "stranger", "ghost"])
    if name == "workflow_id":
        return st.sampled_from(["test-flow", "test-flow", "other-flow", "no-such-flow"])
    if kind == "string":
        low = schema.get("minLength", 0)
        high = min(schema.get("maxLength", 200), 300)
        return st.text(ALPHABET, min_size=low, max_size=max(low, high))
    if kind == "integer":
        return st.integers(schema.get("minimum", -5), schema.get("maximum", 10**6))
    if kind == "boolean":
        return st.booleans()
    if kind == "array":
        item = schema.get("items", {})
        item_name = {
            "blocked_by_ticket_ids": "ticket_id",
            "related_task_ids": "task_id",
            "dependencies": "task_id",
            "mentions": "agent_id",
        }.get(name, "")
        return st.lists(_plausible(item_name, item, world), max_size=min(schema.get("maxItems", 5), 5))
    if kind == "object":
        if name == "updates":
            editable = st.fixed_dictionaries(
                {},
                optional={
                    "title": st.text(ALPHABET, max_size=60),
                    "description": st.text(ALPHABET, max_size=60),
                    "priority": st.sampled_from(["low", "high", "urgent"]),
                    "tags": st.lists(st.text(ALPHABET, max_size=8), max_size=3),
                    "assigned_agent_id": st.sampled_from(["bob", "stranger", None]),
                    "parent_ticket_id": st.sampled_from(world["ids"]["TKT"] + ["TKT-0", None]),
                    "status": st.just("done"),
                },
            )
            return editable
        return st.dictionaries(
            st.text(ALPHABET, max_size=10), st.one_of(st.text(ALPHABET, max_size=20), st.integers()), max_size=4
        )
    return _hostile()


def arguments_strategy(input_schema: dict, world: dict):
    properties = input_schema.get("properties", {})
    required = set(input_schema.get("required", []))

    @st.composite
    def build(draw):
        arguments = {}
        for name, schema in properties.items():
            present = draw(st.integers(0, 9)) < (9 if name in required else 5)
            if not present:
                continue
            hostile = draw(st.integers(0, 9)) < 2
            arguments[name] = draw(_hostile() if hostile else _plausible(name, schema, world))
        if draw(st.integers(0, 9)) == 0:
            arguments[draw(st.text(ALPHABET, min_size=1, max_size=12))] = draw(_hostile())
        return arguments

    return build()


def generate(strategy, count: int) -> list[dict]:
    examples: list[dict] = []

    @given(strategy)
    @settings(
        max_examples=count,
        derandomize=True,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
        deadline=None,
    )
    def collect(value):
        examples.append(value)

    collect()
    return examples


async def call_all(url: str, token: str, calls: list[tuple[str, dict]]) -> list[tuple[str, dict, bool, str]]:
    from mcp import ClientSession
    from mcp.client.streamable_http import streamablehttp_client

    outcomes = []
    async with streamablehttp_client(url, headers={"Authorization": f"Bearer {token}"}) as (read, write, _):
        async with ClientSession(read, write) as session:
            await session.initialize()
            for name, arguments in calls:
                result = await session.call_tool(name, arguments)
                text = result.content[0].text if result.content else ""
                outcomes.append((name, arguments, bool(result.isError), text))
    return outcomes


@pytest.fixture
def world(transactional_db, workflow, other_workflow, make_agent):
    from collaboration import services as collaboration
    from tasks import services as tasks
    from tickets import services as tickets

    alice, token = make_agent("alice", workflow)
    bob, _ = make_agent("bob", workflow)
    stranger, _ = make_agent("stranger", other_workflow)
    first = tickets.ticket_create(
        actor=alice, workflow=workflow, title="Pool too small", description="The pool runs dry."
    )
    second = tickets.ticket_create(
        actor=alice,
        workflow=workflow,
        title="Login timeout",
        description="Login takes 30 seconds.",
        blocked_by_ticket_ids=[first.public_id],
    )
    foreign = tickets.ticket_create(
        actor=stranger, workflow=other_workflow, title="Their ticket", description="Not alice's business."
    )
    task, _ = tasks.task_create(
        actor=alice, ticket_id=first.public_id, phase_id="PHASE_IMPLEMENTATION", description="Investigate the pool."
    )
    tasks.task_create(
        actor=alice, ticket_id=second.public_id, phase_id="PHASE_TESTING", description="Write a regression test."
    )
    foreign_task, _ = tasks.task_create(
        actor=stranger, ticket_id=foreign.public_id, phase_id="PHASE_DESIGN", description="Their own task."
    )
    tasks.task_claim_next(agent=bob, workflow=workflow)
    handoff = collaboration.handoff_request(
        from_agent=bob, to_agent_id="alice", task_id=task.public_id, reason="Alice, please take this."
    )
    return {
        "token": token,
        "foreign_workflow_id": other_workflow.id,
        "ids": {
            "TKT": [first.public_id, second.public_id, foreign.public_id],
            "TSK": [task.public_id, foreign_task.public_id],
            "HND": [handoff.public_id],
        },
    }


def foreign_snapshot(workflow_id: int) -> dict:
    from collaboration.models import Message
    from tasks.models import Task
    from tickets.models import Ticket, TicketComment, TicketEvent

    return {
        "tickets": list(
            Ticket.objects.filter(workflow_id=workflow_id)
            .order_by("id")
            .values_list("id", "version", "status", "title")
        ),
        "tasks": list(
            Task.objects.filter(workflow_id=workflow_id).order_by("id").values_list("id", "status", "claimed_by_id")
        ),
        "events": TicketEvent.objects.filter(ticket__workflow_id=workflow_id).count(),
        "comments": TicketComment.objects.filter(ticket__workflow_id=workflow_id).count(),
        "messages": Message.objects.filter(workflow_id=workflow_id).count(),
    }


def assert_database_consistent() -> None:
    from collaboration.models import Handoff
    from tasks.models import Discovery, Task
    from tickets.models import Ticket, TicketDependency

    edges: dict[int, set[int]] = {}
    for dependency in TicketDependency.objects.select_related("ticket", "blocker"):
        assert dependency.ticket_id != dependency.blocker_id
        assert dependency.ticket.workflow_id == dependency.blocker.workflow_id, dependency
        edges.setdefault(dependency.ticket_id, set()).add(dependency.blocker_id)

    def reaches(start: int, target: int, seen: set[int]) -> bool:
        for nxt in edges.get(start, ()):
            if nxt == target or (nxt not in seen and (seen.add(nxt) or reaches(nxt, target, seen))):
                return True
        return False

    for ticket_id in edges:
        assert not reaches(ticket_id, ticket_id, set()), f"dependency cycle through TKT-{ticket_id}"
    for ticket in Ticket.objects.all():
        open_blockers = (
            TicketDependency.objects.filter(ticket=ticket).exclude(blocker__status=Ticket.Status.DONE).exists()
        )
        if ticket.is_blocked:
            assert open_blockers, f"{ticket.public_id} is flagged blocked without an open blocker"
        elif ticket.status != Ticket.Status.DONE:
            assert not open_blockers, f"{ticket.public_id} has an open blocker but is not flagged blocked"
        assert ticket.phase == Ticket.STATUS_PHASE[Ticket.Status(ticket.status)]
        assert ticket.version >= 1
        if ticket.parent_id:
            assert ticket.parent.workflow_id == ticket.workflow_id
        if ticket.assigned_agent_id:
            assert ticket.assigned_agent.workflows.filter(pk=ticket.workflow_id).exists()
    for task in Task.objects.select_related("ticket"):
        assert task.workflow_id == task.ticket.workflow_id
        if task.status in (Task.Status.CLAIMED, Task.Status.RUNNING):
            assert task.claimed_by_id and task.lease_expires_at, (
                f"{task.public_id} is {task.status} without a holder/lease"
            )
        for dependency in task.depends_on.all():
            assert dependency.workflow_id == task.workflow_id
    for discovery in Discovery.objects.select_related("source_task", "spawned_task"):
        if discovery.spawned_task_id:
            assert discovery.spawned_task.workflow_id == discovery.source_task.workflow_id
    for handoff in Handoff.objects.select_related("task"):
        assert handoff.workflow_id == handoff.task.workflow_id
        assert handoff.from_agent_id != handoff.to_agent_id


@pytest.mark.slow
def test_every_tool_survives_fuzzed_arguments(world, asgi_server):
    from omoi_site.mcp_endpoint import load_tools

    # given every tool and a batch of generated arguments for each
    before_foreign = foreign_snapshot(world["foreign_workflow_id"])
    calls = []
    for name, tool in sorted(load_tools().items()):
        for arguments in generate(arguments_strategy(tool.input_schema(), world), EXAMPLES_PER_TOOL):
            calls.append((name, arguments))
    calls += [("no_such_tool", {}), ("get_ticket", {"ticket_id": "TKT-1", "ticket_id\x00": 1})]

    # when they are all called through the real endpoint (a transport error raises here)
    outcomes = asyncio.run(call_all(f"{asgi_server.url}/mcp/", world["token"], calls))

    # then each is a result or a specific tool error
    assert len(outcomes) == len(calls)
    problems = []
    for name, arguments, is_error, text in outcomes:
        shown = json.dumps(arguments, ensure_ascii=True)[:300]
        if is_error:
            if not text.strip() or "Internal error" in text or "Traceback" in text:
                problems.append(f"{name}({shown}) -> {text[:200]!r}")
        else:
            try:
                json.loads(text)
            except ValueError:
                problems.append(f"{name}({shown}) -> non-JSON result {text[:200]!r}")
    assert not problems, "\n".join(problems[:20])
    errors = sum(1 for outcome in outcomes if outcome[2])
    assert 0 < errors < len(outcomes)  # the fuzz reached both the happy path and the error paths

    # and the database is still consistent, and nothing leaked into the other workflow
    assert_database_consistent()
    assert foreign_snapshot(world["foreign_workflow_id"]) == before_foreign


def test_nul_character_in_an_argument_is_a_clear_tool_error(world, asgi_server):
    calls = [
        (
            "add_ticket_comment",
            {"ticket_id": world["ids"]["TKT"][0], "agent_id": "alice", "comment_text": "nul \x00 byte"},
        ),
        ("get_ticket", {"ticket_id": world["ids"]["TKT"][0], "idempotency_key": "x"}),
        (
            "create_ticket",
            {
                "workflow_id": "test-flow",
                "agent_id": "alice",
                "title": "Nul\x00title",
                "description": "A description long enough.",
            },
        ),
    ]
    outcomes = asyncio.run(call_all(f"{asgi_server.url}/mcp/", world["token"], calls))
    for name, _arguments, is_error, text in outcomes:
        assert is_error and text.strip() and "Internal error" not in text, (name, text)
    assert any("NUL character" in text for _name, _arguments, _is_error, text in outcomes)
    assert_database_consistent()


def database_snapshot() -> dict:
    """Row counts and versions of everything a tool can write."""
    from collaboration.models import Handoff, Message
    from tasks.models import Discovery, Task
    from tickets.models import Ticket, TicketComment, TicketDependency, TicketEvent

    return {
        "tickets": list(Ticket.objects.order_by("id").values_list("id", "version", "status", "title", "tags")),
        "tasks": list(Task.objects.order_by("id").values_list("id", "status", "claimed_by_id", "fencing_token", "result")),
        "events": TicketEvent.objects.count(),
        "comments": TicketComment.objects.count(),
        "dependencies": TicketDependency.objects.count(),
        "messages": Message.objects.count(),
        "handoffs": Handoff.objects.count(),
        "discoveries": Discovery.objects.count(),
    }


def _nested(depth: int, leaf):
    node = leaf
    for _ in range(depth):
        node = {"n": node}
    return node


def hostile_calls(world) -> list[tuple[str, dict]]:
    ticket, task = world["ids"]["TKT"][0], world["ids"]["TSK"][0]
    lone = "\ud800"
    return [
        # lone surrogates: top level, in a list, in a nested object's value and key
        ("create_ticket", {"workflow_id": "test-flow", "title": f"Bad {lone} title", "description": "A description long enough."}),
        ("create_ticket", {"workflow_id": "test-flow", "title": "Fine title", "description": "A description long enough.", "tags": ["ok", f"x{lone}"]}),
        ("update_ticket", {"ticket_id": ticket, "updates": {"title": f"t{lone}itle"}}),
        ("update_ticket", {"ticket_id": ticket, "updates": {f"ti{lone}tle": "Renamed"}}),
        ("update_task_status", {"task_id": task, "status": "completed", "result": {"deep": {"deeper": [f"{lone}"]}}}),
        ("add_ticket_comment", {"ticket_id": ticket, "comment_text": "fine", "attachments": [f"file{lone}.txt"]}),
        ("send_message", {"recipient_agent_id": "bob", "message": "\udfff alone"}),
        # NUL, nested
        ("update_task_status", {"task_id": task, "status": "completed", "result": {"log": ["line", "nul \x00 here"]}}),
        ("report_agent_event", {"event_type": "note", "payload": {"k\x00": "v"}}),
        # integers beyond 64 bits / beyond the field's range
        ("get_tickets", {"workflow_id": "test-flow", "offset": 2**63}),
        ("get_tickets", {"workflow_id": "test-flow", "offset": 10**40}),
        ("get_tickets", {"workflow_id": "test-flow", "limit": -(2**70)}),
        ("heartbeat_task", {"task_id": task, "fencing_token": 2**64}),
        ("update_ticket", {"ticket_id": ticket, "updates": {"title": "Renamed"}, "expected_version": 2**40}),
        ("update_task_status", {"task_id": task, "status": "completed", "result": {"big": 2**64}}),
        # nesting: inside the tool limit's reach and beyond it
        ("update_task_status", {"task_id": task, "status": "completed", "result": _nested(40, "leaf")}),
        ("report_agent_event", {"event_type": "note", "payload": _nested(50, [1])}),
    ]


def test_hostile_values_are_refused_with_clear_errors_and_change_nothing(world, asgi_server):
    import httpx

    # given a database in a known state
    before = database_snapshot()
    url = f"{asgi_server.url}/mcp/"
    headers = {"Authorization": f"Bearer {world['token']}", "Content-Type": "application/json", "Accept": "application/json"}
    problems = []
    for index, (name, arguments) in enumerate(hostile_calls(world)):
        # when each is sent (json.dumps writes lone surrogates as \ud800 escapes, as any JSON client may)
        body = json.dumps({"jsonrpc": "2.0", "id": index, "method": "tools/call", "params": {"name": name, "arguments": arguments}})
        response = httpx.post(url, content=body, headers=headers, timeout=30)
        # then it is a specific tool error, never an internal error or a 5xx
        if response.status_code != 200:
            problems.append(f"{name}: HTTP {response.status_code} {response.text[:200]}")
            continue
        result = response.json()["result"]
        text = result["content"][0]["text"]
        if not result["isError"] or "Internal error" in text or not text.strip():
            problems.append(f"{name}({json.dumps(arguments)[:120]}) -> {text[:200]!r}")
    assert not problems, "\n".join(problems)

    # and a body nested past the protocol's cap is refused before any tool runs
    body = json.dumps({"jsonrpc": "2.0", "id": 99, "method": "tools/call",
                       "params": {"name": "update_task_status", "arguments": {"task_id": world["ids"]["TSK"][0], "status": "completed", "result": _nested(200, 1)}}})
    response = httpx.post(url, content=body, headers=headers, timeout=30)
    assert response.status_code == 400 and response.json()["error"]["code"] == -32600

    # and nothing changed anywhere
    assert database_snapshot() == before
    assert_database_consistent()
