"""Dashboard pages (server-rendered; live updates come over `/ws/dashboard/`, see static/dashboard/board.js).

Doors only: each view authenticates (login required → /admin/login/), reads through selectors and
renders. Unknown or invisible workflows/tickets are 404s (a selector's NotFound).
"""

from __future__ import annotations

from functools import lru_cache

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.contrib.staticfiles import finders
from django.http import Http404
from django.shortcuts import render as django_render
from django.utils.safestring import mark_safe

from agents.selectors import sandbox_run_list
from collaboration import selectors as collaboration_selectors
from omoi_site.domain import DomainError
from tickets import selectors as ticket_selectors
from tickets.models import Ticket

BOARD_LIMIT = 500
STATUS_LABELS = {
    "backlog": "Backlog", "analyzing": "Analyzing", "building": "Building", "building-done": "Building done",
    "testing": "Testing", "done": "Done",
}


@lru_cache(maxsize=8)
def _static_text(path: str) -> str:
    found = finders.find(path)
    with open(found, encoding="utf-8") as handle:
        return handle.read()


def render(request, template, context):
    """Inline the dashboard's small CSS/JS: pages then work wherever they are served (uvicorn, daphne,
    tests with DEBUG off) without depending on static-file serving; no build step either way."""
    if settings.DEBUG:
        _static_text.cache_clear()
    assets = {"dashboard_css": mark_safe(_static_text("dashboard/dashboard.css")),
              "dashboard_js": mark_safe(_static_text("dashboard/board.js"))}
    return django_render(request, template, {**assets, **context})


def describe_event(event: str, ticket: str | None, payload: dict) -> str:
    """One line for the activity feed; static/dashboard/board.js has the same wording for live events."""
    p = payload or {}
    if event == "message.sent":
        to = "everyone" if p.get("to") == "*" else p.get("to")
        return f"{p.get('from')} → {to} ({p.get('message_type', 'info')}): {p.get('message', '')}"
    if event == "handoff.requested":
        return f"{p.get('from_agent_id')} asks {p.get('to_agent_id')} to take {p.get('task_id')}: {p.get('reason', '')}"
    if event in ("handoff.accepted", "handoff.declined"):
        return f"{p.get('to_agent_id')} {event.split('.')[1]} hand-off of {p.get('task_id')} from {p.get('from_agent_id')}"
    if event == "discovery.recorded":
        return f"{p.get('recorded_by') or 'an agent'} found {p.get('discovery_type')}: {p.get('description', '')}"
    if event == "ticket.created":
        return f"{ticket} created: {p.get('title', '')}"
    if event == "ticket.status_changed":
        return f"{ticket} {p.get('old_status') or '?'} → {p.get('status')}" + (f" by {p['by']}" if p.get("by") else "")
    if event == "ticket.resolved":
        return f"{ticket} resolved" + (f" by {p['by']}" if p.get("by") else "")
    if event == "ticket.unblocked":
        return f"{ticket} unblocked" + (f" ({p['unblocked_by']} done)" if p.get("unblocked_by") else "")
    if event == "ticket.blocked":
        return f"{ticket} blocked" + (f" by {p['blocked_by']}" if p.get("blocked_by") else "")
    if event.startswith("task."):
        return f"{p.get('task_id')} {event.split('.')[1].replace('_', ' ')}: {p.get('status')}" + (
            f" ({p['claimed_by']})" if p.get("claimed_by") else "")
    if event.startswith("sandbox."):
        return f"sandbox {event.split('.')[1]} for {p.get('agent_id', '?')}"
    return f"{event} {ticket or ''}".strip()


def _workflow_or_404(request, slug):
    try:
        return ticket_selectors.workflow_get(slug=slug, actor=request.user)
    except DomainError as error:
        raise Http404(error.message) from None


@login_required
def dashboard_index(request):
    workflows = collaboration_selectors.dashboard_workflows(actor=request.user)
    return render(request, "dashboard/index.html", {"workflows": workflows, "status_labels": STATUS_LABELS})


@login_required
def workflow_board(request, slug):
    workflow = _workflow_or_404(request, slug)
    tickets, total = ticket_selectors.ticket_list(workflow=workflow, limit=BOARD_LIMIT, sort_by="priority", sort_order="desc")
    columns = [{"status": status, "label": STATUS_LABELS[status], "tickets": [t for t in tickets if t.status == status]}
               for status in Ticket.Status.values]
    activity = [
        {**item, "text": describe_event(item["event"], item["ticket"], item["payload"])}
        for item in collaboration_selectors.workflow_activity(workflow=workflow)
    ]
    return render(request, "dashboard/board.html", {
        "workflow": workflow, "columns": columns, "activity": activity, "total": total,
        "truncated": total > len(tickets), "nav": "board",
        "config": {"mode": "board", "ws_path": f"/ws/dashboard/?workflow={workflow.slug}", "ticket_url": "/dashboard/ticket/"},
    })


@login_required
def workflow_agents(request, slug):
    workflow = _workflow_or_404(request, slug)
    agents = collaboration_selectors.workflow_agents_overview(workflow=workflow)
    runs = list(sandbox_run_list(workflow_id=workflow.id)[:100])
    return render(request, "dashboard/agents.html", {
        "workflow": workflow, "agents": agents, "runs": runs, "nav": "agents",
        "config": {"mode": "agents", "ticket_url": "/dashboard/ticket/",
                   "ws_path": f"/ws/dashboard/?workflow={workflow.slug}&events=agent.event,sandbox.*,task.*,handoff.*"},
    })


@login_required
def ticket_detail(request, ticket_id):
    try:
        ticket = ticket_selectors.ticket_get(ticket_id=ticket_id, actor=request.user)
    except DomainError as error:
        raise Http404(error.message) from None
    page = collaboration_selectors.ticket_page(ticket=ticket)
    return render(request, "dashboard/ticket.html", {
        "ticket": ticket, "workflow": ticket.workflow, **page, "graph_svg": layered_graph(page["graph"]),
        "status_labels": STATUS_LABELS,
        "config": {"mode": "ticket", "ticket_id": ticket.public_id, "ticket_url": "/dashboard/ticket/",
                   "ws_path": f"/ws/dashboard/?ticket={ticket.public_id}"},
    })


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
