"""One live sandbox as the agent side sees it: run a command (exit code, combined output, timeout), move
files, delete. The server's providers (`agents.sandboxes`) create handles; the OpenHands workspace and
terminal executor of this package drive them. No Django, no app imports.
"""

from __future__ import annotations

import base64
import re
import shlex
from abc import ABC, abstractmethod
from dataclasses import dataclass

TIMEOUT_EXIT_CODE = 124
DEFAULT_COMMAND_TIMEOUT = 600
# Printed after every command so the handle learns the shell's directory after a `cd`; stripped from output.
_CWD_MARKER = "__OMOIOS_SANDBOX_CWD__"
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class SandboxError(Exception):
    """A sandbox could not be created, reached or used; the message says which sandbox and what failed."""


@dataclass(frozen=True)
class ExecResult:
    """What one command did: its exit code, its combined output, and whether it was killed by its timeout."""

    exit_code: int
    output: str
    timed_out: bool = False

    @property
    def succeeded(self) -> bool:
        return self.exit_code == 0 and not self.timed_out


class SandboxHandle(ABC):
    """One live sandbox. `cwd` is the directory the next command starts in (None until a command ran)."""

    provider_name: str = ""

    def __init__(self, sandbox_id: str, *, default_timeout: float = DEFAULT_COMMAND_TIMEOUT):
        self.sandbox_id = sandbox_id
        self.default_timeout = default_timeout
        self.cwd: str | None = None

    def exec(
        self, command: str, *, cwd: str | None = None, env: dict[str, str] | None = None, timeout: float | None = None
    ) -> ExecResult:
        """Run `command` in the sandbox's shell, starting in `cwd` (else where the previous command ended).

        `env` is added to the command's environment; `timeout` (seconds, default `default_timeout`) kills
        the command when exceeded, which yields `timed_out=True` and exit code 124.
        """
        script = wrap_script(command, cwd=cwd or self.cwd, env=env)
        result = self._run_script(script, timeout=timeout or self.default_timeout)
        output, new_cwd = split_cwd_marker(result.output)
        if new_cwd:
            self.cwd = new_cwd
        return ExecResult(exit_code=result.exit_code, output=output, timed_out=result.timed_out)

    @abstractmethod
    def _run_script(self, script: str, *, timeout: float) -> ExecResult:
        """Run a POSIX shell script in the sandbox and return its raw result (marker included)."""

    @abstractmethod
    def upload(self, path: str, data: bytes) -> None:
        """Write `data` to `path` in the sandbox (parents are created; an existing file is replaced)."""

    @abstractmethod
    def download(self, path: str) -> bytes:
        """Read the file at `path` in the sandbox; SandboxError when it cannot be read."""

    @abstractmethod
    def delete(self) -> None:
        """Destroy the sandbox and everything in it. Idempotent."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.provider_name}:{self.sandbox_id}>"


# --- shell plumbing shared by both providers ---------------------------------------------------------------


def wrap_script(command: str, *, cwd: str | None, env: dict[str, str] | None) -> str:
    """The script a sandbox really runs: enter `cwd`, export `env`, run the command, report the new cwd.

    The command runs in the script's own shell (not a subshell) so that its `cd` and `export` take effect;
    an EXIT trap reports the directory even when the command itself calls `exit`, and keeps its status.
    """
    lines = [f'trap \'__omoios_status=$?; printf "\\n{_CWD_MARKER}%s\\n" "$(pwd)"; exit $__omoios_status\' EXIT']
    if cwd:
        lines.append(f"cd {shlex.quote(cwd)} || exit 1")
    for key, value in (env or {}).items():
        if not _ENV_NAME.fullmatch(key):
            raise SandboxError(f"Invalid environment variable name {key!r}: use letters, digits and underscores.")
        lines.append(f"export {key}={shlex.quote(value)}")
    lines.append(command)
    return "\n".join(lines) + "\n"


def split_cwd_marker(output: str) -> tuple[str, str | None]:
    """Remove the trailing cwd report from `output`; returns (output as the command printed it, cwd)."""
    position = output.rfind(f"\n{_CWD_MARKER}")
    if position < 0:
        return output, None
    cwd = output[position + len(_CWD_MARKER) + 1 :].strip() or None
    return output[:position], cwd


def bash_or_sh_command(script: str) -> str:
    """A one-line command that runs `script` under bash (or sh), surviving any daemon's command parsing.

    The script travels base64-encoded, so no quoting of the agent's command can break: older Daytona
    daemons split the command line on spaces with naive quote handling instead of using a shell.
    """
    encoded = base64.b64encode(script.encode()).decode()
    return (
        "sh -c 'S=$(echo " + encoded + " | base64 -d); "
        'if command -v bash >/dev/null 2>&1; then exec bash -c "$S"; else eval "$S"; fi\''
    )
