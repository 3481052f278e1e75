"""Workflow moves from the tickets app to identity (agents), without touching a row.

State only: the table keeps its name (`tickets_workflow`, set in Meta.db_table) and every foreign key keeps
pointing at it. The content type is renamed so admin permissions and history follow the model.
"""

import django.core.validators
import django.db.models.deletion
from django.db import migrations, models


def content_type_follows(apps, schema_editor):
    ContentType = apps.get_model("contenttypes", "ContentType")
    if not ContentType.objects.filter(app_label="agents", model="workflow").exists():
        ContentType.objects.filter(app_label="tickets", model="workflow").update(app_label="agents")


def content_type_goes_back(apps, schema_editor):
    ContentType = apps.get_model("contenttypes", "ContentType")
    if not ContentType.objects.filter(app_label="tickets", model="workflow").exists():
        ContentType.objects.filter(app_label="agents", model="workflow").update(app_label="tickets")


class Migration(migrations.Migration):

    dependencies = [
        ("agents", "0002_initial"),
        ("tickets", "0002_workflow_monthly_budget"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name="Workflow",
                    fields=[
                        ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                        ("slug", models.SlugField(max_length=100, unique=True)),
                        ("name", models.CharField(max_length=200)),
                        ("description", models.TextField(blank=True)),
                        ("max_concurrent_sandboxes", models.PositiveIntegerField(default=4)),
                        ("monthly_budget_usd", models.DecimalField(blank=True, decimal_places=2, help_text="LLM spend allowed per calendar month (UTC); the launcher refuses new sandboxes once it is used up. Empty: no limit.", max_digits=10, null=True, validators=[django.core.validators.MinValueValidator(0)])),
                        ("auto_spawn_rules", models.JSONField(blank=True, default=dict, help_text="ticket_type → agent template; empty means no automatic launches")),
                        ("created_at", models.DateTimeField(auto_now_add=True)),
                    ],
                    options={"db_table": "tickets_workflow", "ordering": ["slug"]},
                ),
                migrations.AlterField(
                    model_name="agent",
                    name="workflows",
                    field=models.ManyToManyField(blank=True, related_name="agents", to="agents.workflow"),
                ),
                migrations.AlterField(
                    model_name="sandboxrun",
                    name="workflow",
                    field=models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name="sandbox_runs", to="agents.workflow"),
                ),
            ],
        ),
        migrations.RunPython(content_type_follows, content_type_goes_back),
    ]
