"""Tasks and blocker models point at the Workflow model's new home (agents); state only, same table."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("tasks", "0005_task_priority_lowercase"),
        ("agents", "0003_workflow_is_identity"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="blockermodel",
                    name="workflow",
                    field=models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.CASCADE, to="agents.workflow"),
                ),
                migrations.AlterField(
                    model_name="task",
                    name="workflow",
                    field=models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name="tasks", to="agents.workflow"),
                ),
            ],
        ),
    ]
