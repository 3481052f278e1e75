"""Websocket routes of the realtime doors (collected by omoi_site.routing)."""

from django.urls import path, re_path

from collaboration.consumers import AgentConsumer, DashboardConsumer

websocket_urlpatterns = [
    path("ws/dashboard/", DashboardConsumer.as_asgi()),
    re_path(r"^ws/agents/(?P<agent_id>[-a-zA-Z0-9_]+)/$", AgentConsumer.as_asgi()),
]
