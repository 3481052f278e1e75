"""Blocker prediction, measured: a synthetic history driven through the services, then a walk-forward
evaluation of every tier against baselines (issue 17).

    .venv/bin/python bench/blockers_eval.py                # ~900 tickets in 3 workflows
    .venv/bin/python bench/blockers_eval.py --tickets 400  # quicker

The generator (this file, top half) shares no code with the features (tasks.blockers): it decides hidden
root causes from trigger conditions on a ticket's area, tags and declared dependencies — each cause with
several paraphrases of its discovery text, some causes fixed part-way (they stop firing), some new,
confusable areas that share words but never trigger, non-blocking discoveries as distractors, and label
noise (random blocking discoveries, causes that do not fire). Labels come from what the generator
recorded through the services, never from the model's inputs. Three workflows, base rates ≈ 5-25 %.

Limits, said plainly: every cause is realised as a blocking *discovery* (a dependency gained after filing
is also a positive label in the product, but the bench runs in real time and such a dependency would fall
inside the 2-second "declared at filing" window, so the generator does not make them). The data goes to
a database of its own (`omoios_bench_blockers_<tickets>_<seed>` on the embedded server, recreated unless --reuse).

Walk-forward: tickets ordered by creation; the last 60 % split into 4 windows; for each window, train on
the tickets *finished* before the window opens, predict the window's tickets from their features at
creation (the same `ticket_features` the product serves), pool the windows. Printed per scorer: ROC-AUC,
PR-AUC (with prevalence), F1 at the threshold that maximised F1 on the training data, Brier skill score
(vs. the training prevalence), ECE (10 bins), with 95 % bootstrap intervals; similar-discovery Hit@5 and
blocker-type macro-F1; the oracle (knows the causes) and the base-rate floor beside them; and the p95 of a
full `predict_blockers` forecast. The served tier's reliability diagram (observed vs. predicted per bin)
is written as a PNG (`--plot`, default docs/blockers_reliability.png) with Pillow.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "omoi_site.settings")
BENCH_DATABASE = "omoios_bench_blockers_{tickets}_{seed}"  # one per history, so --reuse finds its own

# ------------------------------------------------------------------------------------------ generator

# workflow → (share of tickets, areas). An area: key, title phrases (paraphrases), tags.
WORKFLOWS = {
    "shop": (0.45, [
        ("payment-webhook", ["payment webhook handler", "webhook from the payment provider", "payment callback endpoint", "Stripe webhook receiver"], ["payments", "webhooks"]),
        ("payment-report", ["payment reporting page", "monthly payments report", "payments dashboard chart"], ["payments", "reports"]),
        ("checkout-ui", ["checkout page layout", "cart summary widget", "checkout button styling"], ["ui"]),
        ("shipping", ["shipping rate calculator", "carrier label printing", "delivery estimate"], ["shipping"]),
        ("tax", ["VAT calculation", "sales tax rules for EU customers", "tax report export"], ["tax"]),
        ("search", ["product search ranking", "search autocomplete", "search filters"], ["search"]),
    ]),
    "infra": (0.33, [
        ("k8s", ["Kubernetes deployment manifests", "cluster autoscaler settings", "helm chart for the API"], ["ops"]),
        ("db-migration", ["database schema migration", "Postgres upgrade to 18", "migration of the orders table"], ["database"]),
        ("ci", ["CI pipeline caching", "GitHub Actions workflow", "flaky test quarantine in CI"], ["ci"]),
        ("sso", ["SSO login with the identity provider", "SAML integration", "OIDC single sign-on"], ["auth"]),
        ("logging", ["structured logging", "log retention policy", "log shipping to the collector"], ["observability"]),
    ]),
    "docs-site": (0.22, [
        ("api-docs", ["API reference pages", "OpenAPI docs rendering", "endpoint reference examples"], ["docs"]),
        ("tutorials", ["getting started tutorial", "quickstart guide", "beginner walkthrough"], ["docs"]),
        ("i18n", ["translations of the docs", "localised docs for Japanese", "i18n of the navigation"], ["i18n"]),
        ("theme", ["docs theme colours", "sidebar navigation styling", "dark mode for the docs"], ["ui"]),
    ]),
}
ACTIONS = ["Build the {a}", "Fix the {a}", "Add retries to the {a}", "Refactor the {a}", "Improve the {a}", "Extend the {a}"]
DETAILS = [
    "Customers reported problems last week; see the support thread.",
    "Part of the Q3 roadmap; keep the public interface stable.",
    "Needs tests and a short note in the changelog.",
    "Small change, but touches code other teams rely on.",
]

# Hidden causes: workflow, areas that trigger, extra condition, fire probability, discovery type,
# paraphrases, active from / until (fraction of the timeline).
CAUSES = [
    ("missing-credentials", "shop", {"payment-webhook"}, None, 0.75, "missing_requirement", [
        "Missing API credentials: the payment provider key and webhook signing secret are not configured.",
        "Cannot test: no sandbox API key for the payment provider in this environment.",
        "Blocked on credentials — the webhook secret for the payment gateway was never provisioned.",
    ], 0.0, 1.0),
    ("tax-rules-unclear", "shop", {"tax"}, None, 0.6, "clarification_needed", [
        "Unclear which VAT rules apply to digital goods; need a decision from finance.",
        "Finance has to clarify the tax treatment of EU B2B customers before this can proceed.",
        "Tax rules ambiguous: product owner must confirm rounding and exemptions.",
    ], 0.0, 0.6),  # fixed at 60 %: finance wrote the rules down
    ("carrier-api", "shop", {"shipping"}, None, 0.5, "integration_issue", [
        "The carrier's label API returns 500 for international parcels; waiting on their support.",
        "Integration with the shipping carrier breaks: their sandbox rejects our auth header.",
        "Carrier rate API changed its response format without notice.",
    ], 0.4, 1.0),  # appears at 40 %
    ("db-locks", "infra", {"db-migration"}, None, 0.45, "integration_issue", [
        "Migration needs a maintenance window: the orders table lock blocks checkout writes.",
        "Schema change conflicts with the replication setup; DBA review required.",
        "Cannot run the migration online — the table is too large for a lock-free rewrite.",
    ], 0.0, 1.0),
    ("idp-config", "infra", {"sso"}, None, 0.4, "security_issue", [
        "The identity provider rejects our redirect URI; security team must approve the new client.",
        "SAML certificate expired on the IdP side; waiting for security to rotate it.",
        "OIDC client secret must be issued by the security team before login can be tested.",
    ], 0.0, 1.0),
    ("declared-deps", "infra", None, "declared", 0.3, "integration_issue", [
        "The upstream ticket changed the interface we depend on; integration needs rework.",
        "Integration with the blocking ticket's new API is not finished; cannot continue.",
    ], 0.0, 1.0),
    ("translation-vendor", "docs-site", {"i18n"}, None, 0.45, "missing_requirement", [
        "Translations not delivered by the vendor yet; the Japanese strings are missing.",
        "Missing source glossary for the translators; localisation is on hold.",
    ], 0.0, 1.0),
]
NOISE_BLOCKING = 0.02   # a blocking discovery with no hidden cause
DISTRACTOR_RATE = 0.15  # a non-blocking discovery (bug / optimization / technical_debt)
DISTRACTORS = [
    ("bug", "Off-by-one in the pagination of the list view."),
    ("optimization", "The query could use an index on created_at."),
    ("technical_debt", "Helper duplicates code from the utils module; merge them later."),
]


def active_causes(slug: str, area: str, declared: bool, progress: float) -> list[tuple]:
    """The hidden causes that may fire on a ticket of this workflow and area, filed at `progress` (0-1 of
    the timeline), with or without a declared dependency: [(name, fire probability, type, paraphrases)]."""
    active = []
    for name, cause_slug, areas, condition, probability, kind, texts, start, end in CAUSES:
        if cause_slug != slug or not (start <= progress < end):
            continue
        if (areas is not None and area in areas) or (condition == "declared" and declared):
            active.append((name, probability, kind, texts))
    return active


def oracle_probability(active: list[tuple]) -> float:
    """P(blocked) knowing the causes: any active cause fires, or the label noise does (causes are tried in
    order and the first that fires is recorded; the noise applies only when none fired)."""
    none_fires = 1.0
    for _, probability, _, _ in active:
        none_fires *= 1 - probability
    return 1 - none_fires * (1 - NOISE_BLOCKING)


def population_ceiling(draws: int, seed: int, *, from_progress: float = 0.4) -> dict:
    """The best any model can do on this generator, in expectation: draw many tickets the way generate()
    does (workflow, area, declared dependency, time) without touching the database, label each by its
    causes' fire probabilities, and score the oracle (the true P(blocked) given everything observable at
    filing) on those filed after `from_progress` (the walk-forward's prediction windows). Whether a cause
    fires is independent of everything a model can see, so no scorer beats this in expectation."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    rng = random.Random(seed)
    slugs = list(WORKFLOWS)
    weights = [WORKFLOWS[s][0] for s in slugs]
    scores, labels = [], []
    for _ in range(draws):
        progress = rng.uniform(from_progress, 1.0)
        slug = rng.choices(slugs, weights)[0]
        area = rng.choice(WORKFLOWS[slug][1])[0]
        p = oracle_probability(active_causes(slug, area, rng.random() < 0.12, progress))
        scores.append(p)
        labels.append(rng.random() < p)
    import numpy as np

    scores, labels = np.array(scores), np.array(labels)
    prevalence = float(labels.mean())
    best_f1 = 0.0
    for threshold in np.unique(scores):  # a handful of distinct probabilities
        flagged = scores >= threshold
        true_positives = float((flagged & labels).sum())
        best_f1 = max(best_f1, float(2 * true_positives / (flagged.sum() + labels.sum())))
    pr_auc = float(average_precision_score(labels, scores))
    return {"roc_auc": float(roc_auc_score(labels, scores)), "pr_auc": pr_auc, "prevalence": prevalence,
            "pr_lift": pr_auc / prevalence, "best_f1": best_f1}


def generate(total: int, seed: int) -> dict:
    """Drive a synthetic history through the services. Returns the generator's ground truth."""
    from agents.services import agent_create_or_update
    from tasks.services import task_create, task_update_status
    from tickets.services import ticket_create, ticket_resolve, workflow_get_or_create

    rng = random.Random(seed)
    workflows = {slug: workflow_get_or_create(slug=slug) for slug in WORKFLOWS}
    actors = {slug: agent_create_or_update(agent_id=f"gen-{slug}", workflows=[w], agent_type="implementer")
              for slug, w in workflows.items()}
    truth = {"ticket_cause": {}, "ticket_oracle": {}, "discovery_cause": {}, "ticket_workflow": {}}
    in_flight: list[tuple[int, object, object, list]] = []  # (due step, ticket, task, declared blocker tickets)
    open_tickets: dict[str, list] = {slug: [] for slug in WORKFLOWS}
    slugs = list(WORKFLOWS)
    weights = [WORKFLOWS[s][0] for s in slugs]

    def finish_task(actor, task):
        task_update_status(actor=actor, task_id=task.public_id, status="running")
        task_update_status(actor=actor, task_id=task.public_id, status="completed", result={"ok": True})

    def resolve(actor, ticket):
        from tickets.models import Ticket

        fresh = Ticket.objects.get(pk=ticket.pk)
        if fresh.status == "done":
            return
        for blocker in Ticket.objects.filter(blocking_links__ticket=fresh).exclude(status="done"):
            resolve(actor, blocker)
        ticket_resolve(actor=actor, ticket_id=ticket.public_id, resolution_comment="Finished, reviewed and merged.")

    for step in range(total):
        progress = step / total
        slug = rng.choices(slugs, weights)[0]
        actor = actors[slug]
        key, phrases, area_tags = rng.choice(WORKFLOWS[slug][1])
        phrase = rng.choice(phrases)
        title = rng.choice(ACTIONS).format(a=phrase)
        description = f"{title}. {rng.choice(DETAILS)}"
        tags = [t for t in area_tags if rng.random() < 0.7] + ([rng.choice(["urgent", "backend", "frontend"])] if rng.random() < 0.3 else [])
        declared = []
        if open_tickets[slug] and rng.random() < 0.12:
            declared = [rng.choice(open_tickets[slug])]
        ticket = ticket_create(
            actor=actor, workflow=workflows[slug], title=title, description=description,
            ticket_type=rng.choice(["task", "bug", "feature"]), priority=rng.choice(["low", "medium", "medium", "high"]),
            tags=tags, blocked_by_ticket_ids=[d.public_id for d in declared],
        )
        truth["ticket_workflow"][ticket.pk] = slug
        task, _ = task_create(actor=actor, ticket_id=ticket.public_id, phase_id="PHASE_IMPLEMENTATION", description=f"Implement: {title}")
        # hidden causes
        fired = None
        active = active_causes(slug, key, bool(declared), progress)
        oracle = oracle_probability(active)
        for name, probability, kind, texts in active:
            if fired is None and rng.random() < probability:
                fired = (name, kind, rng.choice(texts))
        if fired is None and rng.random() < NOISE_BLOCKING:
            kind = rng.choice(["clarification_needed", "missing_requirement", "integration_issue", "security_issue"])
            fired = ("noise", kind, "Something unexpected came up; waiting on another team to answer.")
        if fired is not None:
            name, kind, text = fired
            follow_up, discovery = task_create(
                actor=actor, ticket_id=ticket.public_id, phase_id="PHASE_IMPLEMENTATION", description=f"Resolve: {text}",
                discovery_type=kind, discovery_description=text, source_task_id=task.public_id,
            )
            truth["discovery_cause"][discovery.id] = name
            finish_task(actor, follow_up)
        elif rng.random() < DISTRACTOR_RATE:
            kind, text = rng.choice(DISTRACTORS)
            follow_up, discovery = task_create(
                actor=actor, ticket_id=ticket.public_id, phase_id="PHASE_IMPLEMENTATION", description=f"Follow up: {text}",
                discovery_type=kind, discovery_description=text, source_task_id=task.public_id,
            )
            truth["discovery_cause"][discovery.id] = "distractor"
            finish_task(actor, follow_up)
        truth["ticket_cause"][ticket.pk] = fired[0] if fired else None
        truth["ticket_oracle"][ticket.pk] = oracle
        open_tickets[slug].append(ticket)
        in_flight.append((step + rng.randint(2, 12), ticket, task, declared))
        # finish what is due
        due = [item for item in in_flight if item[0] <= step]
        in_flight = [item for item in in_flight if item[0] > step]
        for _, done_ticket, done_task, _ in due:
            wf = truth["ticket_workflow"][done_ticket.pk]
            finish_task(actors[wf], done_task)
            resolve(actors[wf], done_ticket)
            open_tickets[wf] = [t for t in open_tickets[wf] if t.pk != done_ticket.pk]
        if step % 100 == 0:
            print(f"  generated {step}/{total} tickets", flush=True)
    for _, ticket, task, _ in in_flight:
        wf = truth["ticket_workflow"][ticket.pk]
        finish_task(actors[wf], task)
        resolve(actors[wf], ticket)
    return truth


# ------------------------------------------------------------------------------------------- metrics


def ece(scores, labels, bins=10):
    total = len(scores)
    error = 0.0
    for b in range(bins):
        lo, hi = b / bins, (b + 1) / bins
        idx = [i for i, s in enumerate(scores) if lo <= s < hi or (b == bins - 1 and s == 1.0)]
        if idx:
            confidence = sum(scores[i] for i in idx) / len(idx)
            accuracy = sum(labels[i] for i in idx) / len(idx)
            error += len(idx) / total * abs(confidence - accuracy)
    return error


def reliability_bins(scores, labels, bins=10):
    """Equal-width bins (as ece): [(lo, hi, n, mean predicted, observed share)] of the non-empty bins."""
    rows = []
    for b in range(bins):
        lo, hi = b / bins, (b + 1) / bins
        idx = [i for i, s in enumerate(scores) if lo <= s < hi or (b == bins - 1 and s == 1.0)]
        if idx:
            rows.append((lo, hi, len(idx), sum(scores[i] for i in idx) / len(idx), sum(labels[i] for i in idx) / len(idx)))
    return rows


def _wilson(successes, n, z=1.96):
    centre = (successes + z * z / 2) / (n + z * z)
    half = z * (successes * (n - successes) / n + z * z / 4) ** 0.5 / (n + z * z)
    return max(0.0, centre - half), min(1.0, centre + half)


def write_reliability_png(path, scores, labels, *, title, bins=10):
    """A reliability diagram as PNG (Pillow): observed share blocked against mean predicted p per bin,
    with 95 % Wilson intervals, the diagonal of perfect calibration, and the count of predictions per bin."""
    from PIL import Image, ImageDraw, ImageFont

    rows = reliability_bins(scores, labels, bins)
    width, height = 640, 700
    left, top, size = 80, 70, 480
    strip_top, strip_height = top + size + 50, 70
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    font, small = ImageFont.load_default(size=15), ImageFont.load_default(size=12)

    def x_of(p):
        return left + p * size

    def y_of(p):
        return top + size - p * size

    for tick in range(6):
        value = tick / 5
        draw.line([(x_of(value), top), (x_of(value), top + size)], fill="#e5e7eb")
        draw.line([(left, y_of(value)), (left + size, y_of(value))], fill="#e5e7eb")
        draw.text((x_of(value), top + size + 6), f"{value:.1f}", fill="#374151", font=small, anchor="mt")
        draw.text((left - 8, y_of(value)), f"{value:.1f}", fill="#374151", font=small, anchor="rm")
    draw.rectangle([left, top, left + size, top + size], outline="#6b7280")
    for step in range(0, size, 12):  # dashed diagonal: perfect calibration
        a, b = step / size, min(step + 6, size) / size
        draw.line([(x_of(a), y_of(a)), (x_of(b), y_of(b))], fill="#9ca3af", width=2)
    points = []
    for _, _, n, predicted, observed in rows:
        low, high = _wilson(round(observed * n), n)
        draw.line([(x_of(predicted), y_of(low)), (x_of(predicted), y_of(high))], fill="#93a5e8", width=2)
        points.append((x_of(predicted), y_of(observed)))
    if len(points) > 1:
        draw.line(points, fill="#3457d5", width=3)
    for (px, py), (_, _, n, _, _) in zip(points, rows, strict=True):
        radius = 3 + min(9, n ** 0.5 / 2)
        draw.ellipse([px - radius, py - radius, px + radius, py + radius], fill="#3457d5", outline="white")
    draw.text((width / 2, 22), title, fill="#111827", font=font, anchor="mm")
    draw.text((width / 2, 44), "observed share blocked vs. mean predicted p_blocked per bin; bars: 95 % Wilson intervals",
              fill="#4b5563", font=small, anchor="mm")
    draw.text((left + size / 2, top + size + 26), "predicted p_blocked", fill="#111827", font=font, anchor="mm")
    label = Image.new("RGBA", (220, 24), (255, 255, 255, 0))
    ImageDraw.Draw(label).text((110, 12), "observed share blocked", fill="#111827", font=font, anchor="mm")
    image.paste(label.rotate(90, expand=True), (12, int(top + size / 2 - 110)), label.rotate(90, expand=True))
    peak = max((n for _, _, n, _, _ in rows), default=1)
    for lo, hi, n, _, _ in rows:
        bar = n / peak * (strip_height - 16)
        draw.rectangle([x_of(lo) + 2, strip_top + strip_height - bar, x_of(hi) - 2, strip_top + strip_height], fill="#c7d2fe")
        draw.text(((x_of(lo) + x_of(hi)) / 2, strip_top + strip_height - bar - 2), str(n), fill="#374151", font=small, anchor="mb")
    draw.line([(left, strip_top + strip_height), (left + size, strip_top + strip_height)], fill="#6b7280")
    draw.text((left - 8, strip_top + strip_height / 2), "n", fill="#374151", font=small, anchor="rm")
    draw.text((left + size / 2, strip_top + strip_height + 14), "predictions per bin", fill="#4b5563", font=small, anchor="mm")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format="PNG", optimize=True)


