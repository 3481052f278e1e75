"""Websocket routes of the realtime doors (collected by omoi_site.routing).

Browser sockets authenticate with the session cookie, so they sit behind the Origin check (the websocket
form of CSRF protection). Agents authenticate with a bearer token and are not browsers — they usually send
no Origin header — so their route skips that check.
"""

from channels.auth import AuthMiddlewareStack
from channels.security.websocket import AllowedHostsOriginValidator
from django.urls import path, re_path

from collaboration.consumers import AgentConsumer, DashboardConsumer

websocket_urlpatterns = [
    path("ws/dashboard/", AllowedHostsOriginValidator(AuthMiddlewareStack(DashboardConsumer.as_asgi()))),
    re_path(r"^ws/agents/(?P<agent_id>[-a-zA-Z0-9_]+)/$", AgentConsumer.as_asgi()),
]
