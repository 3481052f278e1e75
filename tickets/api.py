"""REST door for tickets: list/search/detail/create/edit, status transitions, comments, blockers, commits,
history. Thin: shape validation here, every rule in `tickets.services` / `tickets.selectors` (the same
functions the MCP tools call), payloads from `tickets.payloads`.

Editing is optimistic: GET returns `ETag: "<version>"`; PATCH with `If-Match: "<version>"` (or a
`version` field) is refused with 409 when someone else changed the ticket in between.
"""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.response import Response

from omoi_site.api_support import (
    ApiView,
    BoundedJSONListField,
    CursorQuery,
    PriorityField,
    StrictSerializer,
    act_as_self,
    etag,
    paginate_queryset,
    paginate_selector,
    paginated,
    parse_if_match,
    validated,
    validated_query,
)
from omoi_site.domain import DomainError
from tasks import blockers
from tickets import payloads, selectors, services
from tickets.models import Ticket, TicketComment
from tickets.search import possible_duplicates

TAG = ["tickets"]
STATUS_CHOICES = Ticket.Status.choices
TYPE_CHOICES = Ticket.TicketType.choices
COMMIT_SHA = serializers.RegexField(r"^[0-9a-fA-F]{7,64}$", required=False, allow_null=True, help_text="git commit sha")
TICKET_ID_PARAM = OpenApiParameter("ticket_id", OpenApiTypes.STR, OpenApiParameter.PATH, description="e.g. TKT-12")
AGENT_ID_HELP = "optional; when given it must be your own agent id (403 otherwise)"


# --- response shapes (documentation of the payload dicts; keys with empty values are omitted) -----------


class TicketSummarySerializer(serializers.Serializer):
    ticket_id = serializers.CharField()
    title = serializers.CharField()
    status = serializers.CharField()
    blocked = serializers.BooleanField(required=False)
    priority = serializers.CharField()
    ticket_type = serializers.CharField()
    assigned_agent_id = serializers.CharField(required=False)
    updated_at = serializers.DateTimeField(required=False)


class CommentSerializer(serializers.Serializer):
    comment_id = serializers.IntegerField()
    author = serializers.CharField(required=False)
    comment_type = serializers.CharField()
    text = serializers.CharField()
    mentions = serializers.ListField(child=serializers.CharField(), required=False)
    attachments = serializers.ListField(child=serializers.JSONField(), required=False)
    created_at = serializers.DateTimeField(required=False)


class BlockerSerializer(serializers.Serializer):
    ticket_id = serializers.CharField()
    status = serializers.CharField()


class CommitSerializer(serializers.Serializer):
    sha = serializers.CharField()
    message = serializers.CharField(allow_blank=True)


class TicketDetailSerializer(serializers.Serializer):
    ticket_id = serializers.CharField()
    workflow_id = serializers.CharField()
    title = serializers.CharField()
    description = serializers.CharField(required=False)
    ticket_type = serializers.CharField()
    priority = serializers.CharField()
    status = serializers.CharField()
    phase = serializers.CharField()
    blocked = serializers.BooleanField()
    allowed_next_statuses = serializers.ListField(child=serializers.CharField(), required=False)
    tags = serializers.ListField(child=serializers.CharField(), required=False)
    parent_ticket_id = serializers.CharField(required=False)
    duplicate_of = serializers.CharField(required=False)
    assigned_agent_id = serializers.CharField(required=False)
    created_by = serializers.CharField(required=False)
    blocked_by = BlockerSerializer(many=True, required=False)
    blocks = serializers.ListField(child=serializers.CharField(), required=False)
    resolution = serializers.CharField(required=False)
    version = serializers.IntegerField()
    created_at = serializers.DateTimeField(required=False)
    updated_at = serializers.DateTimeField(required=False)
    resolved_at = serializers.DateTimeField(required=False)
    comments = CommentSerializer(many=True, required=False)
    commits = CommitSerializer(many=True, required=False)


class SimilarTicketSerializer(serializers.Serializer):
    ticket_id = serializers.CharField()
    title = serializers.CharField()
    status = serializers.CharField()
    similarity = serializers.FloatField()


