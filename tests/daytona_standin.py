"""A loopback TEST server that speaks the Daytona API, so the real `daytona` SDK can be exercised offline.

This is not a fake of our own code: the project talks to it through the unmodified `daytona` client
library (STYLE.md: "mock only what is outside the project … through its real client library against a
local stand-in"). It implements exactly the routes `daytona` 0.226 calls for the sandbox life cycle and
for the toolbox operations the providers use; anything else answers 404 so a new SDK call shows up as a
clear test failure instead of silently passing.

Control plane (`api_url` = `<url>/api`, bearer-authenticated like the real one):
  POST   /api/sandbox                              create (from a snapshot, or an image → `pending_build`)
  GET    /api/sandbox/{id}                         get / state polling (a new sandbox turns `started` here)
  DELETE /api/sandbox/{id}                         delete (its directory is removed)
  GET    /api/sandbox/{id}/toolbox-proxy-url       where the toolbox of a sandbox lives
  *      /api/socket.io/…                          404: the SDK's live-event channel is optional, it then polls

Toolbox (the DTO's `toolboxProxyUrl` = `<url>/toolbox`, the SDK appends `/{id}/<path>`):
  POST /toolbox/{id}/process/execute               run a command for real (subprocess in the sandbox dir)
  POST /toolbox/{id}/files/bulk-upload             multipart `files[i].path` + `files[i].file`
  POST /toolbox/{id}/files/bulk-download           JSON `{"paths": [...]}` → multipart `file`/`error` parts
  GET  /toolbox/{id}/work-dir, /user-home-dir      `{"dir": …}`

Each sandbox is a directory under the server's temporary root. Commands run there with `cwd` relative to
it; a command past its timeout has its whole process group killed and gets HTTP 408 with the daemon's
`PROCESS_EXECUTION_TIMEOUT` error envelope, which the SDK turns into `DaytonaTimeoutError`.
"""

from __future__ import annotations

import email.parser
import email.policy
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

API_KEY = "test"
_SANDBOX_PATH = re.compile(r"^/api/sandbox/(?P<id>[^/]+)(?P<rest>/[^?]*)?$")
_TOOLBOX_PATH = re.compile(r"^/toolbox/(?P<id>[^/]+)(?P<rest>/[^?]*)$")


@dataclass
class StandinSandbox:
    """One sandbox of the test server: its DTO fields, its directory and every command it ran."""

    sandbox_id: str
    root: Path
    env: dict[str, str]
    labels: dict[str, str]
    snapshot: str | None
    state: str
    created_at: str
    commands: list[dict] = field(default_factory=list)


