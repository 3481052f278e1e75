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


def first_of(queryset):
    """The one row of a queryset filtered on a unique key, or None. Unlike `.first()` it adds no ORDER BY
    (compiling one is a measurable part of a hot read's cost, and a unique key needs none)."""
    return next(iter(queryset[:1]), None)


TICKET_PREFIX, TASK_PREFIX, HANDOFF_PREFIX = "TKT", "TSK", "HND"


def public_id(prefix: str, pk: int | None) -> str | None:
    """The one spelling of a public id: public_id("TKT", 42) == "TKT-42" (None stays None)."""
    return f"{prefix}-{pk}" if pk else None


def ticket_public_id(pk: int | None) -> str | None:
    return public_id(TICKET_PREFIX, pk)


def task_public_id(pk: int | None) -> str | None:
    return public_id(TASK_PREFIX, pk)


def handoff_public_id(pk: int | None) -> str | None:
    return public_id(HANDOFF_PREFIX, pk)


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


def is_agent(actor: Any) -> bool:
    return getattr(actor, "agent_id", None) is not None and not hasattr(actor, "username")


def actor_fields(actor: Any, *, agent_field: str = "actor_agent", user_field: str = "actor_user") -> dict[str, Any]:
    """Model kwargs recording who acted: an Agent (MCP/REST token) or a Django user (admin/session)."""
    if actor is None:
        return {}
    return {agent_field: actor} if is_agent(actor) else {user_field: actor}


def actor_label(actor: Any) -> str | None:
    """How every door and event names who acted: the agent id, or `user:<username>`, or "system"."""
    if actor is None:
        return "system"
    return actor.agent_id if is_agent(actor) else user_label(actor)


def user_label(user: Any) -> str:
    return f"user:{user.get_username()}"


def recorded_actor_label(agent_id: str | None, user: Any = None) -> str | None:
    """The label of a recorded actor pair (an `*_agent` id or an `*_user` row); None when neither is set."""
    if agent_id:
        return agent_id
    return user_label(user) if user is not None else None


def require_text(value: Any, *, argument: str, min_length: int = 0, max_length: int = 10_000) -> str:
    """Validate a free-text argument with a message an LLM can act on."""
    if not isinstance(value, str):
        raise DomainError(f"{argument} must be a string.")
    text = value.strip()
    if len(text) < min_length:
        raise DomainError(f"{argument} must be at least {min_length} characters (got {len(text)}).")
    if len(text) > max_length:
        raise DomainError(f"{argument} must be at most {max_length} characters (got {len(text)}).")
    return text


def require_choice(value: Any, choices, *, argument: str) -> str:
    allowed = list(choices)
    if value not in allowed:
        raise DomainError(f"{argument} must be one of: {', '.join(allowed)}; got {value!r}.")
    return value
