"""`manage.py serve`: the web server (uvicorn, ASGI: HTTP + websockets) with the background worker beside it.

Used by `make run`. Ctrl-C stops the worker, then the server; the embedded PostgreSQL stops when the last
process attached to it exits.
"""

import os
import signal
import subprocess
import sys

from django.conf import settings
from django.core.management.base import BaseCommand


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
        worker = None
        if not options["no_worker"]:
            worker = subprocess.Popen([sys.executable, "manage.py", "worker"], cwd=settings.BASE_DIR)
        try:
            self.stdout.write(f"serving on http://{options['host']}:{options['port']}/ (admin /admin/, MCP /mcp/)")
            uvicorn.run(
                "omoi_site.asgi:application",
                host=options["host"],
                port=options["port"],
                lifespan="off",
                log_level="warning",
                ws_ping_interval=20,
            )
        finally:
            if worker is not None:
                # On Ctrl-C the terminal already sent SIGINT to the worker (same process group); give it
                # time to finish, then ask once more and finally kill it.
                for stop_signal in (None, signal.SIGTERM, signal.SIGKILL):
                    if stop_signal is not None and worker.poll() is None:
                        worker.send_signal(stop_signal)
                    try:
                        worker.wait(timeout=10)
                        break
                    except subprocess.TimeoutExpired:
                        continue
            self.stdout.write("stopped")
