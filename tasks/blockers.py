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
* `knn`    — the similarity-weighted blocker rate of the nearest finished tickets, shrunk toward the
  workflow prior (pseudo-count KNN_PSEUDO_COUNT). Needs no training.
* `lr`     — scikit-learn logistic regression on the features, Platt-recalibrated on the most recent
  slice; used only when the training run's walk-forward evaluation shows it beating `knn`.
Coefficients live as JSON in a `BlockerModel` row (no pickle); inference is a dot product in-process.

The ledger (`BlockerPrediction`) keeps every prediction made, with its model version and t0; a
deterministic share of tickets (settings.BLOCKER_SHADOW_HOLDOUT_PERCENT) is predicted but never shown by
any door, so the ledger's graded rows measure the model without the prediction changing the outcome.

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

from omoi_site.domain import DomainError, PermissionDenied
from tasks.models import BlockerModel, BlockerPrediction, Discovery, Task
from tickets.embeddings import EmbeddingError, embed_query, get_embedding_provider, ticket_embedding_text
from tickets.models import Phase, Ticket, TicketDependency
from tickets.selectors import workflow_ids_for

logger = logging.getLogger(__name__)

FEATURE_VERSION = 1
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
NEIGHBOURS = 20
DISCOVERY_CANDIDATES = 30
KNN_PSEUDO_COUNT = 2.0
PRIOR_PSEUDO_COUNT = 10.0
DEFAULT_BASE_RATE = 0.15  # before any ticket anywhere has finished: the middle of the 5-25 % we see
MIN_POSITIVES_FOR_LR = 25
MIN_EXAMPLES_FOR_LR = 150
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
    with transaction.atomic(), connection.cursor() as cursor:  # SET LOCAL needs a transaction
        cursor.execute("SET LOCAL hnsw.ef_search = 200")
        cursor.execute("SET LOCAL hnsw.iterative_scan = relaxed_order")
        # Priors: blocker rate of tickets finished before t0 — everywhere, in the workflow, and in the
        # workflow for this ticket type (counts only cross workflows; no content does).
        cursor.execute(
            f"""SELECT count(*), count(*) FILTER (WHERE blocked),
                       count(*) FILTER (WHERE workflow_id = %(w)s), count(*) FILTER (WHERE workflow_id = %(w)s AND blocked),
                       count(*) FILTER (WHERE workflow_id = %(w)s AND ticket_type = %(tt)s),
                       count(*) FILTER (WHERE workflow_id = %(w)s AND ticket_type = %(tt)s AND blocked)
                  FROM (SELECT t.workflow_id, t.ticket_type, {_blocked_label_sql('t', 't.resolved_at')} AS blocked
                          FROM {TICKET_TABLE} t WHERE t.resolved_at < %(t0)s AND t.id <> %(self)s) finished""",
            {"w": facts.workflow_id, "tt": facts.ticket_type, "t0": t0, "self": self_id},
        )
        total, total_blocked, in_workflow, workflow_blocked, of_type, type_blocked = cursor.fetchone()
        global_rate = (total_blocked + DEFAULT_BASE_RATE * PRIOR_PSEUDO_COUNT) / (total + PRIOR_PSEUDO_COUNT)
        workflow_rate = (workflow_blocked + global_rate * PRIOR_PSEUDO_COUNT) / (in_workflow + PRIOR_PSEUDO_COUNT)
        type_rate = (type_blocked + workflow_rate * PRIOR_PSEUDO_COUNT) / (of_type + PRIOR_PSEUDO_COUNT)

        neighbours: list[tuple[int, float, bool]] = []
        discovery_rows: list[tuple] = []
        keyword_ids: list[int] = []
        if vector is not None:
            literal = _vector_literal(vector)
            cursor.execute(
                f"""SELECT t.id, 1 - (t.embedding <=> %(v)s::vector), {_blocked_label_sql('t', 't.resolved_at')}
                      FROM {TICKET_TABLE} t
                     WHERE t.workflow_id = %(w)s AND t.embedding IS NOT NULL AND t.resolved_at < %(t0)s
                       AND t.created_at < %(t0)s AND t.id <> %(self)s
                     ORDER BY t.embedding <=> %(v)s::vector LIMIT %(k)s""",
                {"v": literal, "w": facts.workflow_id, "t0": t0, "self": self_id, "k": NEIGHBOURS},
            )
            neighbours = [(pk, float(sim), bool(blocked)) for pk, sim, blocked in cursor.fetchall()]
            # Past discoveries near this ticket two ways: by their own text, and by the text of the ticket
            # they were found on (the context a new ticket resembles).
            cursor.execute(
                f"""(SELECT x.id, 1 - (x.embedding <=> %(v)s::vector) AS sim, 'own' AS route
                       FROM {DISCOVERY_TABLE} x JOIN {TASK_TABLE} k ON k.id = x.source_task_id
                      WHERE k.workflow_id = %(w)s AND x.embedding IS NOT NULL AND x.created_at < %(t0)s
                        AND k.ticket_id <> %(self)s
                      ORDER BY x.embedding <=> %(v)s::vector LIMIT %(k)s)
                    UNION ALL
                    (SELECT x.id, 1 - (t.embedding <=> %(v)s::vector) AS sim, 'context' AS route
                       FROM {DISCOVERY_TABLE} x JOIN {TASK_TABLE} k ON k.id = x.source_task_id
                       JOIN {TICKET_TABLE} t ON t.id = k.ticket_id
                      WHERE k.workflow_id = %(w)s AND t.embedding IS NOT NULL AND x.created_at < %(t0)s
                        AND t.id <> %(self)s
                      ORDER BY t.embedding <=> %(v)s::vector LIMIT %(k)s)""",
                {"v": literal, "w": facts.workflow_id, "t0": t0, "self": self_id, "k": DISCOVERY_CANDIDATES},
            )
            discovery_rows = cursor.fetchall()
        cursor.execute(
            f"""SELECT x.id FROM {DISCOVERY_TABLE} x JOIN {TASK_TABLE} k ON k.id = x.source_task_id,
                       (SELECT coalesce(string_agg(quote_literal(lexeme), ' | ')::tsquery, ''::tsquery) AS q
                          FROM unnest(tsvector_to_array(to_tsvector('english', %(q)s))) AS lexeme) tsq
                 WHERE k.workflow_id = %(w)s AND x.created_at < %(t0)s AND k.ticket_id <> %(self)s
                   AND x.search_vector @@ tsq.q
                 ORDER BY ts_rank_cd(x.search_vector, tsq.q) DESC, x.id DESC LIMIT %(k)s""",
            {"q": facts.text[:2000], "w": facts.workflow_id, "t0": t0, "self": self_id, "k": DISCOVERY_CANDIDATES},
        )
        keyword_ids = [row[0] for row in cursor.fetchall()]

        similarity: dict[int, float] = {}
        fused: dict[int, float] = {}
        for route in ("own", "context"):
            ranked = sorted(((pk, sim) for pk, sim, r in discovery_rows if r == route), key=lambda i: -i[1])
            for rank, (pk, sim) in enumerate(ranked, start=1):
                similarity[pk] = max(similarity.get(pk, -1.0), float(sim))
                fused[pk] = fused.get(pk, 0.0) + 0.3 / (RRF_K + rank)
        for rank, pk in enumerate(keyword_ids, start=1):
            fused[pk] = fused.get(pk, 0.0) + 0.4 / (RRF_K + rank)
        top_ids = sorted(fused, key=lambda pk: (-fused[pk], -pk))[:DISCOVERY_CANDIDATES]
        details = _discovery_details(cursor, top_ids, t0=t0) if top_ids else {}

    # Neighbour features.
    weights = [(max(sim, 0.0) ** 2, blocked) for _, sim, blocked in neighbours]
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
        "priority_rank": float(Ticket.PRIORITY_RANK.get(Ticket.Priority(facts.priority), 2)),
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
            "ticket_id": f"{Ticket.PUBLIC_PREFIX}-{ticket_pk}",
            "ticket_pk": ticket_pk,
        }
        if spawned_id:
            row["follow_up_task_id"] = f"{Task.PUBLIC_PREFIX}-{spawned_id}"
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


