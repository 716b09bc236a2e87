"""Embeddings: the local MiniLM model and OpenAI text-embedding-3-small (the real SDK against the emulator)."""

import numpy as np
import pytest

from rag.embeddings import (
    LOCAL_DIMENSIONS,
    OPENAI_EMBEDDING_MODEL,
    STATIC_DIMENSIONS,
    EmbeddingError,
    LocalEmbedder,
    OpenAIEmbedder,
    StaticEmbedder,
    get_embedder,
    local_embedder,
    reranker_for,
    static_embedder,
    static_table_path,
)
from rag.models import decode_embedding, encode_embedding
from testsupport.emulator import embedding_vector

# --- the local model ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def local():
    embedder = LocalEmbedder(threads=1)
    embedder.load()
    return embedder


def test_local_vectors_are_unit_float32_rows_in_input_order(local):
    texts = ["A short one.", "A much longer sentence about the weather in Lisbon during the spring months.", "Mid."]
    vectors = local.embed(texts)
    assert vectors.shape == (3, LOCAL_DIMENSIONS)
    assert vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    # Batched (sorted by length, padded) or one at a time, each text gets its own vector back.
    one_by_one = np.concatenate([local.embed([text]) for text in texts])
    assert np.allclose(vectors, one_by_one, atol=1e-4)
    assert not np.allclose(vectors[0], vectors[1], atol=0.1)


def test_local_similar_sentences_are_closer_than_unrelated_ones(local):
    question, paraphrase, unrelated = local.embed(
        [
            "How do I reset my password?",
            "Steps to change the login password of your account.",
            "Bananas are a good source of potassium.",
        ]
    )
    assert question @ paraphrase > 0.5
    assert question @ paraphrase > question @ unrelated + 0.3


def test_local_handles_empty_input_and_texts_longer_than_the_model_window(local):
    assert local.embed([]).shape == (0, LOCAL_DIMENSIONS)
    long_text = "word " * 2000  # far beyond 256 word pieces: truncated, not an error
    vectors = local.embed(["", long_text])
    assert vectors.shape == (2, LOCAL_DIMENSIONS)
    assert np.all(np.isfinite(vectors))


def test_the_local_model_is_shared_by_the_process(settings):
    settings.RAG_EMBEDDING_THREADS = 1
    assert local_embedder() is local_embedder()


def test_float16_storage_keeps_cosines(local):
    vectors = local.embed(["The wifi password is mango-42.", "What is the wifi password?"])
    stored = np.stack([decode_embedding(encode_embedding(v)) for v in vectors])
    assert len(encode_embedding(vectors[0])) == 2 * LOCAL_DIMENSIONS
    assert stored.dtype == np.float32
    assert abs(float(stored[0] @ stored[1]) - float(vectors[0] @ vectors[1])) < 1e-3


# --- the static model distilled from it, re-ranked by it ----------------------------------------------------------


def test_static_vectors_are_unit_rows_and_related_texts_are_closer(settings):
    settings.RAG_EMBEDDING_THREADS = 1
    static = static_embedder()
    question, paraphrase, unrelated, empty = static.embed(
        [
            "How do I reset my password?",
            "Steps to change the login password of your account.",
            "Bananas are a good source of potassium.",
            "",
        ]
    )
    assert static.embed([]).shape == (0, STATIC_DIMENSIONS)
    vectors = np.stack([question, paraphrase, unrelated, empty])
    assert vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors[:3], axis=1), 1.0, atol=1e-5)
    assert question @ paraphrase > question @ unrelated + 0.2
    # Its table was distilled from the installed packages (make install), never downloaded.
    assert static_table_path().exists()


