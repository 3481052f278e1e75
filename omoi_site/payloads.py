"""The shared grammar of every JSON result (MCP, REST, realtime): timestamps and the omission of empties.

Each app's `payloads.py` builds its shapes with these, so a date or an empty field looks the same
whatever door sends it.
"""

from __future__ import annotations

from typing import Any


def iso(value) -> str | None:
    """A timestamp as ISO 8601 to the second (None stays None)."""
    return value.isoformat(timespec="seconds") if value else None


def compact(data: dict[str, Any]) -> dict[str, Any]:
    """Drop empty optional values (None, "", [], {}) to save LLM tokens; keys stay stable otherwise."""
    return {key: value for key, value in data.items() if value not in (None, "", [], {})}
