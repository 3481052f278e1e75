"""A local OpenAI-compatible chat-completions server that answers with scripted tool calls.

It stands in for an LLM provider so that an OpenHands agent can be driven through the real litellm /
OpenAI client path (`LLM(model="openai/…", base_url=standin.base_url, api_key="x")`) without network.
Every request body is recorded (`requests`), so a test can assert what the agent sent: the `tools` list
with every schema, and the `messages` including the tool results.

A script step is one of:
- ``{"tool": "mcp__get_ticket", "arguments": {...}}`` — answer with that one tool call;
- ``{"content": "text"}`` — answer with a plain assistant message (ends the agent's turn);
- a callable ``step(request_body) -> step`` — decide from what the agent sent so far (e.g. an id that a
  previous tool result returned).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Step = dict[str, Any] | Callable[[dict[str, Any]], dict[str, Any]]


def last_tool_result(request_body: dict[str, Any]) -> str:
    """The text of the last `role: tool` message of a request."""
    for message in reversed(request_body.get("messages", [])):
        if message.get("role") == "tool":
            content = message.get("content")
            if isinstance(content, list):
                return "".join(part.get("text", "") for part in content if isinstance(part, dict))
            return content or ""
    raise AssertionError("the request holds no tool result")


class OpenAIStandIn:
    """`with OpenAIStandIn(steps) as llm_server:` → `llm_server.base_url` ends in /v1."""

    def __init__(self, steps: list[Step], model: str = "omoi-standin"):
        self.steps = list(steps)
        self.model = model
        self.requests: list[dict[str, Any]] = []
        self.errors: list[str] = []
        self._lock = threading.Lock()
        standin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                if not self.path.rstrip("/").endswith("/chat/completions"):
                    return self._reply(
                        404, {"error": {"message": f"stand-in serves /v1/chat/completions, not {self.path}"}}
                    )
                try:
                    answer = standin._answer(body)
                except Exception as error:  # report it to the test rather than hang the agent
                    standin.errors.append(f"{type(error).__name__}: {error}")
                    return self._reply(500, {"error": {"message": f"stand-in script failed: {error}"}})
                self._reply(200, answer)

            def _reply(self, status: int, payload: dict):
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __enter__(self) -> OpenAIStandIn:
        self.thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _answer(self, body: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            self.requests.append(body)
            index = len(self.requests)
            if not self.steps:
                raise AssertionError(f"script exhausted at request {index}")
            step = self.steps.pop(0)
        if callable(step):
            step = step(body)
        message: dict[str, Any] = {"role": "assistant", "content": step.get("content")}
        finish_reason = "stop"
        if "tool" in step:
            message["tool_calls"] = [
                {
                    "id": f"call_{index}",
                    "type": "function",
                    "function": {"name": step["tool"], "arguments": json.dumps(step.get("arguments", {}))},
                }
            ]
            finish_reason = "tool_calls"
        return {
            "id": f"chatcmpl-standin-{index}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", self.model),
            "choices": [{"index": 0, "message": message, "finish_reason": finish_reason}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
        }

    def tools_received(self, request_index: int = 0) -> dict[str, dict[str, Any]]:
        """name → function spec of the `tools` sent in one request."""
        tools = self.requests[request_index].get("tools") or []
        return {tool["function"]["name"]: tool["function"] for tool in tools}
