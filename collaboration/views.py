"""Dashboard pages (server-rendered; live updates come over `/ws/dashboard/`, see static/dashboard/board.js).

Doors only: each view authenticates (login required → /admin/login/), reads through selectors and
renders. Unknown or invisible workflows/tickets are 404s (a selector's NotFound).
"""

from __future__ import annotations

from functools import lru_cache, wraps

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.contrib.staticfiles import finders
from django.shortcuts import render as django_render
from django.utils.dateparse import parse_datetime
from django.utils.safestring import mark_safe

from agents.selectors import sandbox_run_list, workflow_usage
from collaboration import selectors as collaboration_selectors
from omoi_site.domain import DomainError
from omoi_site.events import event_feed, latest_event_id
from tasks import selectors as task_selectors
from tickets import selectors as ticket_selectors
from tickets.models import Ticket
from tickets.search import similar_tickets

BOARD_LIMIT = 500
AGENT_EVENTS = ("agent.", "sandbox.", "task.", "handoff.")
STATUS_LABELS = {
    "backlog": "Backlog", "analyzing": "Analyzing", "building": "Building", "building-done": "Building done",
    "testing": "Testing", "done": "Done",
}


@lru_cache(maxsize=8)
def _static_text(path: str) -> str:
    found = finders.find(path)
    with open(found, encoding="utf-8") as handle:
        return handle.read()


def render(request, template, context, status=200):
    """Inline the dashboard's small CSS/JS: pages then work wherever they are served (uvicorn, daphne,
    tests with DEBUG off) without depending on static-file serving; no build step either way."""
    if settings.DEBUG:
        _static_text.cache_clear()
    assets = {"dashboard_css": mark_safe(_static_text("dashboard/dashboard.css")),
              "dashboard_js": mark_safe(_static_text("dashboard/board.js"))}
    return django_render(request, template, {**assets, **context}, status=status)


def _feed(**filters) -> list[dict]:
    """The feed's first render: the same envelopes (and sentences) the socket delivers live."""
    items = event_feed(**filters)
    for item in items:
        item["at_datetime"] = parse_datetime(item["at"]) if item.get("at") else None
    return items


class _NotFoundPage(Exception):
    """Raised by the page helpers; turned into the dashboard's human 404 page."""

    def __init__(self, what: str):
        self.what = what


def _not_found(request, what: str):
    return render(request, "dashboard/not_found.html", {"what": what}, status=404)


def _workflow_or_404(request, slug):
    try:
        return ticket_selectors.workflow_get(slug=slug, actor=request.user)
    except DomainError:
        raise _NotFoundPage(f"There is no workflow called “{slug}”, or you do not have access to it.") from None


def _pages(view):
    """Login required; a missing workflow or ticket becomes the human 404 page."""
    @login_required
    @wraps(view)
    def wrapper(request, *args, **kwargs):
        try:
            return view(request, *args, **kwargs)
        except _NotFoundPage as missing:
            return _not_found(request, missing.what)

    return wrapper


@_pages
def dashboard_index(request):
    workflows = collaboration_selectors.dashboard_workflows(actor=request.user)
    return render(request, "dashboard/index.html", {"workflows": workflows, "status_labels": STATUS_LABELS})


@_pages
def workflow_board(request, slug):
    workflow = _workflow_or_404(request, slug)
    last_id = latest_event_id()  # before the reads: the socket replays anything after it
    tickets, total = ticket_selectors.ticket_list(workflow=workflow, limit=BOARD_LIMIT, sort_by="priority", sort_order="desc")
    columns = [{"status": status, "label": STATUS_LABELS[status], "tickets": [t for t in tickets if t.status == status]}
               for status in Ticket.Status.values]
    activity = _feed(workflow=workflow.slug)
    return render(request, "dashboard/board.html", {
        "workflow": workflow, "columns": columns, "activity": activity, "total": total,
        "at_risk": task_selectors.tickets_at_risk(workflow=workflow),
        "patterns": _pattern_charts(task_selectors.discovery_patterns(workflow=workflow)),
        "pattern_window": task_selectors.PATTERN_WINDOW,
        "assignees": sorted({t.assigned_agent_id for t in tickets if t.assigned_agent_id}),
        "priorities": Ticket.Priority.values, "ticket_types": Ticket.TicketType.values,
        "truncated": total > len(tickets), "nav": "board",
        "config": {"mode": "board", "ws_path": f"/ws/dashboard/?workflow={workflow.slug}", "ticket_url": "/dashboard/ticket/",
                   "last_id": last_id},
    })


