"""Search over a user's chats: titles (and generated names), prompts and answers.

The index is one row per searchable thing in `chat_searchdocument` (chat.models.SearchDocument): a chat's title and
name (query null), or one query's prompt and answer. Every version of a turn (regenerated, edited) is a query of its
own, so every version is searchable. Each engine keeps the words beside that row, created by migration 0008:

* PostgreSQL: a `document` tsvector column on chat_searchdocument (title weight A, prompt B, answer C), GIN index;
* SQLite: the FTS5 table `chat_searchtext`, whose rowid is the document's id, with an `owner` column (a token per
  user, so a match reads only the caller's postings); a trigger deletes its row with the document's, so every
  cascade (a chat, a query, a user deleted) leaves no words behind.

One write path for both: every mutation of indexed text calls `index_queries` or `index_chats` inside the
transaction that wrote the text (a document is deleted and written again, never patched), so a search run after
the write's commit finds exactly what is stored. Answers are indexed when they end (ResponseWriter.finish,
settle_orphan), not at each flush while they stream; their prompt is indexed from the start. Unlisted chats (the
OpenAI-compatible API's store=false) are never indexed.

Both engines are given the same words: text is split and normalised here (`words`: letters and digits, case- and
accent-folded), so a search finds the same chats on either, and the snippets (`highlight`, in Python from the
stored text, escaped) mark the same words. The database matches and ranks (bm25 / ts_rank); newest first breaks ties.
"""

import html
import re
import unicodedata
import uuid
from dataclasses import dataclass

from django.db import connection
from django.urls import reverse
from django.utils.safestring import SafeString, mark_safe

from chat.models import Chat, ChatQuery, SearchDocument

WORD = re.compile(r"[^\W_]+")
MAX_QUERY_CHARS = 200
MAX_QUERY_TERMS = 8  # more words only narrow a match that is already narrow; they are ignored
MIN_PREFIX_CHARS = 2  # a one-letter last word is matched whole: as a prefix it would match nearly everything
MAX_FIELD_CHARS = 100_000  # indexed per field; PostgreSQL's tsvector is capped at 1 MB
MAX_WORD_CHARS = 100  # longer "words" (base64, hashes run together) are indexed cut to this
PAGE_SIZE = 20
# A match is ranked among the newest CANDIDATES matching rows (most recently written), so a word found in every
# turn (or the prefix "th") costs the same as a rare one: the newest thousands of matches, not all of them.
CANDIDATES = 1000
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

    def fts5(self, owner_id: int | None = None) -> str:
        """The FTS5 MATCH expression: the words in the text columns (and, with `owner_id`, that owner's rows only)."""
        # Each word is letters and digits only, so quoting it can never be FTS5 syntax (no quote can occur).
        phrases = [f'"{word}"' for word in self.words]
        if self.prefix:
            phrases[-1] += "*"
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


def _insert_documents(rows: list[tuple]) -> None:
    """Write documents: (owner id, chat id, query id or None, title, prompt, response), texts as stored (they
    are normalised here). Ids are taken in order, so the newest write has the largest id (the candidates' order)."""
    if not rows:
        return
    table = SearchDocument._meta.db_table
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                "SELECT nextval(pg_get_serial_sequence(%s, 'id')) FROM generate_series(1, %s)", [table, len(rows)]
            )
            ids = [row[0] for row in cursor.fetchall()]
        else:
            cursor.execute(f"SELECT COALESCE(MAX(id), 0) FROM {table}")
            first = cursor.fetchone()[0] + 1
            ids = range(first, first + len(rows))
        documents = [
            (doc_id, *row[:3], *(index_text(text) for text in row[3:])) for doc_id, row in zip(ids, rows, strict=True)
        ]
        if connection.vendor == "postgresql":
            cursor.executemany(
                f"INSERT INTO {table} (id, owner_id, chat_id, query_id, document) VALUES (%s, %s, %s, %s, "
                "setweight(to_tsvector('simple', %s), 'A') || setweight(to_tsvector('simple', %s), 'B') "
                "|| setweight(to_tsvector('simple', %s), 'C'))",
                [(i, owner, _db_uuid(chat), _db_uuid(query), t, p, r) for i, owner, chat, query, t, p, r in documents],
            )
        else:
            cursor.executemany(
                f"INSERT INTO {table} (id, owner_id, chat_id, query_id) VALUES (%s, %s, %s, %s)",
                [(i, owner, _db_uuid(chat), _db_uuid(query)) for i, owner, chat, query, *_ in documents],
            )
            cursor.executemany(
                "INSERT INTO chat_searchtext (rowid, owner, title, prompt, response) VALUES (%s, %s, %s, %s, %s)",
                [(i, f"o{owner}", t, p, r) for i, owner, _, _, t, p, r in documents],
            )


