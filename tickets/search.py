"""Ticket search: the ONE selector behind `search_tickets` (MCP), the admin search box and the REST API,
plus the duplicate check `create_ticket` runs.

* keyword  — PostgreSQL full text over the generated `search_vector` (title weight A, description B;
  GIN index), ranked by `ts_rank_cd`; comment text counts too (weight C, computed in the query).
  A plain query first needs all its words (AND); when that finds fewer than `limit` tickets, tickets
  matching only some words follow, best covered first — agents phrase queries as sentences, and a
  strict AND of a sentence rarely matches anything.
* semantic — cosine distance between the query's embedding and ticket (and comment) embeddings; the
  ticket side walks the HNSW index (`ORDER BY embedding <=> q LIMIT k`).
* hybrid   — reciprocal rank fusion of both lists: score = Σ weight / (60 + rank), weights 0.6 semantic /
  0.4 keyword. If the embedding provider is down, hybrid degrades to keyword (logged), since a search
  that finds something beats an error.

Everything is scoped to the caller's `workflow_ids` (the door decides which workflows the caller may see).
Raw SQL on purpose: the two candidate queries need `SET LOCAL hnsw.*`, `websearch_to_tsquery` with a
fallback, and a comment sub-query that the ORM would express less clearly.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from django.conf import settings
from django.db import connection, transaction

from omoi_site.domain import DomainError, ticket_public_id
from tickets.embeddings import EmbeddingError, embed_query, ticket_embedding_text, warm_query_embedding
from tickets.models import Ticket, TicketComment

logger = logging.getLogger(__name__)

SEARCH_TYPES = ("hybrid", "keyword", "semantic")
MIN_QUERY_LENGTH = 3
MAX_QUERY_LENGTH = 2000
MAX_LIMIT = 50
RRF_K = 60
SEMANTIC_WEIGHT = 0.6
KEYWORD_WEIGHT = 0.4
SNIPPET_LENGTH = 160
FILTER_KEYS = (
    "status",
    "priority",
    "ticket_type",
    "tags",
    "tags_all",
    "assigned_agent_id",
    "include_completed",
    "is_blocked",
)
# websearch_to_tsquery syntax: quoted phrases, OR, -exclusion. Without it we use plainto_tsquery, which
# tokenizes exactly like the documents did (websearch splits 'Foo.java:42' into 'foo.java' & '42', while
# the document holds the single token 'foo.java:42', so a pasted stack-trace line would never match).
_WEBSEARCH_SYNTAX = re.compile(r'"|(^|\s)-\S|\sor\s', re.IGNORECASE)

# OR of the query's lexemes, built from the lexeme array (not by editing a tsquery's text, which could
# break on lexemes that contain operator characters).
_LOOSE_TSQUERY = (
    "(SELECT coalesce(string_agg(quote_literal(lexeme), ' | ')::tsquery, ''::tsquery)"
    " FROM unnest(tsvector_to_array(to_tsvector('english', %(q)s))) AS lexeme)"
)

TICKET_TABLE = Ticket._meta.db_table
COMMENT_TABLE = TicketComment._meta.db_table


# ------------------------------------------------------------------------------------------ validation


def _choice_list(name: str, value: Any, choices: list[str]) -> list[str]:
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, list | tuple) or not values or not all(isinstance(v, str) for v in values):
        raise DomainError(f"filters.{name} must be one of {choices} or a non-empty list of them; got {value!r}.")
    unknown = [v for v in values if v not in choices]
    if unknown:
        raise DomainError(f"filters.{name} has unknown value(s) {unknown}; allowed: {choices}.")
    return list(values)


def _tag_list(name: str, value: Any) -> list[str]:
    values = [value] if isinstance(value, str) else value
    if (
        not isinstance(values, list | tuple)
        or not values
        or not all(isinstance(v, str) and v.strip() and len(v) <= 50 for v in values)
    ):
        raise DomainError(f"filters.{name} must be a non-empty list of tag strings (≤50 chars each); got {value!r}.")
    return [v.strip() for v in values]


def _validated_filters(filters: dict | None) -> dict[str, Any]:
    if filters is None:
        return {}
    if not isinstance(filters, dict):
        raise DomainError(
            f"filters must be an object with keys from {list(FILTER_KEYS)}; got {type(filters).__name__}."
        )
    unknown = sorted(set(filters) - set(FILTER_KEYS))
    if unknown:
        raise DomainError(f"filters has unknown key(s) {unknown}; allowed keys: {list(FILTER_KEYS)}.")
    clean: dict[str, Any] = {}
    for key, value in filters.items():
        if value is None:
            continue
        if key == "status":
            clean[key] = _choice_list(key, value, Ticket.Status.values)
        elif key == "priority":
            clean[key] = _choice_list(key, value, Ticket.Priority.values)
        elif key == "ticket_type":
            clean[key] = _choice_list(key, value, Ticket.TicketType.values)
        elif key in ("tags", "tags_all"):
            clean[key] = _tag_list(key, value)
        elif key == "assigned_agent_id":
            if not isinstance(value, str) or not value.strip():
                raise DomainError(f"filters.assigned_agent_id must be an agent id such as 'worker-1'; got {value!r}.")
            clean[key] = value.strip()
        elif key in ("include_completed", "is_blocked"):
            if not isinstance(value, bool):
                raise DomainError(f"filters.{key} must be true or false; got {value!r}.")
            clean[key] = value
    return clean


def _validated_workflow_ids(workflow_ids: Any) -> list[int]:
    if not isinstance(workflow_ids, list | tuple | set) or not all(
        isinstance(w, int) and not isinstance(w, bool) for w in workflow_ids
    ):
        raise DomainError(f"workflow_ids must be a list of workflow primary keys; got {workflow_ids!r}.")
    return list(workflow_ids)


def _validated_limit(limit: Any) -> int:
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_LIMIT:
        raise DomainError(f"limit must be an integer from 1 to {MAX_LIMIT}; got {limit!r}.")
    return limit


def _filter_sql(workflow_ids: list[int], filters: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """WHERE conditions on alias `t` (the ticket) shared by every candidate query."""
    conditions = ["t.workflow_id = ANY(%(workflow_ids)s)"]
    params: dict[str, Any] = {"workflow_ids": workflow_ids}
    for column in ("status", "priority", "ticket_type"):
        if column in filters:
            conditions.append(f"t.{column} = ANY(%(f_{column})s)")
            params[f"f_{column}"] = filters[column]
    if "tags" in filters:
        conditions.append("t.tags && %(f_tags)s::varchar[]")
        params["f_tags"] = filters["tags"]
    if "tags_all" in filters:
        conditions.append("t.tags @> %(f_tags_all)s::varchar[]")
        params["f_tags_all"] = filters["tags_all"]
    if "assigned_agent_id" in filters:
        conditions.append("t.assigned_agent_id = %(f_assigned)s")
        params["f_assigned"] = filters["assigned_agent_id"]
    if filters.get("include_completed") is False:
        conditions.append("t.status <> %(f_done)s")
        params["f_done"] = Ticket.Status.DONE.value
    if "is_blocked" in filters:
        conditions.append("t.is_blocked = %(f_blocked)s")
        params["f_blocked"] = filters["is_blocked"]
    return " AND ".join(conditions), params


# ------------------------------------------------------------------------------------------ candidates


def _vector_literal(vector: list[float]) -> str:
    return "[" + ",".join(f"{x:.7g}" for x in vector) + "]"


def _keyword_candidates(
    cursor, *, query: str, where: str, params: dict, count: int, want: int, include_comments: bool
) -> list[tuple[int, float, bool]]:
    """[(ticket_id, score, has_no_embedding)] best first. Tickets containing every query word rank above
    partial matches."""
    uses_syntax = bool(_WEBSEARCH_SYNTAX.search(query))
    strict = "websearch_to_tsquery('english', %(q)s)" if uses_syntax else "plainto_tsquery('english', %(q)s)"
    loose = _LOOSE_TSQUERY
    comment_part = f"""
        UNION ALL
        SELECT c.ticket_id AS id,
               max(ts_rank_cd(setweight(to_tsvector('english', c.text), 'C'), q.tsq)) AS rank,
               bool_or(to_tsvector('english', c.text) @@ q.strict_tsq) AS all_words,
               bool_and(t.embedding IS NULL) AS unembedded
          FROM {COMMENT_TABLE} c JOIN {TICKET_TABLE} t ON t.id = c.ticket_id, q
         WHERE to_tsvector('english', c.text) @@ q.tsq AND {where}
         GROUP BY c.ticket_id"""
    sql = f"""
        WITH q AS (SELECT {{tsq}} AS tsq, {strict} AS strict_tsq)
        SELECT id, sum(rank) AS rank, bool_or(all_words) AS all_words, bool_and(unembedded) AS unembedded FROM (
            SELECT t.id, ts_rank_cd(t.search_vector, q.tsq) AS rank, t.search_vector @@ q.strict_tsq AS all_words,
                   t.embedding IS NULL AS unembedded
              FROM {TICKET_TABLE} t, q
             WHERE t.search_vector @@ q.tsq AND {where}
            {comment_part if include_comments else ""}
        ) hits
        GROUP BY id ORDER BY all_words DESC, rank DESC, id DESC LIMIT %(k)s"""
    params = {**params, "q": query, "k": count}
    cursor.execute(sql.format(tsq=strict), params)
    rows = cursor.fetchall()
    if len(rows) < want and not uses_syntax:
        cursor.execute(sql.format(tsq=loose), params)
        seen = {row[0] for row in rows}
        rows += [row for row in cursor.fetchall() if row[0] not in seen][: count - len(rows)]
    # One score scale whose order matches the result order: every word matched → [0.5, 1), some → [0, 0.5).
    return [
        (ticket_id, (0.5 if all_words else 0.0) + 0.5 * rank / (1 + rank), unembedded)
        for ticket_id, rank, all_words, unembedded in rows
    ]


def _semantic_candidates(
    cursor, *, vector: list[float], where: str, params: dict, count: int, include_comments: bool
) -> list[tuple[int, float]]:
    """[(ticket_id, cosine distance)] nearest first, over ticket embeddings and (optionally) comments."""
    # ef_search must be ≥ the number of rows wanted, or the index returns fewer; 100 (pgvector's default
    # is 40) measured recall@10 0.94 against an exact scan at 100k tickets. iterative_scan lets the
    # index keep walking when the WHERE filters (workflow, status …) discard most of its first neighbours.
    cursor.execute(f"SET LOCAL hnsw.ef_search = {max(100, min(count * 2, 1000))}")
    cursor.execute("SET LOCAL hnsw.iterative_scan = strict_order")
    params = {**params, "v": _vector_literal(vector), "k": count}
    cursor.execute(
        f"""SELECT t.id, t.embedding <=> %(v)s::vector AS distance
              FROM {TICKET_TABLE} t
             WHERE t.embedding IS NOT NULL AND {where}
             ORDER BY t.embedding <=> %(v)s::vector LIMIT %(k)s""",
        params,
    )
    best = {row[0]: float(row[1]) for row in cursor.fetchall()}
    if include_comments:
        # No index on comment embeddings: an exact scan over the workflow's comments (fine at the
        # volumes of a project's tickets; add an HNSW index on TicketComment.embedding if that grows).
        cursor.execute(
            f"""SELECT c.ticket_id, min(c.embedding <=> %(v)s::vector) AS distance
                  FROM {COMMENT_TABLE} c JOIN {TICKET_TABLE} t ON t.id = c.ticket_id
                 WHERE c.embedding IS NOT NULL AND {where}
                 GROUP BY c.ticket_id ORDER BY distance LIMIT %(k)s""",
            params,
        )
        for ticket_id, distance in cursor.fetchall():
            best[ticket_id] = min(float(distance), best.get(ticket_id, 2.0))
    return sorted(best.items(), key=lambda item: (item[1], -item[0]))[:count]


def _reciprocal_rank_fusion(
    semantic: list[tuple[int, float]], keyword: list[tuple[int, float, bool]]
) -> list[tuple[int, float, list[str]]]:
    """Weighted RRF. A keyword hit that has no embedding yet (written a moment ago, provider down) cannot
    be ranked by meaning, so its semantic term is imputed from its keyword rank; without that, a ticket
    matching every query word would sink below ~30 semantic neighbours (0.4/61 < 0.6/91) and, in effect,
    not be found."""
    scores: dict[int, float] = {}
    matched: dict[int, list[str]] = {}
    for rank, (ticket_id, _, unembedded) in enumerate(keyword, start=1):
        weight = KEYWORD_WEIGHT + (SEMANTIC_WEIGHT if unembedded and semantic else 0.0)
        scores[ticket_id] = weight / (RRF_K + rank)
        matched[ticket_id] = ["keyword"]
    for rank, (ticket_id, _) in enumerate(semantic, start=1):
        scores[ticket_id] = scores.get(ticket_id, 0.0) + SEMANTIC_WEIGHT / (RRF_K + rank)
        matched.setdefault(ticket_id, []).append("semantic")
    return [
        (ticket_id, score, matched[ticket_id])
        for ticket_id, score in sorted(scores.items(), key=lambda i: (-i[1], -i[0]))
    ]


# ------------------------------------------------------------------------------------------ results


def _compact(text: str, length: int = SNIPPET_LENGTH) -> str:
    text = " ".join(text.split())
    if len(text) <= length:
        return text
    cut = text[: length - 1].rsplit(" ", 1)[0]
    return cut + "…"


def _result_rows(cursor, ticket_ids: list[int], *, query: str | None, include_comments: bool) -> dict[int, dict]:
    """title/status/priority and a snippet per ticket: the best-matching fragment of the description (or
    of a matching comment when only a comment matched) for keyword hits, else the description's start."""
    headline_options = "MaxWords=30, MinWords=12, MaxFragments=1, FragmentDelimiter=' … ', StartSel='', StopSel=''"
    keyword = query is not None
    tsq = _LOOSE_TSQUERY  # any query word: the fragment with the most of them wins
    comment_join = (
        f"""LEFT JOIN LATERAL (
                SELECT c.text FROM {COMMENT_TABLE} c
                 WHERE c.ticket_id = t.id AND to_tsvector('english', c.text) @@ ({tsq})
                 ORDER BY ts_rank_cd(to_tsvector('english', c.text), ({tsq})) DESC LIMIT 1
            ) best_comment ON NOT (t.search_vector @@ ({tsq}))"""
        if keyword and include_comments
        else "LEFT JOIN LATERAL (SELECT NULL::text AS text) best_comment ON false"
    )
    description_headline = (
        f"CASE WHEN t.search_vector @@ ({tsq}) THEN ts_headline('english', t.description, ({tsq}), %(opts)s) END"
        if keyword
        else "NULL"
    )
    comment_headline = f"ts_headline('english', best_comment.text, ({tsq}), %(opts)s)" if keyword else "NULL"
    cursor.execute(
        f"""SELECT t.id, t.title, t.status, t.priority, left(t.description, 600),
                   {description_headline}, {comment_headline}
              FROM {TICKET_TABLE} t {comment_join}
             WHERE t.id = ANY(%(ids)s)""",
        {"ids": ticket_ids, "q": query, "opts": headline_options},
    )
    rows = {}
    for (
        ticket_id,
        title,
        status,
        priority,
        description_start,
        description_headline,
        comment_headline,
    ) in cursor.fetchall():
        if comment_headline:
            snippet = "comment: " + _compact(comment_headline, SNIPPET_LENGTH - 9)
        else:
            snippet = _compact(description_headline or description_start or "")
        rows[ticket_id] = {"title": title, "status": status, "priority": priority, "snippet": snippet}
    return rows


