"""Agent templates: what a launched worker is (system prompt, agent type, tools, limits).

Plain data, no Django: the worker runtime reads them too.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from omoi_site.domain import DomainError

COMMON_RULES = (
    "You are {agent_id}, an agent of workflow '{workflow}' coordinated through the OmoiOS MCP tools (mcp__*). "
    "Act only as {agent_id}. Your task is {task_id} on ticket {ticket_id}. Start with mcp__get_task, set it "
    "running, do the work with the terminal (commands run in your sandbox), record discoveries with "
    "mcp__create_task (discovery_type + source_task_id), and finish with mcp__update_task_status (completed "
    "with a result, or failed with error_message). Search before creating tickets. Hand off with "
    "mcp__request_handoff when someone else is better placed."
)


@dataclass(frozen=True)
class AgentTemplate:
    name: str
    agent_type: str
    role: str
    max_iterations: int = 40
    command_timeout_seconds: float = 120.0
    max_run_seconds: int = 1800
    tools: tuple[str, ...] = field(default=("terminal", "mcp"))

    def system_prompt(self, *, agent_id: str, workflow: str, task_id: str, ticket_id: str) -> str:
        return f"{self.role}\n\n" + COMMON_RULES.format(agent_id=agent_id, workflow=workflow, task_id=task_id, ticket_id=ticket_id)


TEMPLATES: dict[str, AgentTemplate] = {
    template.name: template
    for template in [
        AgentTemplate("researcher", "researcher", "You investigate: read code and logs, reproduce problems, report findings.", max_iterations=30),
        AgentTemplate("implementer", "implementer", "You implement changes in the repository and verify them with tests."),
        AgentTemplate("reviewer", "reviewer", "You review changes for correctness, tests and clarity; you do not rewrite them.", max_iterations=25),
        AgentTemplate("db-specialist", "specialist", "You are a database specialist: schemas, queries, migrations, sessions and caches."),
        AgentTemplate("coordinator", "coordinator", "You split tickets into tasks, assign work and unblock other agents.", tools=("mcp",)),
    ]
}


def get_template(name: str) -> AgentTemplate:
    template = TEMPLATES.get(name)
    if template is None:
        raise DomainError(f"template must be one of: {', '.join(TEMPLATES)}; got {name!r}.")
    return template
