"""Websocket routing: the apps' websocket routes (each wraps its own authentication)."""

from channels.routing import URLRouter

from collaboration.routing import websocket_urlpatterns

websocket_application = URLRouter(websocket_urlpatterns)
