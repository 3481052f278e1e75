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
