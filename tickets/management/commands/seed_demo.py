"""`manage.py seed_demo`: the demo workflow, a staff login and the demo agents (idempotent).

Prints the staff login and a fresh token for each demo agent.
"""

import os

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from agents import services as agent_services
from agents.models import Agent
from tickets import services as ticket_services

DEMO_WORKFLOW = "demo"
DEMO_AGENTS = [
    ("coordinator", Agent.AgentType.COORDINATOR),
    ("worker-1", Agent.AgentType.IMPLEMENTER),
    ("db-specialist", Agent.AgentType.SPECIALIST),
]


class Command(BaseCommand):
    help = "Seed the demo workflow, a staff login and demo agents; print the login and agent tokens."

    def handle(self, *args, **options):
        workflow = ticket_services.workflow_get_or_create(slug=DEMO_WORKFLOW, name="Demo project")
        username = os.environ.get("OMOIOS_ADMIN_USER", "admin")
        password = os.environ.get("OMOIOS_ADMIN_PASSWORD", "omoios-admin")
        user_model = get_user_model()
        user = user_model.objects.filter(username=username).first()
        if user is None:
            user_model.objects.create_superuser(username=username, email="", password=password)
            login_note = f"{username} / {password}"
        else:
            login_note = f"{username} (existing account; password unchanged)"
        self.stdout.write(f"staff login: {login_note}")
        for agent_id, agent_type in DEMO_AGENTS:
            agent = agent_services.agent_create_or_update(agent_id=agent_id, workflows=[workflow], agent_type=agent_type)
            # the tokens of the previous seed are replaced, so they stop working
            agent_services.agent_tokens_revoke(agent=agent, label="seed_demo")
            token = agent_services.agent_token_issue(agent=agent, label="seed_demo")
            self.stdout.write(f"agent {agent_id:<14} token {token}")
