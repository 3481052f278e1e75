"""Tickets: the unit of work humans triage and agents coordinate on, with blockers and a full history."""

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.contrib.postgres.indexes import GinIndex
from django.contrib.postgres.search import SearchVector, SearchVectorField
from django.db import models
from django.db.models import F, Q
from pgvector.django import HnswIndex, VectorField

from agents.models import Workflow  # identity owns it; re-exported for `from tickets.models import Workflow`
from omoi_site.constants import PRIORITY_RANK, Priority
from omoi_site.domain import TICKET_PREFIX, ticket_public_id

EMBEDDING_DIMENSIONS = 384


class Phase(models.TextChoices):
    BACKLOG = "PHASE_BACKLOG", "Backlog"
    REQUIREMENTS = "PHASE_REQUIREMENTS", "Requirements"
    DESIGN = "PHASE_DESIGN", "Design"
    IMPLEMENTATION = "PHASE_IMPLEMENTATION", "Implementation"
    TESTING = "PHASE_TESTING", "Testing"
    DEPLOYMENT = "PHASE_DEPLOYMENT", "Deployment"
    DONE = "PHASE_DONE", "Done"


class Ticket(models.Model):
    """A piece of work with a status machine, blockers, comments, commits and an audit trail.

    Public id: `TKT-<pk>`. `is_blocked` is the 'blocked' overlay: true while any blocker is unresolved;
    the underlying status is kept so work resumes where it stopped.
    """

    PUBLIC_PREFIX = TICKET_PREFIX

    class Status(models.TextChoices):
        BACKLOG = "backlog"
        ANALYZING = "analyzing"
        BUILDING = "building"
        BUILDING_DONE = "building-done"
        TESTING = "testing"
        DONE = "done"

    Priority = Priority  # omoi_site.constants: shared with tasks

    class TicketType(models.TextChoices):
        TASK = "task"
        BUG = "bug"
        FEATURE = "feature"
        IMPROVEMENT = "improvement"
        RESEARCH = "research"
        EPIC = "epic"
        CHORE = "chore"

    # Legal moves of the status machine (the 'blocked' overlay is separate and set by dependencies).
    TRANSITIONS = {
        Status.BACKLOG: {Status.ANALYZING},
        Status.ANALYZING: {Status.BUILDING, Status.BACKLOG},
        Status.BUILDING: {Status.BUILDING_DONE},
        Status.BUILDING_DONE: {Status.TESTING, Status.BUILDING},
        Status.TESTING: {Status.DONE, Status.BUILDING},
        Status.DONE: set(),
    }
    STATUS_PHASE = {
        Status.BACKLOG: Phase.BACKLOG,
        Status.ANALYZING: Phase.REQUIREMENTS,
        Status.BUILDING: Phase.IMPLEMENTATION,
        Status.BUILDING_DONE: Phase.IMPLEMENTATION,
        Status.TESTING: Phase.TESTING,
        Status.DONE: Phase.DONE,
    }
    PRIORITY_RANK = PRIORITY_RANK

    workflow = models.ForeignKey(Workflow, on_delete=models.CASCADE, related_name="tickets")
    title = models.CharField(max_length=500)
    description = models.TextField()
    ticket_type = models.CharField(max_length=20, choices=TicketType.choices, default=TicketType.TASK)
    priority = models.CharField(max_length=10, choices=Priority.choices, default=Priority.MEDIUM)
    priority_rank = models.PositiveSmallIntegerField(default=2, editable=False)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.BACKLOG)
    phase = models.CharField(max_length=30, choices=Phase.choices, default=Phase.BACKLOG)
    is_blocked = models.BooleanField(default=False)
    tags = ArrayField(models.CharField(max_length=50), default=list, blank=True)
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="children")
    duplicate_of = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="duplicates"
    )
    created_by_agent = models.ForeignKey(
        "agents.Agent", null=True, blank=True, on_delete=models.SET_NULL, related_name="created_tickets"
    )
    created_by_user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="created_tickets"
    )
    assigned_agent = models.ForeignKey(
        "agents.Agent", null=True, blank=True, on_delete=models.SET_NULL, related_name="assigned_tickets"
    )
    resolution = models.TextField(blank=True)
    embedding = VectorField(dimensions=EMBEDDING_DIMENSIONS, null=True, blank=True, editable=False)
    embedded_text_hash = models.CharField(max_length=64, blank=True, editable=False)
    search_vector = models.GeneratedField(
        expression=SearchVector("title", weight="A", config="english")
        + SearchVector("description", weight="B", config="english"),
        output_field=SearchVectorField(),
        db_persist=True,
    )
    version = models.PositiveIntegerField(default=1)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    resolved_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["workflow", "status"]),
            models.Index(fields=["workflow", "-created_at"]),
            GinIndex(fields=["search_vector"], name="ticket_search_gin"),
            HnswIndex(
                name="ticket_embedding_hnsw",
                fields=["embedding"],
                m=16,
                ef_construction=64,
                opclasses=["vector_cosine_ops"],
            ),
        ]
        constraints = [
            models.CheckConstraint(condition=Q(version__gte=1), name="ticket_version_positive"),
            models.CheckConstraint(condition=~Q(parent=F("id")), name="ticket_not_own_parent"),
        ]

    def __str__(self) -> str:
        return f"{self.public_id} {self.title}"

    @property
    def public_id(self) -> str:
        return ticket_public_id(self.pk)

    def allowed_next_statuses(self) -> list[str]:
        return sorted(str(s) for s in self.TRANSITIONS[self.Status(self.status)])

    def can_transition_to(self, new_status: str) -> bool:
        return new_status in self.TRANSITIONS[self.Status(self.status)]


