"""The 27 typed OpenHands tools (agents/agent_side/mcp_tools.py): drift against the live server, and real agents.

The SDK costs seconds to import, so it is imported inside the tests, never at collection.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# DESIGN.md section 4: the seed's 25 tools.
SEED_TOOLS = {
    "create_ticket", "get_ticket", "get_tickets", "get_ticket_history", "update_ticket", "change_ticket_status",
    "resolve_ticket", "search_tickets", "add_ticket_comment", "add_ticket_dependency", "remove_ticket_dependency",
    "link_commit", "create_task", "update_task_status", "get_task", "get_task_discoveries", "get_workflow_graph",
    "broadcast_message", "send_message", "get_messages", "request_handoff", "get_phase_history",
    "get_task_timeline", "get_agent_trajectory", "get_discoveries_by_type",
}  # fmt: skip
MISSING_TICKET = "TKT-999999"


@pytest.fixture
def agents(make_agent, workflow, transactional_db):
    """worker-1 (who drives the tools) and db-specialist (who receives messages and the hand-off)."""
    worker, token = make_agent("worker-1", workflow)
    specialist, _ = make_agent("db-specialist", workflow, agent_type="specialist")
    return worker, token, specialist


@pytest.fixture
def endpoint(asgi_server):
    return f"{asgi_server.url}/mcp/"


def _without_django(code: str) -> subprocess.CompletedProcess:
    script = textwrap.dedent(
        """
        import sys
        class RefuseDjango:
            def find_spec(self, name, path=None, target=None):
                if name == "django" or name.startswith("django."):
                    raise ImportError("django is not available in a worker sandbox")
        sys.meta_path.insert(0, RefuseDjango())
        """
    ) + textwrap.dedent(code)
    env = {"PATH": "/usr/bin:/bin", "LITELLM_LOCAL_MODEL_COST_MAP": "True", "OPENHANDS_SUPPRESS_BANNER": "1"}
    return subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120, env=env
    )


def test_tools_import_and_build_without_django():
    result = _without_django(
        """
        from agents.agent_side.mcp_client import MCPClient
        from agents.agent_side.mcp_tools import MCP_TOOL_NAMES, mcp_tool_definitions, register_mcp_tools_with_agent
        specs = register_mcp_tools_with_agent([], "http://127.0.0.1:9/mcp/", "token")
        tools = mcp_tool_definitions(MCPClient("http://127.0.0.1:9/mcp/", "token"))
        assert [t.name for t in tools] == [s.name for s in specs] == list(MCP_TOOL_NAMES)
        assert not any(m == "django" or m.startswith("django.") for m in sys.modules)
        print(len(specs))
        """
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "27"


def test_the_llm_sees_mcp_prefixed_names_and_no_token():
    from openhands.sdk.tool import Tool

    from agents.agent_side.mcp_tools import MCP_TOOL_NAMES, SEED_ACTIONS, register_mcp_tools_with_agent

    own = Tool(name="terminal")
    specs = register_mcp_tools_with_agent([own], "http://127.0.0.1:9/mcp/", "secret-token-value")
    assert specs[0] is own
    assert [spec.name for spec in specs[1:]] == list(MCP_TOOL_NAMES)
    assert set(MCP_TOOL_NAMES) == {f"mcp__{name}" for name in SEED_TOOLS} | {"mcp__list_tools", "mcp__call_tool"}
    assert {action.server_tool for action in SEED_ACTIONS} == SEED_TOOLS
    # the specs are persisted with a conversation: they carry a connection id, never the token
    assert "secret-token-value" not in json.dumps([spec.model_dump(mode="json") for spec in specs])


def test_action_validation_mirrors_the_server_limits():
    from pydantic import ValidationError

    from agents.agent_side.mcp_tools import MCPCreateTicketAction, MCPRequestHandoffAction, MCPSearchTicketsAction

    action = MCPCreateTicketAction(
        workflow_id="test-flow",
        agent_id="worker-1",
        title="Fix it",
        description="A long enough text.",
        priority="high",
        tags=["auth"],
    )
    assert action.to_arguments() == {
        "workflow_id": "test-flow",
        "agent_id": "worker-1",
        "title": "Fix it",
        "description": "A long enough text.",
        "priority": "high",
        "tags": ["auth"],
    }
    with pytest.raises(ValidationError):
        MCPCreateTicketAction(workflow_id="w", agent_id="a", title="ab", description="A long enough text.")
    with pytest.raises(ValidationError):
        MCPSearchTicketsAction(workflow_id="w", agent_id="a", query="login", search_type="fuzzy")
    with pytest.raises(ValidationError):
        MCPRequestHandoffAction(from_agent_id="a", to_agent_id="b", task_id="TSK-1", reason="short")
    with pytest.raises(ValidationError):
        MCPSearchTicketsAction(workflow_id="w", agent_id="a", query="login", colour="blue")


# --- drift: typed actions vs the live server's tools/list ---------------------------------------------------


def _shape(node):
    """A schema without prose: descriptions and titles do not have to match, everything else does."""
    if isinstance(node, dict):
        return {key: _shape(value) for key, value in node.items() if key not in ("description", "title")}
    if isinstance(node, list):
        return [_shape(item) for item in node]
    return node


def _action_schema(action_class) -> dict:
    from omoi_site.mcp_endpoint import compact_schema

    schema = compact_schema(action_class.model_json_schema())
    schema["properties"].pop("kind", None)
    if "kind" in schema.get("required", []):
        schema["required"].remove("kind")
    return schema


def _drift(server: dict[str, dict]) -> list[str]:
    """Every difference between the typed actions and the server's tools (name → MCP tool dict)."""
    from agents.agent_side.mcp_tools import SEED_ACTIONS

    differences = []
    missing = sorted(SEED_TOOLS - set(server))
    if missing:
        differences.append(f"seed tools missing on the server: {', '.join(missing)}")
    for action_class in SEED_ACTIONS:
        name = action_class.server_tool
        if name not in server:
            continue
        ours, theirs = _action_schema(action_class), server[name]["inputSchema"]
        our_fields, their_fields = set(ours["properties"]), set(theirs.get("properties", {}))
        for field in sorted(their_fields - our_fields):
            differences.append(f"{name}: server has argument '{field}' that {action_class.__name__} lacks")
        for field in sorted(our_fields - their_fields):
            differences.append(f"{name}: {action_class.__name__}.{field} is not a server argument")
        if set(ours.get("required", [])) != set(theirs.get("required", [])):
            differences.append(
                f"{name}: required {sorted(ours.get('required', []))} != server {sorted(theirs.get('required', []))}"
            )
        for field in sorted(our_fields & their_fields):
            mine, server_field = _shape(ours["properties"][field]), _shape(theirs["properties"][field])
            if mine != server_field:
                differences.append(f"{name}.{field}: ours {mine} != server {server_field}")
        annotations = server[name].get("annotations") or {}
        if bool(annotations.get("readOnlyHint")) != action_class.read_only:
            differences.append(
                f"{name}: read_only={action_class.read_only}, server readOnlyHint={annotations.get('readOnlyHint')}"
            )
        if bool(annotations.get("destructiveHint")) != action_class.destructive:
            differences.append(
                f"{name}: destructive={action_class.destructive}, server destructiveHint={annotations.get('destructiveHint')}"
            )
        if theirs.get("additionalProperties") is not False:
            differences.append(f"{name}: the server schema accepts unknown arguments")
    return differences