class TicketCreatedSerializer(serializers.Serializer):
    ticket = TicketDetailSerializer()
    similar_tickets = SimilarTicketSerializer(many=True)


class TicketTransitionResultSerializer(serializers.Serializer):
    ticket = TicketSummarySerializer()
    phase = serializers.CharField(required=False)
    allowed_next_statuses = serializers.ListField(child=serializers.CharField(), required=False)
    unblocked = serializers.ListField(child=serializers.CharField(), required=False)


class TicketBlockersResultSerializer(serializers.Serializer):
    ticket = TicketSummarySerializer()
    blocked_by = serializers.ListField(child=serializers.CharField())


class SearchResultSerializer(serializers.Serializer):
    ticket_id = serializers.CharField()
    title = serializers.CharField()
    status = serializers.CharField()
    priority = serializers.CharField()
    snippet = serializers.CharField(allow_blank=True)
    score = serializers.FloatField()
    matched = serializers.ListField(child=serializers.CharField())


class SearchResponseSerializer(serializers.Serializer):
    results = SearchResultSerializer(many=True)
    search_type = serializers.CharField()


class EventSerializer(serializers.Serializer):
    at = serializers.DateTimeField(required=False)
    actor = serializers.CharField(required=False)
    event = serializers.CharField()
    field = serializers.CharField(required=False)
    old = serializers.JSONField(required=False)
    new = serializers.JSONField(required=False)
    comment = serializers.CharField(required=False)


class HistorySerializer(serializers.Serializer):
    ticket_id = serializers.CharField()
    events = EventSerializer(many=True)


class PhaseTransitionSerializer(serializers.Serializer):
    at = serializers.DateTimeField(required=False)
    actor = serializers.CharField(required=False)
    from_phase = serializers.CharField(required=False)
    to_phase = serializers.CharField(required=False)
    reason = serializers.CharField(required=False)


class PhaseHistorySerializer(serializers.Serializer):
    ticket_id = serializers.CharField()
    phase = serializers.CharField()
    transitions = PhaseTransitionSerializer(many=True)


class ReadyTicketSerializer(TicketSummarySerializer):
    waiting_for = serializers.ListField(child=serializers.CharField(), required=False)


class ReadyTicketsSerializer(serializers.Serializer):
    ready = TicketSummarySerializer(many=True)
    not_ready = ReadyTicketSerializer(many=True)


class CommitLinkedSerializer(serializers.Serializer):
    ticket_id = serializers.CharField()
    commit_sha = serializers.CharField()
    already_linked = serializers.BooleanField()


# --- request shapes ---------------------------------------------------------------------------------------


class TicketListQuery(CursorQuery):
    workflow = serializers.CharField(max_length=100, help_text="workflow slug")
    status = serializers.ChoiceField(choices=[*STATUS_CHOICES, ("blocked", "Blocked")], required=False)
    priority = PriorityField(required=False)
    ticket_type = serializers.ChoiceField(choices=TYPE_CHOICES, required=False)
    assigned_agent = serializers.CharField(max_length=100, required=False)
    include_completed = serializers.BooleanField(required=False, default=True)
    sort_by = serializers.ChoiceField(choices=list(selectors.SORT_FIELDS), required=False, default="created_at")
    sort_order = serializers.ChoiceField(choices=["desc", "asc"], required=False, default="desc")


class TicketSearchQuery(serializers.Serializer):
    workflow = serializers.CharField(max_length=100, help_text="workflow slug")
    q = serializers.CharField(min_length=3, max_length=1000, help_text="words, an error string, or a description")
    search_type = serializers.ChoiceField(choices=["hybrid", "semantic", "keyword"], required=False, default="hybrid")
    limit = serializers.IntegerField(min_value=1, max_value=50, required=False, default=10)
    include_comments = serializers.BooleanField(required=False, default=True)
    status = serializers.ChoiceField(choices=STATUS_CHOICES, required=False)
    priority = PriorityField(required=False)
    ticket_type = serializers.ChoiceField(choices=TYPE_CHOICES, required=False)
    assigned_agent = serializers.CharField(max_length=100, required=False)
    include_completed = serializers.BooleanField(required=False)


