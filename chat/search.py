"""Search over a user's chats: titles (and generated names), prompts and answers.

The index is one row per searchable thing in `chat_searchdocument` (chat.models.SearchDocument): a chat's title and
name (query null), or one query's prompt and answer. Every version of a turn (regenerated, edited) is a query of its
own, so every version is searchable. Each engine keeps the words beside that row, created by migration 0008:

* PostgreSQL: a `document` tsvector column on chat_searchdocument (title weight A, prompt B, answer C), GIN index;
* SQLite: the FTS5 table `chat_searchtext`, whose rowid is the document's id, with an `owner` column (a token per
  user, so a match reads only the caller's postings); a trigger deletes its row with the document's, so every
  cascade (a chat, a query, a user deleted) leaves no words behind.

One write path for both, in the transaction that wrote the text, from the text the writer has in hand (nothing is
read back): a turn's start indexes its prompt, and a new chat's title, in one write (`index_new`); its end adds the
answer to that document in one UPDATE (`index_answer`: ResponseWriter's final write, settle_orphan), never at each
flush while it streams. So a turn costs the index two statements on PostgreSQL and three on SQLite (the document
rows, then their words). Renames, generated names and other re-indexing read what is stored and replace the
document in place (`index_chats`, `index_queries`); imports rebuild theirs (`reindex_chats`). A search run after the
write's commit finds exactly what is stored. Unlisted chats (the OpenAI-compatible API's store=false) are never
indexed.

Both engines are given the same words: text is split and normalised here (`words`: letters and digits, case- and
accent-folded), so a search finds the same chats on either, and the snippets (`highlight`, in Python from the
stored text, escaped) mark the same words. The database matches and returns the owner's newest CANDIDATES matches
with a score (PostgreSQL: ts_rank; SQLite: `_text_score` over the stored words, BM25-like without rarity); one
result per chat is ranked here, ties going to the newest.
"""

import datetime
import functools
import html
import json
import re
import unicodedata
import uuid
from dataclasses import dataclass

from django.db import connection
from django.urls import get_script_prefix, reverse
from django.utils.safestring import SafeString, mark_safe

from chat.models import Chat, ChatQuery, SearchDocument

WORD = re.compile(r"[^\W_]+")
MAX_QUERY_CHARS = 200
MAX_QUERY_TERMS = 8  # more words only narrow a match that is already narrow; they are ignored
MIN_PREFIX_CHARS = 2  # a one-letter last word is matched whole: as a prefix it would match nearly everything
STEM_CHARS = 3  # the longest prefix SQLite's index holds (migration 0008: FTS5 prefix = '2 3')
MAX_FIELD_CHARS = 100_000  # indexed per field; PostgreSQL's tsvector is capped at 1 MB
MAX_WORD_CHARS = 100  # longer "words" (base64, hashes run together) are indexed cut to this
PAGE_SIZE = 20
# A match is ranked among the newest CANDIDATES matching rows (most recently written), so a word found in every
# turn (or the prefix "th") costs the same as a rare one: the newest couple of hundred matches, not all of them.
# (They are also as far as results can be paged: 200 turns or titles, at least 10 pages of chats.) Each candidate
# costs about 10 µs to read on SQLite (its text, to score it) and to rank on PostgreSQL (ts_rank).
CANDIDATES = 200
SNIPPET_WORDS = 24
SNIPPET_LEAD_WORDS = 6

TITLE, PROMPT, RESPONSE = "title", "prompt", "response"


# --- words ---------------------------------------------------------------------------------------------------


def _fold(token: str) -> str:
    if token.isascii():
        return token.lower()
    decomposed = unicodedata.normalize("NFKD", token)
    return "".join(char for char in decomposed if not unicodedata.combining(char)).casefold()


def _token_words(token: str) -> list[str]:
    """The normalised words of one token of the text (folding can split one, e.g. "½" into 1 and 2)."""
    if token.isascii():  # the common case, and a token of ASCII letters and digits is one word
        return [token[:MAX_WORD_CHARS].lower()]
    return [word[:MAX_WORD_CHARS] for word in WORD.findall(_fold(token))]


def words(text: str) -> list[str]:
    """The words of `text` as both engines index them."""
    return [word for token in WORD.findall(text or "") for word in _token_words(token)]


def index_text(text: str) -> str:
    return " ".join(words((text or "")[:MAX_FIELD_CHARS]))