@pytest.fixture
def server_tools(agents, endpoint) -> dict[str, dict]:
    from agents.agent_side.mcp_client import MCPClient

    _, token, _ = agents
    with MCPClient(endpoint, token) as client:
        return {tool["name"]: tool for tool in client.list_tools()}


def test_every_typed_action_matches_the_live_server_schema(server_tools):
    differences = _drift(server_tools)
    assert not differences, "typed tools drifted from the server:\n" + "\n".join(differences)


def test_the_drift_check_reports_each_kind_of_difference(server_tools):
    # given the live schemas, changed the ways a server change could go
    import copy

    server = copy.deepcopy(server_tools)
    del server["get_task_timeline"]
    create = server["create_ticket"]["inputSchema"]
    create["properties"]["priority"]["enum"].append("urgent")
    create["properties"]["severity"] = {"type": "string"}
    create["required"].append("priority")
    create["properties"]["title"]["maxLength"] = 200
    server["search_tickets"]["inputSchema"]["properties"].pop("include_comments")
    server["get_ticket"]["annotations"]["readOnlyHint"] = False
    # when compared
    report = "\n".join(_drift(server))
    # then each change is named
    assert "missing on the server: get_task_timeline" in report
    assert "create_ticket.priority" in report and "urgent" in report
    assert "server has argument 'severity'" in report
    assert "create_ticket: required" in report
    assert "create_ticket.title" in report
    assert "MCPSearchTicketsAction.include_comments is not a server argument" in report
    assert "get_ticket: read_only=True" in report


