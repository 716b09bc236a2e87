"""Hybrid retrieval over the chunks of a chat's documents: BM25 and embedding cosine, in one weighted score.

Each process keeps one in-memory index per chat and one per collection (the documents several chats share, such as
an assistant's: indexed once, whichever chats search them): the chunks' vectors as a float32 matrix, and BM25
postings as flat numpy arrays, built on first use and rebuilt when the ready documents change. Checking that costs one
small aggregate query per retrieval; the search itself is a matrix-vector product and a few array operations (see
bench/rag_retrieval.py for the numbers at 100k chunks). Chunk texts are not kept in memory: the few chunks chosen
are read from the database by id.
"""

import hashlib
import logging
import math
import re
import sys
import threading
from array import array
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from itertools import repeat

import numpy as np
from django.conf import settings
from django.db.models import Count, Max

from rag.embeddings import EmbeddingError, get_embedder, reranker_for
from rag.models import EMBEDDING_DTYPE, Chunk, Document
from rag.types import Hit

logger = logging.getLogger(__name__)

# BM25 (Robertson/Spärck Jones) with the usual constants.
BM25_K1 = 1.2
BM25_B = 0.75
# Fusion: score = cosine + LEXICAL_WEIGHT × BM25 / (the sum of the query terms' IDFs). Dividing by the query's
# own IDF mass (terms absent from the chat count at the highest IDF) makes the lexical part absolute: ~1 when a
# chunk holds every query term once, ~0.2 when it only shares a common word, whatever the other chunks score.
# The alternatives lost on our test sets (rag/tests/test_retrieval_quality.py plus 60 identifier and locker
# lookups): reciprocal rank fusion ranks a chunk that is mediocre in both lists above the clear winner of one
# (a paraphrase whose words match nothing, beaten by filler sharing "gather"; 54/60 top-1 against 60/60), and
# min-max normalisation inflates the best noise-level lexical match to 1.0. Cosine needs no rescaling: our
# embedders put related text at ~0.3-0.7 and unrelated at ~0-0.2, and the provider emulator's random vectors
# score ~0, so tests against it rank by words. 0.3 won among 0.1-1.0 (0.2-0.5 were within one rank).
LEXICAL_WEIGHT = 0.3
# Candidates kept for the diversity pass and the token budget.
CANDIDATES = 100
# With a coarse embedder (the static model), the best candidates re-scored by its finer reranker (MiniLM) at
# query time: their chunks' vectors come from a per-process cache, else are computed then (~45 ms a chunk, once).
# With the static model, the answer of each of the 40 questions of testsupport/rag_questions.py is within the
# coarse top 7, and depths 6-30 all keep MiniLM's recall (bench/README.md): 20 leaves a margin.
RERANK_DEPTH = 20
# Reranker vectors kept per process (1.5 KiB each for MiniLM): the chunks recent queries re-ranked.
RERANK_CACHE_CHUNKS = 50_000

# Letters and digits, with inner apostrophes kept ("priya's" stems to "priya", not "priya" + "s").
_WORD = re.compile(r"[^\W_]+(?:['’][^\W_]+)*")
# Dropped from documents and queries alike: they carry no meaning for ranking, and the postings of "the" would
# touch every chunk on every query.
STOPWORDS = frozenset(
    """a about above after again against all am an and any are as at be because been before being below between
    both but by can could did do does doing down during each few for from further had has have having he her here
    hers herself him himself his how i if in into is it its itself just me more most my myself no nor not of off on
    once only or other our ours ourselves out over own same she should so some such than that the their theirs them
    themselves then there these they this those through to too under until up very was we were what when where
    which while who whom why will with would you your yours yourself yourselves""".split()
)


def stem(word: str) -> str:
    """A light plural/possessive stemmer: 'passwords' and 'password' match, without the surprises of a full
    stemmer ('news' and 'bus' are left alone)."""
    if len(word) <= 3:
        return word
    if word.endswith(("'s", "’s")):
        return word[:-2]
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith("sses"):
        return word[:-2]
    if word.endswith("s") and not word.endswith(("ss", "us", "is", "ws")):
        return word[:-1]
    return word


