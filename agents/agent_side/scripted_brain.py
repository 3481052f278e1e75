"""A scripted LLM for demos and tests: a playbook of tool calls played through the real OpenHands loop.

Each step is either a fixed (tool, arguments) pair or a callable receiving the `Memory` (the JSON results
of earlier tool calls, by step name) and returning one, so ids created at run time (tickets, tasks,
hand-offs) flow into later calls exactly as an LLM would copy them. No network, no Django.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

Step = tuple[str, str, dict[str, Any] | Callable[["Memory"], dict[str, Any]]]  # (name, tool, arguments)


@dataclass
class Memory:
    results: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, step_name: str) -> Any:
        return self.results[step_name]


def _tool_result_text(message) -> str:
    from openhands.sdk.llm import TextContent

    return "".join(part.text for part in message.content if isinstance(part, TextContent))


def scripted_llm(steps: list[Step], *, final_message: str = "Done.", on_step: Callable[[str, str, dict], None] | None = None):
    """An `openhands.sdk.testing.TestLLM` that plays `steps`, reading earlier results from the conversation."""
    from openhands.sdk.llm import Message, MessageToolCall, TextContent
    from openhands.sdk.testing import TestLLM

    memory = Memory()
    pending: list[str] = []

    class PlaybookLLM(TestLLM):
        def completion(self, messages, tools=None, *args, **kwargs):
            tool_messages = [m for m in messages if getattr(m, "role", None) == "tool"]
            if pending and tool_messages:
                text = _tool_result_text(tool_messages[-1])
                try:
                    memory.results[pending[-1]] = json.loads(text)
                except ValueError:
                    memory.results[pending[-1]] = text
            index = len(pending)
            if index < len(steps):
                name, tool, arguments = steps[index]
                resolved = arguments(memory) if callable(arguments) else arguments
                pending.append(name)
                if on_step is not None:
                    on_step(name, tool, resolved)
                reply = Message(role="assistant", content=[TextContent(text="")], tool_calls=[
                    MessageToolCall(id=f"call-{index}", name=tool, arguments=json.dumps(resolved), origin="completion")
                ])
            else:
                reply = Message(role="assistant", content=[TextContent(text=final_message)])
            self._scripted_responses.append(reply)
            return super().completion(messages, tools, *args, **kwargs)

    llm = PlaybookLLM.from_messages([])
    object.__setattr__(llm, "_playbook_memory", memory)  # pydantic model: keep it off the schema
    return llm


def task_worker_playbook(*, agent_id: str, task_id: str, ticket_id: str, command: str,
                         discovery: str | None = None) -> list[Step]:
    """The default scripted worker: read the task, start it, run a command in the sandbox, report a
    discovery (spawning one follow-up task), complete the task with the command's output as result."""
    steps: list[Step] = [
        ("task", "mcp__get_task", {"task_id": task_id}),
        ("start", "mcp__update_task_status", {"task_id": task_id, "status": "running"}),
        ("probe", "terminal", {"command": "uname -s && pwd"}),
        ("work", "terminal", {"command": command}),
    ]
    if discovery:
        steps.append(("discovery", "mcp__create_task", {
            "ticket_id": ticket_id, "phase_id": "PHASE_IMPLEMENTATION", "task_type": "follow_up",
            "description": f"Follow up: {discovery}", "discovery_type": "bug", "discovery_description": discovery,
            "source_task_id": task_id,
        }))
    steps.append(("complete", "mcp__update_task_status", lambda memory: {
        "task_id": task_id, "status": "completed",
        "result": {"summary": f"ran `{command}` in the sandbox", "agent": agent_id,
                   "output": str(memory.results.get("work", ""))[:2000]},
    }))
    return steps
