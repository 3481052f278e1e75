"""Blocker prediction: learn from past discoveries and dependencies what will block a ticket.

What is predicted, as of a moment t0 (a ticket's creation, or when someone asks): `p_blocked`, the chance
that the ticket becomes blocked before it is done — it gains a blocker (a dependency added after it was
filed) or one of its tasks records a discovery of a blocking kind (BLOCKING_TYPES) — with a band, the
workflow's base rate, a distribution over discovery types, the most similar past discoveries and the
open tickets most likely to block it.

One feature function (`ticket_features`) serves training and prediction alike, and it reads only rows
created before t0: neighbour tickets must have been *finished* before t0 (so their label was known then),
discoveries must have been recorded before t0, follow-up outcomes count only if they ended before t0.
(One thing it cannot time-travel: a neighbour's embedding is of its current text; tickets are rarely
re-titled after they are done.)

Tiers (`model_tier`):
* `prior`  — no labelled history in the workflow: rules (an open declared blocker, a very similar past
  blocking discovery) give the band; no probability is claimed (`p_blocked` null).
* `knn`    — the blocker rate of the NEIGHBOURS nearest finished tickets, weighted by similarity² and
  by age (half-life RECENCY_HALF_LIFE_TICKETS tickets of the workflow, so a fixed cause fades), shrunk
  toward the workflow × type prior (pseudo-count KNN_PSEUDO_COUNT); Platt-calibrated once trained.
* `lr`     — scikit-learn logistic regression on LR_INPUTS (the knn rate, declared and still-open declared
  blockers), Platt-recalibrated on out-of-fold margins; used only when the training run's walk-forward
  evaluation shows it beating `knn` on both ROC-AUC and Brier. A workflow with enough positives gets its
  own lr when that beats both on its own windows (fit_models).
Coefficients live as JSON in `BlockerModel` rows (no pickle); inference is a dot product in-process. The
priors and neighbour labels read `BlockerOutcome`, one row per finished ticket written as it is resolved.

The ledger (`BlockerPrediction`) keeps every prediction made, with its model version and t0; a
deterministic share of tickets (settings.BLOCKER_SHADOW_HOLDOUT_PERCENT) is predicted but never shown by
any door, so the ledger's graded rows measure the model without the prediction changing the outcome.
Membership is sticky: decided at a ticket's first prediction and read back from that row (is_shadow).

Layout note: the module holds both the reads (`ticket_risk`, `discoveries_similar`) and the writes
(`blocker_model_train`, `blocker_prediction_record`, `blocker_predictions_grade`) of one feature, with
the same naming and transaction rules as services.py / selectors.py; it lives in `tasks` because
discoveries do (and `tasks` may import `tickets`, not the other way round).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.tasks import task
from django.utils import timezone

from omoi_site.domain import DomainError, PermissionDenied, task_public_id, ticket_public_id
from tasks.models import BlockerModel, BlockerOutcome, BlockerPrediction, Discovery, Task
from tickets.embeddings import EmbeddingError, embed_query, get_embedding_provider, ticket_embedding_text
from tickets.models import Phase, Ticket, TicketDependency
from tickets.selectors import ticket_get, workflow_get, workflow_ids_for

logger = logging.getLogger(__name__)

FEATURE_VERSION = 2
BLOCKING_TYPES = (
    Discovery.DiscoveryType.CLARIFICATION_NEEDED,
    Discovery.DiscoveryType.MISSING_REQUIREMENT,
    Discovery.DiscoveryType.INTEGRATION_ISSUE,
    Discovery.DiscoveryType.SECURITY_ISSUE,
)
# "dependency" stands for "gained a blocking ticket" in likely_blocker_types.
DEPENDENCY_TYPE = "dependency"
# A dependency created this soon after its ticket was declared when the ticket was filed: known at t0,
# so it is an input (declared_blockers), not an outcome.
DECLARED_WINDOW = timedelta(seconds=2)
NEIGHBOURS = 50
# Neighbours fade with age so that a cause fixed long ago stops raising the rate: a neighbour filed H
# tickets (of its workflow) before t0 counts half. Measured on bench/blockers_eval.py (seed 17): 100 and 60
# tie; 30, 200 and no fading rank worse.
RECENCY_HALF_LIFE_TICKETS = 100.0
DISCOVERY_CANDIDATES = 30
KNN_PSEUDO_COUNT = 2.0
PRIOR_PSEUDO_COUNT = 10.0
DEFAULT_BASE_RATE = 0.15  # before any ticket anywhere has finished: the middle of the 5-25 % we see
MIN_POSITIVES_FOR_LR = 25
MIN_EXAMPLES_FOR_LR = 150
MIN_POSITIVES_FOR_WORKFLOW_MODEL = 25
MIN_POSITIVES_FOR_KNN_CALIBRATION = 10
MIN_EXAMPLES_FOR_WORKFLOW_MODEL = 120
# A band is both absolute and relative: "medium" needs p ≥ 0.2 AND clearly above the workflow's own base
# rate (a ticket at the usual rate of a blocker-heavy workflow is not news).
BANDS = ((0.5, "high"), (0.2, "medium"))
BAND_ABOVE_BASE = 1.25
PRIOR_RULE_SIMILARITY = 0.6
RRF_K = 60
SIMILAR_LIMIT = 5
TRAINING_LOCK = 1_702_017  # pg advisory lock key: serialises blocker_model_train
RETRAIN_PERMISSION = "tasks.retrain_blockermodel"
SUMMARY_LENGTH = 160

TICKET_TABLE = Ticket._meta.db_table
TASK_TABLE = Task._meta.db_table
DISCOVERY_TABLE = Discovery._meta.db_table
DEPENDENCY_TABLE = TicketDependency._meta.db_table
OUTCOME_TABLE = BlockerOutcome._meta.db_table
# The keyword route ranks at most this many matching discoveries, the newest (ranking every match of a
# long OR-query cost 140 ms at 20k discoveries; the newest are also the ones whose causes still fire).
KEYWORD_RANK_LIMIT = 400

FEATURE_NAMES = (
    "knn_rate",
    "knn_top_similarity",
    "knn_positive_similarity",
    "blocking_discovery_similarity",
    "workflow_rate",
    "type_rate",
    "priority_rank",
    "declared_blockers",
    "open_declared_blockers",
    "tag_count",
    "log_text_length",
    "in_backlog",
)

# The LR's inputs: a subset of FEATURE_NAMES (stored with each model as feature_names).
LR_INPUTS = ("knn_rate", "declared_blockers", "open_declared_blockers")
LR_C = 0.5


def _vector_literal(vector: list[float]) -> str:
    return "[" + ",".join(f"{x:.7g}" for x in vector) + "]"


def _blocked_label_sql(alias: str, until: str) -> str:
    """SQL boolean: ticket `alias` became blocked after it was filed and before `until` (an SQL expression)."""
    blocking = ", ".join(f"'{t}'" for t in BLOCKING_TYPES)
    window = int(DECLARED_WINDOW.total_seconds())
    return f"""(EXISTS (SELECT 1 FROM {DEPENDENCY_TABLE} d
                         WHERE d.ticket_id = {alias}.id AND d.created_at > {alias}.created_at + interval '{window} seconds'
                           AND d.created_at < {until})
               OR EXISTS (SELECT 1 FROM {DISCOVERY_TABLE} x JOIN {TASK_TABLE} k ON k.id = x.source_task_id
                           WHERE k.ticket_id = {alias}.id AND x.discovery_type IN ({blocking}) AND x.created_at < {until}))"""


# ----------------------------------------------------------------------------------------- features


@dataclass
class TicketFacts:
    """What is known about a ticket at t0 (a saved ticket, or one being filed: ticket_id None)."""

    workflow_id: int
    title: str
    description: str
    ticket_type: str
    priority: str
    phase: str
    tags: list[str]
    t0: datetime
    ticket_id: int | None = None
    declared_blocker_ids: list[int] = field(default_factory=list)

    @classmethod
    def of_ticket(cls, ticket: Ticket, *, t0: datetime, declared_blocker_ids: list[int]) -> TicketFacts:
        return cls(
            workflow_id=ticket.workflow_id, title=ticket.title, description=ticket.description,
            ticket_type=ticket.ticket_type, priority=ticket.priority, phase=ticket.phase, tags=list(ticket.tags),
            t0=t0, ticket_id=ticket.pk, declared_blocker_ids=declared_blocker_ids,
        )

    @property
    def text(self) -> str:
        return ticket_embedding_text(self.title, self.description)


@dataclass
class Features:
    values: dict[str, float]
    base_rate: float
    labelled_neighbours: int
    type_votes: dict[str, float]
    similar_discoveries: list[dict]
    positive_neighbour_ids: list[int]


def ticket_features(facts: TicketFacts, vector: list[float] | None) -> Features:
    """The features of a ticket as of `facts.t0`, from rows created before t0 only (see module docstring).
    `vector` is the embedding of the ticket's text (None when the provider is down: neighbour features
    are then empty and the prediction falls back to priors)."""
    t0 = facts.t0
    self_id = facts.ticket_id or 0
    # SET LOCAL needs a transaction; inside the caller's no savepoint (two round trips per prediction).
    with transaction.atomic(savepoint=False), connection.cursor() as cursor:
        _hnsw_settings(cursor)
        # Priors: blocker rate of tickets finished before t0 — everywhere, in the workflow, and in the
        # workflow for this ticket type (counts only cross workflows; no content does). Read from the
        # outcome rows written as tickets finish (BlockerOutcome), not worked out again per ticket.
        cursor.execute(
            f"""SELECT count(*), count(*) FILTER (WHERE blocked),
                       count(*) FILTER (WHERE workflow_id = %(w)s), count(*) FILTER (WHERE workflow_id = %(w)s AND blocked),
                       count(*) FILTER (WHERE workflow_id = %(w)s AND ticket_type = %(tt)s),
                       count(*) FILTER (WHERE workflow_id = %(w)s AND ticket_type = %(tt)s AND blocked),
                       min(created_at) FILTER (WHERE workflow_id = %(w)s)
                  FROM {OUTCOME_TABLE} WHERE resolved_at < %(t0)s AND ticket_id <> %(self)s""",
            {"w": facts.workflow_id, "tt": facts.ticket_type, "t0": t0, "self": self_id},
        )
        total, total_blocked, in_workflow, workflow_blocked, of_type, type_blocked, first_filed = cursor.fetchone()
        global_rate = (total_blocked + DEFAULT_BASE_RATE * PRIOR_PSEUDO_COUNT) / (total + PRIOR_PSEUDO_COUNT)
        workflow_rate = (workflow_blocked + global_rate * PRIOR_PSEUDO_COUNT) / (in_workflow + PRIOR_PSEUDO_COUNT)
        type_rate = (type_blocked + workflow_rate * PRIOR_PSEUDO_COUNT) / (of_type + PRIOR_PSEUDO_COUNT)

        # The workflow's filing rate (finished tickets per second of its history) turns a neighbour's age
        # into "tickets filed since", a clock that works for a fleet filing ten a day or ten a minute.
        history_seconds = (t0 - first_filed).total_seconds() if first_filed is not None else 0.0
        tickets_per_second = in_workflow / history_seconds if history_seconds > 0 else 0.0
        neighbours: list[tuple[int, float, bool]] = []
        ages: list[float] = []
        if vector is not None:
            literal = _vector_literal(vector)
            cursor.execute(
                # The label from the ticket's outcome row (written as it finished); worked out only for a
                # finished ticket that has none yet (finished before the outcome rows existed).
                f"""SELECT t.id, 1 - (t.embedding <=> %(v)s::vector),
                           coalesce(o.blocked, {_blocked_label_sql('t', 't.resolved_at')}),
                           extract(epoch FROM %(t0)s - t.created_at)
                      FROM {TICKET_TABLE} t LEFT JOIN {OUTCOME_TABLE} o ON o.ticket_id = t.id
                     WHERE t.workflow_id = %(w)s AND t.embedding IS NOT NULL AND t.resolved_at < %(t0)s
                       AND t.created_at < %(t0)s AND t.id <> %(self)s
                     ORDER BY t.embedding <=> %(v)s::vector LIMIT %(k)s""",
                {"v": literal, "w": facts.workflow_id, "t0": t0, "self": self_id, "k": NEIGHBOURS},
            )
            rows = cursor.fetchall()
            neighbours = [(pk, float(sim), bool(blocked)) for pk, sim, blocked, _ in rows]
            ages = [float(age) * tickets_per_second for *_, age in rows]
        top_ids, similarity, _ = _discoveries_ranked(
            # No word route here: a ticket's words match thousands of discoveries at 20k (15 % of them for
            # a four-word title), and finding them cost 20-80 ms of predict_blockers' 50 ms budget while the
            # two meaning routes already find the same-cause discovery (Hit@5 in bench/blockers_eval.py).
            # search_similar_discoveries, where an agent types the words, keeps the word route.
            cursor, workflow_id=facts.workflow_id, vector=vector, text=facts.title, t0=t0, exclude_ticket_id=self_id,
            candidates=DISCOVERY_CANDIDATES, limit=DISCOVERY_CANDIDATES, use_words=False,
        )
        details = _discovery_details(cursor, top_ids, t0=t0) if top_ids else {}

    # Neighbour features.
    weights = [
        (max(sim, 0.0) ** 2 * 0.5 ** (age / RECENCY_HALF_LIFE_TICKETS), blocked)
        for (_, sim, blocked), age in zip(neighbours, ages, strict=True)
    ]
    weight_sum = sum(w for w, _ in weights)
    positive_weight = sum(w for w, blocked in weights if blocked)
    knn_rate = (positive_weight + KNN_PSEUDO_COUNT * type_rate) / (weight_sum + KNN_PSEUDO_COUNT)
    top_similarity = max((sim for _, sim, _ in neighbours), default=0.0)
    positive_similarity = max((sim for _, sim, blocked in neighbours if blocked), default=0.0)
    blocking_similarity = max(
        (similarity.get(pk, 0.0) for pk in details if details[pk]["discovery_type"] in BLOCKING_TYPES), default=0.0
    )

    # Type votes: similar discoveries (weighted by similarity) and blocked neighbours without a discovery
    # (they were blocked by a dependency).
    votes: dict[str, float] = {}
    for pk in top_ids[:10]:
        weight = max(similarity.get(pk, 0.0), 0.05) ** 2
        kind = details[pk]["discovery_type"]
        votes[kind] = votes.get(kind, 0.0) + weight
    neighbours_with_discovery = {details[pk]["ticket_pk"] for pk in details}
    for pk, sim, blocked in neighbours[:10]:
        if blocked and pk not in neighbours_with_discovery:
            votes[DEPENDENCY_TYPE] = votes.get(DEPENDENCY_TYPE, 0.0) + max(sim, 0.0) ** 2

    similar = []
    for pk in top_ids[:SIMILAR_LIMIT]:
        row = dict(details[pk])
        row.pop("ticket_pk")
        row["similarity"] = round(similarity.get(pk, 0.0), 3)
        similar.append(row)

    open_declared = 0
    if facts.declared_blocker_ids:
        open_declared = Ticket.objects.filter(pk__in=facts.declared_blocker_ids).exclude(resolved_at__lt=t0).count()
    values = {
        "knn_rate": knn_rate,
        "knn_top_similarity": top_similarity,
        "knn_positive_similarity": positive_similarity,
        "blocking_discovery_similarity": blocking_similarity,
        "workflow_rate": workflow_rate,
        "type_rate": type_rate,
        "priority_rank": float(_priority_rank(facts.priority)),
        "declared_blockers": float(len(facts.declared_blocker_ids)),
        "open_declared_blockers": float(open_declared),
        "tag_count": float(len(facts.tags)),
        "log_text_length": math.log1p(len(facts.text)),
        "in_backlog": 1.0 if facts.phase == Phase.BACKLOG else 0.0,
    }
    return Features(
        values=values,
        base_rate=workflow_rate,
        labelled_neighbours=len(neighbours),
        type_votes=votes,
        similar_discoveries=similar,
        positive_neighbour_ids=[pk for pk, _, blocked in neighbours if blocked],
    )


def _hnsw_settings(cursor) -> None:
    """Exact-enough filtered vector search for this transaction (one round trip): a wider candidate list
    and iterative scans, so a workflow filter after the HNSW walk still yields k rows."""
    cursor.execute("SET LOCAL hnsw.ef_search = 200; SET LOCAL hnsw.iterative_scan = relaxed_order")


def _discoveries_ranked(cursor, *, workflow_id: int, vector: list[float] | None, text: str, t0: datetime,
                        candidates: int, limit: int, exclude_ticket_id: int = 0,
                        discovery_type: str | None = None, use_words: bool = True) -> tuple[list[int], dict[int, float], set[int]]:
    """The one hybrid search over a workflow's past discoveries (recorded before t0, not on ticket
    `exclude_ticket_id`), used by the features and by search_similar_discoveries: pgvector on the
    discovery's own text and on its ticket's text (the context a new ticket resembles) plus full text,
    fused by reciprocal rank (0.3 + 0.3 semantic, 0.4 keyword; `use_words` False: the two meaning routes
    only). Call inside a transaction after _hnsw_settings. Returns (the best `limit` ids, best first;
    cosine similarity per id found semantically; ids found by keyword)."""
    type_filter = "AND x.discovery_type = %(dt)s" if discovery_type else ""
    params = {"w": workflow_id, "q": text[:2000], "t0": t0, "self": exclude_ticket_id, "k": candidates, "dt": discovery_type}
    semantic: list[tuple] = []
    if vector is not None:
        params["v"] = _vector_literal(vector)
        cursor.execute(
            f"""(SELECT x.id, 1 - (x.embedding <=> %(v)s::vector) AS sim, 'own' AS route
                   FROM {DISCOVERY_TABLE} x JOIN {TASK_TABLE} k ON k.id = x.source_task_id
                  WHERE k.workflow_id = %(w)s AND x.embedding IS NOT NULL AND x.created_at < %(t0)s
                    AND k.ticket_id <> %(self)s {type_filter}
                  ORDER BY x.embedding <=> %(v)s::vector LIMIT %(k)s)
                UNION ALL
                (SELECT x.id, 1 - (t.embedding <=> %(v)s::vector) AS sim, 'context' AS route
                   FROM {DISCOVERY_TABLE} x JOIN {TASK_TABLE} k ON k.id = x.source_task_id
                   JOIN {TICKET_TABLE} t ON t.id = k.ticket_id
                  WHERE k.workflow_id = %(w)s AND t.embedding IS NOT NULL AND x.created_at < %(t0)s
                    AND t.id <> %(self)s {type_filter}
                  ORDER BY t.embedding <=> %(v)s::vector LIMIT %(k)s)""",
            params,
        )
        semantic = cursor.fetchall()
    keyword: list[int] = []
    if use_words:
        keyword = _discoveries_by_words(cursor, params=params, type_filter=type_filter)
    similarity: dict[int, float] = {}
    fused: dict[int, float] = {}
    for route in ("own", "context"):
        ranked = sorted(((pk, sim) for pk, sim, r in semantic if r == route), key=lambda i: -i[1])
        for rank, (pk, sim) in enumerate(ranked, start=1):
            similarity[pk] = max(similarity.get(pk, -1.0), float(sim))
            fused[pk] = fused.get(pk, 0.0) + 0.3 / (RRF_K + rank)
    for rank, pk in enumerate(keyword, start=1):
        fused[pk] = fused.get(pk, 0.0) + 0.4 / (RRF_K + rank)
    top = sorted(fused, key=lambda pk: (-fused[pk], -pk))[:limit]
    return top, similarity, set(keyword)


def _discoveries_by_words(cursor, *, params: dict, type_filter: str) -> list[int]:
    """The word route of _discoveries_ranked: full text, any of the query's words, best ts_rank_cd first
    among the newest KEYWORD_RANK_LIMIT matches."""
    cursor.execute(
        f"""SELECT x.id FROM {DISCOVERY_TABLE} x JOIN {TASK_TABLE} k ON k.id = x.source_task_id,
                   (SELECT coalesce(string_agg(quote_literal(lexeme), ' | ')::tsquery, ''::tsquery) AS q
                      FROM unnest(tsvector_to_array(to_tsvector('english', %(q)s))) AS lexeme) tsq
             WHERE x.id IN (SELECT x.id FROM {DISCOVERY_TABLE} x JOIN {TASK_TABLE} k ON k.id = x.source_task_id
                             WHERE k.workflow_id = %(w)s AND x.created_at < %(t0)s AND k.ticket_id <> %(self)s
                               AND x.search_vector @@ tsq.q {type_filter}
                             ORDER BY x.id DESC LIMIT {KEYWORD_RANK_LIMIT})
             ORDER BY ts_rank_cd(x.search_vector, tsq.q) DESC, x.id DESC LIMIT %(k)s""",
        params,
    )
    return [row[0] for row in cursor.fetchall()]


def _priority_rank(priority) -> int:
    """1 (low) .. 4 (critical), whatever the case of the stored priority string (2 when unknown)."""
    return {"low": 1, "medium": 2, "high": 3, "critical": 4}.get(str(priority).strip().lower(), 2)


def _discovery_details(cursor, ids: list[int], *, t0: datetime) -> dict[int, dict]:
    """Type, summary, ticket, the follow-up it spawned and how that had ended by t0, hours to unblock."""
    cursor.execute(
        f"""SELECT x.id, x.discovery_type, left(x.description, 400), k.ticket_id, x.spawned_task_id,
                   s.status, s.completed_at, x.created_at
              FROM {DISCOVERY_TABLE} x JOIN {TASK_TABLE} k ON k.id = x.source_task_id
              LEFT JOIN {TASK_TABLE} s ON s.id = x.spawned_task_id
             WHERE x.id = ANY(%(ids)s)""",
        {"ids": ids},
    )
    details = {}
    for pk, kind, description, ticket_pk, spawned_id, spawned_status, completed_at, created_at in cursor.fetchall():
        ended = completed_at is not None and completed_at < t0
        summary = " ".join(description.split())
        if len(summary) > SUMMARY_LENGTH:
            summary = summary[: SUMMARY_LENGTH - 1].rsplit(" ", 1)[0] + "…"
        row = {
            "discovery_id": pk,
            "discovery_type": kind,
            "summary": summary,
            "ticket_id": ticket_public_id(ticket_pk),
            "ticket_pk": ticket_pk,
        }
        if spawned_id:
            row["follow_up_task_id"] = task_public_id(spawned_id)
            row["follow_up_outcome"] = spawned_status if ended else "open"
            if ended and spawned_status == Task.Status.COMPLETED:
                row["hours_to_unblock"] = round((completed_at - created_at).total_seconds() / 3600, 2)
        details[pk] = row
    return details


# ------------------------------------------------------------------------------------------ scoring


def _sigmoid(z: float) -> float:
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


def _logit(p: float) -> float:
    p = min(max(p, 1e-6), 1 - 1e-6)
    return math.log(p / (1 - p))


def lr_inputs(values: dict[str, float], names: list[str] | tuple[str, ...] = ()) -> list[float]:
    """The LR's input row over `names` (default LR_INPUTS): rates enter as logits (the knn rate and the
    priors are probabilities)."""
    row = []
    for name in names or LR_INPUTS:
        value = values[name]
        if name in ("knn_rate", "workflow_rate", "type_rate"):
            value = _logit(value)
        row.append(value)
    return row


def lr_probability(parameters: dict, values: dict[str, float]) -> float:
    """Inference of a stored LR: standardise, dot product, Platt recalibration. Pure Python (no sklearn)."""
    row = lr_inputs(values, parameters.get("feature_names") or FEATURE_NAMES)
    z = parameters["intercept"]
    for x, mean, scale, coefficient in zip(row, parameters["mean"], parameters["scale"], parameters["coef"], strict=True):
        z += coefficient * (x - mean) / scale
    return _sigmoid(parameters["platt_a"] * z + parameters["platt_b"])


def band_of(p: float | None, features: Features) -> str:
    if p is None:  # prior tier: rules only
        if features.values["open_declared_blockers"] > 0:
            return "high"
        if features.values["blocking_discovery_similarity"] >= PRIOR_RULE_SIMILARITY:
            return "medium"
        return "low"
    for threshold, name in BANDS:
        if p >= threshold and p >= BAND_ABOVE_BASE * features.base_rate:
            return name
    return "low"


def score(features: Features, model: BlockerModel | None) -> tuple[str, float | None]:
    """(tier, p_blocked) for these features under a stored model (None: no trained model yet): the same
    rule as score_trained, for one row (a workflow's own lr, or the shared model)."""
    if model is not None and model.feature_version == FEATURE_VERSION:
        return score_trained({"tier": model.tier, "parameters": model.parameters or {}, "workflows": {}}, features, 0)
    return score_trained(None, features, 0)


def active_model() -> BlockerModel | None:
    """The newest trained model (shared by every workflow; its features carry the workflow's own prior)."""
    return _shared_models().first()


def _shared_models():
    return BlockerModel.objects.filter(workflow__isnull=True).order_by("-created_at", "-id")


def blocker_model_list(*, actor):
    """Trained models the actor may see (the shared ones, and those of the actor's workflows), newest
    first, each annotated `active_id`: the pk of the model serving predictions now (see active_model)."""
    from django.db.models import Q, Subquery

    queryset = BlockerModel.objects.select_related("workflow").annotate(active_id=Subquery(_shared_models().values("pk")[:1]))
    allowed = workflow_ids_for(actor)
    if allowed is not None:
        queryset = queryset.filter(Q(workflow__isnull=True) | Q(workflow__in=allowed))
    return queryset.order_by("-created_at", "-id")


def blocker_model_retrain_refusal(*, actor) -> str | None:
    """Why this actor may not retrain the blocker model (None: they may). The shared model is retrained by
    a superuser, or by a staff user holding tasks.retrain_blockermodel who is not limited to workflows
    (the model serves every workflow)."""
    if getattr(actor, "is_superuser", False):
        return None
    if not getattr(actor, "is_staff", False) or not actor.has_perm(RETRAIN_PERMISSION):
        return ("Retraining the blocker model needs the permission “Can retrain the blocker model” "
                f"({RETRAIN_PERMISSION}) or a superuser; ask an administrator to grant it.")
    if workflow_ids_for(actor) is not None:
        return ("The blocker model is shared by every workflow and your staff account is limited to some of them; "
                "ask a superuser or an unrestricted staff user to retrain it.")
    return None


def blocker_model_retrain_request(*, actor) -> None:
    """Queue a retraining of the shared blocker model (the job `train_blocker_model_now`, which
    runs blocker_model_train: idempotent, so unchanged data keeps the current model). Refused with
    PermissionDenied, nothing queued, for an actor blocker_model_retrain_refusal names a reason for."""
    refusal = blocker_model_retrain_refusal(actor=actor)
    if refusal is not None:
        raise PermissionDenied(f"Nothing was queued: {refusal}")
    transaction.on_commit(train_blocker_model_now.enqueue)


@task
def train_blocker_model_now() -> str:
    """Background job: train the blocker model now (queued by the admin's "Retrain now"); unchanged training
    data returns the existing model. Returns the version serving afterwards."""
    model, _ = blocker_model_train()
    return model.version


def _likely_types(votes: dict[str, float]) -> list[dict]:
    total = sum(votes.values())
    if total <= 0:
        return []
    ranked = sorted(votes.items(), key=lambda item: (-item[1], item[0]))[:3]
    return [{"type": kind, "share": round(weight / total, 2)} for kind, weight in ranked]


def _suggested_blocked_by(facts: TicketFacts, features: Features, p: float | None) -> list[dict]:
    """Open tickets ranked by how much they resemble the tickets that blocked this ticket's blocked
    neighbours (the centroid of those past blockers' embeddings), scaled by p."""
    if not features.positive_neighbour_ids:
        return []
    window = int(DECLARED_WINDOW.total_seconds())
    with connection.cursor() as cursor:
        cursor.execute(
            f"""SELECT avg(b.embedding) FROM {DEPENDENCY_TABLE} d JOIN {TICKET_TABLE} b ON b.id = d.blocker_id
                  JOIN {TICKET_TABLE} t ON t.id = d.ticket_id
                 WHERE d.ticket_id = ANY(%(ids)s) AND b.embedding IS NOT NULL AND d.created_at < %(t0)s
                   AND d.created_at > t.created_at + interval '{window} seconds'""",
            {"ids": features.positive_neighbour_ids, "t0": facts.t0},
        )
        centroid = cursor.fetchone()[0]
        if centroid is None:
            return []
        cursor.execute(
            f"""SELECT t.id, t.title, 1 - (t.embedding <=> %(c)s) FROM {TICKET_TABLE} t
                 WHERE t.workflow_id = %(w)s AND t.embedding IS NOT NULL AND t.created_at < %(t0)s
                   AND (t.resolved_at IS NULL OR t.resolved_at >= %(t0)s) AND t.id <> %(self)s
                   AND NOT (t.id = ANY(%(declared)s))
                 ORDER BY t.embedding <=> %(c)s LIMIT 3""",
            {"c": centroid, "w": facts.workflow_id, "t0": facts.t0, "self": facts.ticket_id or 0,
             "declared": facts.declared_blocker_ids},
        )
        rows = cursor.fetchall()
    scale = p if p is not None else features.values["knn_rate"]
    return [
        {"ticket_id": ticket_public_id(pk), "title": title, "p": round(max(float(sim), 0.0) * scale, 3)}
        for pk, title, sim in rows
        if float(sim) >= 0.5
    ]


def predict(facts: TicketFacts, *, vector: list[float] | None = None, model: BlockerModel | None = None,
            use_active_model: bool = True) -> dict:
    """The `risk` object for a ticket as of facts.t0 (not stored; see blocker_prediction_record). `model` is
    the shared model (default: the active one); a workflow's own model, when that training gave it one,
    serves instead."""
    return _predict(facts, vector=vector, shared=active_model() if model is None and use_active_model else model)[0]


def _serving_model(shared: BlockerModel | None, workflow_id: int) -> BlockerModel | None:
    """The model that speaks for a workflow: its own lr when the shared model's training run gave it one
    (listed in the shared row's metrics), else the shared model. One query at most."""
    if shared is None:
        return None
    own_pk = (shared.metrics or {}).get("workflow_models", {}).get(str(workflow_id))
    if own_pk is not None:
        own = BlockerModel.objects.filter(pk=own_pk, workflow_id=workflow_id).first()
        if own is not None:
            return own
    return shared


def _predict(facts: TicketFacts, *, vector: list[float] | None, shared: BlockerModel | None) -> tuple[dict, BlockerModel | None]:
    if vector is None:
        vector = _embed(facts.text)
    model = _serving_model(shared, facts.workflow_id)
    features = ticket_features(facts, vector)
    tier, p = score(features, model)
    serving = model if (model is not None and tier == BlockerModel.Tier.LR) else None
    risk = {
        "p_blocked": None if p is None else round(p, 3),
        "band": band_of(p, features),
        "base_rate": round(features.base_rate, 3),
        "model_tier": str(tier),
        "model_version": serving.version if serving is not None else f"{tier}-v{FEATURE_VERSION}",
        "likely_blocker_types": _likely_types(features.type_votes),
        "similar_discoveries": features.similar_discoveries,
        "suggested_blocked_by": _suggested_blocked_by(facts, features, p),
        "as_of": t0_text(facts.t0),
    }
    return risk, serving


def t0_text(t0: datetime) -> str:
    return t0.isoformat(timespec="seconds")


def _embed(text: str) -> list[float] | None:
    try:
        return embed_query(text)
    except EmbeddingError as error:
        logger.warning("blocker prediction without neighbours (embedding failed: %s)", error)
        return None


def text_vector(title: str, description: str) -> list[float] | None:
    """The embedding of a ticket's text for prediction (None when the provider is down)."""
    return _embed(ticket_embedding_text(title, description))


def is_shadow(ticket_pk: int) -> bool:
    """Whether this ticket belongs to the shadow holdout: predicted and recorded, never shown.

    Sticky: decided once, at the ticket's first prediction (normally its creation), and read back from that
    ledger row ever after — changing settings.BLOCKER_SHADOW_HOLDOUT_PERCENT later moves no ticket in or out
    (a held-back ticket shown later would make its graded row a shown one in all but name). A ticket with no
    prediction yet is decided by a hash of its id (stable across doors and processes) against the share."""
    first = (
        BlockerPrediction.objects.filter(ticket_id=ticket_pk).order_by("id").values_list("shown", flat=True).first()
    )
    if first is not None:
        return not first
    return _holdout_hash_member(ticket_pk)


def _holdout_hash_member(ticket_pk: int) -> bool:
    percent = float(getattr(settings, "BLOCKER_SHADOW_HOLDOUT_PERCENT", 10))
    digest = hashlib.sha256(f"omoios-blocker-holdout:{ticket_pk}".encode()).digest()
    return int.from_bytes(digest[:4], "big") % 10_000 < percent * 100


# ------------------------------------------------------------------------------- ledger and doors


def _declared_blocker_ids(ticket: Ticket, *, t0: datetime) -> list[int]:
    window_end = ticket.created_at + DECLARED_WINDOW
    return list(
        TicketDependency.objects.filter(ticket=ticket, created_at__lte=window_end, created_at__lt=t0 + DECLARED_WINDOW)
        .order_by("blocker_id")
        .values_list("blocker_id", flat=True)
    )


@transaction.atomic
def blocker_prediction_record(*, ticket: Ticket, moment: str = BlockerPrediction.Moment.CREATED,
                              vector: list[float] | None = None, t0: datetime | None = None) -> BlockerPrediction:
    """Predict a ticket's blockers as of t0 (its creation by default) and store the prediction in the
    ledger, shown or held back (shadow). For the creation moment a second call returns the first row
    (the ledger keeps what was predicted first); a requested forecast replaces the previous request."""
    if moment not in BlockerPrediction.Moment.values:
        raise DomainError(f"moment must be one of {BlockerPrediction.Moment.values}; got {moment!r}.")
    t0 = t0 or (ticket.created_at if moment == BlockerPrediction.Moment.CREATED else timezone.now())
    facts = TicketFacts.of_ticket(ticket, t0=t0, declared_blocker_ids=_declared_blocker_ids(ticket, t0=t0))
    if vector is None and ticket.embedding is not None:
        # The ticket's stored embedding is of the same text (embedded on write): reuse it rather than run
        # the model again (that was half of predict_blockers' time).
        vector = [float(x) for x in ticket.embedding]
    risk, serving = _predict(facts, vector=vector, shared=active_model())
    # Creation-time rows are what the ledger grades: the first one stays. A requested forecast is "as of
    # now", so a later request replaces the earlier one of the same model version.
    store = (BlockerPrediction.objects.get_or_create if moment == BlockerPrediction.Moment.CREATED
             else BlockerPrediction.objects.update_or_create)
    prediction, _ = store(
        ticket=ticket,
        moment=moment,
        model_version=risk["model_version"],
        defaults={
            "t0": t0,
            "model": serving,
            "model_tier": risk["model_tier"],
            "p_blocked": risk["p_blocked"],
            "base_rate": risk["base_rate"],
            "band": risk["band"],
            "shown": not is_shadow(ticket.pk),
            "risk": risk,
        },
    )
    return prediction


def ticket_risk_on_create(*, ticket: Ticket, text_vector: list[float] | None) -> dict | None:
    """The door side of create_ticket: record the creation-time prediction; the risk to show, or None
    for a shadow-holdout ticket. Advice only: a failure here never fails the ticket's creation."""
    try:
        with transaction.atomic():
            prediction = blocker_prediction_record(ticket=ticket, vector=text_vector)
    except Exception:
        logger.exception("blocker prediction for %s failed; the ticket was created without risk", ticket.public_id)
        return None
    return prediction.risk if prediction.shown else None


def ticket_risk_shown(*, ticket: Ticket) -> dict | None:
    """The risk a read door shows for a ticket: its latest recorded prediction, or None when there is none
    or the ticket is in the shadow holdout. One query."""
    prediction = (
        BlockerPrediction.objects.filter(ticket=ticket).order_by("-id").only("risk", "shown").first()
    )
    if prediction is None or not prediction.shown:
        return None
    return prediction.risk


def ticket_risk_predict(*, ticket: Ticket) -> dict | None:
    """predict_blockers: a fresh prediction as of now, recorded in the ledger (moment 'requested'); None
    for a shadow-holdout ticket (recorded all the same)."""
    prediction = blocker_prediction_record(ticket=ticket, moment=BlockerPrediction.Moment.REQUESTED, t0=timezone.now())
    return prediction.risk if prediction.shown else None


def blocker_predictions_grade(*, ticket: Ticket | None = None, now: datetime | None = None) -> int:
    """Grade ungraded ledger rows of finished tickets with the outcome (became blocked before done).
    With `ticket`, only that ticket's rows (called when it is resolved). Returns how many were graded."""
    now = now or timezone.now()
    with connection.cursor() as cursor:
        cursor.execute(
            f"""UPDATE {BlockerPrediction._meta.db_table} p
                   SET outcome_blocked = {_blocked_label_sql('t', 't.resolved_at')}, graded_at = %(now)s
                  FROM {TICKET_TABLE} t
                 WHERE t.id = p.ticket_id AND p.graded_at IS NULL AND t.resolved_at IS NOT NULL
                   AND (%(ticket)s::bigint IS NULL OR t.id = %(ticket)s::bigint)""",
            {"now": now, "ticket": ticket.pk if ticket is not None else None},
        )
        return cursor.rowcount


def blocker_ticket_finished(*, ticket: Ticket, **_signal) -> None:
    """The ticket_resolved hook, inside the resolving transaction: record the ticket's outcome for the
    priors (BlockerOutcome) and grade its ledger rows."""
    blocker_outcomes_refresh(ticket_ids=[ticket.pk])
    blocker_predictions_grade(ticket=ticket)


def blocker_outcomes_refresh(*, ticket_ids: list[int] | None = None) -> int:
    """Write the outcome row of finished tickets that have none (the given ones, or all: training and the
    scale bench call it to backfill). Returns how many were written."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"""INSERT INTO {OUTCOME_TABLE} (ticket_id, workflow_id, ticket_type, created_at, resolved_at, blocked)
                SELECT t.id, t.workflow_id, t.ticket_type, t.created_at, t.resolved_at, {_blocked_label_sql('t', 't.resolved_at')}
                  FROM {TICKET_TABLE} t
                 WHERE t.resolved_at IS NOT NULL AND (%(ids)s::bigint[] IS NULL OR t.id = ANY(%(ids)s::bigint[]))
                ON CONFLICT (ticket_id) DO NOTHING""",
            {"ids": ticket_ids},
        )
        return cursor.rowcount


def ledger_metrics(*, shown: bool | None = None, workflow_ids: set[int] | None = None) -> dict:
    """Metrics of graded creation-time predictions from the ledger (never re-scored), of every workflow
    or of `workflow_ids`."""
    rows = BlockerPrediction.objects.filter(graded_at__isnull=False, moment=BlockerPrediction.Moment.CREATED)
    if shown is not None:
        rows = rows.filter(shown=shown)
    if workflow_ids is not None:
        rows = rows.filter(ticket__workflow_id__in=workflow_ids)
    pairs = [(p, bool(y)) for p, y in rows.values_list("p_blocked", "outcome_blocked") if p is not None]
    result = {"graded": len(pairs), "positives": sum(y for _, y in pairs)}
    if pairs:
        scores, labels = [p for p, _ in pairs], [y for _, y in pairs]
        result["brier"] = round(sum((p - y) ** 2 for p, y in pairs) / len(pairs), 4)
        result["ece"] = round(expected_calibration_error(scores, labels), 4)
        result["roc_auc"] = _auc(scores, labels)
    return result


# ------------------------------------------------------------------------------------- discoveries


def discovery_embedding_text(discovery: Discovery) -> str:
    return discovery.description.strip()


def discovery_embeddings_refresh(*, discovery_ids: list[int] | None = None) -> int:
    """Embed discoveries that have no embedding yet (the given ones, or all). Touches only the column."""
    queryset = Discovery.objects.filter(embedding__isnull=True)
    if discovery_ids is not None:
        queryset = queryset.filter(pk__in=discovery_ids)
    rows = list(queryset.values_list("id", "description")[:5000])
    if not rows:
        return 0
    vectors = get_embedding_provider().embed([description.strip() for _, description in rows])
    for (pk, _), vector in zip(rows, vectors, strict=True):
        Discovery.objects.filter(pk=pk, embedding__isnull=True).update(embedding=vector)
    return len(rows)


def schedule_discovery_embedding(discovery_id: int) -> None:
    """After the discovery's transaction commits, embed it (inline with EMBEDDINGS_SYNC, else a job)."""

    def run():
        if settings.EMBEDDINGS_SYNC:
            try:
                discovery_embeddings_refresh(discovery_ids=[discovery_id])
            except Exception:
                logger.exception("embedding discovery %s failed; train_blocker_model backfills it", discovery_id)
        else:
            embed_discovery.enqueue(discovery_id)

    transaction.on_commit(run, robust=True)


@task
def embed_discovery(discovery_id: int) -> int:
    """Background job: embed one discovery (for similar-discovery search and blocker prediction)."""
    return discovery_embeddings_refresh(discovery_ids=[discovery_id])


def discoveries_similar(*, workflow, query: str, discovery_type: str | None = None, limit: int = 10) -> list[dict]:
    """Past discoveries of a workflow most like `query`: hybrid (pgvector on the discovery's text and on
    its ticket's text, plus full text), best first, each with type, similarity, summary, ticket, the
    follow-up it spawned and how that ended, hours to unblock."""
    if not isinstance(query, str) or len(query.strip()) < 3:
        raise DomainError(f"query must be text of at least 3 characters; got {query!r}.")
    if discovery_type is not None and discovery_type not in Discovery.DiscoveryType.values:
        raise DomainError(
            f"discovery_type must be one of: {', '.join(Discovery.DiscoveryType.values)}; got {discovery_type!r}."
        )
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= 50:
        raise DomainError(f"limit must be a whole number from 1 to 50; got {limit!r}.")
    vector = _embed(query.strip())
    now = timezone.now()
    # SET LOCAL needs a transaction; inside the caller's no savepoint (two round trips per prediction).
    with transaction.atomic(savepoint=False), connection.cursor() as cursor:
        _hnsw_settings(cursor)
        top, similarity, keyword = _discoveries_ranked(
            cursor, workflow_id=workflow.id, vector=vector, text=query.strip(), t0=now,
            discovery_type=discovery_type, candidates=max(limit * 3, DISCOVERY_CANDIDATES), limit=limit,
        )
        details = _discovery_details(cursor, top, t0=now) if top else {}
    results = []
    for pk in top:
        row = dict(details[pk])
        row.pop("ticket_pk")
        row["similarity"] = round(similarity.get(pk, 0.0), 3)
        row["matched"] = [name for name, hit in (("semantic", pk in similarity), ("keyword", pk in keyword)) if hit]
        results.append(row)
    return results


def ticket_risk_forecast(*, actor, ticket_id: str) -> dict:
    """predict_blockers for every door (MCP, REST): the ticket the actor may see (ticket_get's errors for an
    unknown ticket or another workflow's), forecast now and recorded; `risk` None when none is shown."""
    ticket = ticket_get(ticket_id=ticket_id, actor=actor)
    return {"ticket_id": ticket.public_id, "risk": ticket_risk_predict(ticket=ticket)}


def discoveries_search(*, actor, workflow_slug: str, query: str, discovery_type: str | None = None,
                       limit: int = 10) -> dict:
    """search_similar_discoveries for every door: the actor's workflow (workflow_get's errors), then
    discoveries_similar (its errors for bad input)."""
    workflow = workflow_get(slug=workflow_slug, actor=actor)
    return {"discoveries": discoveries_similar(workflow=workflow, query=query, discovery_type=discovery_type, limit=limit)}


def _workflow_has_blocking_discoveries(workflow_id: int) -> bool:
    """Whether any warning could be found at all: one index probe that spares a claim the query's embedding
    and four statements while a workflow has recorded no blocking-kind discovery (most claims, most days)."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"""SELECT EXISTS (SELECT 1 FROM {DISCOVERY_TABLE} x JOIN {TASK_TABLE} k ON k.id = x.source_task_id
                                WHERE k.workflow_id = %s AND x.discovery_type = ANY(%s))""",
            [workflow_id, [str(kind) for kind in BLOCKING_TYPES]],
        )
        return cursor.fetchone()[0]


def task_claim_warnings(*, task: Task) -> list[dict]:
    """What blocked similar work before: blocking-kind discoveries most like this task's text (and its
    ticket's), for claim_next_task. Empty for a shadow-holdout ticket (no door shows its prediction)."""
    if is_shadow(task.ticket_id) or not _workflow_has_blocking_discoveries(task.workflow_id):
        return []
    ticket = task.ticket
    query = f"{ticket.title}\n{task.description}"
    try:
        similar = discoveries_similar(workflow=task.workflow, query=query, limit=8)
    except DomainError:
        return []
    warnings = [
        {k: row[k] for k in ("discovery_type", "summary", "ticket_id", "similarity") if k in row}
        for row in similar
        if row["discovery_type"] in BLOCKING_TYPES and row["ticket_id"] != ticket.public_id and row["similarity"] >= 0.45
    ]
    return warnings[:3]


# ------------------------------------------------------------------------------------------ training


@dataclass
class Example:
    ticket_id: int
    workflow_id: int
    t0: datetime
    label: bool
    features: Features
    resolved_at: datetime | None = None


def training_examples(*, as_of: datetime | None = None, workflow_ids: list[int] | None = None) -> list[Example]:
    """Every ticket finished before `as_of` (default now), with its features as of its creation and its
    label (blocked before done). Oldest first."""
    as_of = as_of or timezone.now()
    queryset = Ticket.objects.filter(resolved_at__lt=as_of).order_by("created_at", "id")
    if workflow_ids is not None:
        queryset = queryset.filter(workflow_id__in=workflow_ids)
    tickets = list(queryset)
    labels = ticket_labels(ticket_ids=[t.pk for t in tickets])
    vectors = {pk: emb for pk, emb in Ticket.objects.filter(pk__in=[t.pk for t in tickets]).values_list("id", "embedding")}
    examples = []
    for ticket in tickets:
        t0 = ticket.created_at
        facts = TicketFacts.of_ticket(ticket, t0=t0, declared_blocker_ids=_declared_blocker_ids(ticket, t0=t0))
        vector = vectors.get(ticket.pk)
        features = ticket_features(facts, None if vector is None else [float(x) for x in vector])
        examples.append(Example(ticket.pk, ticket.workflow_id, t0, labels[ticket.pk], features, ticket.resolved_at))
    return examples


def ticket_labels(*, ticket_ids: list[int]) -> dict[int, bool]:
    """Outcome of finished tickets: became blocked after filing and before done."""
    if not ticket_ids:
        return {}
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT t.id, {_blocked_label_sql('t', 't.resolved_at')} FROM {TICKET_TABLE} t WHERE t.id = ANY(%(ids)s)",
            {"ids": ticket_ids},
        )
        return {pk: bool(label) for pk, label in cursor.fetchall()}


