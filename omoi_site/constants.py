"""Vocabulary and limits shared by tickets and tasks, so every door and model spells them one way.

Priorities are lowercase everywhere (tickets and tasks alike); input is tolerant of case ("HIGH" is
read as "high"), output is always lowercase. Text and list limits are the ones the services enforce; the
MCP schemas and REST serializers take them from here so an LLM sees the same numbers the domain checks.
"""

from __future__ import annotations

from typing import Any

from django.db import models

from omoi_site.domain import DomainError


class Priority(models.TextChoices):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"


# Low to high; the rank is stored beside the priority so queues sort in an index.
PRIORITY_ORDER = (Priority.LOW, Priority.MEDIUM, Priority.HIGH, Priority.CRITICAL)
PRIORITY_RANK = {priority: rank for rank, priority in enumerate(PRIORITY_ORDER, start=1)}


def priority_normalize(value: Any, *, argument: str = "priority") -> str:
    """'HIGH', 'High' or 'high' → 'high'; anything else is a DomainError that lists the choices."""
    if isinstance(value, str) and value.strip().lower() in Priority.values:
        return value.strip().lower()
    raise DomainError(f"{argument} must be one of: {', '.join(Priority.values)} (any case); got {value!r}.")


def priority_raised(priority: str) -> str:
    """One level up (critical stays critical): the boost a discovery may give its follow-up task."""
    index = PRIORITY_ORDER.index(Priority(priority))
    return PRIORITY_ORDER[min(index + 1, len(PRIORITY_ORDER) - 1)]


# Text limits the services enforce (characters).
TITLE_MIN, TITLE_MAX = 3, 500
DESCRIPTION_MIN, DESCRIPTION_MAX = 10, 20_000
COMMENT_MIN = 10
MAX_TAGS, TAG_MAX = 20, 50
MAX_LIST_IDS = 50
