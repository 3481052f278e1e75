"""The terminal of an OpenHands agent, routed into a sandbox (Daytona, or the local provider in development).

A local OpenHands `Conversation` runs its tools in the process that owns it and only accepts a
`LocalWorkspace`, so the way to make an agent's shell commands run inside a Daytona sandbox is a terminal
tool whose executor calls `sandbox.process.exec` (through `SandboxHandle.exec`).
`openhands-tools` (which ships the tmux-based `TerminalTool`) is not a dependency of this project, so this
module defines the tool with the same shape as that one: the LLM sees a tool named `terminal` taking
`command` / `timeout`, and gets back the output, the exit code and the working directory.

Each command runs to completion (or to its timeout, when it is killed): there is no long-lived shell, but
the working directory and the sandbox's environment carry over between commands.

Usage from a launcher (the executor can only be found by id, because `Tool(params=…)` is JSON)::

    handle = get_sandbox_provider().create(labels={"agent": agent_id})
    agent = Agent(llm=llm, tools=[sandbox_terminal_tool(handle), *mcp_tools])
    ...
    detach_sandbox(handle.sandbox_id); handle.delete()

or give the conversation a `DaytonaLocalWorkspace(working_dir=…, sandbox=handle)` and use
`Tool(name="SandboxTerminalTool")` without params: the tool then takes the workspace's sandbox.

No Django here: a worker inside a sandbox has only httpx and the OpenHands SDK.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Self

from openhands.sdk.llm import ImageContent, TextContent
from openhands.sdk.tool import (
    Action,
    Observation,
    Tool,
    ToolAnnotations,
    ToolDefinition,
    ToolExecutor,
    register_tool,
)
from pydantic import Field

from agents.agent_side.sandbox_handle import SandboxError, SandboxHandle

if TYPE_CHECKING:
    from openhands.sdk.conversation import LocalConversation
    from openhands.sdk.conversation.state import ConversationState

DEFAULT_TERMINAL_TIMEOUT = 120.0
MAX_OUTPUT_CHARS = 30_000

_sandboxes: dict[str, SandboxHandle] = {}
_sandboxes_lock = threading.Lock()


def attach_sandbox(sandbox: SandboxHandle) -> str:
    """Make `sandbox` findable by tools created from a JSON `Tool` spec; returns the key (its sandbox id)."""
    with _sandboxes_lock:
        _sandboxes[sandbox.sandbox_id] = sandbox
    return sandbox.sandbox_id


def detach_sandbox(sandbox_key: str) -> None:
    """Forget a sandbox once its agent is done (before or after deleting it)."""
    with _sandboxes_lock:
        _sandboxes.pop(sandbox_key, None)


def attached_sandbox(sandbox_key: str) -> SandboxHandle:
    with _sandboxes_lock:
        sandbox = _sandboxes.get(sandbox_key)
    if sandbox is None:
        raise SandboxError(f"No sandbox {sandbox_key!r} is attached in this process; call attach_sandbox() first.")
    return sandbox


class SandboxTerminalAction(Action):
    """Schema of one terminal call (the same fields as OpenHands' own terminal tool)."""

    command: str = Field(
        description="The bash command to execute. Chain several with `&&` or `;`. The working directory "
        "persists between calls; each command runs until it exits or its timeout kills it."
    )
    is_input: bool = Field(
        default=False,
        description="Not supported here: commands run to completion, so there is no running process to feed.",
    )
    timeout: float | None = Field(
        default=None,
        ge=0,
        description=f"Seconds after which the command is killed (default {DEFAULT_TERMINAL_TIMEOUT:g}). Set it "
        "higher for installs and test runs; run servers in the background with output redirected to a file.",
    )
    reset: bool = Field(
        default=False, description="If true, forget the working directory and start again in the sandbox's home."
    )


class SandboxTerminalObservation(Observation):
    """What a terminal call did, in the sandbox: output, exit code, whether it timed out, where it ended."""

    command: str = Field(description="The command that was executed.")
    exit_code: int | None = Field(default=None, description="Exit status; 124 when the timeout killed it.")
    timeout: bool = Field(default=False, description="Whether the command was killed by its timeout.")
    working_dir: str | None = Field(default=None, description="The working directory after the command.")
    sandbox_id: str | None = Field(default=None, description="The sandbox the command ran in.")

    @property
    def to_llm_content(self) -> Sequence[TextContent | ImageContent]:
        parts: list[TextContent | ImageContent] = []
        if self.is_error:
            parts.append(TextContent(text=self.ERROR_MESSAGE_HEADER))
        text = self.text
        if len(text) > MAX_OUTPUT_CHARS:
            half = MAX_OUTPUT_CHARS // 2
            text = f"{text[:half]}\n[... {len(text) - MAX_OUTPUT_CHARS} characters cut ...]\n{text[-half:]}"
        if self.working_dir:
            text += f"\n[Current working directory: {self.working_dir}]"
        if self.exit_code is not None:
            text += f"\n[Command finished with exit code {self.exit_code}]"
        parts.append(TextContent(text=text))
        return parts


class DaytonaTerminalExecutor(ToolExecutor[SandboxTerminalAction, SandboxTerminalObservation]):
    """Runs terminal actions in a sandbox handle: a Daytona sandbox via `sandbox.process.exec`, or a local one.

    Failures of the sandbox itself (unreachable, deleted) become an error observation the LLM can read,
    not an exception that would end the conversation.
    """

    def __init__(self, sandbox: SandboxHandle, *, default_timeout: float = DEFAULT_TERMINAL_TIMEOUT):
        self.sandbox = sandbox
        self.default_timeout = default_timeout

    def __call__(
        self, action: SandboxTerminalAction, conversation: LocalConversation | None = None
    ) -> SandboxTerminalObservation:
        fields = {"command": action.command, "sandbox_id": self.sandbox.sandbox_id}
        if action.is_input:
            return SandboxTerminalObservation.from_text(
                "This terminal runs each command to completion, so there is no running process to send input "
                "to. Run the program non-interactively (e.g. pipe its input, or use `yes |`).",
                is_error=True,
                **fields,
            )
        prefix = ""
        if action.reset:
            self.sandbox.cwd = None
            prefix = "[Terminal reset: back in the sandbox's home directory.]\n"
            if not action.command.strip():
                return SandboxTerminalObservation.from_text(prefix.strip(), **fields)
        timeout = action.timeout or self.default_timeout
        try:
            result = self.sandbox.exec(action.command, timeout=timeout)
        except SandboxError as error:
            return SandboxTerminalObservation.from_text(str(error), is_error=True, **fields)
        text = prefix + result.output
        if result.timed_out:
            text += (
                f"\n[Command timed out after {timeout:g} seconds and was killed. Re-run it with a larger "
                "`timeout`, or in the background with its output redirected to a file.]"
            )
        return SandboxTerminalObservation.from_text(
            text,
            exit_code=result.exit_code,
            timeout=result.timed_out,
            working_dir=self.sandbox.cwd,
            **fields,
        )


TOOL_DESCRIPTION = """Execute a bash command in this agent's sandbox.

* One command per call; chain several with `&&` or `;`.
* The working directory persists between calls (`cd` works); each command runs until it exits.
* A command is killed after `timeout` seconds (default {default:g}): set a larger timeout for installs and
  test runs, and start servers in the background with output redirected to a file
  (`python3 app.py > server.log 2>&1 &`).
* The reply carries the command's output (stdout and stderr together), its exit code and the working directory.
"""


class SandboxTerminalTool(ToolDefinition[SandboxTerminalAction, SandboxTerminalObservation]):
    """The `terminal` tool, executed by `DaytonaTerminalExecutor` in an attached sandbox."""

    name: ClassVar[str] = "terminal"

    @classmethod
    def create(
        cls,
        conv_state: ConversationState | None = None,
        sandbox_key: str | None = None,
        default_timeout: float = DEFAULT_TERMINAL_TIMEOUT,
        **_: Any,
    ) -> Sequence[Self]:
        """Build the tool for `sandbox_key` (see `attach_sandbox`), else for the conversation's workspace sandbox."""
        if sandbox_key:
            sandbox = attached_sandbox(sandbox_key)
        else:
            sandbox = getattr(getattr(conv_state, "workspace", None), "sandbox", None)
            if sandbox is None:
                raise SandboxError(
                    "SandboxTerminalTool needs a sandbox: pass params={'sandbox_key': …} (see attach_sandbox) "
                    "or run the conversation in a DaytonaLocalWorkspace."
                )
        return [
            cls(
                action_type=SandboxTerminalAction,
                observation_type=SandboxTerminalObservation,
                description=TOOL_DESCRIPTION.format(default=default_timeout),
                annotations=ToolAnnotations(
                    title="terminal",
                    readOnlyHint=False,
                    destructiveHint=True,
                    idempotentHint=False,
                    openWorldHint=True,
                ),
                executor=DaytonaTerminalExecutor(sandbox, default_timeout=default_timeout),
            )
        ]


register_tool(SandboxTerminalTool.__name__, SandboxTerminalTool)


def sandbox_terminal_tool(sandbox: SandboxHandle, *, default_timeout: float = DEFAULT_TERMINAL_TIMEOUT) -> Tool:
    """The `Tool` spec to put in `Agent(tools=[…])` so the agent's terminal runs in `sandbox`."""
    key = attach_sandbox(sandbox)
    return Tool(name=SandboxTerminalTool.__name__, params={"sandbox_key": key, "default_timeout": default_timeout})
