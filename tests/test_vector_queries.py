"""Every vector query is complete: no ORM or raw query over the HNSW index comes back short.

An HNSW index scan visits about `hnsw.ef_search` candidates. When a filter (another workflow, a status)
throws most of them away, a plain scan returns fewer rows than asked for — even none. Every connection
runs with `hnsw.iterative_scan = strict_order`, so the scan keeps going until the filter is satisfied.
"""

import numpy as np
import pytest
from django.db import connection
from pgvector.django import CosineDistance


@pytest.fixture
def crowded_index(workflow, other_workflow):
    from tickets.models import Ticket

    rng = np.random.default_rng(7)
    centre = rng.normal(size=384)
    near = [centre + rng.normal(scale=0.05, size=384) for _ in range(400)]
    far = [-centre + rng.normal(scale=0.05, size=384) for _ in range(5)]
    Ticket.objects.bulk_create(
        [Ticket(workflow=workflow, title=f"Near {i}", description="close to the query", embedding=v.tolist()) for i, v in enumerate(near)]
        + [Ticket(workflow=other_workflow, title=f"Far {i}", description="far from the query", embedding=v.tolist()) for i, v in enumerate(far)]
    )
    return centre.tolist()


def test_every_connection_scans_hnsw_iteratively(db):
    with connection.cursor() as cursor:
        cursor.execute("SELECT '[1]'::vector")  # loads pgvector, which turns the placeholder into its setting
        cursor.execute("SHOW hnsw.iterative_scan")
        assert cursor.fetchone()[0] == "strict_order"


def test_a_filtered_orm_vector_query_returns_every_matching_row(crowded_index):
    from tickets.models import Ticket

    with connection.cursor() as cursor:
        # make the planner use the HNSW index, as it does on big tables
        cursor.execute("SET enable_seqscan = off")
        cursor.execute("SET enable_bitmapscan = off")
    query = Ticket.objects.filter(title__startswith="Far").order_by(CosineDistance("embedding", crowded_index))[:5]
    assert "ticket_embedding_hnsw" in query.explain()  # the index is what this test is about
    found = list(query.values_list("title", flat=True))
    assert sorted(found) == [f"Far {i}" for i in range(5)]
