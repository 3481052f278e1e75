"""What every REST view shares: the error envelope, authentication/permission/throttle defaults,
pagination, strict request serializers and the "act only as yourself" rule.

Every error a client of `/api/` can see has one body: `{"error": {"code", "message", "details"}}` —
domain errors (their `code`/`http_status`), validation errors (details.fields), 401/403/404/405/415/429,
malformed JSON and unknown URLs. Bad input never reaches the database as a 500.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import uuid
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import SuspiciousOperation
from django.db import DataError
from django.http import Http404, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.utils import inline_serializer
from rest_framework import exceptions, serializers, status
from rest_framework.pagination import CursorPagination
from rest_framework.parsers import JSONParser
from rest_framework.permissions import BasePermission
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.throttling import SimpleRateThrottle
from rest_framework.views import APIView
from rest_framework.views import exception_handler as drf_exception_handler

from omoi_site.constants import Priority
from omoi_site.db_errors import DATABASE_UNAVAILABLE, is_database_unavailable, is_retryable_conflict
from omoi_site.domain import DomainError, PermissionDenied, is_agent
from omoi_site.input_limits import MAX_JSON_DEPTH, find_unacceptable_value

logger = logging.getLogger(__name__)


# --- the error envelope -------------------------------------------------------------------------------


def error_body(code: str, message: str, details: dict | None = None) -> dict:
    return {"error": {"code": code, "message": message, "details": details or {}}}


def _flatten_validation(detail: Any, prefix: str = "") -> list[str]:
    if isinstance(detail, dict):
        lines = []
        for key, value in detail.items():
            name = f"{prefix}.{key}" if prefix else str(key)
            lines.extend(_flatten_validation(value, "" if name == api_settings.NON_FIELD_ERRORS_KEY else name))
        return lines
    if isinstance(detail, list):
        lines = []
        for index, value in enumerate(detail):
            if isinstance(value, (dict, list)):
                lines.extend(_flatten_validation(value, f"{prefix}[{index}]"))
            else:
                lines.extend(_flatten_validation(value, prefix))
        return lines
    return [f"{prefix}: {detail}" if prefix else str(detail)]


def api_exception_handler(exc, context):
    """DRF's EXCEPTION_HANDLER: every failure becomes the error envelope with the right status."""
    if isinstance(exc, DomainError):
        return Response(error_body(exc.code, exc.message, exc.details), status=exc.http_status)
    if is_database_unavailable(exc):
        return Response(error_body("database_unavailable", f"The {DATABASE_UNAVAILABLE}"),
                        status=status.HTTP_503_SERVICE_UNAVAILABLE, headers={"Retry-After": "2"})
    if isinstance(exc, DataError):
        # A value the database cannot store (out-of-range number, invalid text) slipped past validation.
        return Response(
            error_body("invalid", "A value in the request cannot be stored (out of range or invalid characters)."),
            status=status.HTTP_400_BAD_REQUEST,
        )
    if isinstance(exc, SuspiciousOperation):
        return Response(error_body("bad_request", str(exc) or "Malformed request."), status=status.HTTP_400_BAD_REQUEST)
    response = drf_exception_handler(exc, context)
    if response is None:
        reference = uuid.uuid4().hex[:12]
        logger.exception("REST API error (ref %s)", reference)
        return Response(
            error_body(
                "internal_error",
                f"Internal error (ref {reference}); nothing was changed. Report the ref to an operator.",
            ),
            status=status.HTTP_500_INTERNAL_SERVER_ERROR,
        )
    if isinstance(exc, exceptions.ValidationError):
        lines = _flatten_validation(exc.detail)
        message = "Invalid request: " + "; ".join(lines[:10]) if lines else "Invalid request."
        response.data = error_body("invalid", message, {"fields": exc.detail})
        return response
    if isinstance(exc, (Http404, exceptions.NotFound)):
        code = "not_found"
    elif isinstance(exc, (DjangoPermissionDenied,)):
        code = "forbidden"
    elif isinstance(exc, exceptions.APIException):
        code = {"permission_denied": "forbidden"}.get(exc.default_code, exc.default_code)
    else:
        code = "error"
    detail = getattr(exc, "detail", None)
    message = str(detail) if detail else (str(exc) or "Request refused.")
    details: dict[str, Any] = {}
    if isinstance(exc, exceptions.Throttled):
        details["retry_after_seconds"] = int(exc.wait) if exc.wait is not None else None
        message = f"Rate limit exceeded; retry in {details['retry_after_seconds']} seconds."
    response.data = error_body(code, message, details)
    return response