class DaytonaTestServer:
    """The Daytona API stand-in: `start()` it, point `Daytona(DaytonaConfig(api_key="test", api_url=server.api_url))`
    at it, inspect `sandboxes` / `deleted_ids` / `requests`, then `stop()` it (which removes every sandbox dir)."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="daytona-standin-"))
        self.sandboxes: dict[str, StandinSandbox] = {}
        self.deleted_ids: list[str] = []
        self.requests: list[tuple[str, str]] = []
        self.lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.api_url = f"{self.url}/api"
        self.toolbox_url = f"{self.url}/toolbox"
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="daytona-standin", daemon=True)

    def start(self) -> DaytonaTestServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)
        shutil.rmtree(self.root, ignore_errors=True)

    def sandbox_dir(self, sandbox_id: str) -> Path:
        return self.root / sandbox_id

    # --- control plane ---------------------------------------------------------------------------------

    def create_sandbox(self, body: dict) -> dict:
        sandbox_id = f"standin-{uuid.uuid4().hex[:12]}"
        root = self.sandbox_dir(sandbox_id)
        root.mkdir(parents=True)
        built_from_image = bool(body.get("buildInfo"))
        sandbox = StandinSandbox(
            sandbox_id=sandbox_id,
            root=root,
            env=dict(body.get("env") or {}),
            labels=dict(body.get("labels") or {}),
            snapshot=body.get("snapshot"),
            # An image has to be built first; a snapshot boots. Either way the SDK must poll GET until `started`.
            state="pending_build" if built_from_image else "starting",
            created_at=_now(),
        )
        with self.lock:
            self.sandboxes[sandbox_id] = sandbox
        return self.dto(sandbox)

    def get_sandbox(self, sandbox_id: str) -> dict | None:
        with self.lock:
            sandbox = self.sandboxes.get(sandbox_id)
            if sandbox is None:
                return None
            if sandbox.state in ("starting", "pending_build"):
                sandbox.state = "started"
            return self.dto(sandbox)

    def delete_sandbox(self, sandbox_id: str) -> dict | None:
        with self.lock:
            sandbox = self.sandboxes.pop(sandbox_id, None)
            if sandbox is None:
                return None
            self.deleted_ids.append(sandbox_id)
        shutil.rmtree(sandbox.root, ignore_errors=True)
        sandbox.state = "destroyed"
        return self.dto(sandbox)

    def dto(self, sandbox: StandinSandbox) -> dict:
        """The `Sandbox` DTO with every field the generated client requires (it validates strictly)."""
        return {
            "id": sandbox.sandbox_id,
            "organizationId": "standin-org",
            "name": sandbox.sandbox_id,
            "snapshot": sandbox.snapshot,
            "user": "daytona",
            "env": sandbox.env,
            "labels": sandbox.labels,
            "public": False,
            "networkBlockAll": False,
            "kvm": False,
            "target": "local",
            "cpu": 1,
            "gpu": 0,
            "memory": 1,
            "disk": 3,
            "state": sandbox.state,
            "desiredState": "destroyed" if sandbox.state == "destroyed" else "started",
            "autoStopInterval": 15,
            "autoArchiveInterval": 10080,
            "autoDeleteInterval": -1,
            "volumes": [],
            "createdAt": sandbox.created_at,
            "updatedAt": _now(),
            "toolboxProxyUrl": self.toolbox_url,
        }

    # --- toolbox ---------------------------------------------------------------------------------------

    def resolve(self, sandbox: StandinSandbox, path: str) -> Path:
        """Relative paths are relative to the sandbox's work dir, as in Daytona."""
        candidate = Path(path)
        return candidate if candidate.is_absolute() else sandbox.root / candidate

    def execute(self, sandbox: StandinSandbox, body: dict) -> tuple[int, dict]:
        command = body.get("command") or ""
        if not command.strip():
            return 400, {"statusCode": 400, "message": "empty command", "code": "BAD_REQUEST"}
        timeout = body.get("timeout") or None
        cwd = self.resolve(sandbox, body["cwd"]) if body.get("cwd") else sandbox.root
        env = {**os.environ, "HOME": str(sandbox.root), **sandbox.env, **(body.get("envs") or {})}
        sandbox.commands.append({"command": command, "cwd": str(cwd), "timeout": timeout})
        # The daemon of SDK 0.226 runs the command with the first of zsh/bash/sh found.
        shell = shutil.which("zsh") or shutil.which("bash") or "/bin/sh"
        try:
            process = subprocess.Popen(
                [shell, "-c", command],
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, so a timeout kills the whole tree
            )
        except OSError as error:
            return 200, {"exitCode": -1, "result": str(error)}
        try:
            output, _ = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(process)
            return 408, {
                "statusCode": 408,
                "message": f"Command execution timed out after {timeout} seconds. The timeout can be "
                "increased by adjusting the timeout parameter in the request.",
                "code": "PROCESS_EXECUTION_TIMEOUT",
                "source": "DAYTONA_DAEMON",
            }
        return 200, {"exitCode": process.returncode, "result": output.decode("utf-8", errors="replace")}

    def bulk_upload(self, sandbox: StandinSandbox, content_type: str, payload: bytes) -> tuple[int, dict | None]:
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + payload
        )
        paths: dict[str, str] = {}
        files: dict[str, bytes] = {}
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            match = re.fullmatch(r"files\[(\d+)\]\.(path|file)", name or "")
            if not match:
                continue
            index, kind = match.groups()
            if kind == "path":
                paths[index] = part.get_payload(decode=True).decode("utf-8")
            else:
                files[index] = part.get_payload(decode=True) or b""
        if not paths or set(paths) != set(files):
            return 400, {"statusCode": 400, "message": "every files[i].path needs a files[i].file"}
        for index, path in paths.items():
            target = self.resolve(sandbox, path)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(files[index])
        return 200, None

    def bulk_download(self, sandbox: StandinSandbox, body: dict) -> tuple[bytes, str]:
        boundary = f"standin{uuid.uuid4().hex}"
        chunks: list[bytes] = []
        for path in body.get("paths") or []:
            target = self.resolve(sandbox, path)
            if target.is_file():
                name, part_type, data = "file", "application/octet-stream", target.read_bytes()
            else:
                name, part_type = "error", "application/json"
                data = json.dumps(
                    {
                        "message": f"file not found: {path}",
                        "statusCode": 404,
                        "code": "FILE_NOT_FOUND",
                        "source": "DAYTONA_DAEMON",
                    }
                ).encode()
            chunks.append(
                f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{path}"\r\n'
                f"Content-Type: {part_type}\r\n\r\n".encode()
                + data
                + b"\r\n"
            )
        chunks.append(f"--{boundary}--\r\n".encode())
        return b"".join(chunks), f"multipart/form-data; boundary={boundary}"