def best_threshold(scores, labels):
    from sklearn.metrics import f1_score

    candidates = sorted(set(round(s, 3) for s in scores))
    best = (0.0, 0.5)
    for threshold in candidates:
        f1 = f1_score(labels, [s >= threshold for s in scores], zero_division=0)
        if f1 > best[0]:
            best = (f1, threshold)
    return best[1]


def metrics(scores, labels, threshold, reference_rate, rng, boot=300):
    from sklearn.metrics import average_precision_score, f1_score, roc_auc_score

    def point(s, y):
        if len(set(y)) < 2:
            return None
        brier = sum((a - b) ** 2 for a, b in zip(s, y, strict=True)) / len(y)
        reference = sum((reference_rate - b) ** 2 for b in y) / len(y)
        return {
            "roc_auc": roc_auc_score(y, s),
            "pr_auc": average_precision_score(y, s),
            "f1": f1_score(y, [a >= threshold for a in s], zero_division=0),
            "bss": 1 - brier / reference,
            "ece": ece(s, y),
        }

    base = point(scores, labels)
    samples = {k: [] for k in base}
    n = len(labels)
    for _ in range(boot):
        idx = [rng.randrange(n) for _ in range(n)]
        value = point([scores[i] for i in idx], [labels[i] for i in idx])
        if value:
            for k in samples:
                samples[k].append(value[k])
    intervals = {}
    for k, values in samples.items():
        values.sort()
        intervals[k] = (values[int(0.025 * len(values))], values[int(0.975 * len(values)) - 1])
    return base, intervals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tickets", type=int, default=900)
    parser.add_argument("--seed", type=int, default=17)
    parser.add_argument("--windows", type=int, default=4)
    parser.add_argument("--reuse", action="store_true",
                        help="reuse the bench database and ground truth of the previous run with the same --tickets/--seed "
                             "(skips the generator; for iterating on the model)")
    parser.add_argument("--plot", default=str(ROOT / "docs" / "blockers_reliability.png"),
                        help="where to write the served tier's reliability diagram (PNG)")
    args = parser.parse_args()


    import psycopg

    from omoi_site import embedded_db
    from omoi_site.embedded_db import embedded_database_url

    truth_path = ROOT / ".data" / f"bench_blockers_truth_{args.tickets}_{args.seed}.json"
    database = BENCH_DATABASE.format(tickets=args.tickets, seed=args.seed)
    reuse = args.reuse and truth_path.exists()
    if not os.environ.get("DATABASE_URL"):
        embedded_database_url(ROOT)
        server = embedded_db._server
        if not reuse:
            with psycopg.connect(server.get_uri("postgres"), autocommit=True) as connection:
                connection.execute(f'DROP DATABASE IF EXISTS "{database}"')
                connection.execute(f'CREATE DATABASE "{database}"')
        os.environ["DATABASE_URL"] = server.get_uri(database)
    else:
        sys.exit("bench/blockers_eval.py recreates its own database; unset DATABASE_URL")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    from tasks import blockers
    from tickets.models import Ticket

    started = time.monotonic()
    if reuse:
        import json

        truth = {key: {int(k): v for k, v in value.items()} for key, value in json.loads(truth_path.read_text()).items()}
        print(f"reusing the generated history of the previous run ({truth_path.name})", flush=True)
    else:
        print(f"generating {args.tickets} tickets through the services (seed {args.seed}) …", flush=True)
        truth = generate(args.tickets, args.seed)
        print(f"  done in {time.monotonic() - started:.0f}s", flush=True)
        blockers.discovery_embeddings_refresh()
        import json

        truth_path.parent.mkdir(exist_ok=True)
        truth_path.write_text(json.dumps(truth))

    started = time.monotonic()
    examples = blockers.training_examples()
    print(f"features of {len(examples)} finished tickets as of their creation in {time.monotonic() - started:.0f}s")
    resolved = dict(Ticket.objects.values_list("id", "resolved_at"))
    prevalence_by_workflow = {}
    for e in examples:
        slug = truth["ticket_workflow"][e.ticket_id]
        prevalence_by_workflow.setdefault(slug, []).append(e.label)
    print("base rates: " + ", ".join(f"{s} {sum(v) / len(v):.1%} of {len(v)}" for s, v in prevalence_by_workflow.items()))

    start = int(len(examples) * 0.4)
    bounds = [start + (len(examples) - start) * i // args.windows for i in range(args.windows + 1)]
    scorers = ["base rate", "workflow-type rate", "has open dependency", "knn (neighbours only)", "lr", "served tier", "oracle"]
    pooled = {name: [] for name in scorers}
    labels, thresholds_scores = [], {name: [] for name in scorers}
    hits, hit_total, type_true, type_pred, served_tiers = 0, 0, [], [], []
    train_rates = []
    for lo, hi in zip(bounds, bounds[1:], strict=False):
        window = examples[lo:hi]
        opens = window[0].t0
        train = [e for e in examples if resolved[e.ticket_id] < opens]
        rate = sum(e.label for e in train) / len(train)
        # What blocker_model_train would decide on this past (shared tier, workflows with their own lr),
        # and the shared lr itself for its own row.
        trained = blockers.fit_models(train)
        parameters = blockers.fit_lr(train)
        served_tiers.append(trained["tier"] + (f"+{len(trained['workflows'])} own" if trained["workflows"] else ""))

        def scores_of(e, parameters=parameters, rate=rate, trained=trained):
            v = e.features.values
            return {
                "base rate": rate,
                "workflow-type rate": v["type_rate"],
                "has open dependency": 1.0 if v["open_declared_blockers"] > 0 else 0.0,
                "knn (neighbours only)": v["knn_rate"],
                "lr": blockers.lr_probability(parameters, v),
                "served tier": blockers.score_trained(trained, e.features, e.workflow_id)[1] or rate,
                "oracle": truth["ticket_oracle"][e.ticket_id],
            }

        for e in train:
            for name, value in scores_of(e).items():
                thresholds_scores[name].append((value, e.label))
        for e in window:
            for name, value in scores_of(e).items():
                pooled[name].append(value)
            labels.append(e.label)
            train_rates.append(rate)
            cause = truth["ticket_cause"].get(e.ticket_id)
            if e.label and cause not in (None, "noise"):
                past_same = [d for d, c in truth["discovery_cause"].items() if c == cause]
                if past_same:
                    hit_total += 1
                    top = [row["discovery_id"] for row in e.features.similar_discoveries[:5]]
                    hits += any(truth["discovery_cause"].get(d) == cause for d in top)
            if e.label:
                from tasks.models import Discovery

                actual = list(Discovery.objects.filter(source_task__ticket_id=e.ticket_id, discovery_type__in=blockers.BLOCKING_TYPES)
                              .values_list("discovery_type", flat=True)[:1])
                votes = e.features.type_votes
                if actual and votes:
                    type_true.append(actual[0])
                    type_pred.append(max(votes, key=votes.get))

    rng = random.Random(args.seed)
    prevalence = sum(labels) / len(labels)
    reference = statistics.fmean(train_rates)
    print(f"\nwalk-forward: {args.windows} windows, {len(labels)} predictions, prevalence {prevalence:.3f} "
          f"({sum(labels)} blocked); served tier per window: {', '.join(served_tiers)}")
    print(f"{'scorer':24} {'ROC-AUC':>16} {'PR-AUC':>16} {'F1':>16} {'Brier skill':>17} {'ECE':>14}")
    for name in scorers:
        train_pairs = thresholds_scores[name]
        threshold = best_threshold([s for s, _ in train_pairs], [y for _, y in train_pairs])
        base, ci = metrics(pooled[name], labels, threshold, reference, rng)

        def cell(key, base=base, ci=ci):
            return f"{base[key]:.3f} [{ci[key][0]:.2f},{ci[key][1]:.2f}]"

        print(f"{name:24} {cell('roc_auc'):>16} {cell('pr_auc'):>16} {cell('f1'):>16} {cell('bss'):>17} {cell('ece'):>14}")
    print(f"PR-AUC of a random scorer = prevalence = {prevalence:.3f}; oracle = the generator's own fire probabilities")
    ceiling = population_ceiling(100_000, args.seed)
    print(f"ceiling of this generator in expectation (oracle on 100k drawn tickets of the prediction windows, no "
          f"database): ROC-AUC {ceiling['roc_auc']:.3f}, PR-AUC {ceiling['pr_auc']:.3f} = {ceiling['pr_lift']:.2f}x "
          f"prevalence {ceiling['prevalence']:.3f}, best F1 {ceiling['best_f1']:.3f}")
    served = pooled["served tier"]
    print("reliability of the served tier (bin: n, mean predicted, observed): " + "; ".join(
        f"{lo:.1f}-{hi:.1f}: {n}, {predicted:.3f}, {observed:.3f}" for lo, hi, n, predicted, observed in reliability_bins(served, labels)))
    write_reliability_png(args.plot, served, labels, title=(
        f"Served tier ({'/'.join(sorted(set(t.split('+')[0] for t in served_tiers)))}), walk-forward: n={len(labels)}, ECE {ece(served, labels):.3f}"))
    print(f"reliability diagram written to {args.plot}")
    print(f"similar-discovery Hit@5 (a past discovery of the same hidden cause in the top 5): "
          f"{hits / hit_total if hit_total else float('nan'):.3f} ({hits}/{hit_total})")
    if type_true:
        from sklearn.metrics import f1_score

        print(f"blocker-type macro-F1 (top likely type vs. the recorded type, blocked tickets): "
              f"{f1_score(type_true, type_pred, average='macro'):.3f} (n={len(type_true)})")

    # p95 of a full forecast (embedding + features + suggestions + the ledger write) on open-ish tickets
    from django.db import transaction

    sample = list(Ticket.objects.order_by("-id")[:60])
    timings = []
    for ticket in sample:
        began = time.perf_counter()
        with transaction.atomic():
            blockers.ticket_risk_predict(ticket=ticket)
        timings.append((time.perf_counter() - began) * 1000)
    timings.sort()
    from tasks.models import Discovery

    print(f"predict_blockers (service, incl. embedding and ledger write) at {Ticket.objects.count()} tickets / "
          f"{Discovery.objects.count()} discoveries: p50 {timings[len(timings) // 2]:.1f} ms, "
          f"p95 {timings[int(0.95 * (len(timings) - 1))]:.1f} ms")


if __name__ == "__main__":
    main()