class ErrorDetailSerializer(serializers.Serializer):
    code = serializers.CharField(help_text="stable machine-readable kind: invalid, not_found, conflict, forbidden, …")
    message = serializers.CharField(help_text="what was wrong and what to do instead")
    details = serializers.DictField(help_text="structured extras (e.g. fields, current_version)")


class ErrorSerializer(serializers.Serializer):
    error = ErrorDetailSerializer()


ERROR_STATUSES = ("400", "401", "403", "404", "405", "409", "415", "429")


def add_error_responses(result, generator, request, public):
    """drf-spectacular post-processing hook: every operation documents the error envelope statuses."""
    ref = {"$ref": "#/components/schemas/Error"}
    components = result.setdefault("components", {}).setdefault("schemas", {})
    components.setdefault(
        "Error",
        {
            "type": "object",
            "properties": {
                "error": {
                    "type": "object",
                    "properties": {
                        "code": {"type": "string"},
                        "message": {"type": "string"},
                        "details": {"type": "object", "additionalProperties": {}},
                    },
                    "required": ["code", "message", "details"],
                }
            },
            "required": ["error"],
        },
    )
    for path_item in result.get("paths", {}).values():
        for operation in path_item.values():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            for code in ERROR_STATUSES:
                operation["responses"].setdefault(
                    code, {"description": "error", "content": {"application/json": {"schema": ref}}}
                )
    return result


def drop_slash_aliases(endpoints):
    """drf-spectacular pre-processing hook: only /api/ is documented (not the MCP door), and each route is
    served with and without a trailing slash: document only the canonical (slash-less) one."""
    return [endpoint for endpoint in endpoints if endpoint[0].startswith("/api/") and not endpoint[0].endswith("/")]


# --- request parsing -----------------------------------------------------------------------------------


class StrictJSONParser(JSONParser):
    """JSON bodies only. Refused up front, with the place named: NUL characters and lone surrogates (which
    PostgreSQL cannot store), integers beyond 64 bits, and nesting deeper than any argument needs."""

    def parse(self, stream, media_type=None, parser_context=None):
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise exceptions.ParseError(f"JSON parse error - nested more than {MAX_JSON_DEPTH} levels deep; flatten the value.")
        problem = find_unacceptable_value(data)
        if problem:
            raise exceptions.ParseError(problem)
        return data


class PriorityField(serializers.ChoiceField):
    """low | medium | high | critical, read in any case ("HIGH" → "high"), as every door reads priorities."""

    def __init__(self, **kwargs):
        super().__init__(choices=Priority.choices, **kwargs)

    def to_internal_value(self, data):
        return super().to_internal_value(data.strip().lower() if isinstance(data, str) else data)


class StrictSerializer(serializers.Serializer):
    """A request serializer that refuses unknown fields (a typo must not be silently ignored)."""

    def to_internal_value(self, data):
        if isinstance(data, dict):
            unknown = sorted(str(key) for key in set(data) - set(self.fields))
            if unknown:
                raise serializers.ValidationError(
                    {key: [f"Unknown field. Allowed: {', '.join(self.fields)}."] for key in unknown}
                )
        return super().to_internal_value(data)


def validated(serializer_class: type[serializers.Serializer], data: Any) -> dict:
    serializer = serializer_class(data=data)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


def validated_query(serializer_class: type[serializers.Serializer], request) -> dict:
    """Query parameters through a serializer (unknown parameters are ignored, as HTTP clients add some)."""
    data = {key: request.query_params.get(key) for key in request.query_params if key in serializer_class().fields}
    return validated(serializer_class, data)


# --- who acts -------------------------------------------------------------------------------------------


class IsAgentOrStaff(BasePermission):
    """Agents (bearer token) and active staff users (session) may use the API; nobody else."""

    message = "Only agents (Authorization: Bearer <agent token>) and staff users may use the API."

    def has_permission(self, request, view):
        user = request.user
        if user is None or not getattr(user, "is_authenticated", False):
            return False
        return is_agent(user) or bool(getattr(user, "is_staff", False) and getattr(user, "is_active", False))


def act_as_self(request, agent_id: str | None, *, argument: str = "agent_id") -> None:
    """An acting-agent field in a body, when given, must name the authenticated agent."""
    if agent_id is None:
        return
    caller = request.user
    if not is_agent(caller) or agent_id != caller.agent_id:
        mine = caller.agent_id if is_agent(caller) else None
        hint = f" Omit it or pass {argument}='{mine}'." if mine else " A staff user cannot act as an agent; omit it."
        raise PermissionDenied(f"{argument} '{agent_id}' is not you.{hint}")


