"""Site-wide middleware."""

from __future__ import annotations

import logging

from django.http import HttpResponse, JsonResponse

from omoi_site.db_errors import DATABASE_UNAVAILABLE, is_database_unavailable

logger = logging.getLogger(__name__)


class DatabaseUnavailableMiddleware:
    """A page (admin, dashboard) that cannot reach the database answers 503 "database unavailable; retry in a
    few seconds" with `Retry-After`, instead of a 500 page. The REST and MCP doors answer it themselves."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_exception(self, request, exception):
        if not is_database_unavailable(exception):
            return None
        logger.warning("%s %s: %s", request.method, request.path, DATABASE_UNAVAILABLE)
        if request.path.startswith("/api/"):
            response = JsonResponse({"error": {"code": "database_unavailable", "message": f"The {DATABASE_UNAVAILABLE}",
                                                   "details": {}}},
                                    status=503)
        else:
            response = HttpResponse(f"<!doctype html><title>Database unavailable</title><h1>The {DATABASE_UNAVAILABLE}</h1>",
                                    status=503)
        response["Retry-After"] = "2"
        return response
