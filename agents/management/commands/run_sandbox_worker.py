"""`manage.py run_sandbox_worker RUN_ID`: execute one SandboxRun in this process (what the job does).

Useful to run a worker outside the job queue, and in tests that kill a worker mid-run.
"""

from django.core.management.base import BaseCommand

from agents.launcher import execute_run


class Command(BaseCommand):
    help = "Execute one sandbox run (provision, run the agent, tear down) in the foreground."

    def add_arguments(self, parser):
        parser.add_argument("run_id", type=int)
        parser.add_argument("--command", help="scripted worker: the command to run in the sandbox")

    def handle(self, *args, **options):
        run = execute_run(options["run_id"], playbook_command=options["command"])
        self.stdout.write(f"run {run.pk}: {run.status} in {run.sandbox_seconds:.1f}s (exit {run.exit_code})")