def terms(text: str) -> list[str]:
    """The BM25 terms of a text: lowercase words (letters and digits), stopwords dropped, lightly stemmed."""
    return [stem(word) for word in _WORD.findall(text.lower()) if word not in STOPWORDS]


@dataclass
class VectorGroup:
    """The vectors of the chunks embedded by one embedder (documents keep the embedder they were ingested with)."""

    rows: np.ndarray  # int32: the index rows these vectors belong to
    matrix: np.ndarray  # float32 (len(rows), dimensions), unit rows


@dataclass
class ChatIndex:
    version: tuple
    chunk_ids: np.ndarray  # int64, one per row
    document_ids: np.ndarray  # int64, per row
    tokens: np.ndarray  # int32, per row (the chunk's size for the token budget)
    vocabulary: dict[str, int]
    offsets: np.ndarray  # int64 (len(vocabulary) + 1): term t's postings are [offsets[t], offsets[t + 1])
    posting_rows: np.ndarray  # int32
    posting_weights: np.ndarray  # float32: BM25's term-frequency factor, precomputed per posting
    idf: np.ndarray  # float32, per term
    vectors: dict[str, VectorGroup] = field(default_factory=dict)

    @property
    def size(self) -> int:
        return len(self.chunk_ids)

    @property
    def nbytes(self) -> int:
        arrays = [self.chunk_ids, self.document_ids, self.tokens, self.offsets, self.posting_rows]
        arrays += [self.posting_weights, self.idf]
        for group in self.vectors.values():
            arrays += [group.rows, group.matrix]
        # Beyond the hash table itself, each entry's short key string: ~60 bytes.
        return sum(a.nbytes for a in arrays) + sys.getsizeof(self.vocabulary) + 60 * len(self.vocabulary)

    def lexical_scores(self, query_terms: list[str]) -> np.ndarray:
        scores = np.zeros(self.size, dtype=np.float32)
        for term in set(query_terms):
            term_id = self.vocabulary.get(term)
            if term_id is None:
                continue
            start, end = self.offsets[term_id], self.offsets[term_id + 1]
            # A term's postings name each row once, so fancy-index += is a correct scatter-add here.
            scores[self.posting_rows[start:end]] += self.idf[term_id] * self.posting_weights[start:end]
        return scores

    def ranked(self, query: str, query_vector: np.ndarray | None, embedding_model: str | None) -> list[tuple]:
        """(row, score) for the best CANDIDATES chunks, best first (see LEXICAL_WEIGHT for the score). Without a
        usable query vector, only chunks sharing a word with the query are candidates."""
        query_terms = set(terms(query))
        scores = np.zeros(self.size, dtype=np.float32)
        if query_terms:
            unseen_idf = math.log1p((self.size + 0.5) / 0.5)
            idf_mass = sum(
                float(self.idf[self.vocabulary[term]]) if term in self.vocabulary else unseen_idf
                for term in query_terms
            )
            scores += (LEXICAL_WEIGHT / idf_mass) * self.lexical_scores(query_terms)
        group = self.vectors.get(embedding_model or "")
        if query_vector is not None and group is not None and len(group.rows):
            similarities = group.matrix @ np.asarray(query_vector, dtype=np.float32)
            if len(group.rows) < self.size:
                # Chunks of documents embedded by another embedder get the average similarity: neither helped nor
                # buried by vectors they do not have, they compete on their words.
                scores += float(similarities.mean())
                scores[group.rows] += similarities - float(similarities.mean())
            else:
                scores += similarities
            top = _top(np.arange(self.size), scores, CANDIDATES)
            reranker = reranker_for(embedding_model)
            if reranker is not None and top:
                return self._reranked(query, top, scores, group, similarities, reranker)
        else:
            matching = np.flatnonzero(scores)
            top = _top(matching, scores[matching], CANDIDATES)
        return [(row, float(scores[row])) for row in top]

    def _reranked(self, query, top, scores, group, similarities, reranker) -> list[tuple]:
        """The RERANK_DEPTH best of `top` re-scored with the reranker's cosine in place of the coarse one (the
        lexical part stays), best first, then the rest in their order, shifted below them so scores stay sorted.
        If the reranker fails, the coarse ranking stands."""
        head = np.asarray(top[:RERANK_DEPTH])
        positions = np.searchsorted(group.rows, head)
        positions = np.minimum(positions, len(group.rows) - 1)
        has_vector = group.rows[positions] == head
        coarse = np.where(has_vector, similarities[positions], float(similarities.mean()))
        try:
            fine_query = _fine_query_vector(reranker, query)
            fine = _fine_chunk_vectors(reranker, [int(self.chunk_ids[row]) for row in head]) @ fine_query
        except EmbeddingError as exc:
            logger.warning("re-ranking failed; coarse ranking kept", extra={"reason": str(exc)})
            return [(row, float(scores[row])) for row in top]
        rescored = scores[head] - coarse + fine
        order = np.lexsort((head, -rescored))
        ranked = [(int(head[i]), float(rescored[i])) for i in order]
        tail = top[RERANK_DEPTH:]
        if tail:
            shift = min(0.0, ranked[-1][1] - float(scores[tail[0]]))
            ranked += [(row, float(scores[row]) + shift) for row in tail]
        return ranked


