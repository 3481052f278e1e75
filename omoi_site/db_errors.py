"""How doors recognise the two database failures they handle themselves.

- A serialization failure or deadlock (SQLSTATE 40001 / 40P01): PostgreSQL rolled the transaction back and
  the same call would very likely succeed now; doors retry it once, invisibly to the caller.
- The database cannot be reached: doors answer "database unavailable; retry in a few seconds" (HTTP 503 /
  an MCP tool error) instead of an internal error.

Django wraps psycopg's errors (the original is `__cause__`); both are looked at.
"""

from __future__ import annotations

RETRYABLE_SQLSTATES = frozenset({"40001", "40P01"})


def _chain(error: BaseException):
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or error.__context__


def is_retryable_conflict(error: BaseException) -> bool:
    """True for a serialization failure or a detected deadlock."""
    for link in _chain(error):
        if (
            getattr(link, "sqlstate", None) in RETRYABLE_SQLSTATES
            or getattr(link, "pgcode", None) in RETRYABLE_SQLSTATES
        ):
            return True
    return False


DATABASE_UNAVAILABLE = "database unavailable; retry in a few seconds."


def is_database_unavailable(error: BaseException) -> bool:
    """True when the database could not be reached (server down, connection refused or lost, pool timeout) —
    not for a query's own failure (a constraint, a bad value)."""
    from django.db import InterfaceError, OperationalError

    if not isinstance(error, (OperationalError, InterfaceError)):
        return False
    try:
        from psycopg_pool import PoolTimeout
    except ImportError:  # pragma: no cover
        PoolTimeout = ()  # noqa: N806
    for link in _chain(error):
        if PoolTimeout and isinstance(link, PoolTimeout):
            return True
    cause = error.__cause__
    sqlstate = str(getattr(cause, "sqlstate", "") or "")
    return not sqlstate or sqlstate.startswith(("08", "57P"))