# --- a real OpenHands agent ----------------------------------------------------------------------------------


def _tool_call(call_id: str, name: str, arguments: dict):
    from openhands.sdk.llm import Message, MessageToolCall, TextContent

    return Message(
        role="assistant",
        content=[TextContent(text="")],
        tool_calls=[MessageToolCall(id=call_id, name=name, arguments=json.dumps(arguments), origin="completion")],
    )


def _last_tool_text(messages) -> str:
    from openhands.sdk.llm import TextContent

    for message in reversed(messages):
        if message.role == "tool":
            return "".join(part.text for part in message.content if isinstance(part, TextContent))
    raise AssertionError("no tool result yet")


def _scripted_llm(steps):
    """TestLLM whose steps may be callables of the messages so far (ids come from earlier tool results)."""
    from openhands.sdk.testing import TestLLM

    class ScriptedLLM(TestLLM):
        def completion(self, messages, tools=None, *args, **kwargs):
            self._seen.append((list(messages), [tool.name for tool in tools or []]))
            head = self._scripted_responses[0] if self._scripted_responses else None
            if callable(head) and not isinstance(head, Exception):
                self._scripted_responses[0] = head(messages)
            return super().completion(messages, tools, *args, **kwargs)

    llm = ScriptedLLM.from_messages(steps)
    llm._seen = []
    return llm


def _run_agent(llm, endpoint, token, workspace, **connection_options):
    from openhands.sdk import Agent, Conversation
    from openhands.sdk.event import ObservationEvent

    from agents.agent_side.mcp_tools import register_mcp_tools_with_agent

    agent = Agent(llm=llm, tools=register_mcp_tools_with_agent([], endpoint, token, **connection_options))
    conversation = Conversation(
        agent=agent, workspace=str(workspace), visualizer=None, persistence_dir=str(workspace / "state")
    )
    conversation.send_message("Triage the login timeout bug and hand the investigation to db-specialist.")
    conversation.run()
    observations = [event for event in conversation.state.events if isinstance(event, ObservationEvent)]
    conversation.close()
    return observations