@_pages
def workflow_agents(request, slug):
    workflow = _workflow_or_404(request, slug)
    last_id = latest_event_id()
    agents = collaboration_selectors.workflow_agents_overview(workflow=workflow)
    runs = list(sandbox_run_list(workflow_id=workflow.id)[:100])
    return render(request, "dashboard/agents.html", {
        "workflow": workflow, "agents": agents, "runs": runs, "nav": "agents",
        "activity": _feed(workflow=workflow.slug, events=AGENT_EVENTS), "usage": _usage_chart(workflow_usage(workflow=workflow, days=14)),
        "config": {"mode": "agents", "ticket_url": "/dashboard/ticket/", "last_id": last_id,
                   "ws_path": f"/ws/dashboard/?workflow={workflow.slug}&events=agent.event,sandbox.*,task.*,handoff.*"},
    })


@_pages
def ticket_detail(request, ticket_id):
    try:
        ticket = ticket_selectors.ticket_get(ticket_id=ticket_id, actor=request.user)
    except DomainError:
        raise _NotFoundPage(f"There is no ticket {ticket_id}, or it is in a workflow you cannot see. "
                            "Ticket ids look like TKT-42.") from None
    last_id = latest_event_id()
    page = collaboration_selectors.ticket_page(ticket=ticket)
    return render(request, "dashboard/ticket.html", {
        "ticket": ticket, "workflow": ticket.workflow, **page, "graph_svg": layered_graph(page["graph"]),
        "status_labels": STATUS_LABELS, "activity": _feed(ticket=ticket.public_id), "similar": _similar(ticket),
        "config": {"mode": "ticket", "ticket_id": ticket.public_id, "ticket_url": "/dashboard/ticket/", "last_id": last_id,
                   "ws_path": f"/ws/dashboard/?ticket={ticket.public_id}"},
    })


CHART_WIDTH, CHART_HEIGHT, CHART_BOTTOM = 560, 140, 22


def _usage_chart(usage: dict) -> dict:
    """Bar positions for the daily cost chart (server-side SVG) plus the budget burn."""
    days = usage["days"]
    peak = max((day["cost_usd"] for day in days), default=0) or 1
    slot = CHART_WIDTH / max(len(days), 1)
    bars = []
    for index, day in enumerate(days):
        height = float(day["cost_usd"] / peak) * (CHART_HEIGHT - CHART_BOTTOM - 14)
        bars.append({**day, "x": round(index * slot + 2, 1), "width": round(slot - 4, 1), "height": round(height, 1),
                     "y": round(CHART_HEIGHT - CHART_BOTTOM - height, 1), "label_x": round(index * slot + slot / 2, 1)})
    budget = usage["budget_usd"]
    burn = None if not budget else min(100, round(float(usage["month_spent_usd"] / budget) * 100))
    return {**usage, "bars": bars, "width": CHART_WIDTH, "height": CHART_HEIGHT, "label_y": CHART_HEIGHT - 6, "burn": burn}


PATTERN_BAR_WIDTH, PATTERN_BAR_GAP, PATTERN_HEIGHT = 12, 3, 30