class ReadyQuery(serializers.Serializer):
    workflow = serializers.CharField(max_length=100, help_text="workflow slug")
    limit = serializers.IntegerField(min_value=1, max_value=100, required=False, default=20)


class TicketCreateRequest(StrictSerializer):
    workflow_id = serializers.CharField(max_length=100, help_text="workflow slug")
    agent_id = serializers.CharField(max_length=100, required=False, help_text=AGENT_ID_HELP)
    title = serializers.CharField(min_length=3, max_length=500)
    description = serializers.CharField(min_length=10, max_length=20000)
    ticket_type = serializers.ChoiceField(choices=TYPE_CHOICES, default="task")
    priority = PriorityField(default="medium")
    initial_status = serializers.ChoiceField(
        choices=[s for s in STATUS_CHOICES if s[0] != "done"], required=False, allow_null=True
    )
    assigned_agent_id = serializers.CharField(max_length=100, required=False, allow_null=True)
    parent_ticket_id = serializers.CharField(max_length=30, required=False, allow_null=True)
    blocked_by_ticket_ids = serializers.ListField(
        child=serializers.CharField(max_length=30), max_length=50, required=False
    )
    tags = serializers.ListField(child=serializers.CharField(max_length=50), max_length=20, required=False)


class TicketUpdateRequest(StrictSerializer):
    agent_id = serializers.CharField(max_length=100, required=False, help_text=AGENT_ID_HELP)
    version = serializers.IntegerField(
        min_value=1,
        max_value=2**31 - 1,
        required=False,
        help_text="the version you read (alternative to the If-Match header)",
    )
    update_comment = serializers.CharField(max_length=5000, required=False, allow_blank=True)
    title = serializers.CharField(min_length=3, max_length=500, required=False)
    description = serializers.CharField(min_length=10, max_length=20000, required=False)
    priority = PriorityField(required=False)
    ticket_type = serializers.ChoiceField(choices=TYPE_CHOICES, required=False)
    tags = serializers.ListField(child=serializers.CharField(max_length=50), max_length=20, required=False)
    add_tags = serializers.ListField(
        child=serializers.CharField(max_length=50), max_length=20, required=False,
        help_text="tags to add to the stored ones (atomic; concurrent edits keep each other's tags)",
    )
    remove_tags = serializers.ListField(
        child=serializers.CharField(max_length=50), max_length=20, required=False,
        help_text="tags to remove from the stored ones (atomic)",
    )
    assigned_agent_id = serializers.CharField(max_length=100, required=False, allow_null=True)
    parent_ticket_id = serializers.CharField(max_length=30, required=False, allow_null=True)


class StatusChangeRequest(StrictSerializer):
    agent_id = serializers.CharField(max_length=100, required=False, help_text=AGENT_ID_HELP)
    new_status = serializers.ChoiceField(choices=STATUS_CHOICES)
    comment = serializers.CharField(min_length=10, max_length=20000)
    commit_sha = COMMIT_SHA


class ResolveRequest(StrictSerializer):
    agent_id = serializers.CharField(max_length=100, required=False, help_text=AGENT_ID_HELP)
    resolution_comment = serializers.CharField(min_length=10, max_length=20000)
    commit_sha = COMMIT_SHA


class CommentCreateRequest(StrictSerializer):
    agent_id = serializers.CharField(max_length=100, required=False, help_text=AGENT_ID_HELP)
    comment_text = serializers.CharField(min_length=1, max_length=20000)
    comment_type = serializers.ChoiceField(choices=TicketComment.CommentType.choices, default="general")
    mentions = serializers.ListField(child=serializers.CharField(max_length=100), max_length=20, required=False)
    attachments = BoundedJSONListField(child=serializers.JSONField(), max_length=20, required=False)


class DependencyRequest(StrictSerializer):
    agent_id = serializers.CharField(max_length=100, required=False, help_text=AGENT_ID_HELP)
    blocked_by_ticket_id = serializers.CharField(max_length=30, help_text="the blocking ticket, e.g. TKT-3")


class CommitLinkRequest(StrictSerializer):
    agent_id = serializers.CharField(max_length=100, required=False, help_text=AGENT_ID_HELP)
    commit_sha = serializers.RegexField(r"^[0-9a-fA-F]{7,64}$")
    commit_message = serializers.CharField(max_length=5000, required=False, allow_blank=True)