def lr_inputs(values: dict[str, float]) -> list[float]:
    """The LR's input row: rates enter as logits (the knn rate and the priors are probabilities)."""
    row = []
    for name in FEATURE_NAMES:
        value = values[name]
        if name in ("knn_rate", "workflow_rate", "type_rate"):
            value = _logit(value)
        row.append(value)
    return row


def lr_probability(parameters: dict, values: dict[str, float]) -> float:
    """Inference of a stored LR: standardise, dot product, Platt recalibration. Pure Python (no sklearn)."""
    row = lr_inputs(values)
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
    """(tier, p_blocked) for these features under the active model (None: no trained model yet)."""
    if features.labelled_neighbours == 0:  # cold start (a new workflow): no model speaks for it yet
        return BlockerModel.Tier.PRIOR, None
    if model is not None and model.tier == BlockerModel.Tier.LR and model.feature_version == FEATURE_VERSION:
        return BlockerModel.Tier.LR, lr_probability(model.parameters, features.values)
    return BlockerModel.Tier.KNN, features.values["knn_rate"]


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
        {"ticket_id": f"{Ticket.PUBLIC_PREFIX}-{pk}", "title": title, "p": round(max(float(sim), 0.0) * scale, 3)}
        for pk, title, sim in rows
        if float(sim) >= 0.5
    ]


