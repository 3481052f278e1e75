"""Test-wide set-up: real PostgreSQL (embedded unless DATABASE_URL), real Redis, no network but loopback; the
fixtures every app's tests share (workflows, agents with real tokens, and the one shared test scene)."""

import ipaddress
import os
import socket

import pytest

_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex


def _is_allowed(address) -> bool:
    if not isinstance(address, tuple):  # Unix sockets (PostgreSQL) are local
        return True
    host = address[0]
    if host in ("localhost", "testserver"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _guarded_connect(self, address):
    if not _is_allowed(address):
        raise ConnectionRefusedError(f"tests may only connect to loopback; refused {address!r}")
    return _real_connect(self, address)


def _guarded_connect_ex(self, address):
    if not _is_allowed(address):
        raise ConnectionRefusedError(f"tests may only connect to loopback; refused {address!r}")
    return _real_connect_ex(self, address)


socket.socket.connect = _guarded_connect
socket.socket.connect_ex = _guarded_connect_ex


def pytest_configure(config):
    """Give each distinct set of test files its own reusable test database.

    Several engineers (and helpers) run pytest on one machine at once; sharing one test database makes
    their transactional tests flush each other's rows. CI runs one process, so it keeps 'test_omoios'.
    """
    import hashlib

    from django.conf import settings

    if os.environ.get("TEST_DATABASE_NAME") or os.environ.get("CI"):
        return
    files = sorted({arg.split("::")[0] for arg in config.args if not arg.startswith("-")})
    if not files or files in (["tests"], ["."]):
        return
    suffix = hashlib.sha1("|".join(files).encode()).hexdigest()[:8]
    settings.DATABASES["default"]["TEST"]["NAME"] = f"test_omoios_{suffix}"


# --- fixtures shared by every app's tests and tests/ --------------------------------------------------------


@pytest.fixture
def workflow(db):
    from tickets.services import workflow_get_or_create

    return workflow_get_or_create(slug="test-flow")


@pytest.fixture
def other_workflow(db):
    from tickets.services import workflow_get_or_create

    return workflow_get_or_create(slug="other-flow")


@pytest.fixture
def make_agent(db):
    """make_agent('worker-1', workflow) -> (agent, raw_token)."""
    from agents import services

    def _make(agent_id, *workflows, agent_type="implementer"):
        agent = services.agent_create_or_update(agent_id=agent_id, workflows=list(workflows), agent_type=agent_type)
        return agent, services.agent_token_issue(agent=agent, label="test")

    return _make


@pytest.fixture
def scene(workflow, make_agent):
    """The seed's login-timeout workflow built through the services (tests/scene.py): tickets with a blocker,
    a claimed task with an open hand-off, a discovery follow-up, a failed task, messages and a sandbox run."""
    from tests.scene import seed_scene

    return seed_scene(workflow, make_agent, with_run=False)
