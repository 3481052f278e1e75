"""Tasks (the leased, claimable units agents execute), the discoveries they record, and their timeline."""

from django.db import models
from django.db.models import Q

from tickets.models import Phase


class Task(models.Model):
    """A unit of execution under a ticket, claimed under a lease.

    Public id: `TSK-<pk>`. Claiming sets `claimed_by`, `lease_expires_at` and increments `fencing_token`;
    a holder whose token is stale (the lease expired and someone else claimed) has its writes refused.
    """

    PUBLIC_PREFIX = "TSK"

    class Status(models.TextChoices):
        PENDING = "pending"
        CLAIMED = "claimed"
        RUNNING = "running"
        COMPLETED = "completed"
        FAILED = "failed"
        CANCELLED = "cancelled"

    class Priority(models.TextChoices):
        LOW = "LOW"
        MEDIUM = "MEDIUM"
        HIGH = "HIGH"
        CRITICAL = "CRITICAL"

    class TaskType(models.TextChoices):
        IMPLEMENTATION = "implementation"
        INVESTIGATION = "investigation"
        RESEARCH = "research"
        TESTING = "testing"
        REVIEW = "review"
        BUGFIX = "bugfix"
        DOCUMENTATION = "documentation"
        DEPLOYMENT = "deployment"
        FOLLOW_UP = "follow_up"

    TRANSITIONS = {
        Status.PENDING: {Status.CLAIMED, Status.RUNNING, Status.CANCELLED},
        Status.CLAIMED: {Status.RUNNING, Status.COMPLETED, Status.FAILED, Status.PENDING, Status.CANCELLED},
        Status.RUNNING: {Status.COMPLETED, Status.FAILED, Status.PENDING, Status.CANCELLED},
        Status.COMPLETED: set(),
        Status.FAILED: {Status.PENDING},
        Status.CANCELLED: set(),
    }
    ACTIVE_STATUSES = (Status.CLAIMED, Status.RUNNING)
    PRIORITY_RANK = {Priority.LOW: 1, Priority.MEDIUM: 2, Priority.HIGH: 3, Priority.CRITICAL: 4}

    ticket = models.ForeignKey("tickets.Ticket", on_delete=models.CASCADE, related_name="tasks")
    workflow = models.ForeignKey("tickets.Workflow", on_delete=models.CASCADE, related_name="tasks")
    phase_id = models.CharField(max_length=30, choices=Phase.choices, default=Phase.IMPLEMENTATION)
    task_type = models.CharField(max_length=30, choices=TaskType.choices, default=TaskType.IMPLEMENTATION)
    description = models.TextField()
    priority = models.CharField(max_length=10, choices=Priority.choices, default=Priority.MEDIUM)
    priority_rank = models.PositiveSmallIntegerField(default=2, editable=False)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.PENDING)
    depends_on = models.ManyToManyField("self", symmetrical=False, related_name="dependents", blank=True)
    assigned_agent = models.ForeignKey(
        "agents.Agent", null=True, blank=True, on_delete=models.SET_NULL, related_name="assigned_tasks"
    )
    claimed_by = models.ForeignKey(
        "agents.Agent", null=True, blank=True, on_delete=models.SET_NULL, related_name="claimed_tasks"
    )
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    fencing_token = models.PositiveBigIntegerField(default=0)
    attempts = models.PositiveIntegerField(default=0)
    conversation_id = models.CharField(max_length=200, blank=True)
    sandbox_id = models.CharField(max_length=200, blank=True)
    result = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True)
    created_by_agent = models.ForeignKey(
        "agents.Agent", null=True, blank=True, on_delete=models.SET_NULL, related_name="created_tasks"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    started_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["created_at", "id"]
        indexes = [
            models.Index(fields=["workflow", "status", "-priority_rank", "created_at"], name="task_claim_queue"),
            models.Index(fields=["status", "lease_expires_at"], name="task_lease_expiry"),
            models.Index(fields=["ticket", "created_at"]),
        ]
        constraints = [
            models.CheckConstraint(
                condition=~Q(status__in=["claimed", "running"]) | Q(claimed_by__isnull=False),
                name="task_active_has_holder",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.public_id} {self.description[:60]}"

    @property
    def public_id(self) -> str:
        return f"{self.PUBLIC_PREFIX}-{self.pk}"

    def can_transition_to(self, new_status: str) -> bool:
        return new_status in self.TRANSITIONS[self.Status(self.status)]

    def allowed_next_statuses(self) -> list[str]:
        return sorted(str(s) for s in self.TRANSITIONS[self.Status(self.status)])


class Discovery(models.Model):
    """Something a task found while working (a bug, a missing requirement …); may spawn one follow-up task."""

    class DiscoveryType(models.TextChoices):
        BUG = "bug"
        OPTIMIZATION = "optimization"
        CLARIFICATION_NEEDED = "clarification_needed"
        NEW_COMPONENT = "new_component"
        SECURITY_ISSUE = "security_issue"
        PERFORMANCE_ISSUE = "performance_issue"
        MISSING_REQUIREMENT = "missing_requirement"
        INTEGRATION_ISSUE = "integration_issue"
        TECHNICAL_DEBT = "technical_debt"
        DOCUMENTATION = "documentation"
        OTHER = "other"

    class ResolutionStatus(models.TextChoices):
        OPEN = "open"
        IN_PROGRESS = "in_progress"
        RESOLVED = "resolved"
        WONT_FIX = "wont_fix"

    source_task = models.ForeignKey(Task, on_delete=models.CASCADE, related_name="discoveries")
    discovery_type = models.CharField(max_length=30, choices=DiscoveryType.choices)
    description = models.TextField()
    priority_boost = models.BooleanField(default=False)
    spawned_task = models.OneToOneField(
        Task, null=True, blank=True, on_delete=models.SET_NULL, related_name="spawned_from_discovery"
    )
    resolution_status = models.CharField(
        max_length=20, choices=ResolutionStatus.choices, default=ResolutionStatus.OPEN
    )
    recorded_by_agent = models.ForeignKey("agents.Agent", null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name_plural = "discoveries"
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["discovery_type", "-created_at"])]

    def __str__(self) -> str:
        return f"{self.discovery_type} on TSK-{self.source_task_id}"


class TaskEvent(models.Model):
    """One entry of a task's timeline (created, claimed, heartbeat-expired, status changes, hand-offs)."""

    task = models.ForeignKey(Task, on_delete=models.CASCADE, related_name="events")
    actor_agent = models.ForeignKey("agents.Agent", null=True, blank=True, on_delete=models.SET_NULL)
    actor_user = models.ForeignKey("auth.User", null=True, blank=True, on_delete=models.SET_NULL)
    event_type = models.CharField(max_length=40)
    old_status = models.CharField(max_length=20, blank=True)
    new_status = models.CharField(max_length=20, blank=True)
    details = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "id"]
        indexes = [models.Index(fields=["task", "created_at"])]

    def __str__(self) -> str:
        return f"TSK-{self.task_id} {self.event_type}"
