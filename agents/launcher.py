"""Launching sandboxed workers: `launch_worker` (service) and `execute_run` (the background job's body).

launch_worker(ticket|task, template) checks the workflow's sandbox limit, picks or creates the task, makes
the worker's agent identity and a pending SandboxRun, and enqueues the `run_sandbox_worker` job (defined
at the end of this module) after commit. execute_run provisions the sandbox (Daytona or local), issues a short-lived token scoped to the
workflow, runs the OpenHands agent (real LLM when LLM_* is configured, else the scripted playbook), records
progress, cost and result on the SandboxRun, and always tears the sandbox down and revokes the token. If
the process dies mid-run, the task's lease expires and the task returns to the queue.
"""

from __future__ import annotations

import logging
import time
from decimal import Decimal

from django.conf import settings
from django.db import transaction
from django.tasks import task
from django.utils import timezone

from agents import services as agent_services
from agents.agent_templates import get_template
from agents.models import Agent, SandboxRun
from agents.payloads import sandbox_run_event_payload
from agents.selectors import workflow_budget_refusal
from omoi_site.domain import Conflict, DomainError, PermissionDenied, is_agent, task_public_id, ticket_public_id
from omoi_site.events import publish_on_commit
from tasks.models import Task
from tasks.selectors import task_get
from tasks.services import task_assign, task_create
from tickets.models import Ticket, Workflow
from tickets.selectors import ticket_get

logger = logging.getLogger(__name__)
ACTIVE_RUN_STATUSES = (SandboxRun.Status.PENDING, SandboxRun.Status.PROVISIONING, SandboxRun.Status.RUNNING)




@transaction.atomic
def launch_worker(
    *, actor, template: str, task: Task | None = None, ticket: Ticket | None = None, agent_id: str | None = None,
    provider: str | None = None, enqueue: bool = True,
) -> SandboxRun:
    """Create a SandboxRun for a worker of `template` on `task` (or on the ticket's next pending task, or a new
    task for the ticket) and enqueue its execution. Refused beyond the workflow's concurrent sandbox limit."""
    spec = get_template(template)
    if task is None and ticket is None:
        raise DomainError("launch_worker needs a task or a ticket.")
    ticket = ticket or task.ticket
    workflow = Workflow.objects.select_for_update().get(pk=ticket.workflow_id)
    active = SandboxRun.objects.filter(workflow=workflow, status__in=ACTIVE_RUN_STATUSES).count()
    if active >= workflow.max_concurrent_sandboxes:
        raise Conflict(
            f"workflow '{workflow.slug}' already runs {active} sandbox(es), its limit is {workflow.max_concurrent_sandboxes}; "
            "wait for one to finish or raise the limit in the admin."
        )
    budget_refusal = workflow_budget_refusal(workflow=workflow)
    if budget_refusal:
        raise Conflict(budget_refusal)
    if ticket.status == Ticket.Status.DONE:
        raise Conflict(f"ticket {ticket.public_id} is done; nothing to launch a worker for.")
    if task is None:
        task = Task.objects.filter(ticket=ticket, status=Task.Status.PENDING).order_by("-priority_rank", "id").first()
    if task is None:
        task, _ = task_create(actor=actor, ticket_id=ticket.id, phase_id="PHASE_IMPLEMENTATION",
                              description=f"Work on {ticket.public_id}: {ticket.title}", task_type="implementation")
    if task.status != Task.Status.PENDING:
        raise Conflict(f"task {task.public_id} is '{task.status}'; only pending tasks can get a new worker.")
    worker_id = agent_id or f"{spec.name}-{timezone.now():%H%M%S}-{task.pk}"
    worker = agent_services.agent_create_or_update(agent_id=worker_id, workflows=[workflow], agent_type=spec.agent_type,
                                                   template=spec.name)
    agent_services.agent_status_set(agent_id=worker.pk, status=Agent.Status.SPAWNING)
    run = SandboxRun.objects.create(
        agent=worker, workflow=workflow, task=task, ticket=ticket, template=spec.name,
        provider=provider or settings.SANDBOX_PROVIDER,
    )
    # the task waits for this worker: nobody else may claim it meanwhile
    task_assign(actor=actor, task_id=task.pk, agent=worker)
    if enqueue:
        transaction.on_commit(lambda: run_sandbox_worker.enqueue(run.pk))
    publish_on_commit("sandbox.started", workflow=workflow.slug, ticket=ticket.public_id, payload=sandbox_run_event_payload(run),
                      agents=[worker.agent_id] + ([actor.agent_id] if is_agent(actor) else []))
    return run