EDITABLE = services.EDITABLE_FIELDS + services.TAG_EDITS


def _detail(ticket) -> dict:
    comments = list(selectors.ticket_comments(ticket=ticket).order_by("-created_at", "-id")[:20])[::-1]
    return payloads.ticket_detail(
        ticket,
        blockers=selectors.ticket_blockers(ticket=ticket),
        dependents=selectors.ticket_dependents(ticket=ticket),
        comments=comments,
        commits=list(ticket.commits.all()),
    )


def _with_etag(data: dict, version: int, *, status_code: int = 200) -> Response:
    return Response(data, status=status_code, headers={"ETag": etag(version)})


# --- views ----------------------------------------------------------------------------------------------


class TicketCollectionView(ApiView):
    @extend_schema(
        tags=TAG,
        operation_id="tickets_list",
        parameters=[TicketListQuery],
        responses=paginated("TicketPage", TicketSummarySerializer),
        summary="List a workflow's tickets (filtered, sorted, cursor-paginated)",
    )
    def get(self, request):
        query = validated_query(TicketListQuery, request)
        workflow = selectors.workflow_get(slug=query["workflow"], actor=request.user)

        def fetch(offset: int, limit: int):
            return selectors.ticket_list(
                workflow=workflow,
                status=query.get("status"),
                ticket_type=query.get("ticket_type"),
                priority=query.get("priority"),
                assigned_agent_id=query.get("assigned_agent"),
                include_completed=query["include_completed"],
                limit=limit,
                offset=offset,
                sort_by=query["sort_by"],
                sort_order=query["sort_order"],
            )

        return paginate_selector(request, fetch, payloads.ticket_summary)

    @extend_schema(
        tags=TAG,
        operation_id="tickets_create",
        request=TicketCreateRequest,
        responses={201: TicketCreatedSerializer},
        summary="Create a ticket; returns it with similar_tickets (possible duplicates)",
    )
    def post(self, request):
        data = validated(TicketCreateRequest, request.data)
        act_as_self(request, data.pop("agent_id", None))
        workflow = selectors.workflow_get(slug=data.pop("workflow_id"), actor=request.user)
        similar = possible_duplicates(workflow=workflow, title=data["title"], description=data["description"])
        vector = blockers.text_vector(data["title"], data["description"])
        ticket = services.ticket_create(actor=request.user, workflow=workflow, **data)
        body = {"ticket": _detail(ticket), "similar_tickets": similar}
        risk = blockers.ticket_risk_on_create(ticket=ticket, text_vector=vector)
        if risk is not None:
            body["risk"] = risk
        return _with_etag(body, ticket.version, status_code=201)


class TicketSearchView(ApiView):
    @extend_schema(
        tags=TAG,
        operation_id="tickets_search",
        parameters=[TicketSearchQuery],
        responses=SearchResponseSerializer,
        summary="Search tickets by meaning (semantic), exact words (keyword) or both (hybrid)",
    )
    def get(self, request):
        query = validated_query(TicketSearchQuery, request)
        workflow = selectors.workflow_get(slug=query["workflow"], actor=request.user)
        filters = {
            key: query[key] for key in ("status", "priority", "ticket_type", "include_completed") if key in query
        }
        if "assigned_agent" in query:
            filters["assigned_agent_id"] = query["assigned_agent"]
        from tickets.search import ticket_search

        results = ticket_search(
            workflow_ids=[workflow.id],
            query=query["q"],
            search_type=query["search_type"],
            filters=filters,
            limit=query["limit"],
            include_comments=query["include_comments"],
        )
        return Response({"results": results, "search_type": query["search_type"]})


class ReadyTicketsView(ApiView):
    @extend_schema(
        tags=TAG,
        operation_id="tickets_ready",
        parameters=[ReadyQuery],
        responses=ReadyTicketsSerializer,
        summary="Open tickets with no open blocker, and the blocked ones with what they wait for",
    )
    def get(self, request):
        query = validated_query(ReadyQuery, request)
        workflow = selectors.workflow_get(slug=query["workflow"], actor=request.user)
        return Response(payloads.ready_tickets_payload(selectors.ready_tickets(workflow=workflow, limit=query["limit"])))