def require_agent(request, *, action: str):
    """Operations that only an agent can perform (claims, leases, messages, hand-offs)."""
    if not is_agent(request.user):
        raise PermissionDenied(f"Only an agent can {action}; call it with the agent's bearer token.")
    return request.user


# --- throttling -----------------------------------------------------------------------------------------


class _TokenRateThrottle(SimpleRateThrottle):
    """Per-token (agent) / per-user rate limit. The rate is read from settings on every request, so
    `override_settings(API_RATE_LIMIT=…)` works (DRF's own throttles freeze their rates at import)."""

    setting_name = "API_RATE_LIMIT"

    def __init__(self):
        from django.core.cache import caches

        self.cache = caches[getattr(settings, "THROTTLE_CACHE_ALIAS", "default")]
        super().__init__()

    def get_rate(self):
        return getattr(settings, self.setting_name, None) or None

    def get_cache_key(self, request, view):
        user = request.user
        if user is not None and is_agent(user):
            ident = f"agent:{user.agent_id}"
        elif user is not None and getattr(user, "is_authenticated", False):
            ident = f"user:{user.pk}"
        else:
            ident = f"ip:{self.get_ident(request)}"
        return f"throttle:{self.scope}:{ident}"


class ApiRateThrottle(_TokenRateThrottle):
    scope = "api"
    setting_name = "API_RATE_LIMIT"


class McpRateThrottle(_TokenRateThrottle):
    scope = "mcp"
    setting_name = "MCP_RATE_LIMIT"


# --- pagination -----------------------------------------------------------------------------------------

PAGE_SIZE = 50
MAX_PAGE_SIZE = 100


class ApiCursorPagination(CursorPagination):
    """Keyset cursor pagination for querysets; the view names its `cursor_ordering`."""

    page_size = PAGE_SIZE
    page_size_query_param = "limit"
    max_page_size = MAX_PAGE_SIZE
    ordering = ("-created_at", "-id")

    def get_ordering(self, request, queryset, view):
        return tuple(getattr(view, "cursor_ordering", self.ordering))

    def get_page_size(self, request):
        raw = request.query_params.get(self.page_size_query_param)
        if raw is None:
            return self.page_size
        if not raw.isdigit() or not 1 <= int(raw) <= self.max_page_size:
            raise exceptions.ValidationError({"limit": [f"limit must be an integer from 1 to {self.max_page_size}."]})
        return int(raw)

    def decode_cursor(self, request):
        try:
            return super().decode_cursor(request)
        except exceptions.NotFound:
            raise exceptions.ValidationError(
                {"cursor": ["Invalid cursor: pass the `next` or `previous` link as given."]}
            )


def paginate_queryset(view: APIView, request, queryset, render: Callable[[Any], dict]) -> Response:
    paginator = ApiCursorPagination()
    page = paginator.paginate_queryset(queryset, request, view=view)
    return Response(
        {
            "next": paginator.get_next_link(),
            "previous": paginator.get_previous_link(),
            "results": [render(item) for item in page],
        }
    )


def _encode_offset(offset: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"o": offset}).encode()).decode().rstrip("=")


def _decode_offset(cursor: str | None) -> int:
    if not cursor:
        return 0
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        offset = json.loads(base64.urlsafe_b64decode(padded.encode()).decode())["o"]
    except (binascii.Error, ValueError, KeyError, TypeError, UnicodeError):
        offset = None
    if not isinstance(offset, int) or isinstance(offset, bool) or not 0 <= offset < 10**9:
        raise exceptions.ValidationError({"cursor": ["Invalid cursor: pass the `next` or `previous` link as given."]})
    return offset


def paginate_selector(
    request, fetch: Callable[[int, int], tuple[list, int]], render: Callable[[Any], dict]
) -> Response:
    """Opaque-cursor pagination over a selector that takes offset/limit and returns (page, total)."""
    paginator = ApiCursorPagination()
    limit = paginator.get_page_size(request)
    offset = _decode_offset(request.query_params.get("cursor"))
    items, total = fetch(offset, limit)

    def link(new_offset: int) -> str:
        from rest_framework.utils.urls import replace_query_param

        return replace_query_param(request.build_absolute_uri(), "cursor", _encode_offset(new_offset))

    next_link = link(offset + len(items)) if offset + len(items) < total else None
    previous_link = link(max(offset - limit, 0)) if offset > 0 else None
    return Response({"next": next_link, "previous": previous_link, "results": [render(item) for item in items]})