@dataclass(frozen=True)
class Terms:
    """What a search asks for: every word, the last one as a prefix when `prefix` (the user is still typing it)."""

    words: tuple[str, ...]
    prefix: bool

    def matches(self, word: str) -> bool:
        if word in self.words:
            return True
        return self.prefix and word.startswith(self.words[-1])

    def token_matches(self, token: str) -> bool:
        """Whether a token of the text (as WORD finds it) is, or holds, a word searched for."""
        if token.isascii():  # the common case: one word, no folding (_token_words)
            return self.matches(token[:MAX_WORD_CHARS].lower())
        return any(self.matches(word) for word in _token_words(token))

    def fts5(self, owner_id: int | None = None, stem: bool = False) -> str:
        """The FTS5 MATCH expression: the words in the text columns (and, with `owner_id`, that owner's rows only).
        With `stem`, the last word (a prefix) is cut to the longest prefix the index holds (STEM_CHARS)."""
        # Each word is letters and digits only, so quoting it can never be FTS5 syntax (no quote can occur).
        phrases = [f'"{word}"' for word in self.words]
        if self.prefix:
            phrases[-1] = f'"{self.words[-1][:STEM_CHARS] if stem else self.words[-1]}"*'
        words = f'{{title prompt response}} : ({" ".join(phrases)})'
        return words if owner_id is None else f'owner : "o{int(owner_id)}" AND {words}'

    def tsquery(self) -> str:
        # Letters and digits only: never tsquery syntax. 'simple' keeps each word as it is (no stemming).
        parts = list(self.words)
        if self.prefix:
            parts[-1] += ":*"
        return " & ".join(parts)


def parse_terms(query: str) -> Terms | None:
    """The words of what the user typed (None when there are none: nothing to search)."""
    found = words(query)[:MAX_QUERY_TERMS]
    if not found:
        return None
    still_typing = bool(WORD.search(query[-1:])) and len(words(query)) <= MAX_QUERY_TERMS
    return Terms(tuple(found), prefix=still_typing and len(found[-1]) >= MIN_PREFIX_CHARS)


# --- writing -------------------------------------------------------------------------------------------------


def _db_uuid(value):
    return ChatQuery._meta.pk.get_db_prep_value(value, connection)


def _as_uuid(value) -> uuid.UUID | None:
    if value is None or isinstance(value, uuid.UUID):
        return value
    return uuid.UUID(str(value))


# The PostgreSQL document of one row: title weight A, prompt B, answer C ('simple': every word as it is).
_PG_DOCUMENT = (
    "setweight(to_tsvector('simple', %s), 'A') || setweight(to_tsvector('simple', %s), 'B') "
    "|| setweight(to_tsvector('simple', %s), 'C')"
)
# A statement's rows are bounded (SQLite allows 32,766 parameters; a stored client conversation can be long).
_ROWS_PER_STATEMENT = 500
_QUERY_CONFLICT = "ON CONFLICT (query_id)"
_TITLE_CONFLICT = "ON CONFLICT (chat_id) WHERE query_id IS NULL"


def _owner_token(owner_id) -> str:
    return f"o{int(owner_id)}"


def _write_documents(rows: list[tuple], conflict: str | None = None) -> None:
    """Write documents from texts in memory, (owner id, chat id, query id or None, title, prompt, response), one
    statement per batch on PostgreSQL and two on SQLite (the document rows, then their words). With `conflict`
    (_QUERY_CONFLICT or _TITLE_CONFLICT) a document that exists is replaced in place, keeping its id; without it
    every row is new. Ids are taken in order: the newest document has the largest id (the candidates' order)."""
    table = SearchDocument._meta.db_table
    with connection.cursor() as cursor:
        for start in range(0, len(rows), _ROWS_PER_STATEMENT):
            batch = rows[start : start + _ROWS_PER_STATEMENT]
            if connection.vendor == "postgresql":
                upsert = f" {conflict} DO UPDATE SET owner_id = EXCLUDED.owner_id, document = EXCLUDED.document"
                cursor.execute(
                    f"INSERT INTO {table} (owner_id, chat_id, query_id, document) VALUES "
                    + ", ".join([f"(%s, %s, %s, {_PG_DOCUMENT})"] * len(batch))
                    + (upsert if conflict else ""),
                    [
                        value
                        for owner, chat, query, *texts in batch
                        for value in (owner, _db_uuid(chat), _db_uuid(query), *map(index_text, texts))
                    ],
                )
                continue
            upsert = f" {conflict} DO UPDATE SET owner_id = excluded.owner_id" if conflict else ""
            cursor.execute(
                f"INSERT INTO {table} (owner_id, chat_id, query_id) VALUES "
                + ", ".join(["(%s, %s, %s)"] * len(batch))
                + f"{upsert} RETURNING id, chat_id, query_id",
                [value for owner, chat, query, *_ in batch for value in (owner, _db_uuid(chat), _db_uuid(query))],
            )
            # RETURNING's order is unspecified: each row is matched by its query (or, for a title, its chat).
            ids = {(_as_uuid(chat) if query is None else None, _as_uuid(query)): i for i, chat, query in cursor}
            cursor.execute(
                "INSERT OR REPLACE INTO chat_searchtext (rowid, owner, title, prompt, response) VALUES "
                + ", ".join(["(%s, %s, %s, %s, %s)"] * len(batch)),
                [
                    value
                    for owner, chat, query, *texts in batch
                    for value in (
                        ids[(_as_uuid(chat) if query is None else None, _as_uuid(query))],
                        _owner_token(owner),
                        *map(index_text, texts),
                    )
                ],
            )