def _top(candidates: np.ndarray, scores: np.ndarray, depth: int) -> list[int]:
    """The candidates with the `depth` highest scores, best first (ties: lower row first)."""
    if len(candidates) > depth:
        keep = np.argpartition(-scores, depth - 1)[:depth]
        candidates, scores = candidates[keep], scores[keep]
    order = np.lexsort((candidates, -scores))
    return candidates[order].tolist()


CHAT = "chat_id"
COLLECTION = "collection_id"


def build_index(chat_id, version: tuple = (), scope: str = CHAT) -> ChatIndex:
    """Read the chunks of the chat's ready documents and index them (seconds for 100k chunks: run rarely). With
    scope=COLLECTION, `chat_id` is a collection's id and its documents are indexed."""
    models_by_document = dict(
        Document.objects.filter(**{scope: chat_id}, status=Document.Status.READY).values_list("id", "embedding_model")
    )
    rows = (
        Chunk.objects.filter(**{scope: chat_id}, document_id__in=list(models_by_document))
        .order_by("document_id", "position")
        .values_list("id", "document_id", "tokens", "heading", "text", "embedding")
    )
    chunk_ids, document_ids, token_counts, lengths = array("q"), array("q"), array("i"), array("i")
    posting_terms, posting_rows, posting_tfs = array("i"), array("i"), array("i")
    vocabulary: dict[str, int] = {}
    # Word → term id (or -1 for a stopword), so each distinct word is stemmed once, not per use.
    word_terms: dict[str, int] = {}
    group_rows: dict[str, array] = {}
    group_bytes: dict[str, list[bytes]] = {}
    for row, (chunk_id, document_id, tokens, heading, text, embedding) in enumerate(rows.iterator(chunk_size=2000)):
        chunk_ids.append(chunk_id)
        document_ids.append(document_id)
        token_counts.append(tokens)
        # The heading counts as the chunk's words too: it often names what a terse passage is about.
        source = text if not heading or heading in text[: len(heading) + 8] else f"{heading}\n{text}"
        words = _WORD.findall(source.lower())
        # map(dict.get) and Counter run in C; Python code only sees each distinct word once per index.
        ids = list(map(word_terms.get, words))
        if None in ids:
            for word in set(words).difference(word_terms):
                word_terms[word] = -1 if word in STOPWORDS else vocabulary.setdefault(stem(word), len(vocabulary))
            ids = list(map(word_terms.get, words))
        counts = Counter(ids)
        lengths.append(len(ids) - counts.pop(-1, 0))
        posting_terms.extend(counts.keys())
        posting_tfs.extend(counts.values())
        posting_rows.extend(repeat(row, len(counts)))
        model = models_by_document.get(document_id, "")
        embedding = bytes(embedding or b"")
        if model and embedding:
            first = group_bytes.setdefault(model, [])
            # A vector of another length than its group's cannot be compared; that chunk stays lexical-only.
            if not first or len(first[0]) == len(embedding):
                first.append(embedding)
                group_rows.setdefault(model, array("i")).append(row)

    count = len(chunk_ids)
    term_array = np.frombuffer(posting_terms, dtype=np.int32)
    order = np.argsort(term_array, kind="stable")  # stable: each term's rows stay in ascending order
    document_frequency = np.bincount(term_array, minlength=len(vocabulary))
    offsets = np.zeros(len(vocabulary) + 1, dtype=np.int64)
    np.cumsum(document_frequency, out=offsets[1:])
    row_array = np.frombuffer(posting_rows, dtype=np.int32)[order]
    tf = np.frombuffer(posting_tfs, dtype=np.int32)[order].astype(np.float32)
    length_array = np.frombuffer(lengths, dtype=np.int32).astype(np.float32)
    average_length = float(length_array.mean()) if count and length_array.mean() > 0 else 1.0
    normaliser = BM25_K1 * (1 - BM25_B + BM25_B * length_array[row_array] / average_length)
    weights = (tf * (BM25_K1 + 1) / (tf + normaliser)).astype(np.float32)
    # Lucene's IDF: always positive, so a term found in most chunks still counts a little.
    idf = np.log1p((count - document_frequency + 0.5) / (document_frequency + 0.5)).astype(np.float32)

    vectors = {}
    for model, chunks in group_bytes.items():
        dimensions = len(chunks[0]) // EMBEDDING_DTYPE.itemsize
        matrix = np.frombuffer(b"".join(chunks), dtype=EMBEDDING_DTYPE).reshape(-1, dimensions).astype(np.float32)
        vectors[model] = VectorGroup(rows=np.frombuffer(group_rows[model], dtype=np.int32).copy(), matrix=matrix)
    return ChatIndex(
        version=version,
        chunk_ids=np.frombuffer(chunk_ids, dtype=np.int64).copy(),
        document_ids=np.frombuffer(document_ids, dtype=np.int64).copy(),
        tokens=np.frombuffer(token_counts, dtype=np.int32).copy(),
        vocabulary=vocabulary,
        offsets=offsets,
        posting_rows=row_array,
        posting_weights=weights,
        idf=idf,
        vectors=vectors,
    )