def test_an_openhands_agent_coordinates_through_the_typed_tools(agents, endpoint, mcp_for, tmp_path):
    from openhands.sdk.llm import Message as LLMMessage
    from openhands.sdk.llm import TextContent

    from collaboration.models import Handoff, Message
    from tasks.models import Task
    from tickets.models import Ticket, TicketComment, TicketEvent

    worker, token, specialist = agents
    ids = {}

    def remember_ticket(messages):
        ids["ticket"] = json.loads(_last_tool_text(messages))["ticket"]["ticket_id"]

    def step_search(messages):
        remember_ticket(messages)
        return _tool_call(
            "c2",
            "mcp__search_tickets",
            {"workflow_id": "test-flow", "agent_id": "worker-1", "query": "login timeout", "search_type": "keyword"},
        )

    def step_task(messages):
        return _tool_call(
            "c5",
            "mcp__create_task",
            {
                "ticket_id": ids["ticket"],
                "phase_id": "PHASE_IMPLEMENTATION",
                "task_type": "investigation",
                "description": "Find why sessions expire after five minutes.",
            },
        )

    def step_claim(messages):
        ids["task"] = json.loads(_last_tool_text(messages))["task"]["task_id"]
        return _tool_call(
            "c6",
            "mcp__call_tool",
            {"name": "claim_next_task", "arguments": {"agent_id": "worker-1", "workflow_id": "test-flow"}},
        )

    steps = [
        _tool_call(
            "c1",
            "mcp__create_ticket",
            {
                "workflow_id": "test-flow",
                "agent_id": "worker-1",
                "title": "Fix login timeout bug",
                "description": "Users are logged out after five minutes of inactivity.",
                "priority": "high",
                "ticket_type": "bug",
                "tags": ["auth"],
            },
        ),
        step_search,
        lambda m: _tool_call(
            "c3",
            "mcp__add_ticket_comment",
            {"ticket_id": ids["ticket"], "agent_id": "worker-1", "comment_text": "Reproduced with a 5 minute idle."},
        ),
        lambda m: _tool_call(
            "c4",
            "mcp__change_ticket_status",
            {
                "ticket_id": ids["ticket"],
                "agent_id": "worker-1",
                "new_status": "analyzing",
                "comment": "Starting the analysis of the session expiry.",
            },
        ),
        step_task,
        step_claim,
        lambda m: _tool_call(
            "c7",
            "mcp__broadcast_message",
            {
                "sender_agent_id": "worker-1",
                "message": "Session TTL is 300s in the DB config.",
                "message_type": "discovery",
                "ticket_id": ids["ticket"],
            },
        ),
        lambda m: _tool_call(
            "c8",
            "mcp__send_message",
            {
                "sender_agent_id": "worker-1",
                "recipient_agent_id": "db-specialist",
                "message": "Can you look at the session table?",
                "message_type": "question",
            },
        ),
        lambda m: _tool_call(
            "c9",
            "mcp__request_handoff",
            {
                "from_agent_id": "worker-1",
                "to_agent_id": "db-specialist",
                "task_id": ids["task"],
                "reason": "The fix is in the database session settings.",
                "context": {"ttl_seconds": 300},
            },
        ),
        _tool_call("c10", "mcp__get_ticket", {"ticket_id": MISSING_TICKET}),
        LLMMessage(role="assistant", content=[TextContent(text="Handed off.")]),
    ]
    llm = _scripted_llm(steps)

    # when the agent runs
    observations = _run_agent(llm, endpoint, token, tmp_path)

    # then every step reached the server as the typed tool the LLM named
    assert [o.tool_name for o in observations] == [
        "mcp__create_ticket",
        "mcp__search_tickets",
        "mcp__add_ticket_comment",
        "mcp__change_ticket_status",
        "mcp__create_task",
        "mcp__call_tool",
        "mcp__broadcast_message",
        "mcp__send_message",
        "mcp__request_handoff",
        "mcp__get_ticket",
    ]
    assert [o.observation.is_error for o in observations] == [False] * 9 + [True]
    # and the database shows each effect
    ticket = Ticket.objects.get(title="Fix login timeout bug")
    assert ticket.public_id == ids["ticket"]
    assert (ticket.priority, ticket.ticket_type, ticket.status) == ("high", "bug", "analyzing")
    assert ticket.created_by_agent_id == "worker-1"
    assert ids["ticket"] in observations[1].observation.text  # the search found it
    assert TicketComment.objects.get(ticket=ticket, comment_type="general").text == "Reproduced with a 5 minute idle."
    assert TicketEvent.objects.filter(ticket=ticket, field="status", new_value="analyzing").exists()
    task = Task.objects.get(ticket=ticket)
    assert task.public_id == ids["task"]
    assert task.claimed_by_id == "worker-1"
    broadcast = Message.objects.get(recipient__isnull=True, sender=worker)
    assert (broadcast.message_type, broadcast.ticket_id) == ("discovery", ticket.pk)
    assert Message.objects.filter(sender=worker, recipient=specialist, message_type="question").exists()
    handoff = Handoff.objects.get(task=task)
    assert (handoff.from_agent_id, handoff.to_agent_id, handoff.status) == ("worker-1", "db-specialist", "requested")
    assert handoff.context == {"ttl_seconds": 300}
    # and the unknown ticket reached the LLM as an error observation carrying the server's message
    server_message = mcp_for(token).error("get_ticket", ticket_id=MISSING_TICKET)
    assert observations[-1].observation.text == server_message
    last_messages, tool_names = llm._seen[-1]
    assert server_message in _last_tool_text(last_messages)
    assert _last_tool_text(last_messages).startswith("[An error occurred during execution.]")
    assert {f"mcp__{name}" for name in SEED_TOOLS} <= set(tool_names)
    # the persisted conversation holds no bearer token
    persisted = "".join(path.read_text(errors="ignore") for path in (tmp_path / "state").rglob("*") if path.is_file())
    assert persisted and token not in persisted


