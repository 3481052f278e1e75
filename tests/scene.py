"""The test scene every suite shares: the seed's login-timeout workflow, built through the services.

`seed_scene(workflow, make_agent, prefix)` files the tickets, blockers, comments, commits, tasks (one claimed,
one spawned by a discovery, one failed), messages, a hand-off request and a sandbox run that the admin,
dashboard and service tests look at. The `scene` fixture (tests/conftest.py) builds it once per test.
"""

from __future__ import annotations

from types import SimpleNamespace


def seed_scene(workflow, make_agent, prefix: str = "a", *, with_run: bool = True) -> SimpleNamespace:
    from agents.launcher import launch_worker
    from collaboration.services import handoff_request, message_broadcast, message_send
    from tasks.services import task_claim_next, task_create, task_update_status
    from tickets.services import comment_add, commit_link, dependency_add, ticket_change_status, ticket_create

    worker, worker_token = make_agent(f"{prefix}-worker", workflow)
    specialist, specialist_token = make_agent(f"{prefix}-db-specialist", workflow, agent_type="specialist")
    login = ticket_create(actor=worker, workflow=workflow, title="Fix login timeout bug", ticket_type="bug", priority="high",
                          description="Users are logged out after five minutes; sessions expire far too early.")
    near_duplicate = ticket_create(actor=worker, workflow=workflow, title="Login session times out too early", ticket_type="bug",
                                   description="Sessions expire after a few minutes and users get logged out of the app.")
    release = ticket_create(actor=specialist, workflow=workflow, title="Ship the 2.4 release",
                            description="Cut the release branch once the login fix is merged and tested.")
    other = ticket_create(actor=specialist, workflow=workflow, title="Empty basket shows an error page",
                          description="Removing the last item from the basket shows a server error instead of an empty basket.")
    dependency_add(actor=specialist, ticket_id=release.pk, blocked_by_ticket_id=login.pk)
    ticket_change_status(actor=worker, ticket_id=login.pk, new_status="analyzing", comment="Looking at the session store.")
    comment_add(actor=worker, ticket_id=login.pk, comment_text="Reproduced with a five-minute idle timeout.")
    commit_link(actor=specialist, ticket_id=login.pk, commit_sha="abc1234def5678", commit_message="Raise the session TTL")
    investigation, _ = task_create(actor=worker, ticket_id=login.public_id, phase_id="PHASE_IMPLEMENTATION",
                                   description="Investigate the session store expiry settings")
    claimed = task_claim_next(agent=worker, workflow=workflow)
    follow_up, discovery = task_create(
        actor=worker, ticket_id=login.public_id, phase_id="PHASE_IMPLEMENTATION", description="Raise the session TTL to 24h",
        discovery_type="bug", discovery_description="The TTL is set in seconds, not minutes.", source_task_id=claimed.pk)
    message_broadcast(sender=worker, message="The session TTL is in seconds; fixing.", message_type="discovery", ticket_id=login.public_id)
    message_send(sender=worker, recipient_agent_id=specialist.agent_id, message="Can you take the DB part?", message_type="question")
    handoff = handoff_request(from_agent=worker, to_agent_id=specialist.agent_id, task_id=claimed.pk,
                              reason="The fix needs a database migration.")
    failed, _ = task_create(actor=specialist, ticket_id=other.public_id, phase_id="PHASE_IMPLEMENTATION",
                            description="Reproduce the empty basket error")
    task_update_status(actor=specialist, task_id=failed.pk, status="running")
    task_update_status(actor=specialist, task_id=failed.pk, status="failed", error_message="Traceback: KeyError 'basket'")
    run = launch_worker(actor=specialist, template="implementer", ticket=other, enqueue=False) if with_run else None
    return SimpleNamespace(
        workflow=workflow, worker=worker, worker_token=worker_token, specialist=specialist, specialist_token=specialist_token,
        login=login, near_duplicate=near_duplicate, release=release, other=other, task=investigation, claimed=claimed,
        follow_up=follow_up, discovery=discovery, handoff=handoff, failed=failed, run=run,
    )