class TicketDetailView(ApiView):
    @extend_schema(
        tags=TAG,
        operation_id="tickets_retrieve",
        parameters=[TICKET_ID_PARAM],
        responses=TicketDetailSerializer,
        summary="One ticket with blockers, recent comments and commits; ETag = its version",
    )
    def get(self, request, ticket_id):
        read = selectors.ticket_detail_get(ticket_id=ticket_id, actor=request.user)
        body = payloads.ticket_read_payload(read, risk=blockers.ticket_risk_shown(ticket=read.ticket))
        return _with_etag(body, read.ticket.version)

    @extend_schema(
        tags=TAG,
        operation_id="tickets_partial_update",
        request=TicketUpdateRequest,
        responses=TicketDetailSerializer,
        parameters=[
            TICKET_ID_PARAM,
            OpenApiParameter(
                "If-Match",
                OpenApiTypes.STR,
                OpenApiParameter.HEADER,
                required=False,
                description='the ETag you read, e.g. "3"; 409 if the ticket changed since',
            ),
        ],
        summary="Edit ticket fields (not status); optimistic concurrency via If-Match or version",
    )
    def patch(self, request, ticket_id):
        data = validated(TicketUpdateRequest, request.data)
        act_as_self(request, data.pop("agent_id", None))
        header_version = parse_if_match(request.headers.get("If-Match"))
        body_version = data.pop("version", None)
        if header_version is not None and body_version is not None and header_version != body_version:
            raise DomainError(f"If-Match ({header_version}) and version ({body_version}) disagree; send one of them.")
        expected = header_version if header_version is not None else body_version
        updates = {key: data[key] for key in EDITABLE if key in data}
        ticket = services.ticket_update(
            actor=request.user,
            ticket_id=ticket_id,
            updates=updates,
            update_comment=data.get("update_comment", ""),
            expected_version=expected,
        ).ticket
        ticket = selectors.ticket_get(ticket_id=ticket.id, actor=request.user)
        return _with_etag(_detail(ticket), ticket.version)


class TicketStatusView(ApiView):
    @extend_schema(
        tags=TAG,
        operation_id="tickets_change_status",
        parameters=[TICKET_ID_PARAM],
        request=StatusChangeRequest,
        responses=TicketTransitionResultSerializer,
        summary="Move a ticket along backlog→analyzing→building→building-done→testing→done",
    )
    def post(self, request, ticket_id):
        data = validated(StatusChangeRequest, request.data)
        act_as_self(request, data.pop("agent_id", None))
        transition = services.ticket_change_status(
            actor=request.user,
            ticket_id=ticket_id,
            new_status=data["new_status"],
            comment=data["comment"],
            commit_sha=data.get("commit_sha"),
        )
        return _with_etag(payloads.ticket_transition_payload(transition), transition.ticket.version)


class TicketResolveView(ApiView):
    @extend_schema(
        tags=TAG,
        operation_id="tickets_resolve",
        parameters=[TICKET_ID_PARAM],
        request=ResolveRequest,
        responses=TicketTransitionResultSerializer,
        summary="Close a ticket as done from any open status; unblocks the tickets it blocked",
    )
    def post(self, request, ticket_id):
        data = validated(ResolveRequest, request.data)
        act_as_self(request, data.pop("agent_id", None))
        transition = services.ticket_resolve(
            actor=request.user,
            ticket_id=ticket_id,
            resolution_comment=data["resolution_comment"],
            commit_sha=data.get("commit_sha"),
        )
        return _with_etag(payloads.ticket_transition_payload(transition), transition.ticket.version)