def predict(facts: TicketFacts, *, vector: list[float] | None = None, model: BlockerModel | None = None,
            use_active_model: bool = True) -> dict:
    """The `risk` object for a ticket as of facts.t0 (not stored; see blocker_prediction_record)."""
    if vector is None:
        vector = _embed(facts.text)
    if model is None and use_active_model:
        model = active_model()
    features = ticket_features(facts, vector)
    tier, p = score(features, model)
    return {
        "p_blocked": None if p is None else round(p, 3),
        "band": band_of(p, features),
        "base_rate": round(features.base_rate, 3),
        "model_tier": str(tier),
        "model_version": model.version if (model is not None and tier == BlockerModel.Tier.LR) else f"{tier}-v{FEATURE_VERSION}",
        "likely_blocker_types": _likely_types(features.type_votes),
        "similar_discoveries": features.similar_discoveries,
        "suggested_blocked_by": _suggested_blocked_by(facts, features, p),
        "as_of": t0_text(facts.t0),
    }


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
    """Whether this ticket belongs to the shadow holdout: predicted and recorded, never shown. Decided by
    a hash of its id (stable across doors and processes), a settings.BLOCKER_SHADOW_HOLDOUT_PERCENT share."""
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
    model = active_model()
    facts = TicketFacts.of_ticket(ticket, t0=t0, declared_blocker_ids=_declared_blocker_ids(ticket, t0=t0))
    risk = predict(facts, vector=vector, model=model, use_active_model=False)
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
            "model": model if risk["model_tier"] == BlockerModel.Tier.LR else None,
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
    type_filter = "AND x.discovery_type = %(dt)s" if discovery_type else ""
    params = {"w": workflow.id, "q": query.strip()[:2000], "k": max(limit * 3, 30), "dt": discovery_type, "t0": now}
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL hnsw.ef_search = 200")
        cursor.execute("SET LOCAL hnsw.iterative_scan = relaxed_order")
        semantic: list[tuple] = []
        if vector is not None:
            params["v"] = _vector_literal(vector)
            cursor.execute(
                f"""(SELECT x.id, 1 - (x.embedding <=> %(v)s::vector) AS sim, 'own' AS route
                       FROM {DISCOVERY_TABLE} x JOIN {TASK_TABLE} k ON k.id = x.source_task_id
                      WHERE k.workflow_id = %(w)s AND x.embedding IS NOT NULL {type_filter}
                      ORDER BY x.embedding <=> %(v)s::vector LIMIT %(k)s)
                    UNION ALL
                    (SELECT x.id, 1 - (t.embedding <=> %(v)s::vector) AS sim, 'context' AS route
                       FROM {DISCOVERY_TABLE} x JOIN {TASK_TABLE} k ON k.id = x.source_task_id
                       JOIN {TICKET_TABLE} t ON t.id = k.ticket_id
                      WHERE k.workflow_id = %(w)s AND t.embedding IS NOT NULL {type_filter}
                      ORDER BY t.embedding <=> %(v)s::vector LIMIT %(k)s)""",
                params,
            )
            semantic = cursor.fetchall()
        cursor.execute(
            f"""SELECT x.id FROM {DISCOVERY_TABLE} x JOIN {TASK_TABLE} k ON k.id = x.source_task_id,
                       (SELECT coalesce(string_agg(quote_literal(lexeme), ' | ')::tsquery, ''::tsquery) AS q
                          FROM unnest(tsvector_to_array(to_tsvector('english', %(q)s))) AS lexeme) tsq
                 WHERE k.workflow_id = %(w)s AND x.search_vector @@ tsq.q {type_filter}
                 ORDER BY ts_rank_cd(x.search_vector, tsq.q) DESC, x.id DESC LIMIT %(k)s""",
            params,
        )
        keyword = [row[0] for row in cursor.fetchall()]
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
        details = _discovery_details(cursor, top, t0=now) if top else {}
    results = []
    for pk in top:
        row = dict(details[pk])
        row.pop("ticket_pk")
        row["similarity"] = round(similarity.get(pk, 0.0), 3)
        row["matched"] = [name for name, hit in (("semantic", pk in similarity), ("keyword", pk in keyword)) if hit]
        results.append(row)
    return results


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
        examples.append(Example(ticket.pk, ticket.workflow_id, t0, labels[ticket.pk], features))
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
    """Logistic regression on `examples` (oldest first), Platt-recalibrated on the newest fifth (fitted on
    the older four fifths, then refitted on all with the same recalibration). JSON-ready parameters."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    def fit(rows):
        x = np.array([lr_inputs(e.features.values) for e in rows])
        y = np.array([e.label for e in rows], dtype=int)
        mean = x.mean(axis=0)
        scale = x.std(axis=0)
        scale[scale < 1e-9] = 1.0
        model = LogisticRegression(C=0.5, max_iter=2000)
        model.fit((x - mean) / scale, y)
        return {"mean": mean.tolist(), "scale": scale.tolist(), "coef": model.coef_[0].tolist(),
                "intercept": float(model.intercept_[0]), "platt_a": 1.0, "platt_b": 0.0}

    cut = int(len(examples) * 0.8)
    older, newer = examples[:cut], examples[cut:]
    platt_a, platt_b = 1.0, 0.0
    if len({e.label for e in older}) == 2 and len({e.label for e in newer}) == 2:
        early = fit(older)
        margins = [[_logit(lr_probability(early, e.features.values))] for e in newer]
        calibrator = LogisticRegression(C=10.0).fit(np.array(margins), np.array([e.label for e in newer], dtype=int))
        platt_a, platt_b = float(calibrator.coef_[0][0]), float(calibrator.intercept_[0])
    parameters = fit(examples)
    parameters.update(platt_a=platt_a, platt_b=platt_b, feature_names=list(FEATURE_NAMES))
    return parameters


def _auc(scores: list[float], labels: list[bool]) -> float | None:
    positives = [s for s, y in zip(scores, labels, strict=True) if y]
    negatives = [s for s, y in zip(scores, labels, strict=True) if not y]
    if not positives or not negatives:
        return None
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score([int(y) for y in labels], scores))


def walk_forward(examples: list[Example], *, folds: int = 3) -> dict:
    """Train on the past, predict the next window, repeat: knn vs lr, ROC-AUC and Brier per tier."""
    start = int(len(examples) * 0.4)
    if len(examples) - start < folds * 10:
        return {}
    bounds = [start + (len(examples) - start) * i // folds for i in range(folds + 1)]
    knn_scores, lr_scores, labels = [], [], []
    for lo, hi in zip(bounds, bounds[1:], strict=False):
        past = examples[:lo]
        window = examples[lo:hi]
        if len({e.label for e in past}) < 2:
            continue
        parameters = fit_lr(past)
        for e in window:
            knn_scores.append(e.features.values["knn_rate"])
            lr_scores.append(lr_probability(parameters, e.features.values))
            labels.append(e.label)
    if not labels:
        return {}

    def brier(scores):
        return sum((s - y) ** 2 for s, y in zip(scores, labels, strict=True)) / len(labels)

    def tier_metrics(scores):
        return {"roc_auc": _auc(scores, labels), "brier": round(brier(scores), 5),
                "ece": round(expected_calibration_error(scores, labels), 5)}

    return {
        "windows": folds, "predicted": len(labels), "positives": sum(labels),
        "knn": tier_metrics(knn_scores),
        "lr": tier_metrics(lr_scores),
    }


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


def _fingerprint(examples: list[Example]) -> str:
    payload = json.dumps([FEATURE_VERSION, [(e.ticket_id, e.label, e.t0.isoformat()) for e in examples]])
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
    blocker_predictions_grade()
    examples = training_examples(as_of=as_of)
    fingerprint = _fingerprint(examples)
    existing = BlockerModel.objects.filter(training_fingerprint=fingerprint).first()
    if existing is not None:
        return existing, False
    positives = sum(e.label for e in examples)
    metrics: dict = {"examples": len(examples), "positives": positives}
    parameters: dict = {}
    tier = BlockerModel.Tier.KNN if positives else BlockerModel.Tier.PRIOR
    if positives >= MIN_POSITIVES_FOR_LR and len(examples) >= MIN_EXAMPLES_FOR_LR:
        evaluation = walk_forward(examples)
        metrics["walk_forward"] = evaluation
        knn, lr = evaluation.get("knn", {}), evaluation.get("lr", {})
        if (lr.get("roc_auc") or 0) > (knn.get("roc_auc") or 0) and lr.get("brier", 1) <= knn.get("brier", 1):
            tier = BlockerModel.Tier.LR
            parameters = fit_lr(examples)
    model = BlockerModel.objects.create(
        tier=tier,
        feature_version=FEATURE_VERSION,
        parameters=parameters,
        metrics=metrics,
        training_fingerprint=fingerprint,
        examples=len(examples),
        positives=positives,
        trained_through=max((e.t0 for e in examples), default=None),
    )
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
