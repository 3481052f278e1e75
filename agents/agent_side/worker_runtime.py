"""Runs one OpenHands agent for one task: the 27 MCP tools + a terminal routed into a sandbox.

No Django here (a worker can run inside a sandbox with only httpx and the SDK): everything arrives as
arguments — MCP_SERVER_URL, AGENT_ID, TASK_ID, SANDBOX_ID and the agent token are what the launcher hands
over.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("OPENHANDS_SUPPRESS_BANNER", "1")


@dataclass
class WorkerOutcome:
    succeeded: bool
    iterations: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    seconds: float = 0.0
    log: list[str] = field(default_factory=list)
    errors: int = 0
    error: str = ""


def build_llm(*, model: str | None, api_key: str | None, base_url: str | None):
    """A real LLM through litellm (any OpenAI-compatible service)."""
    from openhands.sdk import LLM
    from pydantic import SecretStr

    return LLM(model=model, api_key=SecretStr(api_key) if api_key else None, base_url=base_url or None, usage_id="omoios-worker")


def run_worker(
    *,
    llm,
    mcp_url: str,
    token: str,
    sandbox,
    working_dir: str | Path,
    brief: str,
    system_prompt: str | None = None,
    max_iterations: int = 40,
    command_timeout: float = 120.0,
) -> WorkerOutcome:
    """Run the agent until it finishes (or hits max_iterations); never raises for agent-side failures."""
    from openhands.sdk import Agent, Conversation
    from openhands.sdk.event import ActionEvent, ObservationEvent

    from agents.agent_side.daytona_executor import detach_sandbox, sandbox_terminal_tool
    from agents.agent_side.daytona_workspace import DaytonaLocalWorkspace
    from agents.agent_side.mcp_tools import register_mcp_tools_with_agent

    started = time.monotonic()
    outcome = WorkerOutcome(succeeded=False)
    terminal = sandbox_terminal_tool(sandbox, default_timeout=command_timeout)
    tools = register_mcp_tools_with_agent([terminal], mcp_url, token)
    agent = Agent(llm=llm, tools=tools)
    workspace = DaytonaLocalWorkspace(working_dir=Path(working_dir), sandbox=sandbox)
    conversation = Conversation(agent=agent, workspace=workspace, visualizer=None, max_iteration_per_run=max_iterations)
    try:
        message = f"{system_prompt}\n\n{brief}" if system_prompt else brief
        conversation.send_message(message)
        conversation.run()
        for event in conversation.state.events:
            if isinstance(event, ActionEvent):
                outcome.iterations += 1
                outcome.log.append(f"→ {event.tool_name}")
            elif isinstance(event, ObservationEvent):
                observation = event.observation
                text = "".join(getattr(part, "text", "") for part in getattr(observation, "content", None) or [])
                marker = "✗" if getattr(observation, "is_error", False) else "←"
                outcome.log.append(f"{marker} {event.tool_name}: {text[:300]}")
                if getattr(observation, "is_error", False):
                    outcome.errors += 1
        outcome.succeeded = True
    except Exception as error:  # the launcher records it; the task lease will expire if not completed
        outcome.error = f"{type(error).__name__}: {error}"[:2000]
    finally:
        metrics = getattr(llm, "metrics", None)
        usage = getattr(metrics, "accumulated_token_usage", None) if metrics else None
        if usage is not None:
            outcome.prompt_tokens = int(getattr(usage, "prompt_tokens", 0) or 0)
            outcome.completion_tokens = int(getattr(usage, "completion_tokens", 0) or 0)
        outcome.cost_usd = float(getattr(metrics, "accumulated_cost", 0.0) or 0.0) if metrics else 0.0
        outcome.seconds = time.monotonic() - started
        try:
            conversation.close()
        except Exception:
            pass
        detach_sandbox(sandbox.sandbox_id)
    return outcome
