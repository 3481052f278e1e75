"""Write-side operations on workflows and tickets (state machine, blockers, history, events)."""

from __future__ import annotations

import re

from django.db import transaction

from omoi_site.domain import DomainError
from tickets.models import Workflow

SLUG_PATTERN = re.compile(r"^[a-z0-9][a-z0-9-]{0,99}$")


@transaction.atomic
def workflow_get_or_create(*, slug: str, name: str = "") -> Workflow:
    """Return the workflow with this slug, creating it if needed."""
    if not isinstance(slug, str) or not SLUG_PATTERN.match(slug):
        raise DomainError(f"workflow slug must be lowercase letters, digits and dashes (e.g. 'my-project'); got {slug!r}.")
    workflow, _ = Workflow.objects.get_or_create(slug=slug, defaults={"name": name or slug})
    return workflow