def ticket_search(
    *,
    workflow_ids: list[int],
    query: str,
    search_type: str = "hybrid",
    filters: dict | None = None,
    limit: int = 10,
    include_comments: bool = True,
) -> list[dict]:
    """Find tickets in the given workflows by keyword, meaning, or both (see module docstring).

    Returns up to `limit` dicts, best first: {"ticket_id": "TKT-n", "title", "status", "priority",
    "snippet" (≤160 chars), "score", "matched": ["keyword"|"semantic", …]}. `score` is higher for better
    matches: hybrid — the RRF score; keyword — ts_rank_cd squashed into [0, 1), ≥ 0.5 when the ticket (or
    one of its comments) holds every query word; semantic — the cosine similarity.
    Filters: status, priority, ticket_type (a value or a list), tags (any of), tags_all (all of),
    assigned_agent_id, include_completed (false hides done tickets), is_blocked.
    Raises DomainError for bad input; DomainError too when semantic search is asked for and the embedding
    provider fails (hybrid falls back to keyword instead).
    """
    if not isinstance(query, str) or len(query.strip()) < MIN_QUERY_LENGTH:
        raise DomainError(f"query must be text of at least {MIN_QUERY_LENGTH} characters; got {query!r}.")
    query = query.strip()
    if len(query) > MAX_QUERY_LENGTH:
        raise DomainError(f"query must be at most {MAX_QUERY_LENGTH} characters; got {len(query)}.")
    if search_type not in SEARCH_TYPES:
        raise DomainError(f"search_type must be one of {list(SEARCH_TYPES)}; got {search_type!r}.")
    limit = _validated_limit(limit)
    clean_filters = _validated_filters(filters)
    workflow_ids = _validated_workflow_ids(workflow_ids)
    if not isinstance(include_comments, bool):
        raise DomainError(f"include_comments must be true or false; got {include_comments!r}.")
    if not workflow_ids:
        return []

    vector = None
    if search_type in ("semantic", "hybrid"):
        try:
            vector = embed_query(query)
        except EmbeddingError as error:
            if search_type == "semantic":
                raise DomainError(f"semantic search is unavailable right now ({error}); use search_type='keyword'.")
            logger.warning("hybrid search falls back to keyword only: %s", error)

    where, params = _filter_sql(workflow_ids, clean_filters)
    # Fusion needs more than `limit` candidates from each list, or a ticket ranked 12th by keyword and
    # 3rd by meaning could never surface.
    candidate_count = limit if search_type != "hybrid" else min(max(limit * 5, 50), 200)
    keyword: list[tuple[int, float, bool]] = []
    semantic: list[tuple[int, float]] = []
    with transaction.atomic(), connection.cursor() as cursor:  # SET LOCAL needs a transaction
        if search_type in ("keyword", "hybrid"):
            keyword = _keyword_candidates(
                cursor,
                query=query,
                where=where,
                params=params,
                count=candidate_count,
                want=limit if search_type == "keyword" else 0,
                include_comments=include_comments,
            )
        if vector is not None:
            semantic = _semantic_candidates(
                cursor,
                vector=vector,
                where=where,
                params=params,
                count=candidate_count,
                include_comments=include_comments,
            )

        if search_type == "keyword":
            ranked = [(ticket_id, round(score, 4), ["keyword"]) for ticket_id, score, _ in keyword]
        elif search_type == "semantic":
            ranked = [(ticket_id, round(1 - distance, 3), ["semantic"]) for ticket_id, distance in semantic]
        else:
            ranked = [(t, round(s, 5), m) for t, s, m in _reciprocal_rank_fusion(semantic, keyword)]
        ranked = ranked[:limit]
        keyword_ids = {ticket_id for ticket_id, _, _ in keyword}
        rows = _result_rows(
            cursor,
            [ticket_id for ticket_id, _, _ in ranked],
            query=query if keyword_ids else None,
            include_comments=include_comments,
        )

    results = []
    for ticket_id, score, matched in ranked:
        row = rows[ticket_id]
        results.append(
            {
                "ticket_id": ticket_public_id(ticket_id),
                "title": row["title"],
                "status": row["status"],
                "priority": row["priority"],
                "snippet": row["snippet"],
                "score": score,
                "matched": matched,
            }
        )
    return results


