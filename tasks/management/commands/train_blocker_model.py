"""`manage.py train_blocker_model`: train (or re-find) the blocker-prediction model and print its tier."""

from django.core.management.base import BaseCommand

from tasks.blockers import blocker_model_train


class Command(BaseCommand):
    help = "Train the blocker-prediction model on every finished ticket (idempotent: same data, same model)."

    def handle(self, *args, **options):
        model, created = blocker_model_train()
        state = "trained" if created else "unchanged (same training data)"
        self.stdout.write(
            f"blocker model {model.version}: {state}; {model.examples} examples, {model.positives} blocked; "
            f"metrics {model.metrics}"
        )