def index_new(chat: Chat, queries=(), title: bool = False) -> None:
    """Index what was just written, from the rows in memory (nothing is read back): with `title`, the new chat's
    title and name; and each of `queries` (new, of this chat), its prompt and the answer it has. A turn that
    starts has none yet: its answer is added when it ends (index_answer). One statement on PostgreSQL, two on
    SQLite, whatever the number of rows. Call it in the transaction that wrote them."""
    if chat.unlisted:  # the OpenAI-compatible API's store=false, a temporary chat: never indexed
        return
    rows = [(chat.owner_id, chat.pk, None, _title_text(chat.title, chat.name), "", "")] if title else []
    rows += [(chat.owner_id, chat.pk, query.pk, "", query.prompt, query.response) for query in queries]
    if rows:
        _write_documents(rows)


def index_answer(query_id, response: str) -> None:
    """A turn's answer as it ended (complete, stopped or failed, with what was written), added to the document
    its prompt was given when the turn started (index_new): one statement, nothing read back. Call it in the
    transaction that wrote the answer. A query of an unlisted chat has no document: nothing is written."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            # The prompt's words (weight B; a turn has no title) are kept and the answer's (C) replaced.
            cursor.execute(
                f"UPDATE {SearchDocument._meta.db_table} SET document = ts_filter(document, '{{a,b}}') "
                "|| setweight(to_tsvector('simple', %s), 'C') WHERE query_id = %s",
                [index_text(response), _db_uuid(_as_uuid(query_id))],
            )
        else:
            cursor.execute(
                "UPDATE chat_searchtext SET response = %s WHERE rowid = "
                f"(SELECT id FROM {SearchDocument._meta.db_table} WHERE query_id = %s)",
                [index_text(response), _db_uuid(_as_uuid(query_id))],
            )


def index_queries(query_ids) -> None:
    """(Re)index these queries' prompts and answers as stored now (read here; index_new and index_answer write
    what the caller has in hand). Call it in the transaction that wrote them."""
    query_ids = [_as_uuid(query_id) for query_id in query_ids]
    if not query_ids:
        return
    rows = list(
        ChatQuery.objects.filter(pk__in=query_ids, chat__unlisted=False).values_list(
            "chat__owner_id", "chat_id", "id", "prompt", "response"
        )
    )
    gone = set(query_ids) - {query for _, _, query, _, _ in rows}
    if gone:  # deleted, or now in an unlisted chat: their words go
        SearchDocument.objects.filter(query_id__in=gone).delete()
    if rows:
        _write_documents([(o, c, q, "", p, r) for o, c, q, p, r in rows], _QUERY_CONFLICT)


def index_chats(chat_ids) -> None:
    """(Re)index these chats' titles and names as stored now (read here, in the writer's transaction: a rename
    and a generated name written at once are both indexed). Call it in the transaction that wrote them."""
    chat_ids = [_as_uuid(chat_id) for chat_id in chat_ids]
    if not chat_ids:
        return
    rows = list(Chat.objects.filter(pk__in=chat_ids, unlisted=False).values_list("owner_id", "id", "title", "name"))
    gone = set(chat_ids) - {chat for _, chat, _, _ in rows}
    if gone:
        SearchDocument.objects.filter(chat_id__in=gone, query__isnull=True).delete()
    if rows:
        _write_documents([(o, c, None, _title_text(t, n), "", "") for o, c, t, n in rows], _TITLE_CONFLICT)


def _title_text(title: str, name: str) -> str:
    return title if not name or name == title else f"{title} {name}"


def reindex_chat(chat_id) -> None:
    """A chat and every query of it, afresh (a chat written by other means than the services: an import)."""
    reindex_chats([chat_id])


def reindex_chats(chat_ids, batch: int = 200) -> None:
    """Chats and every query of theirs, afresh, a batch of chats at a time (an import of thousands of chats)."""
    chat_ids = [_as_uuid(chat_id) for chat_id in chat_ids]
    for start in range(0, len(chat_ids), batch):
        ids = chat_ids[start : start + batch]
        SearchDocument.objects.filter(chat_id__in=ids).delete()
        chats = Chat.objects.filter(pk__in=ids, unlisted=False).values_list("owner_id", "id", "title", "name")
        queries = ChatQuery.objects.filter(chat_id__in=ids, chat__unlisted=False).values_list(
            "chat__owner_id", "chat_id", "id", "prompt", "response"
        )
        bulk_index(list(chats), list(queries))


def bulk_index(chats: list[tuple], queries: list[tuple]) -> None:
    """Index many new rows at once, none of which is indexed yet (a backfill, a benchmark's generated data):
    `chats` as (owner id, chat id, title, name), `queries` as (owner id, chat id, query id, prompt, response)."""
    _write_documents(
        [(owner, chat, None, _title_text(title, name), "", "") for owner, chat, title, name in chats]
        + [(owner, chat, query, "", prompt, response) for owner, chat, query, prompt, response in queries]
    )


def backfill(batch: int = 500) -> int:
    """Index every listed chat and query not indexed yet (what migration 0008 runs); returns how many rows.
    Plain SQL over the columns it reads, so later changes to the models cannot break the migration."""
    done = 0
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.owner_id, c.id, c.title, c.name FROM chat_chat c WHERE NOT c.unlisted AND NOT EXISTS "
            "(SELECT 1 FROM chat_searchdocument d WHERE d.chat_id = c.id AND d.query_id IS NULL)"
        )
        while chats := cursor.fetchmany(batch):
            bulk_index([(o, _as_uuid(c), t, n) for o, c, t, n in chats], [])
            done += len(chats)
        cursor.execute(
            "SELECT c.owner_id, q.chat_id, q.id, q.prompt, q.response FROM chat_chatquery q "
            "JOIN chat_chat c ON c.id = q.chat_id WHERE NOT c.unlisted AND NOT EXISTS "
            "(SELECT 1 FROM chat_searchdocument d WHERE d.query_id = q.id)"
        )
        while queries := cursor.fetchmany(batch):
            bulk_index([], [(o, _as_uuid(c), _as_uuid(q), p, r) for o, c, q, p, r in queries])
            done += len(queries)
    return done


# --- searching -----------------------------------------------------------------------------------------------

# Both engines fetch the owner's newest CANDIDATES matching documents (`hits`: the match runs in the database,
# stopping there) with a score each (higher is better); `_rank` groups them in Python: one result per chat, its
# best score, at its best-scoring turn (the title only when no turn matched); ties go to the newest match.
# Neither engine ranks by what it would have to read all matches for: SQLite's bm25 weighs each word by reading
# its whole doclist (20 ms for a word in every turn), so SQLite scores the candidates' stored text (_text_score).

_SQLITE_HITS = """
    SELECT t.rowid, d.chat_id, d.query_id, t.title, t.prompt, t.response
    FROM chat_searchtext t JOIN chat_searchdocument d ON d.id = t.rowid
    WHERE chat_searchtext MATCH %s ORDER BY t.rowid DESC LIMIT %s
"""

# A prefix longer than the index's prefixes (3 letters): FTS5 merges the whole doclist of every word that starts
# with it before returning a row (20 ms for a word in every turn, however few rows are asked for), where a prefix
# of the index is read a row at a time. So first its 3-letter stem, newest first, the rest of the prefix checked
# on the row's text (a word starts with it: a space before it), up to STEM_SCAN_ROWS rows: when that finds
# CANDIDATES rows, they are the newest that match (every match has the stem). That is for a prefix that is itself
# a common word (in STEM_DENSITY of the rows or more: _common_word); any other, and should the scan find too few,
# the prefix itself, whose words are then rare enough to merge in a few ms.
STEM_DENSITY = 0.25
STEM_SCAN_ROWS = 4 * CANDIDATES
_SQLITE_STEM_HITS = """
    SELECT s.rowid, d.chat_id, d.query_id, s.title, s.prompt, s.response FROM (
        SELECT t.rowid, t.title, t.prompt, t.response FROM chat_searchtext t
        WHERE chat_searchtext MATCH %s ORDER BY t.rowid DESC LIMIT %s
    ) s JOIN chat_searchdocument d ON d.id = s.rowid
    WHERE instr(' ' || s.title || ' ' || s.prompt || ' ' || s.response, %s) > 0
    LIMIT %s
"""

# PostgreSQL: one statement, the owner's documents in windows of ids, newest first (the older windows run only
# while the newer ones found too few: UNION ALL under a LIMIT stops there). Within a window the planner picks a
# backward scan (a common word: the first rows match) or the GIN bitmap ANDed with the window's id range (a rarer
# word: only its matches in the window are read). Unwindowed, it picks the backward scan for a word in 1% of the
# documents too, and reads 30,000 rows to find the newest few hundred. ts_rank (normalisation 1: a long answer
# does not win by length alone) is computed for the rows the LIMIT lets through only.
_PG_WINDOWS = (2_000, 20_000, 100_000)
#
# A prefix is matched in the GIN index by collecting every document of every word it starts (30 ms for a word in
# every turn, in each window), where whole words are ANDed skipping through each other. So with other words beside
# it, the index is asked for the whole words only, and the prefix checked on the rows they find (ts_match_vq is
# @@, but as a function the planner does not take it to the index). But the planner's estimate for that function
# is a default (a third): with a rare prefix it scanned an older window backwards for a pair that was not there
# (190,000 rows read in two windows, 130 ms). And a rare prefix is cheap to collect. So the choice is made per
# search, from the planner's own estimates (one EXPLAIN, planning only, ~0.4 ms: _pg_rare_prefix): a prefix
# estimated in fewer documents than the whole words and than PG_PREFIX_INDEX_ROWS goes to the index with them
# (130 → 1.5 ms for a mid word beside a rare prefix, 90 → 7 ms for a common one); any other is checked on the rows
# found.
PG_PREFIX_INDEX_ROWS = 20_000
# Each estimate a CTE of its own: its plan is named ("CTE words") and its top node's rows are the whole estimate
# (a UNION ALL's members can be reordered and divided among parallel workers).
_PG_ESTIMATES = (
    "EXPLAIN (FORMAT JSON) WITH "
    "words AS MATERIALIZED (SELECT 1 FROM chat_searchdocument WHERE document @@ to_tsquery('simple', %s)), "
    "prefix AS MATERIALIZED (SELECT 1 FROM chat_searchdocument WHERE document @@ to_tsquery('simple', %s)) "
    "SELECT 1 FROM words UNION ALL SELECT 1 FROM prefix"
)
_PG_WINDOW = """(
    SELECT d.id, d.chat_id, d.query_id, d.document FROM chat_searchdocument d
    WHERE d.owner_id = %s AND d.document @@ to_tsquery('simple', %s)
    AND ts_match_vq(d.document, to_tsquery('simple', %s)) AND {bounds} ORDER BY d.id DESC LIMIT %s
)"""
_POSTGRESQL_HITS = (
    "SELECT h.id, h.chat_id, h.query_id, ts_rank(h.document, to_tsquery('simple', %s), 1) FROM ("
    + " UNION ALL ".join(
        _PG_WINDOW.format(bounds=bounds)
        for bounds in ("d.id > %s", "d.id <= %s AND d.id > %s", "d.id <= %s AND d.id > %s", "d.id <= %s")
    )
    + ") h LIMIT %s"
)

# SQLite's score, per field of a candidate: its normalised text, weighted as the title 4, a prompt 2, an answer 1,
# and saturated by length like BM25 (k1 1.2, b 0.75) against a typical length of that field, in characters.
_FIELD_WEIGHTS = (4.0, 2.0, 1.0)
_FIELD_TYPICAL_CHARS = (40.0, 200.0, 1500.0)
_K1, _B = 1.2, 0.75


def _text_score(terms: Terms, fields) -> float:
    """How well a candidate's indexed fields (title, prompt, response: normalised words, one space apart) match:
    for each word searched for, its count in each field (the last one as a prefix when it is one), saturated and
    weighted. No word is weighed by its rarity: every candidate has every word, so that would only reorder words.
    (A word repeated back to back is counted once: a ranking, not a tally.)"""
    patterns = [f" {word} " for word in terms.words]
    if terms.prefix:
        patterns[-1] = patterns[-1][:-1]
    score = 0.0
    for text, weight, typical in zip(fields, _FIELD_WEIGHTS, _FIELD_TYPICAL_CHARS, strict=True):
        if not text:
            continue
        padded = f" {text} "
        length = _K1 * (1 - _B + _B * len(text) / typical)
        for pattern in patterns:
            count = padded.count(pattern)
            if count:
                score += weight * count / (count + length)
    return score


def _common_word(cursor, word: str) -> bool:
    """Whether `word`, whole, is in at least STEM_DENSITY of the index's newest rows (all owners': the doclist a
    prefix query merges is everyone's): its newest CANDIDATES matches are read, a few µs."""
    cursor.execute(
        "SELECT COUNT(*), MIN(m.rowid), (SELECT MAX(id) FROM chat_searchdocument) FROM (SELECT t.rowid FROM "
        "chat_searchtext t WHERE chat_searchtext MATCH %s ORDER BY t.rowid DESC LIMIT %s) m",
        [f'{{title prompt response}} : "{word}"', CANDIDATES],
    )
    count, oldest, newest = cursor.fetchone()
    return count == CANDIDATES and count >= STEM_DENSITY * (newest - oldest + 1)


def _sqlite_rows(cursor, user, terms: Terms) -> list[tuple]:
    if terms.prefix and len(terms.words[-1]) > STEM_CHARS and _common_word(cursor, terms.words[-1]):
        # A prefix longer than the index's own, and a common word: through its 3-letter stem, read newest first a
        # row at a time, when that finds them all among the first rows it reads (see _SQLITE_STEM_HITS).
        stem = terms.fts5(user.pk, stem=True)
        cursor.execute(_SQLITE_STEM_HITS, [stem, STEM_SCAN_ROWS, f" {terms.words[-1]}", CANDIDATES])
        rows = cursor.fetchall()
        if len(rows) == CANDIDATES:
            return rows
        # Fewer: every match, when the stem (with the other words: a rare word and a common one) has fewer rows
        # than the scan read.
        cursor.execute(
            "SELECT COUNT(*) FROM (SELECT t.rowid FROM chat_searchtext t WHERE chat_searchtext MATCH %s "
            "ORDER BY t.rowid DESC LIMIT %s)",
            [stem, STEM_SCAN_ROWS],
        )
        if cursor.fetchone()[0] < STEM_SCAN_ROWS:
            return rows
    cursor.execute(_SQLITE_HITS, [terms.fts5(user.pk), CANDIDATES])
    return cursor.fetchall()


def _pg_rare_prefix(cursor, terms: Terms) -> bool:
    """Whether the planner estimates the last word, as a prefix, in fewer documents than the other words (all
    of them) and than PG_PREFIX_INDEX_ROWS: then the GIN index is asked for the prefix too (see _PG_WINDOW)."""
    cursor.execute(_PG_ESTIMATES, [" & ".join(terms.words[:-1]), f"{terms.words[-1]}:*"])
    plan = cursor.fetchone()[0]
    if isinstance(plan, str):  # a driver that leaves json undecoded
        plan = json.loads(plan)
    rows = {node.get("Subplan Name"): node["Plan Rows"] for node in plan[0]["Plan"]["Plans"]}
    return rows["CTE prefix"] < min(rows["CTE words"], PG_PREFIX_INDEX_ROWS)


def _hits(user, terms: Terms) -> list[tuple]:
    """(document id, chat id, query id or None, score) of the owner's newest CANDIDATES matches, newest first."""
    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            rows = _sqlite_rows(cursor, user, terms)
            hits = [(i, chat, query, _text_score(terms, fields)) for i, chat, query, *fields in rows]
            return sorted(hits, key=lambda hit: hit[0], reverse=True)
        cursor.execute(
            "SELECT id FROM chat_searchdocument WHERE owner_id = %s ORDER BY id DESC LIMIT 1", [user.pk]
        )
        newest = cursor.fetchone()
        if newest is None:
            return []
        near, far, farthest = (newest[0] - size for size in _PG_WINDOWS)
        tsquery = terms.tsquery()
        indexed = tsquery
        if terms.prefix and len(terms.words) > 1 and not _pg_rare_prefix(cursor, terms):
            indexed = " & ".join(terms.words[:-1])
        window = [user.pk, indexed, tsquery]
        cursor.execute(
            _POSTGRESQL_HITS,
            [
                *(tsquery, *window, near, CANDIDATES),
                *(*window, near, far, CANDIDATES),
                *(*window, far, farthest, CANDIDATES),
                *(*window, farthest, CANDIDATES, CANDIDATES),
            ],
        )
        return sorted(cursor.fetchall(), reverse=True)  # newest first, however the windows' rows came


def _rank(hits: list[tuple]) -> list[tuple]:
    """One (chat id, query id or None) per chat, best first: by its best score, then its newest match (ids as the
    database gave them)."""
    chats = {}  # chat id -> [best score, newest document id, (the shown row's order key), shown query id]
    for doc_id, chat_id, query_id, score in hits:  # newest first
        # The row shown: a turn before the title, then the better score, then the newer.
        key = (query_id is None, -score, -doc_id)
        entry = chats.get(chat_id)
        if entry is None:
            chats[chat_id] = [score, doc_id, key, query_id]
            continue
        entry[0] = max(entry[0], score)
        if key < entry[2]:
            entry[2], entry[3] = key, query_id
    ranked = sorted(chats.items(), key=lambda item: (-item[1][0], -item[1][1]))
    return [(chat_id, entry[3]) for chat_id, entry in ranked]


@dataclass(frozen=True)
class Snippet:
    text: str  # plain text
    html: SafeString  # the same, escaped, with the matching words in <mark>


@dataclass(frozen=True)
class SearchResult:
    chat: Chat
    query_id: uuid.UUID | None  # the matching turn (None: only the title matched)
    matched_in: str  # TITLE, PROMPT or RESPONSE
    title: Snippet
    snippet: Snippet | None

    @property
    def url(self) -> str:
        """The chat's page, opened at the matching turn (on its branch, should that version not be the one shown)."""
        page = _chat_page(self.chat.pk)
        return f"{page}?query={self.query_id}#turn-{self.query_id}" if self.query_id else page

    def as_dict(self) -> dict:
        return {
            "chatId": str(self.chat.pk),
            "title": self.title.text,
            "titleHtml": str(self.title.html),
            "queryId": str(self.query_id) if self.query_id else None,
            "matchedIn": self.matched_in,
            "snippet": self.snippet.text if self.snippet else None,
            "snippetHtml": str(self.snippet.html) if self.snippet else None,
            "url": self.url,
            "bookmarked": self.chat.bookmarked,
            "updatedAt": self.chat.updated_at.isoformat(),
        }


_ANY_CHAT = uuid.UUID(int=0)


@functools.lru_cache(maxsize=16)
def _chat_page_pattern(script_prefix: str) -> str:
    return reverse("chat:chat", args=[_ANY_CHAT])


def _chat_page(chat_id) -> str:
    """reverse("chat:chat", args=[chat_id]), resolved once (per script prefix) rather than once per result."""
    return _chat_page_pattern(get_script_prefix()).replace(str(_ANY_CHAT), str(chat_id))


@dataclass(frozen=True)
class SearchPage:
    results: list[SearchResult]
    next_offset: int | None  # where the next page starts; None: this is the last


def search(user, query: str, offset: int = 0, limit: int = PAGE_SIZE) -> SearchPage:
    """The user's chats matching `query`, best first, `limit` from `offset`. Never raises for what was typed:
    words are extracted from it, and no words is no results."""
    terms = parse_terms(query)
    if terms is None or offset >= CANDIDATES:
        return SearchPage([], None)
    rows = _rank(_hits(user, terms))[offset : offset + limit + 1]
    more = len(rows) > limit
    rows = [(_as_uuid(chat_id), _as_uuid(query_id)) for chat_id, query_id in rows[:limit]]
    # By id alone (an owner filter here would make SQLite scan the owner's every chat), then checked again here:
    # only the caller's listed chats, whatever the SQL above returned.
    chats = {
        chat.pk: chat for chat in _page_chats([chat_id for chat_id, _ in rows]) if chat.owner_id == user.pk
    }
    texts = _page_texts([query_id for chat_id, query_id in rows if query_id and chat_id in chats])
    results = []
    for chat_id, query_id in rows:
        chat = chats.get(chat_id)
        if chat is None:
            continue
        results.append(_result(chat, query_id, texts.get(query_id), terms))
    return SearchPage(results, offset + limit if more else None)


# The page's chats and turns, a row each by primary key, in plain SQL: the ORM's building of two queries cost more
# than the whole ranking of the candidates. A chat is built with only the fields a result shows.
_PAGE_CHAT_FIELDS = ("id", "owner_id", "title", "name", "bookmarked", "updated_at")


def _page_chats(chat_ids) -> list[Chat]:
    if not chat_ids:
        return []
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {', '.join(_PAGE_CHAT_FIELDS)} FROM {Chat._meta.db_table} WHERE NOT unlisted AND id IN "
            f"({', '.join(['%s'] * len(chat_ids))})",
            [_db_uuid(chat_id) for chat_id in chat_ids],
        )
        rows = cursor.fetchall()
    chats = []
    for pk, owner_id, title, name, bookmarked, updated_at in rows:
        if not isinstance(updated_at, datetime.datetime):
            updated_at = datetime.datetime.fromisoformat(updated_at)
        if updated_at.tzinfo is None:  # SQLite: a UTC time, stored naive (USE_TZ)
            updated_at = updated_at.replace(tzinfo=datetime.UTC)
        values = (_as_uuid(pk), owner_id, title, name, bool(bookmarked), updated_at)
        chats.append(Chat.from_db(connection.alias, _PAGE_CHAT_FIELDS, values))
    return chats


