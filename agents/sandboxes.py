"""Where agent commands execute: one small provider interface, a Daytona provider and a local one.

A launcher asks `get_sandbox_provider()` for the configured provider, `create()`s a sandbox, runs commands
with `exec()`, moves files with `upload()`/`download()` and `delete()`s it. Both providers keep the same
contract (tests/test_sandboxes.py runs the same tests against each):

- a command runs in a shell (bash when the sandbox has it, else sh) and returns its exit code and its
  combined stdout+stderr;
- the working directory persists between commands, like a terminal: `cd sub` then `pwd` prints `…/sub`;
- a command past its timeout is killed and reported as `timed_out=True`, exit code 124 (as `timeout(1)`);
- relative file paths are relative to the sandbox's work dir.

Neither Django nor the `daytona` SDK is imported at module level: this module is also used by the worker
process (which may have only httpx and the OpenHands SDK), and importing `daytona` costs seconds that
Django's start-up must not pay.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import signal
import subprocess
import uuid
from abc import ABC, abstractmethod
from pathlib import Path

from agents.agent_side.sandbox_handle import (
    DEFAULT_COMMAND_TIMEOUT,
    TIMEOUT_EXIT_CODE,
    ExecResult,
    SandboxError,
    SandboxHandle,
    bash_or_sh_command,
)

__all__ = ["ExecResult", "SandboxError", "SandboxHandle", "SandboxProvider", "get_sandbox_provider"]

logger = logging.getLogger(__name__)

class SandboxProvider(ABC):
    """Creates sandboxes. `is_isolated` says whether commands are actually contained (False = host machine)."""

    name: str = ""
    is_isolated: bool = True

    @abstractmethod
    def create(self, *, labels: dict[str, str] | None = None, env: dict[str, str] | None = None) -> SandboxHandle:
        """Provision a new sandbox, labelled with `labels`, whose commands all see `env`."""


# --- local provider ----------------------------------------------------------------------------------------


class LocalSandboxHandle(SandboxHandle):
    """A directory on this machine; each command is a subprocess started in it (or in the tracked cwd)."""

    provider_name = "local"

    def __init__(self, sandbox_id: str, root: Path, env: dict[str, str], **kwargs):
        super().__init__(sandbox_id, **kwargs)
        self.root = root
        self.env = env

    def _run_script(self, script: str, *, timeout: float) -> ExecResult:
        if not self.root.is_dir():
            raise SandboxError(f"Local sandbox {self.sandbox_id} was deleted; create a new one.")
        shell = shutil.which("bash") or "/bin/sh"
        process = subprocess.Popen(
            [shell, "-c", script],
            cwd=self.root,
            env={**os.environ, **self.env},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # own process group: a timeout kills the command's children too
        )
        try:
            output, _ = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            output, _ = process.communicate()
            return ExecResult(TIMEOUT_EXIT_CODE, output.decode("utf-8", errors="replace"), timed_out=True)
        return ExecResult(process.returncode, output.decode("utf-8", errors="replace"))

    def _path(self, path: str) -> Path:
        candidate = Path(path)
        return candidate if candidate.is_absolute() else self.root / candidate

    def upload(self, path: str, data: bytes) -> None:
        target = self._path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)

    def download(self, path: str) -> bytes:
        try:
            return self._path(path).read_bytes()
        except OSError as error:
            raise SandboxError(f"Cannot read {path!r} in local sandbox {self.sandbox_id}: {error}") from error

    def delete(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


class LocalSandboxProvider(SandboxProvider):
    """Development only: a working directory per sandbox under `base_dir`, commands run as this user.

    This is NOT isolation: commands can read and write anything the server process can. It exists so the
    demo and the tests run without a Daytona account, and it logs a warning each time it is used.
    """

    name = "local"
    is_isolated = False

    def __init__(self, base_dir: str | Path | None = None, *, default_timeout: float = DEFAULT_COMMAND_TIMEOUT):
        self.base_dir = Path(base_dir) if base_dir else _default_local_base_dir()
        self.default_timeout = default_timeout

    def create(self, *, labels: dict[str, str] | None = None, env: dict[str, str] | None = None) -> SandboxHandle:
        sandbox_id = f"local-{uuid.uuid4().hex[:12]}"
        root = self.base_dir / sandbox_id
        root.mkdir(parents=True)
        logger.warning(
            "Local sandbox %s at %s is NOT isolated: its commands run on this machine as this user "
            "(development only; set SANDBOX_PROVIDER=daytona for isolation).",
            sandbox_id,
            root,
        )
        return LocalSandboxHandle(sandbox_id, root, dict(env or {}), default_timeout=self.default_timeout)


def _default_local_base_dir() -> Path:
    try:
        from django.conf import settings

        return Path(settings.BASE_DIR) / ".data" / "sandboxes"
    except Exception:  # no Django here (a worker process): fall back to the current directory
        return Path.cwd() / ".data" / "sandboxes"


# --- Daytona provider --------------------------------------------------------------------------------------


class DaytonaSandboxHandle(SandboxHandle):
    """A Daytona sandbox driven through the official SDK (`sandbox.process.exec`, `sandbox.fs.*`)."""

    provider_name = "daytona"

    def __init__(self, sandbox, **kwargs):
        super().__init__(sandbox.id, **kwargs)
        self.sandbox = sandbox
        self.deleted = False

    def _run_script(self, script: str, *, timeout: float) -> ExecResult:
        from daytona import DaytonaError, DaytonaTimeoutError

        try:
            # The daemon takes whole seconds; round up so a 0.5 s timeout is not "no timeout".
            response = self.sandbox.process.exec(bash_or_sh_command(script), timeout=max(1, math.ceil(timeout)))
        except DaytonaTimeoutError as error:
            # The daemon killed the process tree (HTTP 408), or it did not answer within timeout + 5 s.
            return ExecResult(TIMEOUT_EXIT_CODE, str(error), timed_out=True)
        except DaytonaError as error:
            raise SandboxError(f"Command failed to run in Daytona sandbox {self.sandbox_id}: {error}") from error
        exit_code = response.exit_code if response.exit_code is not None else -1
        return ExecResult(exit_code, response.result or "")

    def upload(self, path: str, data: bytes) -> None:
        from daytona import DaytonaError

        try:
            self.sandbox.fs.upload_file(data, path)
        except DaytonaError as error:
            raise SandboxError(f"Cannot write {path!r} in Daytona sandbox {self.sandbox_id}: {error}") from error

    def download(self, path: str) -> bytes:
        from daytona import DaytonaError

        try:
            return self.sandbox.fs.download_file(path)
        except DaytonaError as error:
            raise SandboxError(f"Cannot read {path!r} in Daytona sandbox {self.sandbox_id}: {error}") from error

    def delete(self) -> None:
        from daytona import DaytonaError, DaytonaNotFoundError

        if self.deleted:
            return
        try:
            self.sandbox.delete()
        except DaytonaNotFoundError:
            pass  # already gone: deletion is idempotent
        except DaytonaError as error:
            raise SandboxError(f"Cannot delete Daytona sandbox {self.sandbox_id}: {error}") from error
        self.deleted = True


class DaytonaSandboxProvider(SandboxProvider):
    """Isolated sandboxes on Daytona. `snapshot` (default: Daytona's default snapshot) or `image` picks the OS."""

    name = "daytona"
    is_isolated = True

    def __init__(
        self,
        *,
        api_key: str,
        api_url: str | None = None,
        snapshot: str | None = None,
        image: str | None = None,
        create_timeout: float = 120,
        default_timeout: float = DEFAULT_COMMAND_TIMEOUT,
    ):
        if not api_key:
            raise SandboxError("DAYTONA_API_KEY is not set; set it or use SANDBOX_PROVIDER=local for development.")
        self.api_key = api_key
        self.api_url = api_url or None
        self.snapshot = snapshot
        self.image = image
        self.create_timeout = create_timeout
        self.default_timeout = default_timeout
        self._client = None

    @property
    def client(self):
        """The SDK client, built on first use (importing `daytona` is slow)."""
        if self._client is None:
            from daytona import Daytona, DaytonaConfig

            self._client = Daytona(DaytonaConfig(api_key=self.api_key, api_url=self.api_url))
        return self._client

    def create(self, *, labels: dict[str, str] | None = None, env: dict[str, str] | None = None) -> SandboxHandle:
        from daytona import CreateSandboxFromImageParams, CreateSandboxFromSnapshotParams, DaytonaError

        common = {"labels": dict(labels or {}), "env_vars": dict(env or {})}
        if self.image:
            params = CreateSandboxFromImageParams(image=self.image, **common)
        else:
            params = CreateSandboxFromSnapshotParams(snapshot=self.snapshot, **common)
        try:
            sandbox = self.client.create(params, timeout=self.create_timeout)
        except DaytonaError as error:
            raise SandboxError(f"Cannot create a Daytona sandbox: {error}") from error
        return DaytonaSandboxHandle(sandbox, default_timeout=self.default_timeout)

    def get(self, sandbox_id: str) -> SandboxHandle:
        """Re-attach to an existing sandbox (e.g. one recorded on a SandboxRun) to use or delete it."""
        from daytona import DaytonaError

        try:
            return DaytonaSandboxHandle(self.client.get(sandbox_id), default_timeout=self.default_timeout)
        except DaytonaError as error:
            raise SandboxError(f"Cannot find Daytona sandbox {sandbox_id}: {error}") from error


def get_sandbox_provider(name: str | None = None) -> SandboxProvider:
    """The provider named `name`, else `settings.SANDBOX_PROVIDER` ('local' | 'daytona')."""
    from django.conf import settings

    name = name or settings.SANDBOX_PROVIDER
    if name == "daytona":
        return DaytonaSandboxProvider(api_key=settings.DAYTONA_API_KEY, api_url=settings.DAYTONA_API_URL or None)
    if name == "local":
        return LocalSandboxProvider(Path(settings.BASE_DIR) / ".data" / "sandboxes")
    raise SandboxError(f"Unknown sandbox provider {name!r}; use 'local' or 'daytona'.")
