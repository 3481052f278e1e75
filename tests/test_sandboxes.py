"""The sandbox provider contract, run against both providers: local, and Daytona through the real SDK.

The Daytona side talks to `tests.daytona_standin.DaytonaTestServer` over loopback HTTP with the unmodified
`daytona` client library; nothing of ours is patched.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agents.sandboxes import (
    DaytonaSandboxProvider,
    LocalSandboxProvider,
    SandboxError,
    get_sandbox_provider,
)
from tests.daytona_standin import DaytonaTestServer

PROJECT_DIR = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def daytona_server():
    server = DaytonaTestServer().start()
    yield server
    server.stop()


@pytest.fixture(params=["local", "daytona"])
def provider(request, tmp_path):
    if request.param == "local":
        return LocalSandboxProvider(tmp_path / "sandboxes")
    server = request.getfixturevalue("daytona_server")
    return DaytonaSandboxProvider(api_key="test", api_url=server.api_url)


@pytest.fixture
def sandbox(provider):
    handle = provider.create(labels={"purpose": "contract-test"})
    yield handle
    handle.delete()


def _process_alive(pid: int) -> bool:
    """True while `pid` runs; a zombie (killed, not yet reaped) counts as dead."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state not in ("Z", "X")


# --- the contract, for both providers ----------------------------------------------------------------------


def test_command_runs_in_a_linux_sandbox(sandbox):
    result = sandbox.exec("uname -s")

    assert result.exit_code == 0
    assert result.output.strip() == "Linux"
    assert not result.timed_out


def test_failing_command_keeps_its_exit_code_and_output(sandbox):
    result = sandbox.exec("echo to-stdout; echo to-stderr >&2; sh -c 'exit 3'")

    assert result.exit_code == 3
    assert "to-stdout" in result.output
    assert "to-stderr" in result.output
    assert not result.timed_out
    assert not result.succeeded


def test_command_that_calls_exit_itself_keeps_its_exit_code(sandbox):
    result = sandbox.exec("exit 7")

    assert result.exit_code == 7


def test_command_past_its_timeout_is_killed_and_reported(sandbox):
    # given a command that starts a long child and records its pid
    started = time.monotonic()

    # when it runs past its one-second timeout
    result = sandbox.exec("sleep 30 & echo $! > sleeper.pid; wait", timeout=1)

    # then it is reported as timed out, quickly, and the child is gone too (the whole group was killed)
    assert result.timed_out
    assert result.exit_code == 124
    assert time.monotonic() - started < 4
    pid = int(sandbox.download("sleeper.pid").decode().strip())
    deadline = time.monotonic() + 3
    while _process_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _process_alive(pid)


def test_sandbox_is_usable_after_a_timeout(sandbox):
    sandbox.exec("sleep 5", timeout=1)

    result = sandbox.exec("echo still-here")

    assert result.exit_code == 0
    assert result.output.strip() == "still-here"


def test_working_directory_persists_between_commands(sandbox):
    first = sandbox.exec("mkdir -p sub && cd sub && pwd")
    second = sandbox.exec("pwd")

    assert first.exit_code == 0
    assert first.output.strip().endswith("/sub")
    assert second.output.strip() == first.output.strip()
    assert sandbox.cwd == first.output.strip()


def test_explicit_cwd_applies_to_one_command(sandbox):
    sandbox.exec("mkdir -p one/two")

    result = sandbox.exec("pwd", cwd=sandbox.exec("cd one/two && pwd").output.strip())

    assert result.output.strip().endswith("/one/two")


def test_sandbox_env_and_command_env_reach_the_command(provider):
    handle = provider.create(env={"GREETING": "hello world"})
    try:
        result = handle.exec('echo "$GREETING/$EXTRA"', env={"EXTRA": "it's quoted"})
    finally:
        handle.delete()

    assert result.output.strip() == "hello world/it's quoted"


def test_invalid_env_name_is_refused(sandbox):
    with pytest.raises(SandboxError, match="Invalid environment variable name"):
        sandbox.exec("true", env={"BAD; rm -rf /": "x"})


def test_upload_then_download_round_trips_bytes(sandbox):
    payload = bytes(range(256)) * 4

    sandbox.upload("data/blob.bin", payload)

    assert sandbox.download("data/blob.bin") == payload
    assert sandbox.exec("wc -c < data/blob.bin").output.strip() == str(len(payload))


def test_uploaded_file_is_visible_to_commands(sandbox):
    sandbox.upload("notes/readme.txt", b"first line\n")

    result = sandbox.exec("cat notes/readme.txt")

    assert result.output == "first line\n"


def test_download_of_a_missing_file_is_a_sandbox_error(sandbox):
    with pytest.raises(SandboxError, match="missing.txt"):
        sandbox.download("missing.txt")


def test_deleted_sandbox_refuses_commands(provider):
    handle = provider.create()
    handle.exec("echo hello > file.txt")

    handle.delete()
    handle.delete()  # idempotent

    with pytest.raises(SandboxError):
        handle.exec("cat file.txt")


