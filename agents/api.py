"""REST door for agents and sandbox runs: who is in a workflow, what an agent did, where and how each
worker ran, and launching a worker (POST /api/sandbox-runs). Thin over `agents.selectors` (trajectories
are the same the MCP tool returns)."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.response import Response

from agents import selectors
from agents.agent_templates import TEMPLATES
from agents.models import SandboxRun
from agents.payloads import agent_payload, sandbox_run_payload, trajectory_payload
from omoi_site.api_support import (
    ApiView,
    CursorQuery,
    StrictSerializer,
    paginate_queryset,
    paginated,
    validated,
    validated_query,
)
from tickets.selectors import workflow_get, workflow_ids_for

TAG = ["agents"]
AGENT_ID_PARAM = OpenApiParameter("agent_id", OpenApiTypes.STR, OpenApiParameter.PATH, description="e.g. worker-1")
RUN_ID_PARAM = OpenApiParameter("run_id", OpenApiTypes.STR, OpenApiParameter.PATH, description="e.g. RUN-4 (or 4)")



class AgentSerializer(serializers.Serializer):
    agent_id = serializers.CharField()
    agent_type = serializers.CharField()
    template = serializers.CharField(allow_null=True)
    capabilities = serializers.ListField(child=serializers.CharField())
    status = serializers.CharField()
    workflows = serializers.ListField(child=serializers.CharField())
    last_heartbeat = serializers.DateTimeField(allow_null=True)
    created_at = serializers.DateTimeField(allow_null=True)


class TrajectoryStepSerializer(serializers.Serializer):
    at = serializers.DateTimeField()
    event = serializers.CharField()
    task_id = serializers.CharField(required=False)
    ticket_id = serializers.CharField(required=False)
    payload = serializers.DictField(required=False)


class TrajectorySerializer(serializers.Serializer):
    agent_id = serializers.CharField()
    status = serializers.CharField()
    steps = TrajectoryStepSerializer(many=True)


class SandboxRunSerializer(serializers.Serializer):
    run_id = serializers.CharField()
    agent_id = serializers.CharField()
    workflow_id = serializers.CharField()
    task_id = serializers.CharField(allow_null=True)
    ticket_id = serializers.CharField(allow_null=True)
    template = serializers.CharField(allow_blank=True)
    provider = serializers.CharField()
    sandbox_id = serializers.CharField(allow_null=True)
    status = serializers.CharField()
    created_at = serializers.DateTimeField(allow_null=True)
    started_at = serializers.DateTimeField(allow_null=True)
    ended_at = serializers.DateTimeField(allow_null=True)
    exit_code = serializers.IntegerField(allow_null=True)
    sandbox_seconds = serializers.FloatField()
    llm_prompt_tokens = serializers.IntegerField()
    llm_completion_tokens = serializers.IntegerField()
    llm_cost_usd = serializers.DecimalField(max_digits=10, decimal_places=4, coerce_to_string=True)
    log_tail = serializers.CharField(allow_blank=True)
    error = serializers.CharField(allow_blank=True)


class AgentListQuery(CursorQuery):
    workflow = serializers.CharField(max_length=100, help_text="workflow slug")


class TrajectoryQuery(serializers.Serializer):
    include_full_history = serializers.BooleanField(required=False, default=False)


class SandboxRunListQuery(CursorQuery):
    workflow = serializers.CharField(max_length=100, help_text="workflow slug")
    status = serializers.ChoiceField(choices=SandboxRun.Status.choices, required=False)


def _visible_agent(request, agent_id: str):
    return selectors.agent_get_visible(agent_id=agent_id, actor=request.user)


class AgentCollectionView(ApiView):
    cursor_ordering = ("agent_id",)

    @extend_schema(
        tags=TAG,
        operation_id="agents_list",
        parameters=[AgentListQuery],
        responses=paginated("AgentPage", AgentSerializer),
        summary="Agents of a workflow",
    )
    def get(self, request):
        query = validated_query(AgentListQuery, request)
        workflow = workflow_get(slug=query["workflow"], actor=request.user)
        visible = workflow_ids_for(request.user)
        return paginate_queryset(
            self, request, selectors.agent_list(workflow_id=workflow.id),
            lambda agent: agent_payload(agent, visible_workflow_ids=visible),
        )


class AgentDetailView(ApiView):
    @extend_schema(
        tags=TAG,
        operation_id="agents_retrieve",
        parameters=[AGENT_ID_PARAM],
        responses=AgentSerializer,
        summary="One agent of your workflows",
    )
    def get(self, request, agent_id):
        agent = _visible_agent(request, agent_id)
        return Response(agent_payload(agent, visible_workflow_ids=selectors.agent_workflow_ids_visible_to(agent=agent, viewer=request.user)))


class AgentTrajectoryView(ApiView):
    @extend_schema(
        tags=TAG,
        operation_id="agents_trajectory",
        parameters=[AGENT_ID_PARAM, TrajectoryQuery],
        responses=TrajectorySerializer,
        summary="What an agent did, oldest first (last 50 steps unless full history)",
    )
    def get(self, request, agent_id):
        query = validated_query(TrajectoryQuery, request)
        agent = _visible_agent(request, agent_id)
        events = selectors.agent_trajectory(agent=agent, viewer=request.user, include_full_history=query["include_full_history"])
        return Response(trajectory_payload(agent, events))


class LaunchWorkerBody(StrictSerializer):
    template = serializers.ChoiceField(choices=[(name, name) for name in TEMPLATES])
    task_id = serializers.CharField(required=False, max_length=30, help_text="a pending task, e.g. TSK-7")
    ticket_id = serializers.CharField(required=False, max_length=30, help_text="or a ticket: its next pending task (created if none)")


class SandboxRunCollectionView(ApiView):
    cursor_ordering = ("-created_at", "-id")

    @extend_schema(
        tags=["sandbox-runs"],
        operation_id="sandbox_runs_list",
        parameters=[SandboxRunListQuery],
        responses=paginated("SandboxRunPage", SandboxRunSerializer),
        summary="Sandbox runs of a workflow, newest first",
    )
    def get(self, request):
        query = validated_query(SandboxRunListQuery, request)
        workflow = workflow_get(slug=query["workflow"], actor=request.user)
        runs = selectors.sandbox_run_list(workflow_id=workflow.id, status=query.get("status"))
        return paginate_queryset(self, request, runs, sandbox_run_payload)

    @extend_schema(
        tags=["sandbox-runs"],
        operation_id="sandbox_runs_launch",
        request=LaunchWorkerBody,
        responses={201: SandboxRunSerializer},
        summary="Launch a sandboxed worker on a task or ticket (coordinators and staff)",
    )
    def post(self, request):
        from agents.launcher import launch_worker_requested

        body = validated(LaunchWorkerBody, request.data)
        run = launch_worker_requested(actor=request.user, template=body["template"], task_id=body.get("task_id"),
                                      ticket_id=body.get("ticket_id"))
        return Response(sandbox_run_payload(run), status=201)


class SandboxRunDetailView(ApiView):
    @extend_schema(
        tags=["sandbox-runs"],
        operation_id="sandbox_runs_retrieve",
        parameters=[RUN_ID_PARAM],
        responses=SandboxRunSerializer,
        summary="One sandbox run: provider, status, timing, cost, log tail",
    )
    def get(self, request, run_id):
        return Response(sandbox_run_payload(selectors.sandbox_run_get(run_id=run_id, actor=request.user)))