def _page_texts(query_ids) -> dict:
    """query id -> (prompt, response)."""
    if not query_ids:
        return {}
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT id, prompt, response FROM {ChatQuery._meta.db_table} WHERE id IN "
            f"({', '.join(['%s'] * len(query_ids))})",
            [_db_uuid(query_id) for query_id in query_ids],
        )
        return {_as_uuid(pk): (prompt, response) for pk, prompt, response in cursor.fetchall()}


def _result(chat: Chat, query_id, texts: tuple[str, str] | None, terms: Terms) -> SearchResult:
    title = highlight(chat.display_name, terms, whole=True)
    if texts is None:
        return SearchResult(chat, None, TITLE, title, None)
    prompt, response = texts
    # The field with the most of the words searched for shows the snippet; the prompt on a tie.
    prompt_hits = _words_found(prompt, terms)
    response_hits = _words_found(response, terms) if prompt_hits < len(terms.words) else 0
    field, text = (PROMPT, prompt) if prompt_hits >= response_hits else (RESPONSE, response)
    return SearchResult(chat, query_id, field, title, highlight(text, terms))


def _words_found(text: str, terms: Terms) -> int:
    if len(terms.words) == 1:  # one word (most searches): whether any token has it
        return int(any(terms.token_matches(token) for token in WORD.findall(text or "")))
    found = set()
    for token in WORD.findall(text or ""):
        for word in _token_words(token):
            found.update(i for i, term in enumerate(terms.words) if word == term)
            if terms.prefix and word.startswith(terms.words[-1]):
                found.add(len(terms.words) - 1)
        if len(found) == len(terms.words):
            break
    return len(found)