# --- the reranker's vectors ---------------------------------------------------------------------------------

_fine_cache: "OrderedDict[tuple, np.ndarray]" = OrderedDict()
_fine_lock = threading.Lock()


def _fine_query_vector(reranker, query: str) -> np.ndarray:
    # Merged retrieval ranks each index in turn with the same query: embed it once.
    key = (reranker.name, "query", query)
    with _fine_lock:
        vector = _fine_cache.get(key)
    if vector is None:
        vector = reranker.embed([query])[0]
        _remember({key: vector})
    return vector


def _fine_chunk_vectors(reranker, chunk_ids: list[int]) -> np.ndarray:
    """(len(chunk_ids), reranker.dimensions): cached, or embedded now from the chunks' text (as ingest embeds it:
    the heading too when the text does not start with it). Cached by the text's digest, not the chunk's id (ids of
    a flushed test database come back). A chunk deleted meanwhile gets a zero vector."""
    rows = Chunk.objects.filter(id__in=chunk_ids).values_list("id", "heading", "text")
    digests = {}
    texts = {}
    for chunk_id, heading, text in rows:
        source = text if not heading or heading in text[: len(heading) + 8] else f"{heading}\n{text}"
        digests[chunk_id] = (reranker.name, hashlib.blake2b(source.encode(), digest_size=16).digest())
        texts[digests[chunk_id]] = source
    with _fine_lock:
        found = {key: _fine_cache[key] for key in texts if key in _fine_cache}
        for key in found:
            _fine_cache.move_to_end(key)
    missing = [key for key in texts if key not in found]
    if missing:
        computed = dict(zip(missing, reranker.embed([texts[key] for key in missing]), strict=True))
        _remember(computed)
        found.update(computed)
    zero = np.zeros(reranker.dimensions, dtype=np.float32)
    return np.array([found[digests[i]] if i in digests else zero for i in chunk_ids], dtype=np.float32)


def _remember(vectors: dict) -> None:
    with _fine_lock:
        _fine_cache.update(vectors)
        while len(_fine_cache) > RERANK_CACHE_CHUNKS:
            _fine_cache.popitem(last=False)


# --- the per-process cache of chat indexes ------------------------------------------------------------------

