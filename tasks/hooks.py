"""Points where the tasks floor lets higher floors act (see omoi_site.hooks)."""

from omoi_site.hooks import Hook

task_lost_holder = Hook(
    "task_lost_holder",
    "A task's lease ended without a hand-off (released, reaped, completed, failed or cancelled), inside that "
    "transaction: send(task_id=int, reason=str). Collaboration (collaboration.services.handoffs_expire_for_task) "
    "expires the task's open hand-offs.",
)