def index_queries(query_ids) -> None:
    """(Re)index these queries' prompts and answers as stored now. Call it in the transaction that wrote them."""
    query_ids = [_as_uuid(query_id) for query_id in query_ids]
    if not query_ids:
        return
    SearchDocument.objects.filter(query_id__in=query_ids).delete()
    rows = ChatQuery.objects.filter(pk__in=query_ids, chat__unlisted=False).values_list(
        "chat__owner_id", "chat_id", "id", "prompt", "response"
    )
    _insert_documents([(owner, chat, query, "", prompt, response) for owner, chat, query, prompt, response in rows])


def index_chats(chat_ids) -> None:
    """(Re)index these chats' titles and names as stored now. Call it in the transaction that wrote them."""
    chat_ids = [_as_uuid(chat_id) for chat_id in chat_ids]
    if not chat_ids:
        return
    SearchDocument.objects.filter(chat_id__in=chat_ids, query__isnull=True).delete()
    rows = Chat.objects.filter(pk__in=chat_ids, unlisted=False).values_list("owner_id", "id", "title", "name")
    _insert_documents([(owner, chat, None, _title_text(title, name), "", "") for owner, chat, title, name in rows])


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
    _insert_documents(
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

# Both engines: the newest CANDIDATES matching documents of the owner (`hits`), ranked (lower score is better),
# then one row per chat: its best score, and its best-scoring turn (the title row only when no turn matched).
_RANKED = """
    ranked AS (
        SELECT h.chat_id, h.query_id, h.score,
               MIN(h.score) OVER (PARTITION BY h.chat_id) AS chat_score,
               ROW_NUMBER() OVER (
                   PARTITION BY h.chat_id ORDER BY CASE WHEN h.query_id IS NULL THEN 1 ELSE 0 END, h.score, h.id DESC
               ) AS place
        FROM scored h
    )
    SELECT r.chat_id, r.query_id, r.chat_score FROM ranked r JOIN chat_chat c ON c.id = r.chat_id
    WHERE r.place = 1 AND c.owner_id = %s AND NOT c.unlisted
    ORDER BY r.chat_score, c.updated_at DESC, c.id
    LIMIT %s OFFSET %s
"""

# Two FTS5 passes. The owner's newest candidates: their `owner` token makes the match read only their postings.
# Then bm25 over the words alone, for those rowids (their range bounds the scan; the unary + keeps SQLite from
# running the match once per rowid): bm25 weighs each phrase of its MATCH by reading that phrase's whole doclist,
# which for the owner token would be every row the user has.
_SQLITE_SEARCH = (
    """
    WITH candidates AS MATERIALIZED (
        SELECT t.rowid AS id FROM chat_searchtext t WHERE chat_searchtext MATCH %s ORDER BY t.rowid DESC LIMIT %s
    ),
    hits AS (
        SELECT t.rowid AS id, bm25(chat_searchtext, 0.0, 4.0, 2.0, 1.0) AS score
        FROM chat_searchtext t WHERE chat_searchtext MATCH %s
        AND t.rowid >= (SELECT MIN(id) FROM candidates) AND t.rowid <= (SELECT MAX(id) FROM candidates)
        AND +t.rowid IN (SELECT id FROM candidates)
    ),
    scored AS (
        SELECT h.id, d.chat_id, d.query_id, h.score FROM hits h JOIN chat_searchdocument d ON d.id = h.id
    ),"""
    + _RANKED
)

# ts_rank is computed outside the LIMIT, so only for the candidates; normalisation 1: long answers do not win by
# length alone.
_POSTGRESQL_SEARCH = (
    """
    WITH hits AS (
        SELECT d.id, d.chat_id, d.query_id, d.document FROM chat_searchdocument d
        WHERE d.owner_id = %s AND d.document @@ to_tsquery('simple', %s) ORDER BY d.id DESC LIMIT %s
    ),
    scored AS (
        SELECT h.id, h.chat_id, h.query_id, -ts_rank(h.document, to_tsquery('simple', %s), 1) AS score FROM hits h
    ),"""
    + _RANKED
)


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
        page = reverse("chat:chat", args=[self.chat.pk])
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
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            tsquery = terms.tsquery()
            params = [user.pk, tsquery, CANDIDATES, tsquery, user.pk, limit + 1, offset]
            cursor.execute(_POSTGRESQL_SEARCH, params)
        else:
            params = [terms.fts5(user.pk), CANDIDATES, terms.fts5(), user.pk, limit + 1, offset]
            cursor.execute(_SQLITE_SEARCH, params)
        rows = [(_as_uuid(chat_id), _as_uuid(query_id)) for chat_id, query_id, _ in cursor.fetchall()]
    more = len(rows) > limit
    rows = rows[:limit]
    # By id alone (an owner filter here would make SQLite scan the owner's every chat), then checked again here:
    # only the caller's listed chats, whatever the SQL above returned.
    fields = ("id", "owner_id", "unlisted", "title", "name", "bookmarked", "updated_at")
    chats = {
        pk: chat
        for pk, chat in Chat.objects.only(*fields).in_bulk([chat_id for chat_id, _ in rows]).items()
        if chat.owner_id == user.pk and not chat.unlisted
    }
    queries = ChatQuery.objects.only("id", "chat_id", "prompt", "response").in_bulk(
        [query_id for chat_id, query_id in rows if query_id and chat_id in chats]
    )
    results = []
    for chat_id, query_id in rows:
        chat = chats.get(chat_id)
        if chat is None:
            continue
        results.append(_result(chat, queries.get(query_id), terms))
    return SearchPage(results, offset + limit if more else None)


def _result(chat: Chat, query: ChatQuery | None, terms: Terms) -> SearchResult:
    title = highlight(chat.display_name, terms, whole=True)
    if query is None:
        return SearchResult(chat, None, TITLE, title, None)
    # The field with the most of the words searched for shows the snippet; the prompt on a tie.
    prompt_hits = _words_found(query.prompt, terms)
    response_hits = _words_found(query.response, terms) if prompt_hits < len(terms.words) else 0
    field, text = (PROMPT, query.prompt) if prompt_hits >= response_hits else (RESPONSE, query.response)
    return SearchResult(chat, query.pk, field, title, highlight(text, terms))


def _words_found(text: str, terms: Terms) -> int:
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
        matched = any(terms.matches(word) for word in _token_words(found.group()))
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
        word = text[token_start:token_end]
        plain += [gap, word]
        marked += [html.escape(gap), f"<mark>{html.escape(word)}</mark>" if matched else html.escape(word)]
        position = token_end
    tail = _squeeze(text[position:end])
    plain.append(tail)
    marked.append(html.escape(tail))
    lead, trail = ("…" if start > 0 else ""), ("…" if end < len(text) else "")
    # Safe to show as HTML: built above from escaped pieces and our own <mark> tags only.
    return Snippet(lead + "".join(plain).strip() + trail, mark_safe(lead + "".join(marked).strip() + trail))


def _squeeze(gap: str) -> str:
    """Runs of whitespace (line breaks in a long answer) as one space: a snippet is one line."""
    return re.sub(r"\s+", " ", gap)