_cache: "OrderedDict[str, ChatIndex]" = OrderedDict()
_cache_lock = threading.Lock()
_build_locks: dict[str, threading.Lock] = {}


def index_version(chat_id, scope: str = CHAT) -> tuple:
    """What the index of a chat depends on, in one cheap query: its ready documents (added, removed, redone)."""
    summary = Document.objects.filter(**{scope: chat_id}, status=Document.Status.READY).aggregate(
        count=Count("id"), last=Max("id"), changed=Max("updated_at")
    )
    return (summary["count"], summary["last"], summary["changed"])


def _cache_key(chat_id, scope: str) -> str:
    return str(chat_id) if scope == CHAT else f"collection:{chat_id}"


def chat_index(chat_id, scope: str = CHAT) -> ChatIndex | None:
    """The chat's index (or, with scope=COLLECTION, the collection's), built or rebuilt when its documents changed;
    None when it has no ready document."""
    key = _cache_key(chat_id, scope)
    version = index_version(chat_id, scope)
    if not version[0]:
        with _cache_lock:
            _cache.pop(key, None)
        return None
    with _cache_lock:
        index = _cache.get(key)
        if index is not None and index.version == version:
            _cache.move_to_end(key)
            return index
        build_lock = _build_locks.setdefault(key, threading.Lock())
    # One build per chat at a time: concurrent turns of the same chat wait for it instead of building twice.
    with build_lock:
        with _cache_lock:
            index = _cache.get(key)
            if index is not None and index.version == version:
                return index
        index = build_index(chat_id, version, scope)
        logger.info("rag index built", extra={"chunks": index.size, "bytes": index.nbytes})
        with _cache_lock:
            _cache[key] = index
            _cache.move_to_end(key)
            limit = cache_budget_bytes()
            while len(_cache) > 1 and sum(i.nbytes for i in _cache.values()) > limit:
                evicted, _ = _cache.popitem(last=False)
                _build_locks.pop(evicted, None)
            if limit == 0:
                _cache.pop(key, None)
    return index


def cache_budget_bytes() -> int:
    return settings.RAG_INDEX_CACHE_MB * 1024 * 1024


def forget_chat(chat_id) -> None:
    with _cache_lock:
        _cache.pop(str(chat_id), None)


def clear_cache() -> None:
    with _cache_lock:
        _cache.clear()
        _build_locks.clear()
    with _fine_lock:
        _fine_cache.clear()


# --- retrieval ----------------------------------------------------------------------------------------------


def retrieve(
    chat_id, query: str, k: int | None = None, token_budget: int | None = None, collection_ids=()
) -> list[Hit]:
    """The chunks of the chat's documents that best answer `query`, best first: at most `k` (RAG_TOP_K), within
    `token_budget` tokens (RAG_CONTEXT_TOKENS) except that the best chunk is always returned.

    `collection_ids`: collections searched with the chat (its assistant's documents). Each keeps its own index
    (shared by every chat that searches it, never copied into theirs); their candidates are merged by score,
    which is comparable across indexes (see LEXICAL_WEIGHT: the lexical part is normalised per query).

    The query is embedded with the current embedder only. Documents ingested with another one (the deployment
    switched between OpenAI and the local model) are then found by BM25 alone: embedding every query once per
    embedder would double the latency (or fail, the old embedder's key being gone) for a transition that
    re-uploading the file resolves. If the embedder fails, retrieval is lexical-only rather than failing the turn.
    """
    if not query or not query.strip():
        return []
    indexes = [chat_index(chat_id)] + [chat_index(collection_id, COLLECTION) for collection_id in collection_ids]
    indexes = [index for index in indexes if index is not None]
    if not indexes:
        return []
    embedder = get_embedder()
    query_vector = None
    if not any(embedder.name in index.vectors for index in indexes) and embedder.reranker is not None:
        # Documents ingested before the local embedder became the static model carry MiniLM's own vectors: query
        # them with MiniLM rather than by words alone.
        if any(embedder.reranker.name in index.vectors for index in indexes):
            embedder = embedder.reranker
    if any(embedder.name in index.vectors for index in indexes):
        try:
            query_vector = embedder.embed([query])[0]
        except EmbeddingError as exc:
            logger.warning("query embedding failed; lexical retrieval only", extra={"reason": str(exc)})
    if len(indexes) == 1:
        return search(indexes[0], query, query_vector, embedder.name, k, token_budget)
    return search(merged_candidates(indexes, query, query_vector, embedder.name), "", None, None, k, token_budget)