def test_static_vectors_are_re_ranked_by_the_minilm_they_were_distilled_from(settings):
    settings.RAG_EMBEDDING_THREADS = 1
    static = static_embedder()
    assert static.name != local_embedder().name  # stored vectors of the two are never compared
    assert static.reranker is local_embedder()
    assert reranker_for(static.name) is local_embedder()
    # MiniLM's own vectors, and any other embedder's, stand as they are.
    assert reranker_for(local_embedder().name) is None
    assert reranker_for(f"openai:{OPENAI_EMBEDDING_MODEL}") is None
    assert reranker_for(None) is None


# --- choosing the embedder ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("choice", "key", "expected"),
    [
        ("auto", "", StaticEmbedder),
        ("auto", "sk-test", OpenAIEmbedder),
        ("openai", "sk-test", OpenAIEmbedder),
        ("openai", "", StaticEmbedder),  # asked for OpenAI without a key: the local model, not a broken turn
        ("local", "sk-test", StaticEmbedder),
    ],
)
def test_get_embedder_follows_settings(settings, choice, key, expected):
    settings.RAG_EMBEDDINGS = choice
    settings.OPENAI_API_KEY = key
    settings.OPENAI_BASE_URL = "http://127.0.0.1:9/v1"
    assert type(get_embedder()) is expected


def test_an_unknown_embeddings_setting_is_an_error(settings):
    settings.RAG_EMBEDDINGS = "word2vec"
    with pytest.raises(ValueError, match="RAG_EMBEDDINGS"):
        get_embedder()


# --- OpenAI through the SDK, against the emulator ---------------------------------------------------------------


def test_openai_embeddings_request_the_model_and_parse_the_vectors(emulator, settings):
    settings.RAG_EMBEDDINGS = "auto"
    embedder = get_embedder()
    assert embedder.name == f"openai:{OPENAI_EMBEDDING_MODEL}"
    texts = ["first chunk", "second chunk"]
    vectors = embedder.embed(texts)

    (request,) = emulator.requests
    assert request["path"] == "/v1/embeddings"
    assert request["api_key"] == settings.OPENAI_API_KEY
    assert request["body"]["model"] == OPENAI_EMBEDDING_MODEL
    assert request["inputs"] == texts
    dimensions = emulator.config["embedding_dimensions"]
    assert vectors.shape == (2, dimensions) and vectors.dtype == np.float32
    for text, vector in zip(texts, vectors, strict=True):
        assert np.allclose(vector, embedding_vector(text, dimensions, OPENAI_EMBEDDING_MODEL), atol=1e-5)


def test_openai_embeddings_are_sent_in_batches(emulator, settings):
    embedder = get_embedder()
    texts = [f"chunk number {i}" for i in range(embedder.batch_size + 5)]
    vectors = embedder.embed(texts)
    assert [len(r["inputs"]) for r in emulator.requests] == [embedder.batch_size, 5]
    assert len(vectors) == len(texts)
    expected_last = embedding_vector(texts[-1], vectors.shape[1], OPENAI_EMBEDDING_MODEL)
    assert np.allclose(vectors[-1], expected_last, atol=1e-5)


def test_shortened_openai_vectors_are_asked_for_and_named_apart(emulator, settings):
    settings.RAG_OPENAI_EMBEDDING_DIMENSIONS = 256
    embedder = get_embedder()
    assert embedder.name == f"openai:{OPENAI_EMBEDDING_MODEL}@256"
    assert embedder.embed(["hello"]).shape == (1, 256)
    assert emulator.requests[0]["body"]["dimensions"] == 256


def test_openai_failure_is_an_embedding_error_without_the_key(emulator, settings):
    emulator.configure(fault="http_500")
    with pytest.raises(EmbeddingError) as caught:
        get_embedder().embed(["hello"])
    assert "OpenAI" in str(caught.value)
    assert settings.OPENAI_API_KEY not in str(caught.value)


def test_openai_rejected_key_says_which_setting(emulator, settings):
    emulator.configure(api_key="sk-the-right-one")
    with pytest.raises(EmbeddingError, match="OPENAI_API_KEY"):
        get_embedder().embed(["hello"])
