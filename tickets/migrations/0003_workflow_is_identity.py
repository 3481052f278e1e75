"""The Workflow model leaves the tickets app for identity (agents): tickets point at its new home and the
old model state is dropped. State only: the `tickets_workflow` table and its rows stay as they are."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("tickets", "0002_workflow_monthly_budget"),
        ("agents", "0003_workflow_is_identity"),
        ("collaboration", "0004_workflow_is_identity"),
        ("tasks", "0006_workflow_is_identity"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="ticket",
                    name="workflow",
                    field=models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name="tickets", to="agents.workflow"),
                ),
                migrations.DeleteModel(name="Workflow"),
            ],
        ),
    ]
