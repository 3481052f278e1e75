"""REST door for collaboration: inbox, direct and broadcast messages, read receipts and hand-offs.
Thin over `collaboration.services` / `collaboration.selectors` (shared with MCP). Messages and hand-offs
are between agents, so these writes need an agent's bearer token; staff users get a 403."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.response import Response

from collaboration import payloads, selectors, services
from collaboration.models import Handoff, Message
from omoi_site.api_support import (
    ApiView,
    BoundedJSONObjectField,
    StrictSerializer,
    act_as_self,
    require_agent,
    validated,
    validated_query,
)

TAG = ["collaboration"]
HANDOFF_ID_PARAM = OpenApiParameter("handoff_id", OpenApiTypes.STR, OpenApiParameter.PATH, description="e.g. HND-3")
SELF_HELP = "optional; when given it must be your own agent id (403 otherwise)"


class MessageSerializer(serializers.Serializer):
    message_id = serializers.IntegerField()
    thread_id = serializers.CharField()
    from_ = serializers.CharField()
    to = serializers.CharField()
    message_type = serializers.CharField()
    message = serializers.CharField()
    ticket_id = serializers.CharField(required=False)
    task_id = serializers.CharField(required=False)
    created_at = serializers.DateTimeField(required=False)
    read = serializers.BooleanField(required=False)

    def get_fields(self):
        fields = super().get_fields()
        fields["from"] = fields.pop("from_")
        return fields


class InboxSerializer(serializers.Serializer):
    messages = MessageSerializer(many=True)


class SentSerializer(serializers.Serializer):
    message_id = serializers.IntegerField()
    thread_id = serializers.CharField()
    to = serializers.CharField()


class BroadcastSentSerializer(serializers.Serializer):
    message_id = serializers.IntegerField()
    thread_id = serializers.CharField()
    recipients = serializers.IntegerField()


class MarkedReadSerializer(serializers.Serializer):
    marked_read = serializers.IntegerField()


class HandoffSerializer(serializers.Serializer):
    handoff_id = serializers.CharField()
    task_id = serializers.CharField()
    from_agent_id = serializers.CharField()
    to_agent_id = serializers.CharField()
    status = serializers.CharField()
    reason = serializers.CharField(required=False)
    context = serializers.DictField(required=False)
    response_note = serializers.CharField(required=False)
    created_at = serializers.DateTimeField(required=False)
    responded_at = serializers.DateTimeField(required=False)
    fencing_token = serializers.IntegerField(required=False)


class HandoffListSerializer(serializers.Serializer):
    handoffs = HandoffSerializer(many=True)


# --- requests ---------------------------------------------------------------------------------------------


class InboxQuery(serializers.Serializer):
    thread_id = serializers.CharField(max_length=64, required=False)
    limit = serializers.IntegerField(min_value=1, max_value=100, required=False, default=50)
    unread_only = serializers.BooleanField(required=False, default=False)


class SendRequest(StrictSerializer):
    sender_agent_id = serializers.CharField(max_length=100, required=False, help_text=SELF_HELP)
    recipient_agent_id = serializers.CharField(max_length=100)
    message = serializers.CharField(min_length=1, max_length=20000)
    message_type = serializers.ChoiceField(choices=Message.MessageType.choices, default="info")
    ticket_id = serializers.CharField(max_length=30, required=False, allow_null=True)
    task_id = serializers.CharField(max_length=30, required=False, allow_null=True)
    thread_id = serializers.CharField(
        max_length=64, required=False, allow_null=True, help_text="reply in an existing thread"
    )


class BroadcastRequest(StrictSerializer):
    sender_agent_id = serializers.CharField(max_length=100, required=False, help_text=SELF_HELP)
    message = serializers.CharField(min_length=1, max_length=20000)
    message_type = serializers.ChoiceField(choices=Message.MessageType.choices, default="info")
    ticket_id = serializers.CharField(max_length=30, required=False, allow_null=True)
    task_id = serializers.CharField(max_length=30, required=False, allow_null=True)


class MarkReadRequest(StrictSerializer):
    message_ids = serializers.ListField(
        child=serializers.IntegerField(min_value=1, max_value=2**62), min_length=1, max_length=100
    )


class HandoffListQuery(serializers.Serializer):
    status = serializers.ChoiceField(choices=Handoff.Status.choices, required=False)


class HandoffRequest(StrictSerializer):
    from_agent_id = serializers.CharField(max_length=100, required=False, help_text=SELF_HELP)
    to_agent_id = serializers.CharField(max_length=100)
    task_id = serializers.CharField(max_length=30)
    reason = serializers.CharField(min_length=10, max_length=5000)
    context = BoundedJSONObjectField(required=False, allow_null=True)


class HandoffAnswerRequest(StrictSerializer):
    agent_id = serializers.CharField(max_length=100, required=False, help_text=SELF_HELP)
    note = serializers.CharField(max_length=2000, required=False, allow_blank=True)


class HandoffDeclineRequest(StrictSerializer):
    agent_id = serializers.CharField(max_length=100, required=False, help_text=SELF_HELP)
    reason = serializers.CharField(max_length=2000, required=False, allow_blank=True)


# --- views ------------------------------------------------------------------------------------------------


class MessagesView(ApiView):
    @extend_schema(
        tags=TAG,
        operation_id="messages_inbox",
        parameters=[InboxQuery],
        responses=InboxSerializer,
        summary="Your inbox (direct and broadcast), newest first; with thread_id the whole thread",
    )
    def get(self, request):
        query = validated_query(InboxQuery, request)
        agent = require_agent(request, action="read an inbox")
        items = selectors.inbox(
            agent=agent, thread_id=query.get("thread_id"), limit=query["limit"], unread_only=query["unread_only"]
        )
        return Response(payloads.inbox_payload(items))

    @extend_schema(
        tags=TAG,
        operation_id="messages_send",
        request=SendRequest,
        responses={201: SentSerializer},
        summary="Send a direct message to another agent of a shared workflow",
    )
    def post(self, request):
        data = validated(SendRequest, request.data)
        act_as_self(request, data.pop("sender_agent_id", None), argument="sender_agent_id")
        sender = require_agent(request, action="send messages")
        return Response(payloads.message_sent_payload(services.message_send(sender=sender, **data)), status=201)


class BroadcastView(ApiView):
    @extend_schema(
        tags=TAG,
        operation_id="messages_broadcast",
        request=BroadcastRequest,
        responses={201: BroadcastSentSerializer},
        summary="Send a message to every other agent of the workflow (of ticket_id/task_id if given)",
    )
    def post(self, request):
        data = validated(BroadcastRequest, request.data)
        act_as_self(request, data.pop("sender_agent_id", None), argument="sender_agent_id")
        sender = require_agent(request, action="broadcast messages")
        return Response(payloads.broadcast_sent_payload(services.message_broadcast(sender=sender, **data)), status=201)


class MarkReadView(ApiView):
    @extend_schema(
        tags=TAG,
        operation_id="messages_mark_read",
        request=MarkReadRequest,
        responses=MarkedReadSerializer,
        summary="Mark messages of your inbox read",
    )
    def post(self, request):
        data = validated(MarkReadRequest, request.data)
        agent = require_agent(request, action="mark messages read")
        return Response({"marked_read": services.messages_mark_read(agent=agent, message_ids=data["message_ids"])})


class HandoffsView(ApiView):
    @extend_schema(
        tags=TAG,
        operation_id="handoffs_list",
        parameters=[HandoffListQuery],
        responses=HandoffListSerializer,
        summary="Hand-offs you requested or were asked to take (latest 50)",
    )
    def get(self, request):
        query = validated_query(HandoffListQuery, request)
        agent = require_agent(request, action="list hand-offs")
        return Response(
            {
                "handoffs": [
                    payloads.handoff_payload(h) for h in selectors.handoffs_for(agent=agent, status=query.get("status"))
                ]
            }
        )

    @extend_schema(
        tags=TAG,
        operation_id="handoffs_request",
        request=HandoffRequest,
        responses={201: HandoffSerializer},
        summary="Ask another agent to take over a task you hold",
    )
    def post(self, request):
        data = validated(HandoffRequest, request.data)
        act_as_self(request, data.pop("from_agent_id", None), argument="from_agent_id")
        agent = require_agent(request, action="request a hand-off")
        handoff = services.handoff_request(from_agent=agent, **data)
        return Response(payloads.handoff_payload(handoff), status=201)


class HandoffDetailView(ApiView):
    @extend_schema(
        tags=TAG,
        operation_id="handoffs_retrieve",
        parameters=[HANDOFF_ID_PARAM],
        responses=HandoffSerializer,
        summary="One hand-off",
    )
    def get(self, request, handoff_id):
        return Response(payloads.handoff_payload(selectors.handoff_get(handoff_id=handoff_id, actor=request.user)))


class HandoffAcceptView(ApiView):
    @extend_schema(
        tags=TAG,
        operation_id="handoffs_accept",
        parameters=[HANDOFF_ID_PARAM],
        request=HandoffAnswerRequest,
        responses=HandoffSerializer,
        summary="Accept a hand-off addressed to you: the task and its lease become yours",
    )
    def post(self, request, handoff_id):
        data = validated(HandoffAnswerRequest, request.data)
        act_as_self(request, data.get("agent_id"))
        agent = require_agent(request, action="accept a hand-off")
        handoff = services.handoff_accept(agent=agent, handoff_id=handoff_id, note=data.get("note", ""))
        return Response(payloads.handoff_accepted_payload(handoff))


class HandoffDeclineView(ApiView):
    @extend_schema(
        tags=TAG,
        operation_id="handoffs_decline",
        parameters=[HANDOFF_ID_PARAM],
        request=HandoffDeclineRequest,
        responses=HandoffSerializer,
        summary="Decline a hand-off addressed to you; the task stays with the requester",
    )
    def post(self, request, handoff_id):
        data = validated(HandoffDeclineRequest, request.data)
        act_as_self(request, data.get("agent_id"))
        agent = require_agent(request, action="decline a hand-off")
        return Response(
            payloads.handoff_payload(
                services.handoff_decline(agent=agent, handoff_id=handoff_id, reason=data.get("reason", ""))
            )
        )
