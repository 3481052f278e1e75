"""Test-wide set-up: real PostgreSQL (embedded unless DATABASE_URL), real Redis, no network but loopback."""

import ipaddress
import os
import socket

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