def test_a_server_that_cannot_be_reached_is_an_error_observation_not_a_crash(agents, tmp_path, transactional_db):
    import socket

    from openhands.sdk.llm import Message as LLMMessage
    from openhands.sdk.llm import TextContent

    from agents.agent_side.mcp_client import RetryPolicy

    _, token, _ = agents
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    llm = _scripted_llm(
        [
            _tool_call("c1", "mcp__get_ticket", {"ticket_id": "TKT-1"}),
            LLMMessage(role="assistant", content=[TextContent(text="Server down.")]),
        ]
    )
    url = f"http://127.0.0.1:{port}/mcp/"
    fast = RetryPolicy(attempts=2, base_delay=0.01)
    observations = _run_agent(llm, url, token, tmp_path, retry=fast)
    assert observations[0].observation.is_error
    assert "did not reach the OmoiOS server" in observations[0].observation.text


# --- the real litellm path, against a local OpenAI-compatible stand-in ------------------------------------------


def test_the_tool_schemas_pass_the_real_litellm_path(agents, endpoint, mcp_for, tmp_path):
    from openhands.sdk import LLM

    from agents.agent_side.mcp_client import MCPClient
    from agents.agent_side.mcp_tools import MCP_TOOL_NAMES, mcp_tool_definitions
    from tests.openai_llm_standin import OpenAIStandIn, last_tool_result
    from tickets.models import Ticket

    _, token, _ = agents

    def get_created(body):
        ticket_id = json.loads(last_tool_result(body))["ticket"]["ticket_id"]
        return {"tool": "mcp__get_ticket", "arguments": {"ticket_id": ticket_id}}

    steps = [
        {
            "tool": "mcp__create_ticket",
            "arguments": {
                "workflow_id": "test-flow",
                "agent_id": "worker-1",
                "title": "Dark mode for the dashboard",
                "description": "Add a dark theme to every dashboard page.",
                "summary": "create the dark mode ticket",
                "security_risk": "LOW",
            },
        },
        get_created,
        {"tool": "mcp__call_tool", "arguments": {"name": "get_ticket", "arguments": {"ticket_id": MISSING_TICKET}}},
        {"content": "Done."},
    ]
    with OpenAIStandIn(steps) as standin:
        llm = LLM(
            model="openai/omoi-standin",
            base_url=standin.base_url,
            api_key="x",
            usage_id="standin",
            num_retries=0,
            timeout=60,
        )
        observations = _run_agent(llm, endpoint, token, tmp_path)
    assert not standin.errors, standin.errors

    # all 27 tools arrived, under their own names, with exactly the schemas the tools define
    received = standin.tools_received(0)
    assert set(MCP_TOOL_NAMES) <= set(received)
    with MCPClient(endpoint, token) as client:
        expected = {
            tool.name: tool.to_openai_tool(add_security_risk_prediction=True)["function"]
            for tool in mcp_tool_definitions(client)
        }
    for name in MCP_TOOL_NAMES:
        assert received[name]["parameters"] == json.loads(json.dumps(expected[name]["parameters"])), name
        assert received[name]["description"] == expected[name]["description"]
    assert received["mcp__create_ticket"]["parameters"]["required"] == [
        "workflow_id",
        "title",
        "description",
    ]  # the acting agent_id may be omitted: the server defaults it to the token's agent
    assert received["mcp__search_tickets"]["parameters"]["properties"]["search_type"]["enum"] == [
        "hybrid",
        "semantic",
        "keyword",
    ]

    # the calls went through: the ticket exists, was read back, and the error reached the LLM with its text
    ticket = Ticket.objects.get(title="Dark mode for the dashboard")
    assert [o.tool_name for o in observations] == ["mcp__create_ticket", "mcp__get_ticket", "mcp__call_tool"]
    assert json.loads(observations[1].observation.text)["ticket_id"] == ticket.public_id
    server_message = mcp_for(token).error("get_ticket", ticket_id=MISSING_TICKET)
    final_request_tool_text = last_tool_result(standin.requests[-1])
    assert server_message in final_request_tool_text
    assert final_request_tool_text.startswith("[An error occurred during execution.]")


