"""REST door for tasks: list/detail/create, the lease (claim-next, heartbeat, release), status, discoveries,
timeline and a ticket's task graph. Thin over `tasks.services` / `tasks.selectors` (shared with MCP)."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.response import Response

from collaboration import selectors as collaboration_selectors
from omoi_site.api_support import (
    ApiView,
    BoundedJSONObjectField,
    CursorQuery,
    PriorityField,
    StrictSerializer,
    act_as_self,
    paginate_queryset,
    paginated,
    require_agent,
    validated,
    validated_query,
)
from tasks import blockers, payloads, selectors, services
from tasks.models import Discovery, Task
from tickets.models import Phase
from tickets.selectors import ticket_get, workflow_get

TAG = ["tasks"]
TASK_ID_PARAM = OpenApiParameter("task_id", OpenApiTypes.STR, OpenApiParameter.PATH, description="e.g. TSK-7")
TICKET_ID_PARAM = OpenApiParameter("ticket_id", OpenApiTypes.STR, OpenApiParameter.PATH, description="e.g. TKT-12")
AGENT_ID_HELP = "optional; when given it must be your own agent id (403 otherwise)"
FENCING = serializers.IntegerField(
    min_value=0,
    max_value=2**62,
    required=False,
    allow_null=True,
    help_text="from claim-next; refuses stale lease holders",
)


class TaskSerializer(serializers.Serializer):
    task_id = serializers.CharField()
    ticket_id = serializers.CharField()
    workflow_id = serializers.CharField(required=False)
    phase_id = serializers.CharField(required=False)
    task_type = serializers.CharField()
    description = serializers.CharField(required=False)
    priority = serializers.CharField()
    status = serializers.CharField()
    assigned_agent_id = serializers.CharField(required=False)
    claimed_by = serializers.CharField(required=False)
    lease_expires_at = serializers.DateTimeField(required=False)
    fencing_token = serializers.IntegerField(required=False)
    conversation_id = serializers.CharField(required=False)
    sandbox_id = serializers.CharField(required=False)
    result = serializers.JSONField(required=False)
    error = serializers.CharField(required=False)
    created_at = serializers.DateTimeField(required=False)
    completed_at = serializers.DateTimeField(required=False)
    depends_on = serializers.ListField(child=serializers.CharField(), required=False)


class DiscoverySerializer(serializers.Serializer):
    discovery_id = serializers.IntegerField()
    source_task_id = serializers.CharField()
    discovery_type = serializers.CharField()
    description = serializers.CharField(required=False)
    priority_boost = serializers.BooleanField(required=False)
    spawned_task_id = serializers.CharField(required=False)
    resolution_status = serializers.CharField(required=False)
    recorded_by = serializers.CharField(required=False)
    created_at = serializers.DateTimeField(required=False)


class TaskCreatedSerializer(serializers.Serializer):
    task = TaskSerializer()
    discovery = DiscoverySerializer(required=False)


class TaskEnvelopeSerializer(serializers.Serializer):
    task = TaskSerializer()


class ClaimResultSerializer(serializers.Serializer):
    task = TaskSerializer(allow_null=True)
    lease_seconds = serializers.IntegerField(required=False)


class HeartbeatResultSerializer(serializers.Serializer):
    task_id = serializers.CharField()
    lease_expires_at = serializers.DateTimeField()
    fencing_token = serializers.IntegerField()


class TaskDiscoveriesSerializer(serializers.Serializer):
    task_id = serializers.CharField()
    discoveries = DiscoverySerializer(many=True)


class DiscoveriesSerializer(serializers.Serializer):
    discoveries = DiscoverySerializer(many=True)


class TimelineSerializer(serializers.Serializer):
    task_id = serializers.CharField()
    timeline = serializers.ListField(child=serializers.DictField())


class GraphNodeSerializer(serializers.Serializer):
    task_id = serializers.CharField()
    status = serializers.CharField()
    task_type = serializers.CharField()
    priority = serializers.CharField()
    phase_id = serializers.CharField()
    claimed_by = serializers.CharField(allow_null=True)


class GraphEdgeSerializer(serializers.Serializer):
    from_ = serializers.CharField()
    to = serializers.CharField()
    type = serializers.CharField()
    discovery_type = serializers.CharField(required=False)

    def get_fields(self):
        fields = super().get_fields()
        fields["from"] = fields.pop("from_")
        return fields


class GraphSerializer(serializers.Serializer):
    ticket_id = serializers.CharField()
    nodes = GraphNodeSerializer(many=True)
    edges = GraphEdgeSerializer(many=True)


# --- requests ---------------------------------------------------------------------------------------------


class TaskListQuery(CursorQuery):
    workflow = serializers.CharField(max_length=100, required=False, help_text="workflow slug (default: all of yours)")
    ticket = serializers.CharField(max_length=30, required=False, help_text="only this ticket's tasks, e.g. TKT-12")
    status = serializers.ChoiceField(choices=Task.Status.choices, required=False)
    task_type = serializers.ChoiceField(choices=Task.TaskType.choices, required=False)


class TaskCreateRequest(StrictSerializer):
    ticket_id = serializers.CharField(max_length=30)
    phase_id = serializers.ChoiceField(choices=Phase.choices)
    description = serializers.CharField(min_length=10, max_length=20000)
    task_type = serializers.ChoiceField(choices=Task.TaskType.choices, default="implementation")
    priority = PriorityField(default="medium")
    discovery_type = serializers.ChoiceField(choices=Discovery.DiscoveryType.choices, required=False, allow_null=True)
    discovery_description = serializers.CharField(max_length=20000, required=False, allow_null=True, allow_blank=True)
    source_task_id = serializers.CharField(max_length=30, required=False, allow_null=True)
    priority_boost = serializers.BooleanField(default=False)
    claim = serializers.BooleanField(default=False, help_text="hold it at once (agents only)")
    dependencies = serializers.ListField(child=serializers.CharField(max_length=30), max_length=50, required=False)


class ClaimNextRequest(StrictSerializer):
    agent_id = serializers.CharField(max_length=100, required=False, help_text=AGENT_ID_HELP)
    workflow_id = serializers.CharField(max_length=100, help_text="workflow slug")
    task_types = serializers.ListField(
        child=serializers.ChoiceField(choices=Task.TaskType.choices), max_length=10, required=False
    )


class HeartbeatRequest(StrictSerializer):
    agent_id = serializers.CharField(max_length=100, required=False, help_text=AGENT_ID_HELP)
    fencing_token = FENCING


class ReleaseRequest(StrictSerializer):
    agent_id = serializers.CharField(max_length=100, required=False, help_text=AGENT_ID_HELP)
    fencing_token = FENCING
    reason = serializers.CharField(max_length=2000, required=False, allow_blank=True)


class TaskStatusRequest(StrictSerializer):
    status = serializers.ChoiceField(choices=Task.Status.choices)
    result = BoundedJSONObjectField(required=False, allow_null=True)
    error_message = serializers.CharField(max_length=10000, required=False, allow_null=True, allow_blank=True)
    fencing_token = FENCING


class DiscoveryQuery(serializers.Serializer):
    resolution_status = serializers.ChoiceField(choices=Discovery.ResolutionStatus.choices, required=False)


class DiscoveriesByTypeQuery(serializers.Serializer):
    discovery_type = serializers.ChoiceField(choices=Discovery.DiscoveryType.choices)
    limit = serializers.IntegerField(min_value=1, max_value=100, required=False, default=50)


# --- views ------------------------------------------------------------------------------------------------


def _task(task) -> dict:
    return payloads.task_payload(task)


class TaskCollectionView(ApiView):
    @extend_schema(
        tags=TAG,
        operation_id="tasks_list",
        parameters=[TaskListQuery],
        responses=paginated("TaskPage", TaskSerializer),
        summary="Tasks of your workflows (filter by workflow, ticket, status, type), newest first",
    )
    def get(self, request):
        query = validated_query(TaskListQuery, request)
        workflow = workflow_get(slug=query["workflow"], actor=request.user) if "workflow" in query else None
        ticket = (
            ticket_get(ticket_id=query["ticket"], actor=request.user, argument="ticket") if "ticket" in query else None
        )
        tasks = selectors.task_list(
            actor=request.user,
            workflow=workflow,
            ticket=ticket,
            status=query.get("status"),
            task_type=query.get("task_type"),
        )
        return paginate_queryset(self, request, tasks, _task)

    @extend_schema(
        tags=TAG,
        operation_id="tasks_create",
        request=TaskCreateRequest,
        responses={201: TaskCreatedSerializer},
        summary="Create a task under a ticket (with discovery_type+source_task_id: a discovery spawning it)",
    )
    def post(self, request):
        data = validated(TaskCreateRequest, request.data)
        return Response(payloads.task_created_payload(services.task_create(actor=request.user, **data)), status=201)


class TaskDetailView(ApiView):
    @extend_schema(
        tags=TAG,
        operation_id="tasks_retrieve",
        parameters=[TASK_ID_PARAM],
        responses=TaskSerializer,
        summary="One task with its lease, dependencies and result",
    )
    def get(self, request, task_id):
        task = selectors.task_get(task_id=task_id, actor=request.user)
        return Response(payloads.task_payload(task, include_dependencies=True))


class ClaimNextView(ApiView):
    @extend_schema(
        tags=TAG,
        operation_id="tasks_claim_next",
        request=ClaimNextRequest,
        responses=ClaimResultSerializer,
        summary="Atomically claim the highest-priority ready task; task null when nothing is ready",
    )
    def post(self, request):
        data = validated(ClaimNextRequest, request.data)
        act_as_self(request, data.get("agent_id"))
        agent = require_agent(request, action="claim tasks")
        workflow = workflow_get(slug=data["workflow_id"], actor=agent)
        task = services.task_claim_next(agent=agent, workflow=workflow, task_types=data.get("task_types"))
        if task is None:
            return Response({"task": None})
        result = {"task": payloads.task_payload(task, include_dependencies=True), "lease_seconds": services.lease_seconds()}
        warnings = blockers.task_claim_warnings(task=task)
        if warnings:
            result["warnings"] = warnings
        return Response(result)


class HeartbeatView(ApiView):
    @extend_schema(
        tags=TAG,
        operation_id="tasks_heartbeat",
        parameters=[TASK_ID_PARAM],
        request=HeartbeatRequest,
        responses=HeartbeatResultSerializer,
        summary="Renew your lease on a task you hold",
    )
    def post(self, request, task_id):
        data = validated(HeartbeatRequest, request.data)
        act_as_self(request, data.get("agent_id"))
        agent = require_agent(request, action="hold a task lease")
        task = services.task_heartbeat(agent=agent, task_id=task_id, fencing_token=data.get("fencing_token"))
        return Response(payloads.lease_payload(task))


class ReleaseView(ApiView):
    @extend_schema(
        tags=TAG,
        operation_id="tasks_release",
        parameters=[TASK_ID_PARAM],
        request=ReleaseRequest,
        responses=TaskEnvelopeSerializer,
        summary="Give a task you hold back to the queue",
    )
    def post(self, request, task_id):
        data = validated(ReleaseRequest, request.data)
        act_as_self(request, data.get("agent_id"))
        agent = require_agent(request, action="release a task")
        task = services.task_release(
            agent=agent, task_id=task_id, fencing_token=data.get("fencing_token"), reason=data.get("reason", "")
        )
        return Response({"task": payloads.task_payload(task)})


class TaskStatusView(ApiView):
    @extend_schema(
        tags=TAG,
        operation_id="tasks_change_status",
        parameters=[TASK_ID_PARAM],
        request=TaskStatusRequest,
        responses=TaskEnvelopeSerializer,
        summary="Set a task's status (running, completed with result, failed with error_message)",
    )
    def post(self, request, task_id):
        data = validated(TaskStatusRequest, request.data)
        task = services.task_update_status(
            actor=request.user,
            task_id=task_id,
            status=data["status"],
            result=data.get("result"),
            error_message=data.get("error_message"),
            fencing_token=data.get("fencing_token"),
        )
        return Response({"task": payloads.task_payload(task)})


class TaskDiscoveriesView(ApiView):
    @extend_schema(
        tags=TAG,
        operation_id="tasks_discoveries",
        parameters=[TASK_ID_PARAM, DiscoveryQuery],
        responses=TaskDiscoveriesSerializer,
        summary="Discoveries a task recorded (and the task each spawned)",
    )
    def get(self, request, task_id):
        query = validated_query(DiscoveryQuery, request)
        task = selectors.task_get(task_id=task_id, actor=request.user)
        discoveries = selectors.task_discoveries(task=task, resolution_status=query.get("resolution_status"))
        return Response(payloads.task_discoveries_payload(task, discoveries))


class TaskTimelineView(ApiView):
    @extend_schema(
        tags=TAG,
        operation_id="tasks_timeline",
        parameters=[TASK_ID_PARAM],
        responses=TimelineSerializer,
        summary="Everything that happened to a task, oldest first",
    )
    def get(self, request, task_id):
        task = selectors.task_get(task_id=task_id, actor=request.user)
        return Response({"task_id": task.public_id, "timeline": collaboration_selectors.task_timeline(task=task)})


class DiscoveriesByTypeView(ApiView):
    @extend_schema(
        tags=["discoveries"],
        operation_id="discoveries_list",
        parameters=[DiscoveriesByTypeQuery],
        responses=DiscoveriesSerializer,
        summary="Recent discoveries of one type across your workflows",
    )
    def get(self, request):
        query = validated_query(DiscoveriesByTypeQuery, request)
        discoveries = selectors.discoveries_by_type(
            actor=request.user, discovery_type=query["discovery_type"], limit=query["limit"]
        )
        return Response({"discoveries": [payloads.discovery_payload(d) for d in discoveries]})


class TicketGraphView(ApiView):
    @extend_schema(
        tags=TAG,
        operation_id="tickets_task_graph",
        parameters=[TICKET_ID_PARAM],
        responses=GraphSerializer,
        summary="A ticket's task graph: nodes = tasks; edges = dependencies and discovery spawns",
    )
    def get(self, request, ticket_id):
        ticket = ticket_get(ticket_id=ticket_id, actor=request.user)
        return Response(selectors.workflow_graph(ticket=ticket))


# --- blocker prediction -----------------------------------------------------------------------------------


class TicketRiskSerializer(serializers.Serializer):
    ticket_id = serializers.CharField()
    risk = serializers.JSONField(allow_null=True, help_text="null when no forecast is shown for this ticket")


class SimilarDiscoveriesQuery(serializers.Serializer):
    workflow_id = serializers.CharField(max_length=100)
    query = serializers.CharField(min_length=3, max_length=1000)
    discovery_type = serializers.ChoiceField(choices=Discovery.DiscoveryType.choices, required=False)
    limit = serializers.IntegerField(min_value=1, max_value=50, required=False, default=10)


class SimilarDiscoveriesSerializer(serializers.Serializer):
    discoveries = serializers.ListField(child=serializers.JSONField())


class TicketRiskView(ApiView):
    @extend_schema(
        tags=["tickets"],
        operation_id="tickets_predict_blockers",
        parameters=[TICKET_ID_PARAM],
        responses=TicketRiskSerializer,
        summary="Forecast now what may block a ticket (p_blocked, band, likely blocker types, similar discoveries)",
    )
    def get(self, request, ticket_id):
        ticket = ticket_get(ticket_id=ticket_id, actor=request.user)
        return Response({"ticket_id": ticket.public_id, "risk": blockers.ticket_risk_predict(ticket=ticket)})


class SimilarDiscoveriesView(ApiView):
    @extend_schema(
        tags=["discoveries"],
        operation_id="discoveries_similar",
        parameters=[SimilarDiscoveriesQuery],
        responses=SimilarDiscoveriesSerializer,
        summary="Past discoveries of a workflow most like a query (meaning + words)",
    )
    def get(self, request):
        query = validated_query(SimilarDiscoveriesQuery, request)
        workflow = workflow_get(slug=query["workflow_id"], actor=request.user)
        return Response({"discoveries": blockers.discoveries_similar(
            workflow=workflow, query=query["query"], discovery_type=query.get("discovery_type"), limit=query["limit"]
        )})