def launch_worker_requested(*, actor, template: str, task_id=None, ticket_id=None) -> SandboxRun:
    """A launch asked for through MCP or REST: only coordinator agents and staff users may launch, on a
    task or a ticket of their workflows."""
    if is_agent(actor) and actor.agent_type != Agent.AgentType.COORDINATOR:
        raise PermissionDenied(
            f"only coordinator agents and staff may launch workers; {actor.agent_id} is a {actor.agent_type}."
        )
    if not task_id and not ticket_id:
        raise DomainError("give task_id or ticket_id.")
    get_template(template)
    task = task_get(task_id=task_id, actor=actor) if task_id else None
    ticket = ticket_get(ticket_id=ticket_id, actor=actor) if ticket_id else None
    return launch_worker(actor=actor, template=template, task=task, ticket=ticket)


def _update_run(run_id: int, **fields) -> SandboxRun:
    with transaction.atomic():
        run = SandboxRun.objects.select_for_update(of=("self",)).select_related("workflow", "ticket", "task").get(pk=run_id)
        for name, value in fields.items():
            setattr(run, name, value)
        run.save(update_fields=list(fields))
        if run.status in (SandboxRun.Status.SUCCEEDED, SandboxRun.Status.FAILED, SandboxRun.Status.CANCELLED):
            publish_on_commit("sandbox.finished", workflow=run.workflow.slug,
                              ticket=run.ticket.public_id if run.ticket_id else None, payload=sandbox_run_event_payload(run),
                              agents=[run.agent_id])
        return run


def _llm_for(run: SandboxRun, token: str, playbook_command: str | None):
    if settings.LLM_MODEL and (settings.LLM_API_KEY or settings.LLM_BASE_URL):
        from agents.agent_side.worker_runtime import build_llm

        return build_llm(model=settings.LLM_MODEL, api_key=settings.LLM_API_KEY, base_url=settings.LLM_BASE_URL)
    from agents.agent_side.scripted_brain import scripted_llm, task_worker_playbook

    return scripted_llm(task_worker_playbook(
        agent_id=run.agent_id, task_id=task_public_id(run.task_id), ticket_id=ticket_public_id(run.ticket_id),
        command=playbook_command or "ls -la && echo work-done", discovery=f"noticed while working on {task_public_id(run.task_id)}",
    ), final_message="Task completed.")


def execute_run(run_id: int, *, llm=None, playbook_command: str | None = None) -> SandboxRun:
    """Provision, run and tear down one worker. Records status, timings, cost and a log tail on the run."""
    from agents.sandboxes import get_sandbox_provider

    run = _update_run(run_id, status=SandboxRun.Status.PROVISIONING)
    spec = get_template(run.template)
    sandbox = None
    token_label = f"sandbox-run-{run_id}"
    token_issued = False
    started = time.monotonic()
    try:
        provider = get_sandbox_provider(run.provider)
        if not getattr(provider, "is_isolated", True):
            logger.warning("sandbox run %s uses the local provider: commands are NOT isolated", run_id)
        token = agent_services.agent_token_issue(agent=run.agent, label=token_label, ttl_seconds=spec.max_run_seconds + 300)
        token_issued = True
        environment = {
            "MCP_SERVER_URL": settings.MCP_SERVER_URL, "AGENT_ID": run.agent_id, "TASK_ID": task_public_id(run.task_id),
            "OMOIOS_AGENT_TOKEN": token,
        }
        sandbox = provider.create(labels={"omoios-run": str(run_id), "agent": run.agent_id}, env=environment)
        environment["SANDBOX_ID"] = sandbox.sandbox_id
        run = _update_run(run_id, status=SandboxRun.Status.RUNNING, sandbox_id=sandbox.sandbox_id, started_at=timezone.now())
        agent_services.agent_heartbeat(agent_id=run.agent_id, status=Agent.Status.RUNNING)
        from agents.agent_side.worker_runtime import run_worker

        brief = (f"Work on task {task_public_id(run.task_id)} of ticket {ticket_public_id(run.ticket_id)} in workflow '{run.workflow.slug}'. "
                 f"You are {run.agent_id}; your sandbox is {sandbox.sandbox_id}.")
        outcome = run_worker(
            llm=llm or _llm_for(run, token, playbook_command), mcp_url=settings.MCP_SERVER_URL, token=token, sandbox=sandbox,
            working_dir=settings.BASE_DIR / ".data" / "conversations" / f"run-{run_id}", brief=brief,
            system_prompt=spec.system_prompt(agent_id=run.agent_id, workflow=run.workflow.slug, task_id=task_public_id(run.task_id),
                                             ticket_id=ticket_public_id(run.ticket_id)),
            max_iterations=spec.max_iterations, command_timeout=spec.command_timeout_seconds,
        )
        task_done = Task.objects.filter(pk=run.task_id, status=Task.Status.COMPLETED).exists()
        status = SandboxRun.Status.SUCCEEDED if (task_done and not outcome.error) else SandboxRun.Status.FAILED
        return _finish(run_id, sandbox, started, status=status, exit_code=0 if status == SandboxRun.Status.SUCCEEDED else 1,
                       log_tail="\n".join(outcome.log)[-8000:], error=outcome.error or ("" if task_done else "the task was not completed"),
                       llm_prompt_tokens=outcome.prompt_tokens, llm_completion_tokens=outcome.completion_tokens,
                       llm_cost_usd=Decimal(str(round(outcome.cost_usd, 4))))
    except Exception as error:
        logger.exception("sandbox run %s failed", run_id)
        return _finish(run_id, sandbox, started, status=SandboxRun.Status.FAILED, exit_code=1, error=f"{type(error).__name__}: {error}"[:2000])
    finally:
        if token_issued:
            agent_services.agent_tokens_revoke(agent=run.agent, label=token_label)