class TicketCommentsView(ApiView):
    cursor_ordering = ("created_at", "id")

    @extend_schema(
        tags=TAG,
        operation_id="tickets_comments_list",
        parameters=[TICKET_ID_PARAM, CursorQuery],
        responses=paginated("CommentPage", CommentSerializer),
        summary="A ticket's comments, oldest first",
    )
    def get(self, request, ticket_id):
        validated_query(CursorQuery, request)
        ticket = selectors.ticket_get(ticket_id=ticket_id, actor=request.user)
        return paginate_queryset(self, request, selectors.ticket_comments(ticket=ticket), payloads.comment_payload)

    @extend_schema(
        tags=TAG,
        operation_id="tickets_comments_create",
        parameters=[TICKET_ID_PARAM],
        request=CommentCreateRequest,
        responses={201: CommentSerializer},
        summary="Comment on a ticket; mentioned agents are notified",
    )
    def post(self, request, ticket_id):
        data = validated(CommentCreateRequest, request.data)
        act_as_self(request, data.pop("agent_id", None))
        comment = services.comment_add(
            actor=request.user,
            ticket_id=ticket_id,
            comment_text=data["comment_text"],
            comment_type=data["comment_type"],
            mentions=data.get("mentions"),
            attachments=data.get("attachments"),
        )
        return Response(payloads.comment_payload(comment), status=201)


class TicketDependenciesView(ApiView):
    @extend_schema(
        tags=TAG,
        operation_id="tickets_dependencies_add",
        parameters=[TICKET_ID_PARAM],
        request=DependencyRequest,
        responses={201: TicketBlockersResultSerializer},
        summary="Mark the ticket as blocked by another (cycles are refused with the cycle path)",
    )
    def post(self, request, ticket_id):
        data = validated(DependencyRequest, request.data)
        act_as_self(request, data.pop("agent_id", None))
        change = services.dependency_add(
            actor=request.user, ticket_id=ticket_id, blocked_by_ticket_id=data["blocked_by_ticket_id"]
        )
        return Response(payloads.dependency_change_payload(change), status=201)


class TicketDependencyDetailView(ApiView):
    @extend_schema(
        tags=TAG,
        operation_id="tickets_dependencies_remove",
        parameters=[
            TICKET_ID_PARAM,
            OpenApiParameter(
                "blocker_id", OpenApiTypes.STR, OpenApiParameter.PATH, description="the blocking ticket, e.g. TKT-3"
            ),
        ],
        request=None,
        responses={200: TicketBlockersResultSerializer},
        summary="Remove a blocker from a ticket",
    )
    def delete(self, request, ticket_id, blocker_id):
        change = services.dependency_remove(actor=request.user, ticket_id=ticket_id, blocked_by_ticket_id=blocker_id)
        return Response(payloads.dependency_change_payload(change))


class TicketCommitsView(ApiView):
    @extend_schema(
        tags=TAG,
        operation_id="tickets_commits_link",
        parameters=[TICKET_ID_PARAM],
        request=CommitLinkRequest,
        responses={200: CommitLinkedSerializer, 201: CommitLinkedSerializer},
        summary="Link a git commit to a ticket (idempotent)",
    )
    def post(self, request, ticket_id):
        data = validated(CommitLinkRequest, request.data)
        act_as_self(request, data.pop("agent_id", None))
        linked = services.commit_link(
            actor=request.user,
            ticket_id=ticket_id,
            commit_sha=data["commit_sha"],
            commit_message=data.get("commit_message", ""),
        )
        return Response(payloads.commit_linked_payload(linked), status=201 if linked.created else 200)


class TicketHistoryView(ApiView):
    @extend_schema(
        tags=TAG,
        operation_id="tickets_history",
        parameters=[TICKET_ID_PARAM],
        responses=HistorySerializer,
        summary="A ticket's full audit trail: who changed which field when",
    )
    def get(self, request, ticket_id):
        ticket = selectors.ticket_get(ticket_id=ticket_id, actor=request.user)
        return Response(payloads.ticket_history_payload(ticket, selectors.ticket_history(ticket=ticket)))


class TicketPhaseHistoryView(ApiView):
    @extend_schema(
        tags=TAG,
        operation_id="tickets_phase_history",
        parameters=[TICKET_ID_PARAM],
        responses=PhaseHistorySerializer,
        summary="A ticket's phase transitions with who and why",
    )
    def get(self, request, ticket_id):
        ticket = selectors.ticket_get(ticket_id=ticket_id, actor=request.user)
        return Response(payloads.phase_history_payload(ticket, selectors.phase_history(ticket=ticket)))
