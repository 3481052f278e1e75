"""Tasks (the leased, claimable units agents execute), the discoveries they record, and their timeline."""

from django.contrib.postgres.indexes import GinIndex
from django.contrib.postgres.search import SearchVector, SearchVectorField
from django.db import models
from django.db.models import Q
from pgvector.django import HnswIndex, VectorField

from omoi_site.constants import PRIORITY_RANK, Priority
from omoi_site.domain import TASK_PREFIX, task_public_id, ticket_public_id
from tickets.models import EMBEDDING_DIMENSIONS, Phase


class Task(models.Model):
    """A unit of execution under a ticket, claimed under a lease.

    Public id: `TSK-<pk>`. Claiming sets `claimed_by`, `lease_expires_at` and increments `fencing_token`;
    a holder whose token is stale (the lease expired and someone else claimed) has its writes refused.
    """

    PUBLIC_PREFIX = TASK_PREFIX

    class Status(models.TextChoices):
        PENDING = "pending"
        CLAIMED = "claimed"
        RUNNING = "running"
        COMPLETED = "completed"
        FAILED = "failed"
        CANCELLED = "cancelled"

    # The same lowercase priorities as tickets (omoi_site.constants); input of any case is accepted by the services.
    Priority = Priority

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
    PRIORITY_RANK = PRIORITY_RANK

    ticket = models.ForeignKey("tickets.Ticket", on_delete=models.CASCADE, related_name="tasks")
    workflow = models.ForeignKey("agents.Workflow", on_delete=models.CASCADE, related_name="tasks")
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
        return task_public_id(self.pk)

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
    # For blocker prediction (tasks.blockers): similar past discoveries by meaning and by words.
    embedding = VectorField(dimensions=EMBEDDING_DIMENSIONS, null=True, blank=True, editable=False)
    search_vector = models.GeneratedField(
        expression=SearchVector("description", config="english"),
        output_field=SearchVectorField(),
        db_persist=True,
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name_plural = "discoveries"
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["discovery_type", "-created_at"]),
            GinIndex(fields=["search_vector"], name="discovery_search_gin"),
            HnswIndex(
                name="discovery_embedding_hnsw",
                fields=["embedding"],
                m=16,
                ef_construction=64,
                opclasses=["vector_cosine_ops"],
            ),
        ]

    def __str__(self) -> str:
        return f"{self.discovery_type} on {task_public_id(self.source_task_id)}"


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
        return f"{task_public_id(self.task_id)} {self.event_type}"


class BlockerModel(models.Model):
    """One trained blocker-prediction model (tasks.blockers): its tier, coefficients as JSON (never
    pickle), the walk-forward metrics that chose the tier, and a fingerprint of its training data so
    retraining on unchanged data returns this row instead of writing a new one.

    `workflow` empty = the model shared by every workflow (the workflow prior is one of its features).
    """

    class Tier(models.TextChoices):
        PRIOR = "prior"
        KNN = "knn"
        LR = "lr"

    workflow = models.ForeignKey("agents.Workflow", null=True, blank=True, on_delete=models.CASCADE)
    tier = models.CharField(max_length=10, choices=Tier.choices)
    feature_version = models.PositiveSmallIntegerField()
    parameters = models.JSONField(default=dict, blank=True)
    metrics = models.JSONField(default=dict, blank=True)
    training_fingerprint = models.CharField(max_length=64)
    examples = models.PositiveIntegerField(default=0)
    positives = models.PositiveIntegerField(default=0)
    trained_through = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["training_fingerprint"], name="blocker_model_fingerprint_unique"
            ),
        ]
        permissions = [("retrain_blockermodel", "Can retrain the blocker model")]

    def __str__(self) -> str:
        return self.version

    @property
    def version(self) -> str:
        return f"{self.tier}-{self.pk}"

    @property
    def served_metrics(self) -> dict:
        """The walk-forward metrics (roc_auc, brier, ece) of this model's own tier; empty when training
        had too few examples to evaluate."""
        return self.metrics.get("walk_forward", {}).get(self.tier, {}) if isinstance(self.metrics, dict) else {}


class BlockerPrediction(models.Model):
    """The prediction ledger: every blocker prediction made (shown or held back as the shadow holdout),
    with the model version and the time its inputs were read (t0); graded when the ticket finishes.
    Evaluation reads this table, never a re-scoring of the past with a newer model."""

    class Moment(models.TextChoices):
        CREATED = "created"
        REQUESTED = "requested"

    ticket = models.ForeignKey("tickets.Ticket", on_delete=models.CASCADE, related_name="blocker_predictions")
    moment = models.CharField(max_length=20, choices=Moment.choices)
    t0 = models.DateTimeField()
    model = models.ForeignKey(BlockerModel, null=True, blank=True, on_delete=models.SET_NULL)
    model_version = models.CharField(max_length=40)
    model_tier = models.CharField(max_length=10, choices=BlockerModel.Tier.choices)
    p_blocked = models.FloatField(null=True, blank=True)
    base_rate = models.FloatField()
    band = models.CharField(max_length=10)
    shown = models.BooleanField()
    risk = models.JSONField(default=dict, blank=True)
    outcome_blocked = models.BooleanField(null=True, blank=True)
    graded_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["ticket", "-id"])]
        constraints = [
            models.UniqueConstraint(fields=["ticket", "moment", "model_version"], name="blocker_prediction_unique"),
            models.CheckConstraint(
                condition=Q(p_blocked__isnull=True) | Q(p_blocked__gte=0, p_blocked__lte=1),
                name="blocker_prediction_probability",
            ),
        ]

    def __str__(self) -> str:
        return f"{ticket_public_id(self.ticket_id)} {self.moment} {self.model_version}"

    @property
    def is_revealable(self) -> bool:
        """Whether its figures may be displayed: a shown prediction, or a held-back one whose ticket has
        finished and been graded (showing it can no longer change the outcome it is measured on)."""
        return self.shown or self.graded_at is not None
