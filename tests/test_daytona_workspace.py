"""An OpenHands agent's terminal and workspace routed into a Daytona sandbox (the loopback stand-in).

Everything real: the `daytona` SDK over HTTP to `DaytonaTestServer`, the OpenHands SDK's `Agent` and
`Conversation`, and its scripted `TestLLM` in place of a model service.
"""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # before openhands is imported
os.environ.setdefault("OPENHANDS_SUPPRESS_BANNER", "1")

from agents.agent_side.daytona_executor import (  # noqa: E402
    DaytonaTerminalExecutor,
    SandboxTerminalAction,
    SandboxTerminalObservation,
    SandboxTerminalTool,
    detach_sandbox,
    sandbox_terminal_tool,
)
from agents.agent_side.daytona_workspace import DaytonaLocalWorkspace  # noqa: E402
from agents.sandboxes import DaytonaSandboxProvider  # noqa: E402
from tests.daytona_standin import DaytonaTestServer  # noqa: E402

PROJECT_DIR = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def daytona_server():
    server = DaytonaTestServer().start()
    yield server
    server.stop()


@pytest.fixture
def sandbox(daytona_server):
    handle = DaytonaSandboxProvider(api_key="test", api_url=daytona_server.api_url).create()
    yield handle
    detach_sandbox(handle.sandbox_id)
    handle.delete()


def _text(observation) -> str:
    return "".join(part.text for part in observation.to_llm_content)


# --- the executor ------------------------------------------------------------------------------------------


def test_executor_runs_the_command_in_the_sandbox_and_returns_output_and_exit_code(daytona_server, sandbox):
    executor = DaytonaTerminalExecutor(sandbox)

    observation = executor(SandboxTerminalAction(command="echo out; echo err >&2; exit 5"))

    assert isinstance(observation, SandboxTerminalObservation)
    assert observation.exit_code == 5
    assert not observation.timeout
    assert not observation.is_error
    assert "out" in observation.text and "err" in observation.text
    assert "[Command finished with exit code 5]" in _text(observation)
    assert observation.sandbox_id == sandbox.sandbox_id
    # it really went through the Daytona toolbox API of that sandbox
    assert daytona_server.sandboxes[sandbox.sandbox_id].commands


def test_executor_keeps_the_working_directory_and_reports_it(daytona_server, sandbox):
    executor = DaytonaTerminalExecutor(sandbox)

    executor(SandboxTerminalAction(command="mkdir -p src && cd src"))
    observation = executor(SandboxTerminalAction(command="touch here.txt && pwd"))

    sandbox_root = daytona_server.sandbox_dir(sandbox.sandbox_id)
    assert (sandbox_root / "src" / "here.txt").is_file()
    assert observation.working_dir == str(sandbox_root / "src")
    assert f"[Current working directory: {sandbox_root / 'src'}]" in _text(observation)


def test_executor_reports_a_timeout_in_the_observation(sandbox):
    executor = DaytonaTerminalExecutor(sandbox)

    observation = executor(SandboxTerminalAction(command="sleep 5", timeout=1))

    assert observation.timeout
    assert observation.exit_code == 124
    assert "timed out after 1 seconds" in observation.text


def test_executor_turns_a_vanished_sandbox_into_an_error_observation(daytona_server):
    handle = DaytonaSandboxProvider(api_key="test", api_url=daytona_server.api_url).create()
    handle.delete()

    observation = DaytonaTerminalExecutor(handle)(SandboxTerminalAction(command="echo hi"))

    assert observation.is_error
    assert handle.sandbox_id in observation.text


def test_executor_refuses_input_to_a_running_process(sandbox):
    observation = DaytonaTerminalExecutor(sandbox)(SandboxTerminalAction(command="y", is_input=True))

    assert observation.is_error
    assert "no running process" in observation.text


def test_reset_returns_to_the_sandbox_home(daytona_server, sandbox):
    executor = DaytonaTerminalExecutor(sandbox)
    executor(SandboxTerminalAction(command="mkdir -p a && cd a"))

    observation = executor(SandboxTerminalAction(command="pwd", reset=True))

    assert observation.text.splitlines()[-1] == str(daytona_server.sandbox_dir(sandbox.sandbox_id))


def test_terminal_tool_is_built_from_a_json_spec(sandbox):
    spec = sandbox_terminal_tool(sandbox, default_timeout=30)

    (tool,) = SandboxTerminalTool.create(**spec.model_dump()["params"])

    assert tool.name == "terminal"
    assert isinstance(tool.executor, DaytonaTerminalExecutor)
    assert tool.executor.sandbox is sandbox
    assert tool.executor.default_timeout == 30


