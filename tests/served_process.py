"""`manage.py serve` (and other management commands) as real child processes, for the degrade and supervision
tests: they need what a test process cannot give itself — settings read at start-up (a Redis that is not
there), a worker to kill, a PostgreSQL to stop under a running server.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

BASE_DIR = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def child_environment(**overrides: str | None) -> dict:
    """The environment of a child that is not under pytest (its settings take the production-like defaults
    of `make run`); a value of None removes the variable."""
    environment = {**os.environ, "MAINTENANCE_INTERVAL_SECONDS": "1", "LITELLM_LOCAL_MODEL_COST_MAP": "True",
                   "HF_HUB_OFFLINE": "1", "OPENHANDS_SUPPRESS_BANNER": "1", "PYTHONUNBUFFERED": "1"}
    for name, value in overrides.items():
        if value is None:
            environment.pop(name, None)
        else:
            environment[name] = value
    return environment


def manage(*arguments: str, environment: dict, timeout: float = 300) -> str:
    process = subprocess.run([sys.executable, "manage.py", *arguments], cwd=BASE_DIR, env=environment,
                             capture_output=True, text=True, timeout=timeout)
    assert process.returncode == 0, (arguments, process.stdout[-2000:], process.stderr[-3000:])
    return process.stdout


class ServedProcess:
    """`manage.py serve --port <free>` in its own process group, its output in a file (`output()`)."""

    def __init__(self, environment: dict, *, worker: bool = True):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log = tempfile.NamedTemporaryFile("w+", prefix="omoi-serve-", suffix=".log", delete=False)
        command = [sys.executable, "manage.py", "serve", "--port", str(self.port)] + ([] if worker else ["--no-worker"])
        self.process = subprocess.Popen(command, cwd=BASE_DIR, env=environment, stdout=self._log,
                                        stderr=subprocess.STDOUT, start_new_session=True)
        self.wait_until_answering()

    def wait_until_answering(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"serve exited early:\n{self.output()[-3000:]}"
            try:
                httpx.get(f"{self.url}/healthz", timeout=5)
                return
            except httpx.HTTPError:
                time.sleep(0.3)
        raise AssertionError(f"serve did not answer within {timeout} s:\n{self.output()[-3000:]}")

    def healthz(self) -> tuple[int, dict]:
        response = httpx.get(f"{self.url}/healthz", timeout=10)
        return response.status_code, response.json()

    def output(self) -> str:
        return Path(self._log.name).read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGINT)  # what Ctrl-C in `make run` sends
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        Path(self._log.name).unlink(missing_ok=True)


def wait_for(condition, *, timeout: float, interval: float = 0.25, message: str = "condition"):
    """Poll `condition()` until it returns something truthy; returns (value, seconds waited)."""
    started = time.monotonic()
    while True:
        value = condition()
        if value:
            return value, time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise AssertionError(f"{message} did not hold within {timeout} s")
        time.sleep(interval)
