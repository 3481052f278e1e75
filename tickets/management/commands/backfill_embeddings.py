"""Compute embeddings that are missing or stale (text edited, provider/model switched).

Embeddings are normally refreshed right after each write (tickets/jobs.py); this command catches up
on whatever was missed — rows imported in bulk, a provider outage, a crash between commit and refresh,
or every row after switching EMBEDDING_PROVIDER (the stored hash includes the model id).
Safe to re-run and to run while the site is live: it writes only the embedding columns, and only when
the ticket's text is still the text it embedded.
"""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError
from django.db.models import Q
from tqdm import tqdm

from tickets.embeddings import comment_embeddings_refresh_batch, ticket_embeddings_refresh_batch
from tickets.models import Ticket, TicketComment


class Command(BaseCommand):
    help = "Backfill ticket (and comment) embeddings that are missing or stale, in batches."

    def add_arguments(self, parser):
        parser.add_argument("--batch-size", type=int, default=64, help="texts per embedding call (default 64)")
        parser.add_argument("--workflow", help="only this workflow slug")
        parser.add_argument("--no-comments", action="store_true", help="skip comments")
        parser.add_argument(
            "--missing-only",
            action="store_true",
            help="only rows with no embedding; skips re-checking the text hash of every embedded ticket",
        )
        parser.add_argument("--force", action="store_true", help="re-embed everything, even up-to-date rows")

    def handle(self, *args, batch_size, workflow, no_comments, missing_only, force, **options):
        if batch_size < 1:
            raise CommandError("--batch-size must be at least 1")
        tickets = Ticket.objects.all()
        comments = TicketComment.objects.all()
        if workflow:
            tickets = tickets.filter(workflow__slug=workflow)
            comments = comments.filter(ticket__workflow__slug=workflow)
        if missing_only and not force:
            # Without --missing-only every ticket is visited: staleness is a hash of text + model id,
            # which only Python computes (the batch function skips rows whose hash still matches).
            tickets = tickets.filter(Q(embedding__isnull=True) | Q(embedded_text_hash=""))
        if not force:
            comments = comments.filter(embedding__isnull=True)

        written_tickets = self._run(
            "tickets", tickets, batch_size, ticket_embeddings_refresh_batch, "ticket_ids", force
        )
        written_comments = 0
        if not no_comments:
            written_comments = self._run(
                "comments", comments, batch_size, comment_embeddings_refresh_batch, "comment_ids", force
            )
        self.stdout.write(f"embedded {written_tickets} tickets and {written_comments} comments")

    # tqdm redraws one line with '\r'; Django's OutputWrapper would append a newline to every write,
    # so the bar writes to the wrapped stream itself.
    def _run(self, label, queryset, batch_size, refresh, argument, force) -> int:
        ids = list(queryset.order_by("pk").values_list("pk", flat=True))
        written = 0
        with tqdm(total=len(ids), desc=label, unit=label[:-1], file=self.stderr._out, disable=not ids) as progress:
            for start in range(0, len(ids), batch_size):
                chunk = ids[start : start + batch_size]
                written += refresh(**{argument: chunk, "force": force})
                progress.update(len(chunk))
        return written