def fit_lr(examples: list[Example]) -> dict:
    """Logistic regression on `examples` (inputs LR_INPUTS, standardised), Platt-recalibrated on out-of-fold
    margins (5 folds: each example's margin comes from a model that did not see it), then refitted on all
    with that recalibration. JSON-ready parameters. (Calibrating on the newest fifth only, as v1 did, left
    the Platt fit to ~15 positives: served ECE 0.067 against 0.048 this way on bench/blockers_eval.py.)"""
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    def fit(rows):
        x = np.array([lr_inputs(e.features.values) for e in rows])
        y = np.array([e.label for e in rows], dtype=int)
        mean = x.mean(axis=0)
        scale = x.std(axis=0)
        scale[scale < 1e-9] = 1.0
        model = LogisticRegression(C=LR_C, max_iter=2000)
        model.fit((x - mean) / scale, y)
        return {"mean": mean.tolist(), "scale": scale.tolist(), "coef": model.coef_[0].tolist(),
                "intercept": float(model.intercept_[0]), "platt_a": 1.0, "platt_b": 0.0, "feature_names": list(LR_INPUTS)}

    folds = 5
    margins, labels = [], []
    for fold in range(folds):
        held = [e for index, e in enumerate(examples) if index % folds == fold]
        rest = [e for index, e in enumerate(examples) if index % folds != fold]
        if not held or len({e.label for e in rest}) < 2:
            continue
        early = fit(rest)
        margins.extend([_logit(lr_probability(early, e.features.values))] for e in held)
        labels.extend(e.label for e in held)
    parameters = fit(examples)
    if len(set(labels)) == 2:
        calibrator = LogisticRegression(C=10.0).fit(np.array(margins), np.array(labels, dtype=int))
        parameters.update(platt_a=float(calibrator.coef_[0][0]), platt_b=float(calibrator.intercept_[0]))
    return parameters


