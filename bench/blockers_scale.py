"""How fast is `predict_blockers` at scale: 10k tickets and 20k discoveries (issue 17's goal: p95 ≤ 50 ms).

    .venv/bin/python bench/blockers_scale.py                  # build 10k tickets / 20k discoveries, then time
    .venv/bin/python bench/blockers_scale.py --reuse          # time again on the database of the last run
    .venv/bin/python bench/blockers_scale.py --tickets 2000 --discoveries 4000

The scale data is bulk-inserted (the history generator of bench/blockers_eval.py drives the services and
would need hours at this volume): three workflows, titles and discovery texts from that generator's
vocabulary with real embeddings from the local model (each distinct text embedded once), ~85 % of the
tickets finished over a 60-day history, one implementation task per ticket plus one follow-up task per
discovery, ~5 % of tickets gaining a blocker after filing. The timestamps are set afterwards, so rows
look as if they had been written over those 60 days. Then a model is trained (`blocker_model_train` on
the tickets finished in the first 15 % of the history, timed) and `predict_blockers`' service (`ticket_risk_forecast`: ticket lookup, features (from the ticket's stored
embedding), scoring, suggestions and the ledger write, each call in its own transaction as a door
runs it) is timed on open tickets, after a few warm-up calls; p50 / p95 / max are printed, with the
embedding's own share.

Its database is `omoios_bench_blockers_scale` on the embedded server (recreated unless --reuse).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "omoi_site.settings")
BENCH_DATABASE = "omoios_bench_blockers_scale"


def build(tickets: int, discoveries: int, seed: int) -> None:
    from blockers_eval import ACTIONS, CAUSES, DETAILS, DISTRACTORS, WORKFLOWS
    from django.db import connection, transaction
    from django.utils import timezone

    from agents.services import agent_create_or_update
    from tasks.models import Discovery, Task
    from tickets.embeddings import get_embedding_provider, ticket_embedding_text
    from tickets.models import Ticket, TicketDependency
    from tickets.services import workflow_get_or_create

    rng = random.Random(seed)
    provider = get_embedding_provider()
    workflows = {slug: workflow_get_or_create(slug=slug) for slug in WORKFLOWS}
    agent = agent_create_or_update(agent_id="scale-bench", workflows=list(workflows.values()), agent_type="implementer")
    slugs = list(WORKFLOWS)
    weights = [WORKFLOWS[s][0] for s in slugs]
    now = timezone.now()
    span = timedelta(days=60)

    started = time.monotonic()
    specs = []
    for index in range(tickets):
        slug = rng.choices(slugs, weights)[0]
        key, phrases, area_tags = rng.choice(WORKFLOWS[slug][1])
        title = rng.choice(ACTIONS).format(a=rng.choice(phrases))
        created = now - span + span * (index / tickets)
        finished = index < tickets * 0.85
        specs.append({
            "slug": slug, "area": key, "title": title, "description": f"{title}. {rng.choice(DETAILS)}",
            "tags": [t for t in area_tags if rng.random() < 0.7], "created": created,
            "resolved": created + timedelta(hours=rng.uniform(2, 96)) if finished else None,
        })
    texts = sorted({ticket_embedding_text(s["title"], s["description"]) for s in specs})
    vectors = dict(zip(texts, provider.embed(texts), strict=True))
    rows = [
        Ticket(workflow=workflows[s["slug"]], title=s["title"], description=s["description"], tags=s["tags"],
               ticket_type=rng.choice(["task", "bug", "feature"]), priority=rng.choice(["low", "medium", "high"]),
               status="done" if s["resolved"] else "building", phase="PHASE_DONE" if s["resolved"] else "PHASE_IMPLEMENTATION",
               created_by_agent=agent, embedding=vectors[ticket_embedding_text(s["title"], s["description"])],
               resolved_at=s["resolved"])
        for s in specs
    ]
    with transaction.atomic():
        Ticket.objects.bulk_create(rows, batch_size=1000)
        tasks = Task.objects.bulk_create(
            [Task(ticket=t, workflow=t.workflow, description=f"Implement: {t.title}", status="completed" if t.resolved_at else "pending",
                  created_by_agent=agent) for t in rows], batch_size=1000)
    print(f"  {tickets} tickets and their tasks inserted ({len(texts)} distinct texts embedded) in "
          f"{time.monotonic() - started:.0f}s", flush=True)

    started = time.monotonic()
    by_area = {}
    for _name, slug, areas, _condition, _p, kind, paraphrases, _a, _b in CAUSES:
        for area in areas or [None]:
            by_area.setdefault((slug, area), []).extend((kind, text) for text in paraphrases)
    pool = []  # (ticket index, kind, text)
    for _ in range(discoveries):
        index = rng.randrange(tickets)
        spec = specs[index]
        choices = by_area.get((spec["slug"], spec["area"]))
        if choices and rng.random() < 0.6:
            kind, text = rng.choice(choices)
        else:
            kind, text = rng.choice(DISTRACTORS)
        pool.append((index, kind, f"{text} (seen on {spec['area']}, case {rng.randrange(40)})"))
    texts = sorted({text for _, _, text in pool})
    vectors = dict(zip(texts, provider.embed(texts), strict=True))
    with transaction.atomic():
        follow_ups = Task.objects.bulk_create(
            [Task(ticket=rows[i], workflow=rows[i].workflow, description=f"Resolve: {text[:200]}", status="completed",
                  created_by_agent=agent) for i, _, text in pool], batch_size=1000)
        Discovery.objects.bulk_create(
            [Discovery(source_task=tasks[i], discovery_type=kind, description=text, spawned_task=follow_up,
                       recorded_by_agent=agent, embedding=vectors[text])
             for (i, kind, text), follow_up in zip(pool, follow_ups, strict=True)], batch_size=1000)
        dependencies = []
        for index, ticket in enumerate(rows):
            if index > 10 and rng.random() < 0.05:
                blocker = rows[rng.randrange(max(0, index - 50), index)]
                if blocker.workflow_id == ticket.workflow_id:
                    dependencies.append(TicketDependency(ticket=ticket, blocker=blocker, created_by_agent=agent))
        TicketDependency.objects.bulk_create(dependencies, batch_size=1000, ignore_conflicts=True)
        # Back-date: the rows were written over 60 days, discoveries and dependencies an hour after filing.
        with connection.cursor() as cursor:
            cursor.execute("CREATE TEMP TABLE spec (id bigint, created timestamptz) ON COMMIT DROP")
            cursor.executemany("INSERT INTO spec VALUES (%s, %s)", [(t.pk, s["created"]) for t, s in zip(rows, specs, strict=True)])
            cursor.execute(f"UPDATE {Ticket._meta.db_table} t SET created_at = s.created, updated_at = s.created FROM spec s WHERE s.id = t.id")
            cursor.execute(f"""UPDATE {Task._meta.db_table} k SET created_at = t.created_at,
                                      completed_at = CASE WHEN k.status = 'completed' THEN coalesce(t.resolved_at, t.created_at + interval '3 hours') END
                                 FROM {Ticket._meta.db_table} t WHERE t.id = k.ticket_id""")
            cursor.execute(f"""UPDATE {Discovery._meta.db_table} x SET created_at = t.created_at + interval '1 hour'
                                 FROM {Task._meta.db_table} k JOIN {Ticket._meta.db_table} t ON t.id = k.ticket_id
                                WHERE k.id = x.source_task_id""")
            cursor.execute(f"""UPDATE {TicketDependency._meta.db_table} d SET created_at = t.created_at + interval '1 hour'
                                 FROM {Ticket._meta.db_table} t WHERE t.id = d.ticket_id""")
            cursor.execute("ANALYZE")
    print(f"  {len(pool)} discoveries ({len(texts)} distinct texts embedded), {len(dependencies)} dependencies in "
          f"{time.monotonic() - started:.0f}s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tickets", type=int, default=10_000)
    parser.add_argument("--discoveries", type=int, default=20_000)
    parser.add_argument("--predictions", type=int, default=100)
    parser.add_argument("--seed", type=int, default=17)
    parser.add_argument("--reuse", action="store_true", help="time again on the database of the previous run")
    parser.add_argument("--no-train", action="store_true", help="skip training (predictions use the untrained knn tier)")
    parser.add_argument("--train-share", type=float, default=0.15, help="train on tickets finished in this share of the history")
    args = parser.parse_args()

    import psycopg

    from omoi_site import embedded_db

    if os.environ.get("DATABASE_URL"):
        sys.exit("bench/blockers_scale.py uses its own database on the embedded server; unset DATABASE_URL")
    embedded_db.embedded_database_url(ROOT)
    server = embedded_db._server
    if not args.reuse:
        with psycopg.connect(server.get_uri("postgres"), autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{BENCH_DATABASE}"')
            connection.execute(f'CREATE DATABASE "{BENCH_DATABASE}"')
    os.environ["DATABASE_URL"] = server.get_uri(BENCH_DATABASE)
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import transaction

    call_command("migrate", verbosity=0)
    from tasks import blockers
    from tasks.models import Discovery
    from tickets.embeddings import embed_query
    from tickets.models import Ticket

    if not args.reuse:
        print(f"building {args.tickets} tickets / {args.discoveries} discoveries (bulk insert, seed {args.seed}) …", flush=True)
        build(args.tickets, args.discoveries, args.seed)
    if not args.no_train:
        # A model trained on the first --train-share of the history (as a nightly run long ago would have):
        # serving pays the same model reads whatever the training size, and training all 8.5k finished
        # tickets (features of each as of its filing) takes minutes on this shared machine.
        first = Ticket.objects.order_by("created_at").values_list("created_at", flat=True)
        as_of = first[int(first.count() * args.train_share)]
        started = time.monotonic()
        model, created = blockers.blocker_model_train(as_of=as_of)
        print(f"blocker_model_train on the first {args.train_share:.0%} of the history: {model.version} "
              f"({model.examples} examples, {model.positives} positives, workflow models: "
              f"{len(model.metrics.get('workflow_models', {}))}; {'new' if created else 'unchanged data'}) "
              f"in {time.monotonic() - started:.1f}s", flush=True)
    agent = None
    from agents.models import Agent

    agent = Agent.objects.get(agent_id="scale-bench")
    open_tickets = list(Ticket.objects.filter(resolved_at__isnull=True).order_by("?").values_list("id", flat=True)[: args.predictions + 5])
    public = [f"{Ticket.PUBLIC_PREFIX}-{pk}" for pk in open_tickets]
    timings, embedding_timings, tiers = [], [], {}
    for index, ticket_id in enumerate(public):
        began = time.perf_counter()
        with transaction.atomic():
            result = blockers.ticket_risk_forecast(actor=agent, ticket_id=ticket_id)
        elapsed = (time.perf_counter() - began) * 1000
        if index >= 5:  # warm-up: model load, first connection, caches
            timings.append(elapsed)
            if result["risk"] is not None:
                tiers[result["risk"]["model_tier"]] = tiers.get(result["risk"]["model_tier"], 0) + 1
    for ticket in Ticket.objects.filter(pk__in=open_tickets[5:25]):
        began = time.perf_counter()
        embed_query(f"{ticket.title}\n\n{ticket.description} (variant {ticket.pk})")  # a text not embedded before
        embedding_timings.append((time.perf_counter() - began) * 1000)
    timings.sort()
    print(f"predict_blockers (ticket_risk_forecast) at {Ticket.objects.count()} tickets / {Discovery.objects.count()} discoveries, "
          f"{len(timings)} calls (tiers shown: {tiers}): p50 {statistics.median(timings):.1f} ms, "
          f"p95 {timings[int(0.95 * (len(timings) - 1))]:.1f} ms, max {timings[-1]:.1f} ms; "
          f"(for scale: embedding a new ticket text alone p50 {statistics.median(embedding_timings):.1f} ms); "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
