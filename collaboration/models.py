"""Agent-to-agent collaboration: messages (direct and broadcast, with per-recipient receipts) and hand-offs."""

from django.contrib.postgres.fields import ArrayField
from django.contrib.postgres.indexes import GinIndex
from django.db import models
from django.db.models import Q

from omoi_site.domain import handoff_public_id, task_public_id


class Message(models.Model):
    """A direct message (recipient set) or a broadcast to every other agent of the workflow (recipient null).

    Each recipient gets a `MessageReceipt` row at send time, so `get_messages` and read state are per agent.
    """

    class MessageType(models.TextChoices):
        INFO = "info"
        QUESTION = "question"
        WARNING = "warning"
        DISCOVERY = "discovery"
        HANDOFF_REQUEST = "handoff_request"
        HANDOFF_ACCEPTED = "handoff_accepted"
        HANDOFF_DECLINED = "handoff_declined"

    workflow = models.ForeignKey("agents.Workflow", on_delete=models.CASCADE, related_name="messages")
    sender = models.ForeignKey("agents.Agent", on_delete=models.CASCADE, related_name="sent_messages")
    recipient = models.ForeignKey(
        "agents.Agent", null=True, blank=True, on_delete=models.CASCADE, related_name="direct_messages"
    )
    message_type = models.CharField(max_length=20, choices=MessageType.choices, default=MessageType.INFO)
    body = models.TextField()
    ticket = models.ForeignKey("tickets.Ticket", null=True, blank=True, on_delete=models.SET_NULL)
    task = models.ForeignKey("tasks.Task", null=True, blank=True, on_delete=models.SET_NULL)
    thread_id = models.CharField(max_length=64, db_index=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(recipient__isnull=True) | ~Q(recipient=models.F("sender")),
                name="message_not_to_self",
            )
        ]


    def __str__(self) -> str:
        return f"{self.sender_id} → {self.recipient_id or '*'}: {self.body[:40]}"

    @property
    def is_broadcast(self) -> bool:
        return self.recipient_id is None


class MessageReceipt(models.Model):
    """Delivery and read state of one message for one recipient agent."""

    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="receipts")
    agent = models.ForeignKey("agents.Agent", on_delete=models.CASCADE, related_name="message_receipts")
    delivered_at = models.DateTimeField(auto_now_add=True)
    read_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["message", "agent"], name="message_receipt_unique")]
        indexes = [models.Index(fields=["agent", "read_at"])]

    def __str__(self) -> str:
        return f"{self.message_id} → {self.agent_id}"


class Handoff(models.Model):
    """A request to pass a task (with its lease) from one agent to another; accepted or declined once."""

    class Status(models.TextChoices):
        REQUESTED = "requested"
        ACCEPTED = "accepted"
        DECLINED = "declined"
        EXPIRED = "expired"

    TRANSITIONS = {
        Status.REQUESTED: {Status.ACCEPTED, Status.DECLINED, Status.EXPIRED},
        Status.ACCEPTED: set(),
        Status.DECLINED: set(),
        Status.EXPIRED: set(),
    }

    workflow = models.ForeignKey("agents.Workflow", on_delete=models.CASCADE, related_name="handoffs")
    from_agent = models.ForeignKey("agents.Agent", on_delete=models.CASCADE, related_name="handoffs_out")
    to_agent = models.ForeignKey("agents.Agent", on_delete=models.CASCADE, related_name="handoffs_in")
    task = models.ForeignKey("tasks.Task", on_delete=models.CASCADE, related_name="handoffs")
    reason = models.TextField()
    context = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.REQUESTED)
    response_note = models.TextField(blank=True)
    request_message = models.ForeignKey(Message, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    # The task's fencing token when the hand-off was requested: accepting is only valid while the requester
    # still holds the task under that same token (not after its lease expired and someone else claimed it).
    fencing_token = models.PositiveBigIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    responded_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(condition=~Q(from_agent=models.F("to_agent")), name="handoff_not_to_self"),
            models.UniqueConstraint(
                fields=["task"], condition=Q(status="requested"), name="handoff_one_open_per_task"
            ),
        ]


    def __str__(self) -> str:
        return f"{self.public_id} {task_public_id(self.task_id)} {self.from_agent_id} → {self.to_agent_id} ({self.status})"

    @property
    def public_id(self) -> str:
        return handoff_public_id(self.pk)

    def can_transition_to(self, new_status: str) -> bool:
        return new_status in self.TRANSITIONS[self.Status(self.status)]


class EventRecord(models.Model):
    """One published realtime event, written in the same transaction as the change it reports.

    Its id is the event's monotonic id (`id` in every socket message): a reconnecting page or agent asks
    for the events after the last id it saw (`?since=<id>`) and gets what it missed, also across a server
    restart. `groups` are the Channels groups the event went to, so a replay covers exactly what a live
    socket of the same subscription would have received.
    """

    event = models.CharField(max_length=40)
    workflow = models.CharField(max_length=100, db_index=True)
    ticket = models.CharField(max_length=40, blank=True, default="")
    groups = ArrayField(models.CharField(max_length=100))
    envelope = models.JSONField()
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["id"]
        indexes = [GinIndex(fields=["groups"], name="eventrecord_groups_gin")]

    def __str__(self) -> str:
        return f"#{self.id} {self.event} {self.workflow}"
