"""Websocket routes collected from the apps' consumers."""

websocket_urlpatterns = []

try:
    from collaboration.routing import websocket_urlpatterns as collaboration_routes

    websocket_urlpatterns += collaboration_routes
except ModuleNotFoundError:
    pass