def paginated(name: str, item: serializers.Serializer | type[serializers.Serializer]):
    """Schema of a page: {next, previous, results: [item]}."""
    return inline_serializer(
        name=name,
        fields={
            "next": serializers.URLField(allow_null=True),
            "previous": serializers.URLField(allow_null=True),
            "results": item(many=True) if isinstance(item, type) else item,
        },
    )


CURSOR_PARAMETERS_DOC = "Pagination: pass `cursor` from the `next`/`previous` link; `limit` 1-100 (default 50)."


class CursorQuery(serializers.Serializer):
    cursor = serializers.CharField(required=False, max_length=500, help_text="opaque cursor from a next/previous link")
    limit = serializers.IntegerField(required=False, min_value=1, max_value=MAX_PAGE_SIZE, help_text="page size")


# --- the base view --------------------------------------------------------------------------------------


class ApiView(APIView):
    # Base of every REST view: agents or staff only, per-token rate limit, JSON in and out, no unstorable text.
    # (A comment, not a docstring: drf-spectacular would copy a docstring into every operation.)

    permission_classes = [IsAgentOrStaff]
    throttle_classes = [ApiRateThrottle]
    parser_classes = [StrictJSONParser]
    renderer_classes = [JSONRenderer]

    def handle_exception(self, exc):
        # A deadlock or serialization failure rolled the service's transaction back; the same call almost
        # always succeeds at once, so it is retried once before the caller sees anything.
        if is_retryable_conflict(exc) and not getattr(self, "_retried_conflict", False):
            self._retried_conflict = True
            logger.warning("REST %s %s: %s; retrying once", self.request.method, self.request.path, type(exc).__name__)
            handler = getattr(self, self.request.method.lower(), self.http_method_not_allowed)
            try:
                return handler(self.request, *self.args, **self.kwargs)
            except Exception as again:
                return super().handle_exception(again)
        return super().handle_exception(exc)

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)
        problem = find_unacceptable_value(dict(request.query_params.lists()), root="query") or find_unacceptable_value(
            kwargs, root="path"
        )
        if problem:
            raise exceptions.ParseError(problem)


@csrf_exempt
def unknown_endpoint(request, *args, **kwargs):
    """Anything under /api/ that matches no route: a JSON 404 (not Django's HTML page)."""
    return JsonResponse(
        error_body("not_found", f"No API endpoint {request.method} {request.path}. See /api/docs/ for the list."),
        status=404,
    )


def parse_if_match(value: str | None) -> int | None:
    """`If-Match: "3"` (or W/"3", or 3) → 3; absent → None; anything else is a 400."""
    if value is None or value.strip() == "":
        return None
    text = value.strip()
    if text.startswith("W/"):
        text = text[2:]
    text = text.strip('"')
    if text.isdigit() and 0 < int(text) < 2**31:
        return int(text)
    raise exceptions.ValidationError(
        {"If-Match": [f'If-Match must be the ETag of the ticket, e.g. "3"; got {value!r}.']}
    )


def etag(version: int) -> str:
    return f'"{version}"'


MAX_JSON_FIELD_BYTES = 32_000


class _BoundedJSON:
    """At most MAX_JSON_FIELD_BYTES of JSON once parsed by the field it is mixed into."""

    def to_internal_value(self, data):
        value = super().to_internal_value(data)
        if len(json.dumps(value, default=str)) > MAX_JSON_FIELD_BYTES:
            raise serializers.ValidationError(
                f"larger than {MAX_JSON_FIELD_BYTES} bytes of JSON; send a summary instead."
            )
        return value


class BoundedJSONObjectField(_BoundedJSON, serializers.DictField):
    """A free-form JSON object argument (result, context, filters …), at most 32 kB of JSON."""


class BoundedJSONListField(_BoundedJSON, serializers.ListField):
    """A free-form JSON list argument (attachments …), at most 32 kB of JSON."""


class AgentTokenScheme(OpenApiAuthenticationExtension):
    """Describes AgentTokenAuthentication in the OpenAPI schema (registered on import)."""

    target_class = "agents.authentication.AgentTokenAuthentication"
    name = "agentToken"

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer", "description": "an agent token (manage.py create_agent …)"}