@dataclass
class Candidates:
    """The best candidates of several indexes as one small index-like table: rows are positions in these arrays,
    already ranked (what `search` needs of an index: `ranked`, chunk ids, document ids and tokens)."""

    chunk_ids: np.ndarray
    document_ids: np.ndarray
    tokens: np.ndarray
    scores: list[float]

    def ranked(self, query, query_vector, embedding_model) -> list[tuple]:
        return [(row, score) for row, score in enumerate(self.scores)]


def merged_candidates(indexes: list[ChatIndex], query: str, query_vector, embedding_model) -> Candidates:
    """Every index's CANDIDATES best, merged best first (ties: the earlier index, then its order)."""
    found = []
    for position, index in enumerate(indexes):
        for rank, (row, score) in enumerate(index.ranked(query, query_vector, embedding_model)):
            found.append((-score, position, rank, index, row))
    found.sort(key=lambda item: item[:3])
    found = found[:CANDIDATES]
    return Candidates(
        chunk_ids=np.array([int(index.chunk_ids[row]) for *_, index, row in found], dtype=np.int64),
        document_ids=np.array([int(index.document_ids[row]) for *_, index, row in found], dtype=np.int64),
        tokens=np.array([int(index.tokens[row]) for *_, index, row in found], dtype=np.int32),
        scores=[-item[0] for item in found],
    )


def search(
    index: "ChatIndex | Candidates",
    query: str,
    query_vector: np.ndarray | None,
    embedding_model: str | None,
    k: int | None = None,
    token_budget: int | None = None,
) -> list[Hit]:
    """`retrieve` with the index and the query vector already at hand (benchmarks time this part alone)."""
    k = k or settings.RAG_TOP_K
    token_budget = settings.RAG_CONTEXT_TOKENS if token_budget is None else token_budget
    ranked = index.ranked(query, query_vector, embedding_model)
    chosen = within_budget(diverse(ranked, index.document_ids, k), index.tokens, token_budget)
    return _hits(index, chosen)


def diverse(ranked: list[tuple], document_ids: np.ndarray, k: int) -> list[tuple]:
    """The top k of `ranked`, at most ceil(k/2) from one document while other documents have candidates, so one
    long document cannot crowd out the others; if they run out, the best of the rest fill the k."""
    documents = {int(document_ids[row]) for row, _ in ranked}
    cap = math.ceil(k / 2) if len(documents) > 1 else k
    chosen, passed_over = [], []
    taken = Counter()
    for row, score in ranked:
        if len(chosen) == k:
            break
        document = int(document_ids[row])
        if taken[document] < cap:
            chosen.append((row, score))
            taken[document] += 1
        else:
            passed_over.append((row, score))
    chosen += passed_over[: k - len(chosen)]
    return sorted(chosen, key=lambda item: (-item[1], item[0]))


def within_budget(chosen: list[tuple], tokens: np.ndarray, token_budget: int) -> list[tuple]:
    """The leading chunks whose tokens fit the budget; the first one always (a turn with documents gets at least
    one chunk, however large)."""
    kept, spent = [], 0
    for row, score in chosen:
        size = int(tokens[row])
        if kept and spent + size > token_budget:
            break
        kept.append((row, score))
        spent += size
    return kept


def _hits(index: "ChatIndex | Candidates", chosen: list[tuple]) -> list[Hit]:
    if not chosen:
        return []
    ids = [int(index.chunk_ids[row]) for row, _ in chosen]
    fields = ("id", "document_id", "document__name", "page", "heading", "text")
    by_id = {row[0]: row for row in Chunk.objects.filter(id__in=ids).values_list(*fields)}
    hits = []
    for (_, score), chunk_id in zip(chosen, ids, strict=True):
        found = by_id.get(chunk_id)
        if found is None:  # deleted since the index was built
            continue
        _, document_id, document_name, page, heading, text = found
        hits.append(Hit(chunk_id, document_id, document_name, page, heading, text, round(float(score), 4)))
    return hits