# --- the meta tools, called as the agent calls them ---------------------------------------------------------------


def test_meta_tools_list_and_reach_the_coordination_extras(agents, endpoint):
    from agents.agent_side.mcp_client import MCPClient
    from agents.agent_side.mcp_tools import MCPCallToolAction, MCPCallToolTool, MCPListToolsAction, MCPListToolsTool

    _, token, _ = agents
    with MCPClient(endpoint, token) as client:
        list_tools, call_tool = MCPListToolsTool.from_client(client), MCPCallToolTool.from_client(client)
        listing = list_tools(MCPListToolsAction())
        one = list_tools(MCPListToolsAction(name="mcp__claim_next_task"))
        unknown = list_tools(MCPListToolsAction(name="make_coffee"))
        ready = call_tool(MCPCallToolAction(name="get_ready_tickets", arguments={"workflow_id": "test-flow"}))
        refused = call_tool(
            MCPCallToolAction(name="accept_handoff", arguments={"handoff_id": "HND-999999", "agent_id": "worker-1"})
        )
        server_names = {tool["name"] for tool in client.list_tools()}

    assert {item["name"] for item in json.loads(listing.text)} == server_names
    assert {"claim_next_task", "heartbeat_task", "release_task", "accept_handoff", "decline_handoff"} <= server_names
    assert json.loads(one.text)["arguments"]["required"] == ["workflow_id"]  # agent_id defaults to the caller
    assert unknown.is_error and "claim_next_task" in unknown.text
    assert not ready.is_error and json.loads(ready.text) == {"ready": [], "not_ready": []}
    assert refused.is_error and "HND-999999" in refused.text


def test_the_27_tool_schemas_fit_the_token_budget():
    import importlib.util

    spec = importlib.util.spec_from_file_location("tool_tokens", ROOT / "bench" / "tool_tokens.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    result = bench.measure()
    assert result["count"] == 27
    assert max(result["total"]["cl100k_base"], result["total"]["o200k_base"]) < bench.BUDGET