def _pattern_charts(patterns: list[dict]) -> list[dict]:
    """Each pattern with the bars of its weekly counts (inline SVG, one scale for all patterns so their
    bars compare)."""
    peak = max((week["count"] for pattern in patterns for week in pattern["weeks"]), default=0) or 1
    charted = []
    for pattern in patterns:
        bars = []
        for index, week in enumerate(pattern["weeks"]):
            height = round(week["count"] / peak * (PATTERN_HEIGHT - 2), 1) if week["count"] else 0
            bars.append({**week, "x": index * (PATTERN_BAR_WIDTH + PATTERN_BAR_GAP), "height": max(height, 1),
                         "y": round(PATTERN_HEIGHT - max(height, 1), 1), "empty": not week["count"]})
        width = len(bars) * (PATTERN_BAR_WIDTH + PATTERN_BAR_GAP) - PATTERN_BAR_GAP
        charted.append({**pattern, "bars": bars, "width": width, "height": PATTERN_HEIGHT, "bar_width": PATTERN_BAR_WIDTH,
                        "label": ", ".join(f"week of {b['week']:%b} {b['week'].day}: {b['count']}" for b in bars)})
    return charted


def _similar(ticket) -> list[dict] | None:
    """Tickets close in meaning (None when the embedding provider is unavailable: the page says so)."""
    try:
        return similar_tickets(workflow_ids=[ticket.workflow_id], title=ticket.title, description=ticket.description,
                               exclude_ticket_id=ticket.pk, limit=5, threshold=0.3)
    except Exception:  # the page must render without the embedding service
        return None


# --- server-side SVG of the task graph -------------------------------------------------------------

NODE_WIDTH, NODE_HEIGHT, LAYER_GAP, ROW_GAP, MARGIN = 170, 54, 70, 22, 16
STATUS_COLOURS = {
    "pending": "#e5e7eb", "claimed": "#dbeafe", "running": "#bfdbfe", "completed": "#bbf7d0",
    "failed": "#fecaca", "cancelled": "#f3f4f6",
}


def layered_graph(graph: dict) -> dict:
    """Positions for a simple layered drawing: a node's layer is its longest path from a root (edges go
    left to right); rows within a layer in id order. Returns what the template needs to draw an SVG."""
    nodes = graph["nodes"]
    ids = [n["task_id"] for n in nodes]
    incoming: dict[str, list[str]] = {i: [] for i in ids}
    for edge in graph["edges"]:
        if edge["from"] in incoming and edge["to"] in incoming:
            incoming[edge["to"]].append(edge["from"])
    layer: dict[str, int] = {}

    def depth(node_id: str, visiting: frozenset = frozenset()) -> int:
        if node_id in layer:
            return layer[node_id]
        if node_id in visiting:  # a cycle cannot happen in data the services accept; do not loop if it does
            return 0
        parents = incoming[node_id]
        layer[node_id] = 0 if not parents else 1 + max(depth(p, visiting | {node_id}) for p in parents)
        return layer[node_id]

    for node_id in ids:
        depth(node_id)
    rows: dict[int, int] = {}
    positioned = []
    for node in nodes:
        column = layer[node["task_id"]]
        row = rows.get(column, 0)
        rows[column] = row + 1
        x = MARGIN + column * (NODE_WIDTH + LAYER_GAP)
        y = MARGIN + row * (NODE_HEIGHT + ROW_GAP)
        positioned.append({**node, "x": x, "y": y, "fill": STATUS_COLOURS.get(node["status"], "#fff"),
                           "text_x": x + 8, "title_y": y + 20, "sub_y": y + 40})
    where = {n["task_id"]: n for n in positioned}
    edges = []
    for edge in graph["edges"]:
        source, target = where.get(edge["from"]), where.get(edge["to"])
        if source and target:
            edges.append({**edge, "x1": source["x"] + NODE_WIDTH, "y1": source["y"] + NODE_HEIGHT // 2,
                          "x2": target["x"], "y2": target["y"] + NODE_HEIGHT // 2})
    width = MARGIN * 2 + (max(layer.values(), default=0) + 1) * (NODE_WIDTH + LAYER_GAP) - LAYER_GAP
    height = MARGIN * 2 + max(rows.values(), default=1) * (NODE_HEIGHT + ROW_GAP) - ROW_GAP
    return {"nodes": positioned, "edges": edges, "width": width, "height": height,
            "node_width": NODE_WIDTH, "node_height": NODE_HEIGHT}
