"""`manage.py create_agent AGENT_ID --workflow SLUG [--type TYPE]`: create (or re-issue) an agent token.

The token is printed alone on the last line so scripts can capture it with `tail -n 1`.
"""

from django.core.management.base import BaseCommand, CommandError

from agents import services
from agents.models import Agent
from omoi_site.domain import DomainError
from tickets import services as ticket_services


class Command(BaseCommand):
    help = "Create an agent (or re-issue its token) and print the token on the last line."

    def add_arguments(self, parser):
        parser.add_argument("agent_id")
        parser.add_argument("--workflow", action="append", required=True, help="workflow slug (repeatable)")
        parser.add_argument("--type", default=Agent.AgentType.IMPLEMENTER, choices=Agent.AgentType.values)
        parser.add_argument("--ttl", type=int, default=0, help="token lifetime in seconds (0 = no expiry)")
        parser.add_argument("--revoke-old", action="store_true", help="revoke the agent's previous tokens")

    def handle(self, *args, **options):
        try:
            workflows = [ticket_services.workflow_get_or_create(slug=slug) for slug in options["workflow"]]
            agent = services.agent_create_or_update(
                agent_id=options["agent_id"], workflows=workflows, agent_type=options["type"]
            )
            if options["revoke_old"]:
                services.agent_tokens_revoke(agent=agent)
            token = services.agent_token_issue(agent=agent, label="create_agent", ttl_seconds=options["ttl"] or None)
        except DomainError as error:
            raise CommandError(error.message) from None
        slugs = ", ".join(w.slug for w in workflows)
        self.stdout.write(f"agent {agent.agent_id} ({agent.agent_type}) in workflow(s) {slugs}; bearer token:")
        self.stdout.write(token)
