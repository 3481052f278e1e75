"""Template filters every page may use without `{% load %}` (a builtin in settings.TEMPLATES): public ids
written by the kernel's one formatter, as MCP and REST write them."""

from __future__ import annotations

from django import template

from omoi_site.domain import task_public_id, ticket_public_id

register = template.Library()


@register.filter
def ticket_id(pk) -> str:
    """{{ ticket.parent_id|ticket_id }} → TKT-12"""
    return ticket_public_id(pk) or ""


@register.filter
def task_id(pk) -> str:
    """{{ run.task_id|task_id }} → TSK-7"""
    return task_public_id(pk) or ""
