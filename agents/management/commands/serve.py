"""`manage.py serve`: the web server (uvicorn, ASGI: HTTP + websockets) with the background worker beside it.

Used by `make run`. A `Supervisor` thread restarts the worker when it exits and the embedded PostgreSQL
when it dies. Ctrl-C stops the worker, then the server; the embedded PostgreSQL stops when the last process
attached to it exits.
"""

import os
import signal
import subprocess
import sys
import threading
import time

from django.conf import settings
from django.core.management.base import BaseCommand

from omoi_site.embedded_db import restart_embedded_server_if_stopped

WORKER_BACKOFF_SECONDS = (1, 2, 4, 8, 15, 30)
WORKER_HEALTHY_AFTER_SECONDS = 60  # a worker that ran this long resets the backoff
WATCH_INTERVAL_SECONDS = 0.5


class Supervisor:
    """Keeps what `serve` runs beside the web server alive, from one thread.

    - The background worker (`manage.py worker`): started at once; when it exits for any reason (crash,
      `kill -9`, lost database) it is reaped and started again after a backoff of 1, 2, 4 … 30 s (reset once a
      worker has run for a minute). While none runs, /healthz turns `degraded` as its heartbeat ages.
    - The embedded PostgreSQL (no DATABASE_URL): if its server process dies it is started again on the same
      data directory and socket (retried every few seconds, with one log line per attempt); calls meanwhile
      fail fast with "database unavailable; retry in a few seconds".
    """

    def __init__(self, *, worker: bool, stdout):
        self.run_worker = worker
        self.stdout = stdout
        self.worker: subprocess.Popen | None = None
        self.restarts = 0
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="omoi-supervisor", daemon=True)

    def start(self) -> None:
        if self.run_worker:
            self._start_worker()
        self._thread.start()

    def _start_worker(self) -> None:
        self.worker = subprocess.Popen([sys.executable, "manage.py", "worker"], cwd=settings.BASE_DIR)
        self._worker_started = time.monotonic()

    def _watch(self) -> None:
        failures = 0
        next_database_check = 0.0
        while not self._stopping.wait(WATCH_INTERVAL_SECONDS):
            if settings.DATABASE_KIND == "embedded" and time.monotonic() >= next_database_check:
                next_database_check = time.monotonic() + self._keep_embedded_database_running()
            if self.worker is None or self.worker.poll() is None:  # poll() also reaps an exited worker
                continue
            if time.monotonic() - self._worker_started >= WORKER_HEALTHY_AFTER_SECONDS:
                failures = 0
            delay = WORKER_BACKOFF_SECONDS[min(failures, len(WORKER_BACKOFF_SECONDS) - 1)]
            self.stdout.write(f"worker exited with code {self.worker.returncode}; starting a new one in {delay} s")
            if self._stopping.wait(delay):
                return
            failures += 1
            self.restarts += 1
            self._start_worker()

    def _keep_embedded_database_running(self) -> float:
        """Seconds until the next check: 2 while healthy, 3 after a failed restart."""
        try:
            if restart_embedded_server_if_stopped():
                self.stdout.write("embedded PostgreSQL had stopped; started it again")
            return 2.0
        except Exception as error:  # e.g. its old processes still hold the shared memory: try again soon
            self.stdout.write(f"embedded PostgreSQL is down and could not be started yet ({error.__class__.__name__}: "
                              f"{str(error)[:200]}); retrying")
            return 3.0

    def stop(self) -> None:
        self._stopping.set()
        worker = self.worker
        if worker is not None:
            # On Ctrl-C the terminal already sent SIGINT to the worker (same process group); give it time to
            # finish, then ask once more and finally kill it.
            for stop_signal in (None, signal.SIGTERM, signal.SIGKILL):
                if stop_signal is not None and worker.poll() is None:
                    worker.send_signal(stop_signal)
                try:
                    worker.wait(timeout=10)
                    break
                except subprocess.TimeoutExpired:
                    continue


class Command(BaseCommand):
    help = "Serve HTTP + websockets on HOST:PORT and run the background worker beside it."

    def add_arguments(self, parser):
        parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
        parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
        parser.add_argument("--no-worker", action="store_true")
        parser.add_argument("--prepare", action="store_true", help="migrate and seed the demo data first")

    def handle(self, *args, **options):
        import uvicorn
        from django.core.management import call_command

        if options["prepare"]:
            call_command("migrate", interactive=False, verbosity=0)
            call_command("seed_demo", stdout=self.stdout)

        if settings.CHANNEL_LAYER_KIND == "in-memory":
            self.stdout.write("channel layer: in-memory, fed by the event log (the worker's events reach this process); "
                              "set REDIS_URL for several web processes")
        else:
            self.stdout.write(f"channel layer: {settings.CHANNEL_LAYER_KIND}")
        if not os.environ.get("MCP_SERVER_URL"):  # launched workers call back to where we serve
            callback_host = "127.0.0.1" if options["host"] in ("0.0.0.0", "::", "") else options["host"]
            os.environ["MCP_SERVER_URL"] = settings.MCP_SERVER_URL = f"http://{callback_host}:{options['port']}/mcp/"
        self.stdout.write(f"database: {settings.DATABASE_KIND}")
        supervisor = Supervisor(worker=not options["no_worker"], stdout=self.stdout)
        supervisor.start()
        try:
            self.stdout.write(f"serving on http://{options['host']}:{options['port']}/ (admin /admin/, MCP /mcp/)")
            uvicorn.run(
                "omoi_site.asgi:application",
                host=options["host"],
                port=options["port"],
                lifespan="off",
                log_level="warning",
                ws_ping_interval=20,
                # Per-message deflate compresses every event once per socket (a zlib context each): a quarter
                # of the CPU of fan-out, for events of a few hundred bytes. Same in railway.json and Procfile.
                ws_per_message_deflate=False,
            )
        finally:
            supervisor.stop()
            self.stdout.write("stopped")
