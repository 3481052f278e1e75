"""Background jobs of the agents app (Django Tasks API)."""

from django.tasks import task


@task
def run_sandbox_worker(run_id: int) -> str:
    """Provision a sandbox, run the worker agent for the run's task, tear the sandbox down."""
    from agents.launcher import execute_run

    return execute_run(run_id).status


@task
def auto_spawn_worker(ticket_id: int) -> str:
    """Launch a worker for a newly ready ticket whose type the workflow maps to a template."""
    from agents.launcher import auto_spawn

    return auto_spawn(ticket_id)
