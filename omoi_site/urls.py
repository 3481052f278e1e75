"""URL map: admin, REST API, MCP endpoint, dashboard and health. Websockets are routed in asgi.py."""

from django.contrib import admin
from django.urls import include, path

from omoi_site.health import healthz
from omoi_site.mcp_transport import mcp_view

urlpatterns = [
    path("healthz", healthz, name="healthz"),
    path("admin/", admin.site.urls),
    path("mcp/", mcp_view, name="mcp"),
    path("mcp", mcp_view),
    path("api/", include("omoi_site.api_urls")),
    path("dashboard/", include("collaboration.dashboard_urls")),
]

