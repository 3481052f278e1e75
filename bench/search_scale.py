"""Ticket search at scale: load N synthetic tickets with embeddings, then time every search mode.

    .venv/bin/python bench/search_scale.py                 # 100,000 tickets
    .venv/bin/python bench/search_scale.py --tickets 5000  # quick run
    .venv/bin/python bench/search_scale.py --reuse         # keep the loaded rows from a previous run

Prints p50/p95 latency of `ticket_search` (keyword, semantic, hybrid) and `similar_tickets` (the
duplicate check on create), the sizes of the HNSW and GIN indexes, whether the planner really uses
them, the recall of the HNSW index against an exact scan, and the time to embed 100 short texts
with the local provider.

Where the data goes: with the embedded PostgreSQL (no DATABASE_URL) a separate database
`omoios_bench` on the same server, so the development data is untouched; with DATABASE_URL, that
database, in the workflow `bench-search` (deleted at the end unless --keep or --reuse).

How the data is made: `--seed-texts` ticket texts (default 3,000) built from templates (components ×
problems × context, with error codes) are embedded with the real local model; every other ticket is a
variation of a seed (other numbers, other context sentence) whose vector is the seed's vector mixed
with another seed of the same component plus Gaussian noise, normalised. Rows go in with COPY; the
HNSW and GIN indexes are dropped during the load and rebuilt afterwards (much faster than inserting
into them row by row), with their definitions taken from the migration-created indexes.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "omoi_site.settings")

WORKFLOW_SLUG = "bench-search"
BENCH_DATABASE = "omoios_bench"

COMPONENTS = [
    ("login page", "auth"), ("billing service", "billing"), ("invoice PDF export", "billing"),
    ("search API", "search"), ("notification worker", "notifications"), ("CSV importer", "import"),
    ("admin dashboard", "ui"), ("mobile app", "mobile"), ("webhook dispatcher", "api"),
    ("payment gateway client", "payments"), ("user settings page", "ui"), ("report scheduler", "reports"),
    ("file upload service", "uploads"), ("GraphQL API", "api"), ("audit log", "security"),
    ("team management screen", "ui"), ("SSO integration", "auth"), ("email sender", "email"),
    ("cache layer", "performance"), ("Kubernetes deployment", "ops"), ("CI pipeline", "ci"),
    ("database migrations", "database"), ("analytics event collector", "analytics"), ("rate limiter", "api"),
    ("session store", "auth"), ("onboarding flow", "ui"), ("data export job", "privacy"),
    ("feature flag service", "ops"), ("image thumbnailer", "uploads"), ("websocket gateway", "realtime"),
]  # fmt: skip
PROBLEMS = [
    ("times out under load", "Requests to the {c} time out after {n} seconds when traffic peaks.", "bug"),
    ("crashes on empty input", "The {c} raises {err} when the payload is empty.", "bug"),
    ("got slow after the last release", "p95 latency of the {c} rose from {m} ms to {n} ms after release v{v}.", "bug"),
    ("leaks memory", "RSS of the {c} grows by {n} MB per hour until the container is OOM-killed (exit 137).", "bug"),
    ("returns wrong totals", "Sums shown by the {c} are off by {n} cents for accounts with refunds.", "bug"),
    ("shows stale data", "The {c} keeps serving values that are {n} minutes old after an update.", "bug"),
    ("mangles non-ASCII names", "Names with accents come out garbled in the {c}; see {err}.", "bug"),
    ("sends duplicates", "Each event is delivered twice by the {c} when the broker reconnects.", "bug"),
    ("ignores time zones", "The {c} stores local midnight as UTC, so dates shift by one day east of Greenwich.", "bug"),
    ("needs pagination", "The {c} returns all {n} rows at once; add cursor pagination with a page size limit.", "improvement"),
    ("should retry with backoff", "Transient failures in the {c} are not retried; add exponential backoff up to {n} attempts.", "improvement"),
    ("needs an audit trail", "Changes made through the {c} are not recorded; log who changed what and when.", "feature"),
    ("needs dark mode", "Users ask for a dark theme in the {c}; respect the system preference.", "feature"),
    ("lacks rate limiting", "Clients can call the {c} {n} times per second; add per-key quotas.", "feature"),
    ("fails on large files", "Files above {n} MB fail in the {c} with '413 Request Entity Too Large'.", "bug"),
    ("loses data on restart", "In-flight work in the {c} disappears when the pod restarts; persist it first.", "bug"),
    ("deadlocks with the order service", "Postgres reports 'deadlock detected' between the {c} and order updates ({err}).", "bug"),
    ("needs metrics", "Expose request counts, error rates and latency histograms for the {c}.", "chore"),
    ("upgrade its dependencies", "The {c} still pins libraries with known CVEs; upgrade and rerun the tests.", "chore"),
    ("is missing documentation", "Write a how-to for operating the {c}, including failure modes and dashboards.", "chore"),
]  # fmt: skip
ERRORS = [
    "KeyError: '{f}'", "ValueError: invalid literal for int() with base 10: ''", "TimeoutError at {mod}.py:{line}",
    "psycopg.OperationalError: server closed the connection unexpectedly", "TypeError: 'NoneType' object is not subscriptable",
    "UnicodeDecodeError: 'utf-8' codec can't decode byte 0x{hex}", "ERR_{abbr}_{code}", "E{code} {f} conflict",
]  # fmt: skip
CONTEXTS = [
    "Reported by customer #{n}.", "Seen since deploy v{v}.", "Only on Safari {small}.", "Affects tenants on the {plan} plan.",
    "Happens about once per {small} runs.", "Found during the quarterly review.", "Blocks the {plan} launch.",
    "Support has {small} open conversations about it.", "Reproduced on staging.", "Started after the database failover.",
]  # fmt: skip
FIELDS = ["user_id", "tenant", "amount", "locale", "email", "plan_id", "created_at", "currency"]
PLANS = ["Starter", "Team", "Business", "Enterprise"]
QUERY_PHRASES = [
    "checkout is charging the wrong amount", "people get logged out randomly", "uploads of big videos fail",
    "dates are off by one day", "the worker runs out of memory", "too many requests from one client",
    "webhooks arrive twice", "pages load slowly since the release", "who changed this setting",
    "accented characters look broken", "jobs vanish after a restart", "night theme for the settings screen",
    "database deadlock on orders", "export takes forever and times out", "missing dashboards for the gateway",
]  # fmt: skip


def ticket_text(rng: random.Random, component: int, problem: int) -> tuple[str, str, str, list[str], str]:
    """(title, description, ticket_type, tags, error) for one component/problem pair, with fresh details."""
    name, tag = COMPONENTS[component]
    short, template, kind = PROBLEMS[problem]
    error = rng.choice(ERRORS).format(
        f=rng.choice(FIELDS),
        mod=name.split()[0].lower(),
        line=rng.randint(10, 900),
        hex=f"{rng.randint(128, 255):x}",
        abbr=tag.upper()[:4],
        code=rng.randint(1000, 9999),
    )
    version = f"{rng.randint(1, 9)}.{rng.randint(0, 30)}.{rng.randint(0, 9)}"
    description = " ".join(
        [
            template.format(c=name, n=rng.randint(2, 500), m=rng.randint(20, 200), v=version, err=error),
            rng.choice(CONTEXTS).format(
                n=rng.randint(100, 99999), v=version, small=rng.randint(2, 20), plan=rng.choice(PLANS)
            ),
        ]
    )
    return f"{name[0].upper()}{name[1:]} {short}", description, kind, [tag], error


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def use_bench_database() -> bool:
    """Point Django at `omoios_bench` on the embedded server (created if missing), unless DATABASE_URL.
    Returns whether the bench has a database of its own."""
    if os.environ.get("DATABASE_URL"):
        return False
    import psycopg

    from omoi_site.embedded_db import embedded_database_url

    url = embedded_database_url(ROOT)  # starts/attaches the server
    from omoi_site import embedded_db

    server = embedded_db._server
    with psycopg.connect(server.get_uri("postgres"), autocommit=True) as connection:
        if not connection.execute("SELECT 1 FROM pg_database WHERE datname = %s", (BENCH_DATABASE,)).fetchone():
            connection.execute(f'CREATE DATABASE "{BENCH_DATABASE}"')
    os.environ["DATABASE_URL"] = server.get_uri(BENCH_DATABASE)
    del url
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tickets", type=int, default=100_000)
    parser.add_argument("--seed-texts", type=int, default=3_000, help="texts embedded with the real model")
    parser.add_argument("--queries", type=int, default=60, help="timed calls per mode")
    parser.add_argument(
        "--reuse", action="store_true", help="reuse rows loaded by an earlier run when the count matches"
    )
    parser.add_argument("--keep", action="store_true", help="do not delete the bench workflow at the end")
    args = parser.parse_args()

    own_database = use_bench_database()
    import django

    django.setup()
    import numpy as np
    from django.core.management import call_command
    from django.db import connection, transaction

    from tickets.embeddings import LocalOnnxEmbeddingProvider, embedding_text_hash, get_embedding_provider
    from tickets.models import Ticket, Workflow
    from tickets.search import similar_tickets, ticket_search

    call_command("migrate", "tickets", verbosity=0)
    db_name = connection.settings_dict["NAME"]
    provider = get_embedding_provider()
    if not isinstance(provider, LocalOnnxEmbeddingProvider):
        sys.exit("bench/search_scale.py measures the local provider; unset EMBEDDING_PROVIDER")

    # --- embedding speed -----------------------------------------------------------------------
    provider.embed(["warm-up"])
    short_texts = [f"Ticket {i}: {PROBLEMS[i % len(PROBLEMS)][0]} in the {COMPONENTS[i % 30][0]}" for i in range(100)]
    embed_times = []
    for _ in range(5):
        started = time.perf_counter()
        provider.embed(short_texts)
        embed_times.append(time.perf_counter() - started)

    workflow, _ = Workflow.objects.get_or_create(slug=WORKFLOW_SLUG, defaults={"name": "search benchmark"})
    existing = Ticket.objects.filter(workflow=workflow).count()
    load_seconds = index_seconds = seed_seconds = 0.0
    if not (args.reuse and existing == args.tickets):
        rng = random.Random(42)
        nprng = np.random.default_rng(42)
        with connection.cursor() as cursor:
            cursor.execute(f"DELETE FROM {Ticket._meta.db_table} WHERE workflow_id = %s", [workflow.pk])
        print(f"loading {args.tickets:,} tickets into database {db_name!r} (workflow {WORKFLOW_SLUG}) …", flush=True)

        # 1. seed texts, embedded for real
        pairs = [(c, p) for c in range(len(COMPONENTS)) for p in range(len(PROBLEMS))]
        seeds = [
            ticket_text(rng, *pairs[i % len(pairs)]) + pairs[i % len(pairs)]
            for i in range(min(args.seed_texts, args.tickets))
        ]
        started = time.perf_counter()
        seed_vectors = np.array(provider.embed([f"{s[0]}\n\n{s[1]}" for s in seeds]), dtype=np.float32)
        seed_seconds = time.perf_counter() - started
        by_component: dict[int, list[int]] = {}
        for index, seed in enumerate(seeds):
            by_component.setdefault(seed[5], []).append(index)

        # 2. COPY every ticket; in the bench's own database the two search indexes are dropped during the
        # load and rebuilt from the model's definitions (so an interrupted run cannot lose them for good).
        search_indexes = [i for i in Ticket._meta.indexes if i.name in ("ticket_embedding_hnsw", "ticket_search_gin")]
        if own_database:
            with connection.cursor() as cursor:
                for index in search_indexes:
                    cursor.execute(f"DROP INDEX IF EXISTS {index.name}")
        statuses = [s for s in Ticket.Status.values]
        priorities = Ticket.Priority.values
        now = datetime.now(UTC)
        columns = (
            "workflow_id, title, description, ticket_type, priority, priority_rank, status, phase, is_blocked, tags, "
            "resolution, embedding, embedded_text_hash, version, created_at, updated_at"
        )
        started = time.perf_counter()
        with (
            connection.cursor() as cursor,
            cursor.cursor.copy(f"COPY {Ticket._meta.db_table} ({columns}) FROM STDIN") as copy,
        ):
            for number in range(args.tickets):
                if number < len(seeds):
                    title, description, kind, tags, _, component, _ = seeds[number]
                    vector = seed_vectors[number]
                else:
                    base = rng.randrange(len(seeds))
                    component, problem = seeds[base][5], seeds[base][6]
                    title, description, kind, tags, _ = ticket_text(rng, component, problem)
                    other = rng.choice(by_component[component])
                    vector = (
                        seed_vectors[base] + 0.3 * seed_vectors[other] + nprng.normal(0, 0.02, 384).astype(np.float32)
                    )
                    vector = vector / np.linalg.norm(vector)
                priority = priorities[number % 4]
                status = statuses[number % len(statuses)]
                copy.write_row(
                    (
                        workflow.pk, title, description, kind, priority, Ticket.PRIORITY_RANK[priority], status,
                        Ticket.STATUS_PHASE[status], number % 17 == 0, tags, "",
                        "[" + ",".join(f"{x:.6f}" for x in vector) + "]",
                        embedding_text_hash(f"{title}\n\n{description}", provider=provider), 1, now, now,
                    )
                )  # fmt: skip
                if number and number % 20_000 == 0:
                    print(f"  … {number:,} rows", flush=True)
        load_seconds = time.perf_counter() - started
        started = time.perf_counter()
        if own_database:
            with connection.cursor() as cursor:
                cursor.execute("SET maintenance_work_mem = '1GB'")
            with connection.schema_editor() as editor:
                for index in search_indexes:
                    print(f"  building {index.name} …", flush=True)
                    editor.add_index(Ticket, index)
        with connection.cursor() as cursor:
            cursor.execute(f"ANALYZE {Ticket._meta.db_table}")
        index_seconds = time.perf_counter() - started

    total = Ticket.objects.filter(workflow=workflow).count()
    scope = [workflow.pk]

    # --- queries ---------------------------------------------------------------------------------
    rng = random.Random(7)
    error_queries = list(
        Ticket.objects.filter(workflow=workflow, description__contains="ERR_").values_list("description", flat=True)[
            :200
        ]
    )
    keyword_queries = []
    for description in error_queries:
        code = next(word for word in description.replace("(", " ").replace(")", " ").split() if word.startswith("ERR_"))
        keyword_queries.append(code.rstrip(".,;"))
    natural = QUERY_PHRASES + [f"{c} {p[0]}" for c, _ in COMPONENTS[:10] for p in PROBLEMS[:3]]
    queries = [rng.choice(natural) if i % 2 else rng.choice(keyword_queries or natural) for i in range(args.queries)]

    def timed(function, calls) -> list[float]:
        for call in calls[:3]:
            function(call)  # warm caches
        times = []
        for call in calls:
            started = time.perf_counter()
            function(call)
            times.append((time.perf_counter() - started) * 1000)
        return times

    results = {}
    for mode in ("keyword", "semantic", "hybrid"):
        results[mode] = timed(
            lambda q, m=mode: ticket_search(workflow_ids=scope, query=q, search_type=m, limit=10), queries
        )
    results["hybrid + filters"] = timed(
        lambda q: ticket_search(
            workflow_ids=scope, query=q, limit=10, filters={"status": ["backlog", "analyzing"], "priority": "high"}
        ),
        queries,
    )
    drafts = [ticket_text(rng, rng.randrange(30), rng.randrange(len(PROBLEMS)))[:2] for _ in range(args.queries)]
    results["similar_tickets"] = timed(
        lambda d: similar_tickets(workflow_ids=scope, title=d[0], description=d[1]), drafts
    )
    results["query embedding alone"] = timed(lambda q: provider.embed([q]), queries)

    # --- HNSW recall and plans -------------------------------------------------------------------
    from tickets.search import _vector_literal

    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_size_pretty(pg_relation_size('ticket_embedding_hnsw')), pg_size_pretty(pg_relation_size('ticket_search_gin')),"
            f" pg_size_pretty(pg_total_relation_size('{Ticket._meta.db_table}'))"
        )
        hnsw_size, gin_size, table_size = cursor.fetchone()
        vector = _vector_literal(provider.embed(["people get logged out randomly"])[0])
        sql = (
            f"SELECT id FROM {Ticket._meta.db_table} t WHERE t.workflow_id = ANY(%s) AND t.embedding IS NOT NULL "
            "ORDER BY t.embedding <=> %s::vector LIMIT 10"
        )
        cursor.execute("SET LOCAL hnsw.ef_search = 100")
        cursor.execute("SET LOCAL hnsw.iterative_scan = strict_order")
        cursor.execute("EXPLAIN " + sql, [scope, vector])
        semantic_plan = " ".join(row[0].strip() for row in cursor.fetchall())
        cursor.execute(
            f"EXPLAIN SELECT id FROM {Ticket._meta.db_table} t WHERE t.search_vector @@ plainto_tsquery('english', %s)",
            ["ERR_AUTH_1234"],
        )
        keyword_plan = " ".join(row[0].strip() for row in cursor.fetchall())
        overlaps = []
        for query in natural[:20]:
            literal = _vector_literal(provider.embed([query])[0])
            cursor.execute(sql, [scope, literal])
            approximate = {row[0] for row in cursor.fetchall()}
            cursor.execute("SET LOCAL enable_indexscan = off")
            cursor.execute(sql, [scope, literal])
            exact = {row[0] for row in cursor.fetchall()}
            cursor.execute("SET LOCAL enable_indexscan = on")
            overlaps.append(len(approximate & exact) / 10)

    print()
    print(f"tickets in bench workflow: {total:,}  (database {db_name!r}; 2 vCPU machine: {os.cpu_count()} CPUs)")
    if load_seconds:
        print(
            f"load: embed {len(seeds):,} seed texts {seed_seconds:.1f} s, COPY {args.tickets:,} rows {load_seconds:.1f} s, "
            f"build HNSW + GIN {index_seconds:.1f} s"
        )
    print(f"index sizes: HNSW {hnsw_size}, GIN {gin_size}; table incl. indexes/TOAST {table_size}")
    print(
        f"semantic plan uses HNSW: {'ticket_embedding_hnsw' in semantic_plan}; keyword plan uses GIN: {'ticket_search_gin' in keyword_plan}"
    )
    print(f"HNSW recall@10 vs exact scan (ef_search=100): {statistics.mean(overlaps):.3f}")
    print(
        f"embed 100 short texts (local int8 ONNX): best {min(embed_times) * 1000:.0f} ms, median {statistics.median(embed_times) * 1000:.0f} ms"
    )
    print()
    print(f"| operation ({len(queries)} calls, limit 10) | p50 ms | p95 ms |")
    print("|---|---|---|")
    for name, times in results.items():
        print(f"| {name} | {percentile(times, 0.5):.1f} | {percentile(times, 0.95):.1f} |")

    if not (args.keep or args.reuse):
        with connection.cursor() as cursor:
            cursor.execute(f"DELETE FROM {Ticket._meta.db_table} WHERE workflow_id = %s", [workflow.pk])
            # Raw SQL: the ORM's cascade would visit every app's tables, which the bench database may lack.
            cursor.execute(f"DELETE FROM {Workflow._meta.db_table} WHERE id = %s", [workflow.pk])
        print("\nbench workflow deleted (use --keep or --reuse to keep it)")


if __name__ == "__main__":
    main()