def warm_duplicate_check(*, title: str, description: str) -> None:
    """Embed a ticket about to be filed now, before the caller opens its transaction, so that
    `possible_duplicates` inside it does not wait on the provider (an HTTP call with EMBEDDING_PROVIDER=openai)
    while holding row locks. A provider failure is left for `possible_duplicates` to handle."""
    try:
        warm_query_embedding(ticket_embedding_text(title, description))
    except EmbeddingError:
        pass


def possible_duplicates(*, workflow, title: str, description: str) -> list[dict]:
    """`similar_tickets` for a ticket about to be filed. It is advice: when the embedding provider is down
    the answer is empty rather than an error, so filing a ticket never depends on it."""
    try:
        return similar_tickets(workflow_ids=[workflow.id], title=title, description=description)
    except EmbeddingError:
        return []


def similar_tickets(
    *,
    workflow_ids: list[int],
    title: str,
    description: str = "",
    exclude_ticket_id: int | None = None,
    limit: int = 5,
    threshold: float | None = None,
) -> list[dict]:
    """Existing tickets whose meaning is close to a (new) ticket's title + description: the duplicate
    check `create_ticket` returns so agents stop filing the same ticket twice.

    Returns [{"ticket_id": "TKT-n", "title", "status", "similarity"}] with cosine similarity ≥ `threshold`
    (default settings.SIMILAR_TICKET_THRESHOLD), most similar first, similarity rounded to 3 places.
    Tickets without an embedding yet are not considered. Raises DomainError for bad arguments and
    EmbeddingError when the provider fails (the caller decides whether creation goes on without it).
    """
    if not isinstance(title, str) or not title.strip():
        raise DomainError("title must be non-empty text.")
    if not isinstance(description, str):
        raise DomainError(f"description must be text; got {type(description).__name__}.")
    limit = _validated_limit(limit)
    workflow_ids = _validated_workflow_ids(workflow_ids)
    threshold = settings.SIMILAR_TICKET_THRESHOLD if threshold is None else threshold
    if not isinstance(threshold, int | float) or isinstance(threshold, bool) or not -1 <= threshold <= 1:
        raise DomainError(f"threshold must be a number from -1 to 1; got {threshold!r}.")
    if not workflow_ids:
        return []
    vector = embed_query(ticket_embedding_text(title, description))
    where, params = _filter_sql(workflow_ids, {})
    if exclude_ticket_id is not None:
        if not isinstance(exclude_ticket_id, int) or isinstance(exclude_ticket_id, bool):
            raise DomainError(f"exclude_ticket_id must be a ticket primary key; got {exclude_ticket_id!r}.")
        where += " AND t.id <> %(exclude)s"
        params["exclude"] = exclude_ticket_id
    with transaction.atomic(), connection.cursor() as cursor:
        nearest = _semantic_candidates(
            cursor, vector=vector, where=where, params=params, count=limit, include_comments=False
        )
        if not nearest:
            return []
        cursor.execute(
            f"SELECT id, title, status FROM {TICKET_TABLE} WHERE id = ANY(%(ids)s)",
            {"ids": [ticket_id for ticket_id, _ in nearest]},
        )
        details = {row[0]: row[1:] for row in cursor.fetchall()}
    results = []
    for ticket_id, distance in nearest:
        similarity = round(1 - distance, 3)
        if similarity >= threshold:
            title_, status = details[ticket_id]
            results.append(
                {
                    "ticket_id": ticket_public_id(ticket_id),
                    "title": title_,
                    "status": status,
                    "similarity": similarity,
                }
            )
    return results