class TicketDependency(models.Model):
    """`ticket` is blocked by `blocker` until the blocker is done. No self-loops, no cycles (service)."""

    ticket = models.ForeignKey(Ticket, on_delete=models.CASCADE, related_name="blocked_by_links")
    blocker = models.ForeignKey(Ticket, on_delete=models.CASCADE, related_name="blocking_links")
    created_by_agent = models.ForeignKey("agents.Agent", null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name_plural = "ticket dependencies"
        constraints = [
            models.UniqueConstraint(fields=["ticket", "blocker"], name="ticket_dependency_unique"),
            models.CheckConstraint(condition=~Q(ticket=F("blocker")), name="ticket_dependency_no_self_loop"),
        ]

    def __str__(self) -> str:
        return f"{ticket_public_id(self.ticket_id)} blocked by {ticket_public_id(self.blocker_id)}"


class TicketComment(models.Model):
    """A comment on a ticket by an agent or a human; embedded for search when comments are included."""

    class CommentType(models.TextChoices):
        GENERAL = "general"
        STATUS_CHANGE = "status_change"
        RESOLUTION = "resolution"
        QUESTION = "question"
        REVIEW = "review"
        DISCOVERY = "discovery"

    ticket = models.ForeignKey(Ticket, on_delete=models.CASCADE, related_name="comments")
    author_agent = models.ForeignKey("agents.Agent", null=True, blank=True, on_delete=models.SET_NULL)
    author_user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    comment_type = models.CharField(max_length=20, choices=CommentType.choices, default=CommentType.GENERAL)
    text = models.TextField()
    mentions = ArrayField(models.CharField(max_length=100), default=list, blank=True)
    attachments = models.JSONField(default=list, blank=True)
    embedding = VectorField(dimensions=EMBEDDING_DIMENSIONS, null=True, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(author_agent__isnull=False) | Q(author_user__isnull=False), name="comment_has_author"
            )
        ]

    def __str__(self) -> str:
        return f"comment on {ticket_public_id(self.ticket_id)}"


class TicketEvent(models.Model):
    """One row of a ticket's audit trail: who changed what, when, from which value to which."""

    ticket = models.ForeignKey(Ticket, on_delete=models.CASCADE, related_name="events")
    actor_agent = models.ForeignKey("agents.Agent", null=True, blank=True, on_delete=models.SET_NULL)
    actor_user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    event_type = models.CharField(max_length=40)
    field = models.CharField(max_length=40, blank=True)
    old_value = models.JSONField(null=True, blank=True)
    new_value = models.JSONField(null=True, blank=True)
    comment = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "id"]
        indexes = [models.Index(fields=["ticket", "created_at"])]

    def __str__(self) -> str:
        return f"{ticket_public_id(self.ticket_id)} {self.event_type} {self.field}".strip()


class CommitLink(models.Model):
    """A commit that implements or fixes a ticket."""

    ticket = models.ForeignKey(Ticket, on_delete=models.CASCADE, related_name="commits")
    commit_sha = models.CharField(max_length=64)
    commit_message = models.TextField(blank=True)
    linked_by_agent = models.ForeignKey("agents.Agent", null=True, blank=True, on_delete=models.SET_NULL)
    linked_by_user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [models.UniqueConstraint(fields=["ticket", "commit_sha"], name="commit_link_unique")]

    def __str__(self) -> str:
        return f"{ticket_public_id(self.ticket_id)} {self.commit_sha[:10]}"


class PhaseTransition(models.Model):
    """Recorded whenever a ticket's phase moves (as a consequence of a status change)."""

    ticket = models.ForeignKey(Ticket, on_delete=models.CASCADE, related_name="phase_transitions")
    from_phase = models.CharField(max_length=30, choices=Phase.choices)
    to_phase = models.CharField(max_length=30, choices=Phase.choices)
    actor_agent = models.ForeignKey("agents.Agent", null=True, blank=True, on_delete=models.SET_NULL)
    actor_user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    reason = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return f"{ticket_public_id(self.ticket_id)} {self.from_phase} → {self.to_phase}"
