"""Dashboard pages under /dashboard/ (included by omoi_site.urls when present)."""

from django.urls import path

from collaboration import views

app_name = "dashboard"

urlpatterns = [
    path("", views.dashboard_index, name="index"),
    path("ticket/<str:ticket_id>/", views.ticket_detail, name="ticket"),
    path("<slug:slug>/", views.workflow_board, name="board"),
    path("<slug:slug>/agents/", views.workflow_agents, name="agents"),
]