def fit_knn_calibration(examples: list[Example]) -> dict:
    """Platt scaling of the knn rate (p = sigmoid(a · logit(knn_rate) + b)) fitted on `examples`: the
    neighbour rate is compressed toward the middle (50 neighbours, most of them only partly alike), so the
    raw rate over-forecasts low risks and under-forecasts high ones. Identity ({}) without both labels."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    if len({e.label for e in examples}) < 2:
        return {}
    x = np.array([[_logit(e.features.values["knn_rate"])] for e in examples])
    y = np.array([e.label for e in examples], dtype=int)
    calibrator = LogisticRegression(C=10.0).fit(x, y)
    return {"platt_a": float(calibrator.coef_[0][0]), "platt_b": float(calibrator.intercept_[0])}


def knn_probability(calibration: dict | None, values: dict[str, float]) -> float:
    """The knn tier's p_blocked: the neighbour rate, through its Platt calibration when trained."""
    if not calibration:
        return values["knn_rate"]
    return _sigmoid(calibration["platt_a"] * _logit(values["knn_rate"]) + calibration["platt_b"])


def _auc(scores: list[float], labels: list[bool]) -> float | None:
    positives = [s for s, y in zip(scores, labels, strict=True) if y]
    negatives = [s for s, y in zip(scores, labels, strict=True) if not y]
    if not positives or not negatives:
        return None
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score([int(y) for y in labels], scores))