# --- provider specifics ------------------------------------------------------------------------------------


def test_local_provider_says_it_is_not_isolated(tmp_path, caplog):
    provider = LocalSandboxProvider(tmp_path)

    with caplog.at_level("WARNING", logger="agents.sandboxes"):
        handle = provider.create()

    assert provider.is_isolated is False
    assert "NOT isolated" in caplog.text
    assert (tmp_path / handle.sandbox_id).is_dir()


def test_local_delete_removes_the_directory(tmp_path):
    handle = LocalSandboxProvider(tmp_path).create()
    handle.exec("mkdir -p deep/tree && touch deep/tree/file")

    handle.delete()

    assert not (tmp_path / handle.sandbox_id).exists()


def test_daytona_sandbox_is_created_with_labels_and_env(daytona_server):
    provider = DaytonaSandboxProvider(api_key="test", api_url=daytona_server.api_url, snapshot="omoios-worker")

    handle = provider.create(labels={"omoios.agent": "worker-1"}, env={"MCP_URL": "http://127.0.0.1:1/mcp/"})

    recorded = daytona_server.sandboxes[handle.sandbox_id]
    assert provider.is_isolated is True
    assert recorded.labels["omoios.agent"] == "worker-1"
    assert recorded.env == {"MCP_URL": "http://127.0.0.1:1/mcp/"}
    assert recorded.snapshot == "omoios-worker"
    handle.delete()


def test_daytona_sandbox_from_an_image_waits_for_the_build(daytona_server):
    provider = DaytonaSandboxProvider(api_key="test", api_url=daytona_server.api_url, image="debian:12-slim")

    handle = provider.create()

    # the stand-in answered `pending_build`; the SDK polled until `started`, so commands work at once
    assert ("GET", f"/api/sandbox/{handle.sandbox_id}") in daytona_server.requests
    assert handle.exec("echo built").output.strip() == "built"
    handle.delete()


def test_daytona_delete_destroys_the_sandbox_at_the_api(daytona_server):
    provider = DaytonaSandboxProvider(api_key="test", api_url=daytona_server.api_url)
    handle = provider.create()
    sandbox_dir = daytona_server.sandbox_dir(handle.sandbox_id)
    assert sandbox_dir.is_dir()

    handle.delete()

    assert handle.sandbox_id in daytona_server.deleted_ids
    assert handle.sandbox_id not in daytona_server.sandboxes
    assert not sandbox_dir.exists()
    with pytest.raises(SandboxError, match="Cannot find Daytona sandbox"):
        provider.get(handle.sandbox_id)


def test_daytona_handle_can_be_reattached_by_id(daytona_server):
    provider = DaytonaSandboxProvider(api_key="test", api_url=daytona_server.api_url)
    original = provider.create()
    original.exec("echo kept > kept.txt")

    again = provider.get(original.sandbox_id)

    assert again.exec("cat kept.txt").output.strip() == "kept"
    again.delete()


def test_daytona_wrong_api_key_is_a_clear_error(daytona_server):
    provider = DaytonaSandboxProvider(api_key="wrong", api_url=daytona_server.api_url)

    with pytest.raises(SandboxError, match="Cannot create a Daytona sandbox"):
        provider.create()


def test_daytona_provider_without_api_key_is_refused():
    with pytest.raises(SandboxError, match="DAYTONA_API_KEY"):
        DaytonaSandboxProvider(api_key="")


# --- choosing the provider from settings -------------------------------------------------------------------


def test_get_sandbox_provider_defaults_to_local_under_the_project(settings):
    settings.SANDBOX_PROVIDER = "local"

    provider = get_sandbox_provider()

    assert isinstance(provider, LocalSandboxProvider)
    assert provider.base_dir == Path(settings.BASE_DIR) / ".data" / "sandboxes"


def test_get_sandbox_provider_builds_daytona_from_settings(settings, daytona_server):
    settings.SANDBOX_PROVIDER = "daytona"
    settings.DAYTONA_API_KEY = "test"
    settings.DAYTONA_API_URL = daytona_server.api_url

    provider = get_sandbox_provider()
    handle = provider.create()

    assert isinstance(provider, DaytonaSandboxProvider)
    assert handle.sandbox_id in daytona_server.sandboxes
    handle.delete()


def test_get_sandbox_provider_by_name_overrides_settings(settings):
    settings.SANDBOX_PROVIDER = "daytona"
    settings.DAYTONA_API_KEY = ""

    assert isinstance(get_sandbox_provider("local"), LocalSandboxProvider)


def test_unknown_sandbox_provider_is_refused(settings):
    with pytest.raises(SandboxError, match="Unknown sandbox provider 'docker'"):
        get_sandbox_provider("docker")


def test_importing_the_sandbox_module_does_not_import_the_daytona_sdk():
    code = "import sys, agents.sandboxes; sys.exit(any(m.split('.')[0] == 'daytona' for m in sys.modules))"

    completed = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_DIR, env=dict(os.environ), timeout=60)

    assert completed.returncode == 0