# --- the workspace -----------------------------------------------------------------------------------------


def test_workspace_commands_and_files_go_to_the_sandbox(daytona_server, sandbox, tmp_path):
    workspace = DaytonaLocalWorkspace(working_dir=tmp_path / "conversation", sandbox=sandbox)
    local_file = tmp_path / "input.txt"
    local_file.write_bytes(b"payload\x00bytes")

    uploaded = workspace.file_upload(local_file, "inbox/input.txt")
    listed = workspace.execute_command("ls inbox && pwd")
    downloaded = workspace.file_download("inbox/input.txt", tmp_path / "back" / "input.txt")

    sandbox_root = daytona_server.sandbox_dir(sandbox.sandbox_id)
    assert uploaded.success and downloaded.success
    assert (sandbox_root / "inbox" / "input.txt").read_bytes() == b"payload\x00bytes"
    assert listed.exit_code == 0
    assert listed.stdout.splitlines() == ["input.txt", str(sandbox_root)]
    assert (tmp_path / "back" / "input.txt").read_bytes() == b"payload\x00bytes"
    assert workspace.sandbox_id == sandbox.sandbox_id
    assert workspace.sandbox_provider == "daytona"


def test_workspace_reports_failures_instead_of_raising(sandbox, tmp_path):
    workspace = DaytonaLocalWorkspace(working_dir=tmp_path / "conversation", sandbox=sandbox)

    result = workspace.file_download("no/such/file", tmp_path / "out")
    timed_out = workspace.execute_command("sleep 5", timeout=1)

    assert not result.success and "no/such/file" in result.error
    assert not (tmp_path / "out").exists()
    assert timed_out.timeout_occurred


# --- a real OpenHands agent --------------------------------------------------------------------------------


def _scripted_llm(command: str):
    from openhands.sdk import Message, TextContent
    from openhands.sdk.llm import MessageToolCall
    from openhands.sdk.testing import TestLLM

    return TestLLM.from_messages(
        [
            Message(
                role="assistant",
                content=[TextContent(text="")],
                tool_calls=[
                    MessageToolCall(
                        id="call-1",
                        name="terminal",
                        arguments=f'{{"command": "{command}"}}',
                        origin="completion",
                    )
                ],
            ),
            Message(role="assistant", content=[TextContent(text="The proof is written.")]),
        ]
    )


def _observations(conversation) -> list:
    from openhands.sdk.event import ObservationEvent

    return [event.observation for event in conversation.state.events if isinstance(event, ObservationEvent)]


@pytest.mark.parametrize("wiring", ["tool-params", "workspace"])
def test_agent_terminal_call_runs_in_the_daytona_sandbox(daytona_server, sandbox, tmp_path, wiring):
    from openhands.sdk import Agent, Conversation, Tool

    # given an agent whose only tool is the sandboxed terminal, driven by a scripted LLM
    tool = sandbox_terminal_tool(sandbox) if wiring == "tool-params" else Tool(name="SandboxTerminalTool")
    agent = Agent(llm=_scripted_llm("echo ran-in-sandbox > proof.txt && pwd"), tools=[tool])
    workspace = DaytonaLocalWorkspace(working_dir=tmp_path / "conversation", sandbox=sandbox)
    conversation = Conversation(agent=agent, workspace=workspace, visualizer=None)

    # when it runs
    conversation.send_message("Write the proof file.")
    conversation.run()

    # then the command ran in the stand-in's sandbox directory, not in the local conversation directory
    sandbox_root = daytona_server.sandbox_dir(sandbox.sandbox_id)
    assert (sandbox_root / "proof.txt").read_text() == "ran-in-sandbox\n"
    assert not (tmp_path / "conversation" / "proof.txt").exists()
    (observation,) = _observations(conversation)
    assert isinstance(observation, SandboxTerminalObservation)
    assert observation.exit_code == 0
    assert observation.text.strip() == str(sandbox_root)
    assert conversation.state.execution_status.value == "finished"


def test_worker_modules_do_not_import_django_or_daytona_at_module_level():
    # A worker inside a sandbox has only httpx and the OpenHands SDK; checked on the source, because
    # importing the OpenHands SDK in a fresh interpreter costs many seconds.
    for module in ("agents/agent_side/daytona_executor.py", "agents/agent_side/daytona_workspace.py", "agents/sandboxes.py"):
        tree = ast.parse((PROJECT_DIR / module).read_text())
        imported = set()
        for node in tree.body:  # module level only; imports inside functions are the intended lazy ones
            if isinstance(node, ast.Import):
                imported.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module:
                imported.add(node.module.split(".")[0])

        assert not imported & {"django", "daytona", "tickets", "tasks", "collaboration"}, module