def _known_before(examples: list[Example], moment: datetime) -> list[Example]:
    """The examples whose label was known at `moment` (their ticket finished before it), oldest first."""
    return [e for e in examples if e.resolved_at is None or e.resolved_at < moment]


def _tier_metrics(scores: list[float], labels: list[bool]) -> dict:
    brier = sum((s - y) ** 2 for s, y in zip(scores, labels, strict=True)) / len(labels)
    return {"roc_auc": _auc(scores, labels), "brier": round(brier, 5),
            "ece": round(expected_calibration_error(scores, labels), 5), "predicted": len(labels)}


def _beats(candidate: dict, incumbent: dict) -> bool:
    """A challenger serves only when it wins on both ranking (ROC-AUC) and probability quality (Brier)."""
    return (candidate.get("roc_auc") or 0) > (incumbent.get("roc_auc") or 0) and candidate.get("brier", 1) <= incumbent.get("brier", 1)


def walk_forward(examples: list[Example], *, folds: int = 3, workflow_id: int | None = None) -> dict:
    """Train on the past, predict the next window, repeat: the knn tier against the shared lr (fitted on
    every workflow's past) and, with `workflow_id`, against that workflow's own lr (fitted on its past
    only), on that workflow's windows. "The past" of a window = tickets finished before it opens."""
    targets = [e for e in examples if workflow_id is None or e.workflow_id == workflow_id]
    start = int(len(targets) * 0.4)
    if len(targets) - start < folds * 10:
        return {}
    bounds = [start + (len(targets) - start) * i // folds for i in range(folds + 1)]
    scores: dict[str, list[float]] = {"knn": [], "lr": [], "workflow_lr": []}
    labels: list[bool] = []
    for lo, hi in zip(bounds, bounds[1:], strict=False):
        window = targets[lo:hi]
        past = _known_before(examples[: examples.index(window[0])], window[0].t0)
        own_past = [e for e in past if e.workflow_id == workflow_id]
        if len({e.label for e in past}) < 2 or (workflow_id is not None and len({e.label for e in own_past}) < 2):
            continue
        shared = fit_lr(past)
        calibration = fit_knn_calibration(past)
        own = fit_lr(own_past) if workflow_id is not None else None
        for e in window:
            scores["knn"].append(knn_probability(calibration, e.features.values))
            scores["lr"].append(lr_probability(shared, e.features.values))
            if own is not None:
                scores["workflow_lr"].append(lr_probability(own, e.features.values))
            labels.append(e.label)
    if not labels:
        return {}
    result = {"windows": folds, "predicted": len(labels), "positives": sum(labels),
              "knn": _tier_metrics(scores["knn"], labels), "lr": _tier_metrics(scores["lr"], labels)}
    if workflow_id is not None:
        result["workflow_lr"] = _tier_metrics(scores["workflow_lr"], labels)
    return result


def fit_models(examples: list[Example]) -> dict:
    """Everything a training run decides, as plain data (blocker_model_train stores it; the bench scores
    with it): the shared tier and its lr parameters, and the workflows that get their own lr.

    Shared: `knn` (or `prior` with no positive at all); `lr` once there are MIN_POSITIVES_FOR_LR positives
    in MIN_EXAMPLES_FOR_LR examples and the walk-forward evaluation shows it beating knn. Each workflow's
    offset rides in knn_rate, which is shrunk toward the workflow's own (per ticket type) rate; giving
    the lr workflow_rate as a separate input was measured and lost (ROC-AUC 0.799 vs 0.815 walk-forward).
    Per workflow: its own lr, fitted on its tickets only (so it can learn what matters there and not
    elsewhere, e.g. declared dependencies in one workflow), once it has MIN_POSITIVES_FOR_WORKFLOW_MODEL
    positives and beats both knn and the shared lr on its own walk-forward windows."""
    positives = sum(e.label for e in examples)
    trained: dict = {"tier": BlockerModel.Tier.KNN if positives else BlockerModel.Tier.PRIOR, "parameters": {},
                     "metrics": {"examples": len(examples), "positives": positives}, "workflows": {}}
    if positives >= MIN_POSITIVES_FOR_KNN_CALIBRATION:
        trained["parameters"] = {"knn_calibration": fit_knn_calibration(examples)}
    if positives < MIN_POSITIVES_FOR_LR or len(examples) < MIN_EXAMPLES_FOR_LR:
        return trained
    evaluation = walk_forward(examples)
    trained["metrics"]["walk_forward"] = evaluation
    if evaluation and _beats(evaluation["lr"], evaluation["knn"]):
        trained["tier"] = BlockerModel.Tier.LR
        trained["parameters"] = fit_lr(examples)
    for workflow_id in sorted({e.workflow_id for e in examples}):
        own = [e for e in examples if e.workflow_id == workflow_id]
        own_positives = sum(e.label for e in own)
        if own_positives < MIN_POSITIVES_FOR_WORKFLOW_MODEL or len(own) < MIN_EXAMPLES_FOR_WORKFLOW_MODEL:
            continue
        evaluation = walk_forward(examples, workflow_id=workflow_id)
        if evaluation and _beats(evaluation["workflow_lr"], evaluation["lr"]) and _beats(evaluation["workflow_lr"], evaluation["knn"]):
            trained["workflows"][workflow_id] = {
                "parameters": fit_lr(own), "examples": len(own), "positives": own_positives,
                "metrics": {"examples": len(own), "positives": own_positives,
                            "walk_forward": {**evaluation, "lr": evaluation["workflow_lr"]}},
            }
    return trained


def score_trained(trained: dict | None, features: Features, workflow_id: int) -> tuple[str, float | None]:
    """(tier, p_blocked) under a training run's decisions (fit_models' shape): the workflow's own lr when
    it has one, else the shared tier; `prior` (no probability) for a workflow without labelled neighbours."""
    if features.labelled_neighbours == 0:  # cold start (a new workflow): no model speaks for it yet
        return BlockerModel.Tier.PRIOR, None
    if trained is not None:
        own = trained["workflows"].get(workflow_id)
        if own is not None:
            return BlockerModel.Tier.LR, lr_probability(own["parameters"], features.values)
        if trained["tier"] == BlockerModel.Tier.LR:
            return BlockerModel.Tier.LR, lr_probability(trained["parameters"], features.values)
        return BlockerModel.Tier.KNN, knn_probability(trained["parameters"].get("knn_calibration"), features.values)
    return BlockerModel.Tier.KNN, features.values["knn_rate"]


def expected_calibration_error(scores: list[float], labels: list[bool], *, bins: int = 10) -> float:
    """Mean |predicted − observed| over equal-width probability bins, weighted by the bin's share."""
    if not scores:
        return 0.0
    error = 0.0
    for index in range(bins):
        lo, hi = index / bins, (index + 1) / bins
        members = [i for i, s in enumerate(scores) if lo <= s < hi or (index == bins - 1 and s == hi)]
        if members:
            predicted = sum(scores[i] for i in members) / len(members)
            observed = sum(labels[i] for i in members) / len(members)
            error += len(members) / len(scores) * abs(predicted - observed)
    return error


def _fingerprint(as_of: datetime | None) -> str:
    """What a training run on the tickets finished before `as_of` would learn from: their ids, labels and
    filing times (and the feature version), hashed — known before any feature is computed, so an hourly
    retrain on unchanged data costs two queries, not the features of every finished ticket."""
    rows = list(
        Ticket.objects.filter(resolved_at__lt=as_of or timezone.now()).order_by("created_at", "id").values_list("id", "created_at")
    )
    labels = ticket_labels(ticket_ids=[pk for pk, _ in rows])
    payload = json.dumps([FEATURE_VERSION, [(pk, labels[pk], created_at.isoformat()) for pk, created_at in rows]])
    return hashlib.sha256(payload.encode()).hexdigest()


@transaction.atomic
def blocker_model_train(*, as_of: datetime | None = None) -> tuple[BlockerModel, bool]:
    """Train the shared blocker model on every ticket finished before `as_of` and store it (tier chosen
    by walk-forward evaluation: lr only when it beats knn on both ROC-AUC and Brier). Idempotent: the
    same finished tickets and labels give the same fingerprint, and the existing row is returned
    (created False). Also backfills missing discovery embeddings and grades the ledger first."""
    with connection.cursor() as cursor:  # one training at a time (the hourly job, the admin's button)
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [TRAINING_LOCK])
    discovery_embeddings_refresh()
    blocker_outcomes_refresh()
    blocker_predictions_grade()
    as_of = as_of or timezone.now()
    fingerprint = _fingerprint(as_of)
    existing = BlockerModel.objects.filter(training_fingerprint=fingerprint).first()
    if existing is not None:
        return existing, False
    examples = training_examples(as_of=as_of)
    trained = fit_models(examples)
    model = BlockerModel.objects.create(
        tier=trained["tier"],
        feature_version=FEATURE_VERSION,
        parameters=trained["parameters"],
        metrics=trained["metrics"],
        training_fingerprint=fingerprint,
        examples=len(examples),
        positives=trained["metrics"]["positives"],
        trained_through=max((e.t0 for e in examples), default=None),
    )
    workflow_models = {}
    for workflow_id, own in trained["workflows"].items():
        row = BlockerModel.objects.create(
            workflow_id=workflow_id, tier=BlockerModel.Tier.LR, feature_version=FEATURE_VERSION,
            parameters=own["parameters"], metrics=own["metrics"],
            training_fingerprint=hashlib.sha256(f"{fingerprint}:workflow:{workflow_id}".encode()).hexdigest(),
            examples=own["examples"], positives=own["positives"], trained_through=model.trained_through,
        )
        workflow_models[str(workflow_id)] = row.pk
    if workflow_models:
        model.metrics = {**model.metrics, "workflow_models": workflow_models}
        model.save(update_fields=["metrics"])
    return model, True


def blocker_model_retrain_if_due(*, min_new_finished: int | None = None, max_age: timedelta = timedelta(days=1)) -> BlockerModel | None:
    """The periodic job: retrain when N tickets finished since the last model, or it is a day old."""
    min_new_finished = min_new_finished or int(getattr(settings, "BLOCKER_RETRAIN_AFTER_FINISHED", 50))
    latest = active_model()
    if latest is not None:
        finished_since = Ticket.objects.filter(resolved_at__gt=latest.created_at).count()
        if finished_since < min_new_finished and timezone.now() - latest.created_at < max_age:
            blocker_predictions_grade()
            return None
    model, _ = blocker_model_train()
    return model
