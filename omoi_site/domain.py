"""The one domain exception type and the acting-party helper shared by every app's services.

Every service raises `DomainError` (or a subclass naming the kind of failure) with a message written for
its reader — a human in the admin or an LLM calling an MCP tool: what was wrong and what to do instead.
Each door maps the kind to its own shape (admin message, HTTP 4xx, MCP tool error).
"""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    """A request the domain refuses. `code` is stable and machine-readable; `message` is for the reader."""

    code = "invalid"
    http_status = 400

    def __init__(self, message: str, *, details: dict[str, Any] | None = None):
        super().__init__(message)
        self.message = message
        self.details = details or {}


class NotFound(DomainError):
    code = "not_found"
    http_status = 404


class Conflict(DomainError):
    """The request is valid but the current state does not allow it (illegal transition, lost race)."""

    code = "conflict"
    http_status = 409


class PermissionDenied(DomainError):
    code = "forbidden"
    http_status = 403


def parse_public_id(value: Any, prefix: str, *, argument: str) -> int:
    """Turn 'TKT-42' (or 42 / '42') into 42; anything else is a clear DomainError naming the argument."""
    if isinstance(value, bool):
        value = None
    if isinstance(value, int) and value > 0:
        return value
    if isinstance(value, str):
        text = value.strip()
        upper = text.upper()
        if upper.startswith(prefix + "-"):
            text = text[len(prefix) + 1 :]
        if text.isdigit() and 0 < int(text) < 2**62:
            return int(text)
    raise DomainError(f"{argument} must look like '{prefix}-42'; got {value!r}.")
