"""An OpenHands workspace whose commands and file transfers happen in a sandbox (Daytona or local).

Why a `LocalWorkspace` subclass: a local `Conversation` asserts `isinstance(workspace, LocalWorkspace)`,
and the SDK's `RemoteWorkspace` needs an OpenHands agent-server running inside the sandbox. So
`working_dir` stays a directory on this machine (the conversation keeps its state and persistence files
there), while `execute_command`, `file_upload` and `file_download` — what the SDK and launchers call on a
workspace — go to the sandbox. The agent's own `terminal` tool is routed separately, by
`agents.agent_side.daytona_executor.SandboxTerminalTool`, which picks up `workspace.sandbox` when given no params.

No Django here: a worker inside a sandbox has only httpx and the OpenHands SDK.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from openhands.sdk.workspace import LocalWorkspace
from openhands.sdk.workspace.models import CommandResult, FileOperationResult
from pydantic import PrivateAttr

from agents.agent_side.sandbox_handle import SandboxError, SandboxHandle


class DaytonaLocalWorkspace(LocalWorkspace):
    """A local conversation workspace bound to a sandbox handle.

    `sandbox_id` / `sandbox_provider` are serialised with the conversation state for the record; the live
    handle is not serialisable, so after a reload it is looked up among attached sandboxes
    (`agents.agent_side.daytona_executor.attach_sandbox`).
    """

    sandbox_id: str = ""
    sandbox_provider: str = ""
    _sandbox: SandboxHandle | None = PrivateAttr(default=None)

    def __init__(self, *, working_dir: str | Path, sandbox: SandboxHandle | None = None, **kwargs: Any):
        if sandbox is not None:
            kwargs.setdefault("sandbox_id", sandbox.sandbox_id)
            kwargs.setdefault("sandbox_provider", sandbox.provider_name)
        Path(working_dir).mkdir(parents=True, exist_ok=True)
        super().__init__(working_dir=working_dir, **kwargs)
        self._sandbox = sandbox

    @property
    def sandbox(self) -> SandboxHandle:
        if self._sandbox is None:
            from agents.agent_side.daytona_executor import attached_sandbox

            self._sandbox = attached_sandbox(self.sandbox_id)
        return self._sandbox

    def execute_command(self, command: str, cwd: str | Path | None = None, timeout: float = 30.0) -> CommandResult:
        """Run `command` in the sandbox (`cwd` is a sandbox path). Output is combined, so `stderr` is empty."""
        try:
            result = self.sandbox.exec(command, cwd=str(cwd) if cwd is not None else None, timeout=timeout)
        except SandboxError as error:
            return CommandResult(command=command, exit_code=-1, stdout="", stderr=str(error), timeout_occurred=False)
        return CommandResult(
            command=command,
            exit_code=result.exit_code,
            stdout=result.output,
            stderr="",
            timeout_occurred=result.timed_out,
        )

    def file_upload(self, source_path: str | Path, destination_path: str | Path) -> FileOperationResult:
        """Copy a file from this machine (`source_path`) into the sandbox (`destination_path`)."""
        try:
            data = Path(source_path).read_bytes()
            self.sandbox.upload(str(destination_path), data)
        except (OSError, SandboxError) as error:
            return FileOperationResult(
                success=False, source_path=str(source_path), destination_path=str(destination_path), error=str(error)
            )
        return FileOperationResult(
            success=True, source_path=str(source_path), destination_path=str(destination_path), file_size=len(data)
        )

    def file_download(self, source_path: str | Path, destination_path: str | Path) -> FileOperationResult:
        """Copy a file from the sandbox (`source_path`) to this machine (`destination_path`)."""
        try:
            data = self.sandbox.download(str(source_path))
            destination = Path(destination_path)
            destination.parent.mkdir(parents=True, exist_ok=True)
            destination.write_bytes(data)
        except (OSError, SandboxError) as error:
            return FileOperationResult(
                success=False, source_path=str(source_path), destination_path=str(destination_path), error=str(error)
            )
        return FileOperationResult(
            success=True, source_path=str(source_path), destination_path=str(destination_path), file_size=len(data)
        )

    def git_changes(self, path: str | Path):
        raise NotImplementedError("The repository lives in the sandbox: run `git status` through execute_command.")

    def git_diff(self, path: str | Path):
        raise NotImplementedError("The repository lives in the sandbox: run `git diff` through execute_command.")
