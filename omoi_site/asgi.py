"""ASGI entry point: `/mcp` through the MCP transport, other HTTP through Django, websockets through
Channels (`/ws/…`)."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "omoi_site.settings")
django_asgi_application = get_asgi_application()

from channels.routing import ProtocolTypeRouter  # noqa: E402

from omoi_site.mcp_transport import with_mcp  # noqa: E402
from omoi_site.routing import websocket_application  # noqa: E402

application = ProtocolTypeRouter({"http": with_mcp(django_asgi_application), "websocket": websocket_application})
