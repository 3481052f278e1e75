"""URL map of the REST API (mounted at /api/ by omoi_site.urls), its OpenAPI schema and docs page.

Every route answers with and without a trailing slash (the schema documents the slash-less form);
anything else under /api/ is a JSON 404 in the common error envelope.
"""

from django.urls import path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

from agents import api as agents_api
from collaboration import api as collaboration_api
from omoi_site.api_support import unknown_endpoint
from tasks import api as tasks_api
from tickets import api as tickets_api


def route(pattern: str, view, name: str):
    """The canonical slash-less path plus its trailing-slash alias."""
    return [path(pattern, view, name=name), path(pattern + "/", view)]


urlpatterns = [
    path("schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    path("redoc/", SpectacularRedocView.as_view(url_name="api-schema"), name="api-redoc"),
    # tickets
    *route("tickets", tickets_api.TicketCollectionView.as_view(), "api-tickets"),
    *route("tickets/search", tickets_api.TicketSearchView.as_view(), "api-tickets-search"),
    *route("tickets/ready", tickets_api.ReadyTicketsView.as_view(), "api-tickets-ready"),
    *route("tickets/<str:ticket_id>", tickets_api.TicketDetailView.as_view(), "api-ticket"),
    *route("tickets/<str:ticket_id>/status", tickets_api.TicketStatusView.as_view(), "api-ticket-status"),
    *route("tickets/<str:ticket_id>/resolve", tickets_api.TicketResolveView.as_view(), "api-ticket-resolve"),
    *route("tickets/<str:ticket_id>/comments", tickets_api.TicketCommentsView.as_view(), "api-ticket-comments"),
    *route(
        "tickets/<str:ticket_id>/dependencies", tickets_api.TicketDependenciesView.as_view(), "api-ticket-dependencies"
    ),
    *route(
        "tickets/<str:ticket_id>/dependencies/<str:blocker_id>",
        tickets_api.TicketDependencyDetailView.as_view(),
        "api-ticket-dependency",
    ),
    *route("tickets/<str:ticket_id>/commits", tickets_api.TicketCommitsView.as_view(), "api-ticket-commits"),
    *route("tickets/<str:ticket_id>/history", tickets_api.TicketHistoryView.as_view(), "api-ticket-history"),
    *route(
        "tickets/<str:ticket_id>/phase-history",
        tickets_api.TicketPhaseHistoryView.as_view(),
        "api-ticket-phase-history",
    ),
    *route("tickets/<str:ticket_id>/graph", tasks_api.TicketGraphView.as_view(), "api-ticket-graph"),
    *route("tickets/<str:ticket_id>/risk", tasks_api.TicketRiskView.as_view(), "api-ticket-risk"),
    # tasks and discoveries
    *route("tasks", tasks_api.TaskCollectionView.as_view(), "api-tasks"),
    *route("tasks/claim-next", tasks_api.ClaimNextView.as_view(), "api-tasks-claim-next"),
    *route("tasks/<str:task_id>", tasks_api.TaskDetailView.as_view(), "api-task"),
    *route("tasks/<str:task_id>/heartbeat", tasks_api.HeartbeatView.as_view(), "api-task-heartbeat"),
    *route("tasks/<str:task_id>/release", tasks_api.ReleaseView.as_view(), "api-task-release"),
    *route("tasks/<str:task_id>/status", tasks_api.TaskStatusView.as_view(), "api-task-status"),
    *route("tasks/<str:task_id>/discoveries", tasks_api.TaskDiscoveriesView.as_view(), "api-task-discoveries"),
    *route("tasks/<str:task_id>/timeline", tasks_api.TaskTimelineView.as_view(), "api-task-timeline"),
    *route("discoveries", tasks_api.DiscoveriesByTypeView.as_view(), "api-discoveries"),
    *route("discoveries/similar", tasks_api.SimilarDiscoveriesView.as_view(), "api-discoveries-similar"),
    # messages and hand-offs
    *route("messages", collaboration_api.MessagesView.as_view(), "api-messages"),
    *route("messages/broadcast", collaboration_api.BroadcastView.as_view(), "api-messages-broadcast"),
    *route("messages/read", collaboration_api.MarkReadView.as_view(), "api-messages-read"),
    *route("handoffs", collaboration_api.HandoffsView.as_view(), "api-handoffs"),
    *route("handoffs/<str:handoff_id>", collaboration_api.HandoffDetailView.as_view(), "api-handoff"),
    *route("handoffs/<str:handoff_id>/accept", collaboration_api.HandoffAcceptView.as_view(), "api-handoff-accept"),
    *route("handoffs/<str:handoff_id>/decline", collaboration_api.HandoffDeclineView.as_view(), "api-handoff-decline"),
    # agents and sandbox runs (read-only)
    *route("agents", agents_api.AgentCollectionView.as_view(), "api-agents"),
    *route("agents/<str:agent_id>", agents_api.AgentDetailView.as_view(), "api-agent"),
    *route("agents/<str:agent_id>/trajectory", agents_api.AgentTrajectoryView.as_view(), "api-agent-trajectory"),
    *route("sandbox-runs", agents_api.SandboxRunCollectionView.as_view(), "api-sandbox-runs"),
    *route("sandbox-runs/<str:run_id>", agents_api.SandboxRunDetailView.as_view(), "api-sandbox-run"),
    re_path(r"^.*$", unknown_endpoint),
]