def _kill_group(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.communicate()


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _make_handler(server: DaytonaTestServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format, *args):  # noqa: A002 - the stdlib's signature
            pass  # quiet: the test output is for assertions

        # --- plumbing ---

        def _body(self) -> bytes:
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length else b""

        def _json_body(self) -> dict:
            raw = self._body()
            return json.loads(raw) if raw else {}

        def _send(self, status: int, payload: bytes = b"", content_type: str = "application/json") -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if payload:
                self.wfile.write(payload)

        def _json(self, status: int, payload) -> None:
            self._send(status, json.dumps(payload).encode() if payload is not None else b"")

        def _not_found(self, what: str) -> None:
            self._json(404, {"statusCode": 404, "message": f"{what} not found", "error": "Not Found"})

        def _authorized(self) -> bool:
            if self.headers.get("Authorization") == f"Bearer {API_KEY}":
                return True
            self._json(401, {"statusCode": 401, "message": "Invalid credentials", "error": "Unauthorized"})
            return False

        def _dispatch(self, method: str) -> None:
            path = self.path.split("?", 1)[0]
            server.requests.append((method, path))
            if path.startswith("/api/socket.io"):
                # The SDK's optional live-event channel; without it the SDK polls GET /sandbox/{id}.
                self._body()
                return self._not_found("socket.io")
            if not self._authorized():
                return
            if path == "/api/sandbox" and method == "POST":
                return self._json(200, server.create_sandbox(self._json_body()))
            if match := _SANDBOX_PATH.match(path):
                return self._control(method, match["id"], match["rest"] or "")
            if match := _TOOLBOX_PATH.match(path):
                return self._toolbox(method, match["id"], match["rest"])
            self._body()
            self._not_found(f"route {method} {path}")

        def _control(self, method: str, sandbox_id: str, rest: str) -> None:
            self._body()
            if method == "GET" and rest == "":
                dto = server.get_sandbox(sandbox_id)
            elif method == "DELETE" and rest == "":
                dto = server.delete_sandbox(sandbox_id)
            elif method == "GET" and rest == "/toolbox-proxy-url":
                dto = {"url": server.toolbox_url} if sandbox_id in server.sandboxes else None
            else:
                return self._not_found(f"route {method} /sandbox/{{id}}{rest}")
            if dto is None:
                return self._not_found(f"Sandbox with ID or name {sandbox_id}")
            self._json(200, dto)

        def _toolbox(self, method: str, sandbox_id: str, rest: str) -> None:
            sandbox = server.sandboxes.get(sandbox_id)
            if sandbox is None or sandbox.state != "started":
                self._body()
                return self._not_found(f"started sandbox {sandbox_id}")
            if method == "POST" and rest == "/process/execute":
                status, payload = server.execute(sandbox, self._json_body())
                return self._json(status, payload)
            if method == "POST" and rest == "/files/bulk-upload":
                status, payload = server.bulk_upload(sandbox, self.headers.get("Content-Type", ""), self._body())
                return self._json(status, payload)
            if method == "POST" and rest == "/files/bulk-download":
                payload, content_type = server.bulk_download(sandbox, self._json_body())
                return self._send(200, payload, content_type)
            self._body()
            if method == "GET" and rest in ("/work-dir", "/user-home-dir"):
                return self._json(200, {"dir": str(sandbox.root)})
            self._not_found(f"toolbox route {method} {rest}")

        def do_GET(self):  # noqa: N802 - the stdlib's naming
            self._dispatch("GET")

        def do_POST(self):  # noqa: N802
            self._dispatch("POST")

        def do_DELETE(self):  # noqa: N802
            self._dispatch("DELETE")

        def do_PUT(self):  # noqa: N802
            self._dispatch("PUT")

    return Handler