def _finish(run_id: int, sandbox, started: float, **fields) -> SandboxRun:
    if sandbox is not None:
        try:
            sandbox.delete()
        except Exception:
            logger.exception("deleting the sandbox of run %s failed", run_id)
    run = _update_run(run_id, ended_at=timezone.now(), sandbox_seconds=time.monotonic() - started, **fields)
    agent_services.agent_status_set(agent_id=run.agent_id, status=Agent.Status.IDLE)
    return run


def auto_spawn_on_ready(*, ticket: Ticket) -> None:
    """Receiver of tickets' `ticket_ready` hook: when the workflow maps the ticket's type to an agent
    template, `auto_spawn` runs as a background job after the commit. Off unless the workflow has rules."""
    if ticket.ticket_type not in (ticket.workflow.auto_spawn_rules or {}):
        return
    ticket_id = ticket.id
    transaction.on_commit(lambda: auto_spawn_worker.enqueue(ticket_id))


def auto_spawn(ticket_id: int) -> str:
    """Apply the workflow's auto-spawn rule to a ticket (skips, with a reason, when it no longer applies)."""
    ticket = Ticket.objects.select_related("workflow").filter(pk=ticket_id).first()
    if ticket is None or ticket.status == Ticket.Status.DONE or ticket.is_blocked:
        return "skipped: ticket gone, done or blocked"
    template = (ticket.workflow.auto_spawn_rules or {}).get(ticket.ticket_type)
    if not template:
        return "skipped: no rule for this ticket type"
    if SandboxRun.objects.filter(ticket=ticket, status__in=ACTIVE_RUN_STATUSES).exists():
        return "skipped: a worker is already running for this ticket"
    try:
        run = launch_worker(actor=None, template=template, ticket=ticket)
    except DomainError as error:
        logger.warning("auto-spawn for %s skipped: %s", ticket.public_id, error.message)
        return f"skipped: {error.message}"
    return f"launched run {run.pk}"


@transaction.atomic
def launch_workers_for_tickets(*, actor, ticket_ids: list[int], template: str) -> list[SandboxRun]:
    """Launch one worker per ticket (admin bulk action); all or nothing."""
    tickets = list(Ticket.objects.filter(pk__in=ticket_ids).order_by("pk"))
    return [launch_worker(actor=actor, template=template, ticket=ticket) for ticket in tickets]


@task
def run_sandbox_worker(run_id: int) -> str:
    """Background job: provision a sandbox, run the worker agent for the run's task, tear the sandbox down."""
    return execute_run(run_id).status


@task
def auto_spawn_worker(ticket_id: int) -> str:
    """Background job: launch a worker for a newly ready ticket whose type the workflow maps to a template."""
    return auto_spawn(ticket_id)
