"""Background jobs of the tickets app (Django's Tasks API; the django-tasks-db backend by default).

Embeddings are computed after the ticket's transaction commits — never inside it, so a slow or failing
provider cannot hold row locks or roll back a ticket write. With the local model (≈1 ms per text) the
default is to compute them right after commit in the same process (`EMBEDDINGS_SYNC=True`), which also
makes a new ticket semantically searchable as soon as `create_ticket` returns; a deployment with a remote
provider sets `EMBEDDINGS_SYNC=false` and the worker runs the jobs. Whatever is missed (a crash between
commit and refresh, a provider outage) is caught up by `manage.py backfill_embeddings`.
"""

from __future__ import annotations

import logging

from django.conf import settings
from django.db import transaction
from django.tasks import task

from tickets.embeddings import comment_embedding_refresh, ticket_embedding_refresh

logger = logging.getLogger(__name__)


@task
def embed_ticket(ticket_id: int) -> bool:
    """Job: (re)compute one ticket's embedding if its text changed. Returns whether a row was written."""
    return ticket_embedding_refresh(ticket_id=ticket_id)


@task
def embed_comment(comment_id: int) -> bool:
    """Job: compute one comment's embedding if it has none. Returns whether a row was written."""
    return comment_embedding_refresh(comment_id=comment_id)


def _after_commit(job, refresh, object_id: int) -> None:
    if settings.EMBEDDINGS_SYNC:
        try:
            refresh(object_id)
        except Exception:
            # The write already committed; a missing embedding only costs semantic recall until the
            # backfill runs, so log instead of failing the caller's request.
            logger.exception(
                "inline embedding of %s %s failed; `manage.py backfill_embeddings` will retry", job.name, object_id
            )
    else:
        job.enqueue(object_id)


def schedule_ticket_embedding(ticket_id: int) -> None:
    """Call inside the service's transaction after writing a ticket's title/description: once it commits
    the embedding is refreshed inline (EMBEDDINGS_SYNC) or the `embed_ticket` job is enqueued.
    Nothing happens if the transaction rolls back."""
    transaction.on_commit(
        lambda: _after_commit(embed_ticket, lambda pk: ticket_embedding_refresh(ticket_id=pk), ticket_id), robust=True
    )


def schedule_comment_embedding(comment_id: int) -> None:
    """Like `schedule_ticket_embedding`, for a newly written comment."""
    transaction.on_commit(
        lambda: _after_commit(embed_comment, lambda pk: comment_embedding_refresh(comment_id=pk), comment_id),
        robust=True,
    )
