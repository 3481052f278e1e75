"""Background jobs moved from `<app>/tasks.py` to `<app>/jobs.py`: jobs queued before the upgrade name the
old module path; point them at the new one so the worker can still import them."""

from django.db import migrations

APPS = ("agents", "collaboration", "tasks", "tickets")


def _repoint(apps, old: str, new: str) -> None:
    DBTaskResult = apps.get_model("django_tasks_database", "DBTaskResult")
    for app in APPS:
        for result in DBTaskResult.objects.filter(task_path__startswith=f"{app}.{old}."):
            result.task_path = f"{app}.{new}." + result.task_path.removeprefix(f"{app}.{old}.")
            result.save(update_fields=["task_path"])


def point_queued_jobs_at_jobs_modules(apps, schema_editor):
    _repoint(apps, "tasks", "jobs")


def point_queued_jobs_back(apps, schema_editor):
    _repoint(apps, "jobs", "tasks")


class Migration(migrations.Migration):
    dependencies = [
        ("tasks", "0003_blocker_model_retrain_permission"),
        ("django_tasks_database", "0021_conditional_partial_index_ordering"),
    ]

    operations = [migrations.RunPython(point_queued_jobs_at_jobs_modules, point_queued_jobs_back)]
