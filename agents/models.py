"""Workflows and the agent identities that belong to them, their bearer tokens, the trajectory they report, sandbox runs and idempotency records."""

from django.contrib.postgres.fields import ArrayField
from django.core.validators import MinValueValidator
from django.db import models


class Workflow(models.Model):
    """A scope key (`workflow_id`, a slug such as `my-project`): every ticket, task, message and agent
    permission belongs to exactly one workflow. It is identity's: who may see what is decided by which
    workflows an agent (or a staff user's `workflow:<slug>` groups) belongs to."""

    slug = models.SlugField(max_length=100, unique=True)
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    max_concurrent_sandboxes = models.PositiveIntegerField(default=4)
    monthly_budget_usd = models.DecimalField(
        max_digits=10, decimal_places=2, null=True, blank=True, validators=[MinValueValidator(0)],
        help_text="LLM spend allowed per calendar month (UTC); the launcher refuses new sandboxes once it is used up. Empty: no limit.",
    )
    auto_spawn_rules = models.JSONField(
        default=dict, blank=True, help_text="ticket_type → agent template; empty means no automatic launches"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        # The table keeps the name it had when the model lived in the tickets app (moved without copying rows).
        db_table = "tickets_workflow"
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.slug


class Agent(models.Model):
    """An AI agent identity (`worker-1`), allowed to act in the workflows it belongs to.

    It doubles as the authenticated principal of MCP and REST requests (DRF `request.user`), hence
    `is_authenticated`.
    """

    class AgentType(models.TextChoices):
        COORDINATOR = "coordinator"
        RESEARCHER = "researcher"
        IMPLEMENTER = "implementer"
        REVIEWER = "reviewer"
        SPECIALIST = "specialist"

    class Status(models.TextChoices):
        SPAWNING = "spawning"
        IDLE = "idle"
        RUNNING = "running"
        DEGRADED = "degraded"
        FAILED = "failed"
        TERMINATED = "terminated"

    agent_id = models.SlugField(max_length=100, primary_key=True)
    workflows = models.ManyToManyField(Workflow, related_name="agents", blank=True)
    agent_type = models.CharField(max_length=20, choices=AgentType.choices, default=AgentType.IMPLEMENTER)
    template = models.CharField(max_length=50, blank=True)
    capabilities = ArrayField(models.CharField(max_length=50), default=list, blank=True)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.IDLE)
    last_heartbeat = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    is_authenticated = True
    is_anonymous = False
    is_staff = False

    class Meta:
        ordering = ["agent_id"]

    def __str__(self) -> str:
        return self.agent_id

    @property
    def pk_label(self) -> str:
        return self.agent_id


class AgentToken(models.Model):
    """A bearer token of an agent. Only its SHA-256 is stored; revocable; optionally short-lived."""

    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="tokens")
    token_hash = models.CharField(max_length=64, unique=True)
    prefix = models.CharField(max_length=12)
    label = models.CharField(max_length=100, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.agent_id} {self.prefix}…"


class AgentEvent(models.Model):
    """One step of an agent's trajectory: what it reported (or what the server recorded on its behalf)."""

    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="events")
    event_type = models.CharField(max_length=60)
    task = models.ForeignKey("tasks.Task", null=True, blank=True, on_delete=models.SET_NULL)
    ticket = models.ForeignKey("tickets.Ticket", null=True, blank=True, on_delete=models.SET_NULL)
    payload = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "id"]
        indexes = [models.Index(fields=["agent", "created_at"])]

    def __str__(self) -> str:
        return f"{self.agent_id} {self.event_type}"


class SandboxRun(models.Model):
    """One launch of a worker in a sandbox: where, for what, how it went and what it cost."""

    class Provider(models.TextChoices):
        DAYTONA = "daytona"
        LOCAL = "local"

    class Status(models.TextChoices):
        PENDING = "pending"
        PROVISIONING = "provisioning"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        CANCELLED = "cancelled"

    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="sandbox_runs")
    workflow = models.ForeignKey(Workflow, on_delete=models.CASCADE, related_name="sandbox_runs")
    task = models.ForeignKey("tasks.Task", null=True, blank=True, on_delete=models.SET_NULL)
    ticket = models.ForeignKey("tickets.Ticket", null=True, blank=True, on_delete=models.SET_NULL)
    template = models.CharField(max_length=50)
    provider = models.CharField(max_length=20, choices=Provider.choices)
    sandbox_id = models.CharField(max_length=200, blank=True)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.PENDING)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    exit_code = models.IntegerField(null=True, blank=True)
    sandbox_seconds = models.FloatField(default=0)
    llm_prompt_tokens = models.PositiveIntegerField(default=0)
    llm_completion_tokens = models.PositiveIntegerField(default=0)
    llm_cost_usd = models.DecimalField(max_digits=10, decimal_places=4, default=0)
    log_tail = models.TextField(blank=True)
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["workflow", "status"])]

    def __str__(self) -> str:
        return f"RUN-{self.pk} {self.template} ({self.status})"


class IdempotencyRecord(models.Model):
    """The first result of a write tool call made with an `idempotency_key`, returned again on retries."""

    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="idempotency_records")
    key = models.CharField(max_length=200)
    tool_name = models.CharField(max_length=100)
    result = models.JSONField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["agent", "key"], name="idempotency_unique_per_agent")]

    def __str__(self) -> str:
        return f"{self.agent_id} {self.key}"


class WorkerHeartbeat(models.Model):
    """Liveness of one background worker process (upserted by `manage.py worker`)."""

    worker_name = models.CharField(max_length=200, unique=True)
    beat_at = models.DateTimeField()
    started_at = models.DateTimeField()
    jobs_run = models.PositiveIntegerField(default=0)

    def __str__(self) -> str:
        return self.worker_name
