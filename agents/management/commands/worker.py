"""`manage.py worker`: the background worker (django-tasks-db's `db_worker`) plus a small scheduler.

The scheduler thread upserts this worker's heartbeat (shown by /healthz) and, every
`MAINTENANCE_INTERVAL_SECONDS`, enqueues the periodic jobs (lease reaper, hand-off expiry) through
Django's Tasks API, so they run like any other job and any number of workers may share the queue.
"""

import logging
import os
import socket
import threading
import time

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand
from django.db import close_old_connections
from django.utils import timezone

from omoi_site.db_errors import is_database_unavailable

logger = logging.getLogger(__name__)
MAINTENANCE_INTERVAL_SECONDS = settings.MAINTENANCE_INTERVAL_SECONDS
PERIODIC_JOBS = ("tasks.jobs.reap_expired_leases", "collaboration.jobs.expire_stale_handoffs")
HOURLY_JOBS = ("agents.jobs.prune_idempotency_records", "collaboration.jobs.prune_event_records",
               "tasks.jobs.retrain_blocker_model")
TICKS_PER_HOUR = max(1, 3600 // max(1, MAINTENANCE_INTERVAL_SECONDS))


def _enqueue_periodic_jobs(tick: int) -> None:
    from django.utils.module_loading import import_string

    for path in PERIODIC_JOBS + (HOURLY_JOBS if tick % TICKS_PER_HOUR == 0 else ()):
        import_string(path).enqueue()


def _scheduler(worker_name: str, started_at, stop: threading.Event) -> None:
    from agents.models import WorkerHeartbeat

    tick = 0
    while not stop.is_set():
        try:
            WorkerHeartbeat.objects.update_or_create(
                worker_name=worker_name, defaults={"beat_at": timezone.now(), "started_at": started_at}
            )
            _enqueue_periodic_jobs(tick)
            tick += 1
        except Exception:
            logger.exception("worker scheduler tick failed")
        finally:
            close_old_connections()
        stop.wait(MAINTENANCE_INTERVAL_SECONDS)


class _WarningsAndAbove(logging.Filter):
    """db_worker sets its loggers to INFO at verbosity 1 (every periodic job would log four lines each
    interval) and to CRITICAL at 0 (a failing job would go unseen); keep warnings and errors only."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING


def _run_surviving_database_loss(arguments: list[str]) -> None:
    """Run django-tasks-db's `db_worker`; when it dies because the database went away (it re-raises every
    OperationalError but "database is locked"), wait with backoff (1 s doubling to 10 s) and start it again,
    so the worker outlives a PostgreSQL restart. Any other error ends the worker (`serve` restarts it)."""
    for name in ("django.tasks", "django_tasks_db"):
        logging.getLogger(name).addFilter(_WarningsAndAbove())
    pause = 1.0
    while True:
        try:
            call_command("db_worker", *arguments)
            return
        except Exception as error:
            if not is_database_unavailable(error):
                raise
            logger.warning("worker: %s; retrying in %.0f s", error.__class__.__name__, pause)
            close_old_connections()
            time.sleep(pause)
            pause = min(10.0, pause * 2)


class Command(BaseCommand):
    help = "Run the background worker (jobs in PostgreSQL) with its heartbeat and periodic maintenance."

    def add_arguments(self, parser):
        parser.add_argument("--batch", action="store_true", help="process outstanding jobs, then exit")

    def handle(self, *args, **options):
        worker_name = f"{socket.gethostname()}:{os.getpid()}"
        stop = threading.Event()
        thread = threading.Thread(target=_scheduler, args=(worker_name, timezone.now(), stop), daemon=True)
        thread.start()
        self.stdout.write(f"worker {worker_name} started (maintenance every {MAINTENANCE_INTERVAL_SECONDS}s)")
        try:
            arguments = ["--no-reload", "--no-startup-delay", "--worker-id", worker_name[:60]]
            if options["batch"]:
                arguments.append("--batch")
            _run_surviving_database_loss(arguments)
        finally:
            stop.set()
