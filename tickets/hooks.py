"""Points where the tickets floor lets higher floors act (see omoi_site.hooks)."""

from omoi_site.hooks import Hook

ticket_ready = Hook(
    "ticket_ready",
    "A ticket was created unblocked or lost its last open blocker: send(ticket=Ticket). The fleet "
    "(agents.launcher.auto_spawn_on_ready) launches a worker when the workflow maps the ticket's type to a template.",
)
ticket_resolved = Hook(
    "ticket_resolved",
    "A ticket was resolved, inside the resolving transaction: send(ticket=Ticket). Tasks' blocker ledger "
    "(tasks.blockers.blocker_ticket_finished) records its outcome and grades the predictions it made for that ticket.",
)
related_tasks_resolve = Hook(
    "related_tasks_resolve",
    "ask(actor, workflow, task_ids) -> list of task public ids: checks that each id names a task of `workflow` "
    "the actor may see (DomainError/NotFound otherwise). Answered by tasks.selectors.related_tasks_public_ids.",
)
