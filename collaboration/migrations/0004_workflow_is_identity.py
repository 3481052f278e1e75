"""Messages and hand-offs point at the Workflow model's new home (agents); state only, same table."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("collaboration", "0003_event_record"),
        ("agents", "0003_workflow_is_identity"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="handoff",
                    name="workflow",
                    field=models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name="handoffs", to="agents.workflow"),
                ),
                migrations.AlterField(
                    model_name="message",
                    name="workflow",
                    field=models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name="messages", to="agents.workflow"),
                ),
            ],
        ),
    ]
