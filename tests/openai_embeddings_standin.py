"""A local stand-in for an OpenAI-compatible `POST /v1/embeddings` endpoint, for tests.

It runs a real HTTP server on 127.0.0.1 in a thread so the provider's real httpx client, timeouts and
retry loop are exercised (STYLE.md: mock outside services through their real client, never by patching
our code). It records every request and can be scripted to answer with error statuses or to stall.

Vectors are deterministic pseudo-random unit vectors seeded by the text, so equal texts get equal
vectors and different texts different ones.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np


def fake_vector(text: str, dimensions: int) -> list[float]:
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
    vector = np.random.default_rng(seed).standard_normal(dimensions)
    return (vector / np.linalg.norm(vector)).tolist()


class OpenAIEmbeddingsStandIn:
    """`base_url` ends in /v1. Set `script` to a list of (status, json_body) answered first, in order;
    `delay_seconds` to stall each response; `dimensions_override` to answer with the wrong size."""

    def __init__(self):
        self.requests: list[dict] = []
        self.script: list[tuple[int, dict]] = []
        self.delay_seconds = 0.0
        self.dimensions_override: int | None = None
        self.on_request = None  # called with the request body before answering (tests observe the caller)
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_POST(self):
                length = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(length) or b"{}")
                standin.requests.append(
                    {"path": self.path, "authorization": self.headers.get("Authorization"), "body": body}
                )
                if standin.on_request is not None:
                    standin.on_request(body)
                if standin.delay_seconds:
                    time.sleep(standin.delay_seconds)
                if standin.script:
                    status, payload = standin.script.pop(0)
                elif self.path != "/v1/embeddings":
                    status, payload = 404, {"error": {"message": f"no route {self.path}"}}
                else:
                    dimensions = standin.dimensions_override or int(body.get("dimensions", 1536))
                    inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
                    status, payload = (
                        200,
                        {
                            "object": "list",
                            "model": body.get("model"),
                            # Reversed on purpose: clients must order by `index`, not by position.
                            "data": [
                                {"object": "embedding", "index": i, "embedding": fake_vector(text, dimensions)}
                                for i, text in reversed(list(enumerate(inputs)))
                            ],
                            "usage": {"prompt_tokens": 0, "total_tokens": 0},
                        },
                    )
                data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client timed out and left
                    pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