def highlight(text: str, terms: Terms, whole: bool = False) -> Snippet:
    """`text` (or, unless `whole`, about SNIPPET_WORDS words of it around the first match) with its matching words
    marked. The text is never trusted as HTML: every piece is escaped, and only our own <mark> tags are added."""
    text = text or ""
    tokens = []  # (start, end, matches) for each word, up to the end of the window
    first_match = None
    for found in WORD.finditer(text):
        matched = terms.token_matches(found.group())
        tokens.append((found.start(), found.end(), matched))
        if matched and first_match is None:
            first_match = len(tokens) - 1
        if not whole and first_match is not None and len(tokens) - first_match > SNIPPET_WORDS:
            break
    if whole or not tokens:
        window, start, end = tokens, 0, len(text)
    else:
        first = max(0, (first_match or 0) - SNIPPET_LEAD_WORDS)
        window = tokens[first : first + SNIPPET_WORDS]
        start = 0 if first == 0 else window[0][0]
        end = window[-1][1] if first + SNIPPET_WORDS < len(tokens) else len(text)
    plain, marked, position = [], [], start
    for token_start, token_end, matched in window:
        gap = _squeeze(text[position:token_start])
        word = text[token_start:token_end]  # letters and digits only (WORD): nothing in it to escape
        plain += [gap, word]
        marked += [html.escape(gap), f"<mark>{word}</mark>" if matched else word]
        position = token_end
    tail = _squeeze(text[position:end])
    plain.append(tail)
    marked.append(html.escape(tail))
    lead, trail = ("…" if start > 0 else ""), ("…" if end < len(text) else "")
    # Safe to show as HTML: built above from escaped pieces and our own <mark> tags only.
    return Snippet(lead + "".join(plain).strip() + trail, mark_safe(lead + "".join(marked).strip() + trail))


_WHITESPACE = re.compile(r"\s+")


def _squeeze(gap: str) -> str:
    """Runs of whitespace (line breaks in a long answer) as one space: a snippet is one line."""
    return gap if gap == " " else _WHITESPACE.sub(" ", gap)
