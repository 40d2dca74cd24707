"""The library's search index: a projection of the KV bucket impromptu-library into SQLite FTS5, kept by each process
that serves search. Rebuilt from KV at start and kept current by following the bucket (puts, deletes and purges of
`entry.*`, `article.*` and `text.*` from any worker on any machine).

Reads: the bucket's stream KV_impromptu-library through one ordered push consumer of our own (last revision of each
key, then every change as it happens), deleted at stop. Writes: nothing on the bus; an SQLite database of its own
(in memory by default; `storage="file"` puts it in a temporary file removed at stop).

What is searchable, per item, in columns weighted by COLUMN_WEIGHTS: title, tagline, tags (and topics), description,
credits (article title and author, site, sharer), transcript, article text. Nothing else: provenance internals
(rule, session and correlation ids, URLs, facilitators) and field names are never text, so they match nothing.
Facilitators are a facet (a filter), not text.

The projection keeps the search text of each item (`text.<id>`) beside its record, so a change of either re-indexes
the item from what it holds: no read from KV per change. Queries and writes run in a worker thread
(asyncio.to_thread) on one connection guarded by a lock; a write transaction is bounded (WRITE_BATCH_*) so a search
waits at most for one of them.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
import sqlite3
import tempfile
import threading
import time
from array import array
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Literal

import structlog
from nats.aio.msg import Msg
from nats.js import api
from nats.js.kv import KeyValue
from pydantic import ValidationError
from slugify import slugify

from pipeline import bus
from pipeline.archive.query import ParsedQuery, parse
from pipeline.domain.catalog import ARTICLE, ENTRY, TEXT, ArticleItem, LibraryRecord, SearchText

log = structlog.get_logger("pipeline.archive")

FACETS = ("tag", "topic", "author", "sharer", "facilitator", "year", "kind")
Sort = Literal["relevance", "newest"]
ItemKind = Literal["recording", "article"]
Storage = Literal["memory", "file"]

# bm25 weights, in the order of the FTS columns: title > tagline > tags > description > credits > transcript > article
COLUMNS = ("title", "tagline", "tags", "description", "credits", "transcript", "article")
COLUMN_WEIGHTS = (10.0, 6.0, 4.0, 3.0, 2.0, 1.0, 0.5)
TOKENIZER = "porter unicode61 remove_diacritics 2"  # Geneve finds Genève, leaders finds leader

MAX_PER_PAGE = 100
MAX_FILTER_VALUES = 20  # per facet
MAX_FACET_VALUES = 100  # listed per facet, most first
SNIPPET_TOKENS = 24
MARK_START, MARK_END, ELLIPSIS = "\x02", "\x03", "…"

# The transcript column holds the cues' lines joined by newlines, and `starts` their start times (packed doubles):
# which line FTS5 highlights gives the moment of a hit, with the index's own stemming and folding.
MAX_TEXT_CHARS = 2_000_000  # per transcript and per article text: what a person writes is bounded
MOMENT_WINDOW_CHARS = 2_000  # a moment is looked for in the transcript's opening lines first (see _moments)
SHORT_COLUMNS = COLUMNS.index("transcript")  # title .. credits: short enough to highlight whole
_SHORT = ", ".join(COLUMNS[:SHORT_COLUMNS])

WRITE_BATCH_MESSAGES = 500
WRITE_BATCH_BYTES = 4 * 1024 * 1024
HEARTBEAT_SECONDS = 1.0  # an ordered consumer missing two heartbeats is re-created where it was (server restart)
CONSUMER_INACTIVE_SECONDS = 10.0  # a killed process's consumer goes this long after, not nats-py's default

# Control characters out of indexed text: the snippet markers are ours alone, and a transcript line is one line.
_CONTROLS = [*range(0x00, 0x09), *range(0x0B, 0x20), 0x7F]
_CLEAN = str.maketrans(dict.fromkeys(_CONTROLS, " "))
_ONE_LINE = str.maketrans(dict.fromkeys([*_CONTROLS, 0x0A, 0x2028, 0x2029], " "))
_MARKED = re.compile("\x02([^\x03]*)\x03")


@dataclass(frozen=True)
class SearchQuery:
    q: str = ""  # words, "a phrase", -excluded; never a syntax error
    filters: dict[str, list[str]] = field(default_factory=dict)  # facet -> values (AND across facets, OR within one)
    sort: Sort = "relevance"  # "relevance" with no words means newest
    page: int = 1
    per_page: int = 20
    include_internal: bool = False  # logged-in readers see internal entries too
    include_unlisted: bool = False  # facilitators see unpublished entries and taken-down articles too
    kinds: tuple[ItemKind, ...] = ("recording", "article")


@dataclass(frozen=True)
class Hit:
    kind: ItemKind
    item_id: str  # entry_id or article_id
    score: float
    snippet: str  # plain text (the page escapes it); matched words between \x02 and \x03
    moment: float | None  # recordings: seconds of the best-matching transcript line, when the match is there
    record: LibraryRecord | None  # kind == "recording"
    article: ArticleItem | None  # kind == "article"


@dataclass(frozen=True)
class SearchPage:
    query: SearchQuery
    total: int
    hits: list[Hit]
    facets: dict[str, list[tuple[str, int]]]  # facet -> (value, count) over every match, most first
    page: int
    pages: int


@dataclass(frozen=True)
class KeyChange:
    """One change of a key of the bucket: its value (None: deleted or purged), revision and time."""

    key: str
    value: bytes | None
    revision: int
    at: datetime | None = None


def facet_slug(value: str) -> str:
    """How facet values are compared: `Café Zürich`, `cafe zurich` and `cafe-zurich` are one tag."""
    return slugify(value) or value.strip().casefold()


class _FacetSets:
    """Which items have each facet value, as bitsets (a Python int whose bit n is items.id n): counting a facet over
    the matches is one AND and a popcount per value, not a GROUP BY over every match's facet rows (~100,000 rows for
    a common word in 10,000 entries). Kept in step with the facets table by each write; after a rolled-back write
    they are `stale` and read again from the table."""

    def __init__(self) -> None:
        self.bits: dict[str, dict[str, dict[str, int]]] = {facet: {} for facet in FACETS}  # facet -> slug -> value
        self.stale = False

    def load(self, db: sqlite3.Connection) -> None:
        members: dict[tuple[str, str, str], list[int]] = {}
        for facet, slug, value, item in db.execute("SELECT facet, slug, value, item FROM facets"):
            members.setdefault((facet, slug, value), []).append(item)
        self.bits = {facet: {} for facet in FACETS}
        for (facet, slug, value), items in members.items():
            self.bits.setdefault(facet, {}).setdefault(slug, {})[value] = _bitset(items)
        self.stale = False

    def change(self, item: int, rows: Iterable[tuple[str, str, str]], present: bool) -> None:
        bit = 1 << item
        for facet, slug, value in rows:
            variants = self.bits.setdefault(facet, {}).setdefault(slug, {})
            if present:
                variants[value] = variants.get(value, 0) | bit
                continue
            left = variants.get(value, 0) & ~bit
            if left:
                variants[value] = left
            else:
                variants.pop(value, None)
                if not variants:
                    del self.bits[facet][slug]

    def chosen(self, filters: Mapping[str, list[str]]) -> dict[str, int]:
        """Per filtered facet, the items having any of its chosen values."""
        chosen = {}
        for facet, slugs in filters.items():
            bits = 0
            for slug in slugs:
                for variant in self.bits.get(facet, {}).get(slug, {}).values():
                    bits |= variant
            chosen[facet] = bits
        return chosen

    def counts(self, matched: int, chosen: Mapping[str, int]) -> dict[str, list[tuple[str, int]]]:
        """(value, count) per facet over the matched items, most first. A facet with a filter of its own is counted
        as if that filter were not set: its other values are what choosing them too (OR) would add. A slug's value
        is shown as the first (by sort order) of its spellings among the matches."""
        counts: dict[str, list[tuple[str, int]]] = {}
        for facet in FACETS:
            base = matched
            for other, bits in chosen.items():
                if other != facet:
                    base &= bits
            values = []
            if base:
                for variants in self.bits.get(facet, {}).values():
                    count, shown = 0, None
                    for value, bits in variants.items():
                        found = (base & bits).bit_count()
                        if found:
                            count += found
                            shown = value if shown is None or value < shown else shown
                    if shown is not None:
                        values.append((shown, count))
            counts[facet] = sorted(values, key=lambda vc: (-vc[1], vc[0]))[:MAX_FACET_VALUES]
        return counts


class _Window:
    """How many characters of a transcript FTS5 reads back (the SQL function transcript_window())."""

    def __init__(self) -> None:
        self.chars = MAX_TEXT_CHARS + 1

    def get(self) -> int:
        return self.chars


def _bitset(items: Iterable[int]) -> int:
    buffer = bytearray()
    for item in items:
        byte = item >> 3
        if byte >= len(buffer):
            buffer.extend(bytes(byte + 1 - len(buffer) + len(buffer) // 2))
        buffer[byte] |= 1 << (item & 7)
    return int.from_bytes(buffer, "little")


class LibraryIndex:
    """One per process that serves search. `start(kv)` rebuilds from the bucket and follows it; `stop()` deletes
    the server-side consumer it used. `search` never blocks the event loop for long (queries are bounded).

    Without NATS (tests, tools), `add`/`apply` put records into the index directly; `stop()` still closes it."""

    def __init__(self, *, storage: Storage = "memory") -> None:
        self._storage = storage
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        self._path: Path | None = None
        self._kv: KeyValue | None = None
        self._subscription: object | None = None
        self._follower: asyncio.Task[None] | None = None
        self._caught_up = asyncio.Event()
        self._position = 0  # stream sequence of the last change applied
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._updated: datetime | None = None
        self._facets = _FacetSets()
        self._window = _Window()  # how much of a transcript highlight() reads

    # --- lifecycle -------------------------------------------------------------------------------------------

    async def start(self, kv: KeyValue) -> None:
        started = time.monotonic()
        self._open()
        self._kv = kv
        js, stream, prefix = kv._js, kv._stream, kv._pre  # nats-py keeps these private (see pipeline/stores.py)
        config = api.ConsumerConfig(
            deliver_policy=api.DeliverPolicy.LAST_PER_SUBJECT,
            filter_subjects=[prefix + ENTRY + ">", prefix + ARTICLE + ">", prefix + TEXT + ">"],
            inactive_threshold=CONSUMER_INACTIVE_SECONDS,
        )
        subscription = await js.subscribe(
            prefix + ENTRY + ">",
            stream=stream,
            ordered_consumer=True,
            config=config,
            idle_heartbeat=HEARTBEAT_SECONDS,
        )
        self._subscription = subscription
        info = await subscription.consumer_info()
        if not info.num_pending and not (info.delivered and info.delivered.stream_seq):
            self._caught_up.set()  # an empty bucket: nothing will come until something changes
        self._follower = asyncio.create_task(self._follow(subscription), name="library-index")
        caught_up = asyncio.create_task(self._caught_up.wait())
        await asyncio.wait({caught_up, self._follower}, return_when=asyncio.FIRST_COMPLETED)
        if not caught_up.done():
            caught_up.cancel()
            await self.stop()
            raise RuntimeError("the library index stopped before it caught up with the bucket")
        log.info(
            "library.index_started",
            items=await asyncio.to_thread(self._count),
            seconds=round(time.monotonic() - started, 3),
            storage=self._storage,
        )

    async def stop(self) -> None:
        if self._follower is not None:
            self._follower.cancel()
            try:
                await self._follower
            except (asyncio.CancelledError, Exception):
                pass
            self._follower = None
        if self._subscription is not None and self._kv is not None:
            await bus.close_reader(self._kv._js, self._subscription)  # type: ignore[arg-type]
            self._subscription = None
        for _, waiter in self._waiters:
            if not waiter.done():
                waiter.cancel()
        self._waiters.clear()
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None
            if self._path is not None:
                self._path.unlink(missing_ok=True)
                self._path = None

    async def wait_for(self, key: str, revision: int, timeout: float = 5.0) -> bool:
        """Wait until the index has applied `key` at `revision` or later (a page shown right after an edit).

        Changes arrive in the order of the bucket's stream, so once the index caught up, every key of ours at a
        revision at or below the last one applied is current."""
        if self._applied(revision):
            return True
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((revision, waiter))
        try:
            await asyncio.wait_for(asyncio.shield(waiter), timeout)
            return True
        except TimeoutError:
            return self._applied(revision)
        finally:
            self._waiters = [(r, w) for r, w in self._waiters if w is not waiter]

    async def search(self, query: SearchQuery) -> SearchPage:
        return await asyncio.to_thread(self._search, query)

    def updated_at(self) -> datetime | None:
        """When the newest indexed item changed (feeds' <updated>)."""
        return self._updated

    # --- putting records in without NATS (tests, tools) ------------------------------------------------------

    async def add(self, *items: LibraryRecord | ArticleItem, texts: Mapping[str, SearchText] | None = None) -> None:
        """Index records, articles and search texts directly, as if they had been put in the bucket."""
        changes = [
            KeyChange(ENTRY + item.entry.entry_id, item.model_dump_json().encode(), 0)
            if isinstance(item, LibraryRecord)
            else KeyChange(ARTICLE + item.article_id, item.model_dump_json().encode(), 0)
            for item in items
        ]
        changes += [
            KeyChange(TEXT + item_id, text.model_dump_json().encode(), 0) for item_id, text in (texts or {}).items()
        ]
        await self.apply(changes)

    async def apply(self, changes: Sequence[KeyChange]) -> None:
        self._open()
        await asyncio.to_thread(self._apply, changes)
        revisions = [change.revision for change in changes]
        if revisions:
            self._position = max(self._position, *revisions)
        self._wake_waiters()

    # --- following the bucket --------------------------------------------------------------------------------

    async def _follow(self, subscription: object) -> None:
        sub = subscription  # nats.js.JetStreamContext.PushSubscription
        while True:
            msg: Msg = await sub.next_msg(timeout=None)  # type: ignore[attr-defined]
            batch, size = [msg], len(msg.data)
            while sub.pending_msgs and len(batch) < WRITE_BATCH_MESSAGES and size < WRITE_BATCH_BYTES:  # type: ignore[attr-defined]
                msg = await sub.next_msg(timeout=None)  # type: ignore[attr-defined]
                batch.append(msg)
                size += len(msg.data)
            changes = [_change(m, self._kv._pre) for m in batch if m.metadata.sequence.stream > self._position]  # type: ignore[union-attr]
            try:
                await self.apply(changes)
            except Exception as error:  # a bug or a broken database must not stop following: say it, carry on
                log.error("library.index_failed", keys=len(changes), error=f"{type(error).__name__}: {error}")
                self._position = max(self._position, batch[-1].metadata.sequence.stream)
            if batch[-1].metadata.num_pending == 0:
                self._caught_up.set()
            self._wake_waiters()

    def _applied(self, revision: int) -> bool:
        return self._caught_up.is_set() and self._position >= revision

    def _wake_waiters(self) -> None:
        for revision, waiter in self._waiters:
            if not waiter.done() and self._applied(revision):
                waiter.set_result(None)

    # --- the database (called in a worker thread, under the lock) --------------------------------------------

    def _open(self) -> None:
        with self._lock:
            if self._db is not None:
                return
            if self._storage == "file":
                handle, name = tempfile.mkstemp(prefix="impromptu-library-", suffix=".sqlite3")
                os.close(handle)
                self._path = Path(name)
                target = name
            else:
                target = ":memory:"
            db = sqlite3.connect(target, check_same_thread=False, isolation_level=None)
            db.create_function("transcript_window", 0, self._window.get)
            db.executescript(_SCHEMA)
            if self._storage == "file":
                db.executescript("PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF; PRAGMA cache_size=-4096;")
            self._db = db
            self._facets = _FacetSets()

    def _count(self) -> int:
        with self._lock:
            assert self._db is not None
            return int(self._db.execute("SELECT count(*) FROM items").fetchone()[0])

    def _apply(self, changes: Iterable[KeyChange]) -> None:
        with self._lock:
            db = self._db
            if db is None:
                return
            db.execute("BEGIN")
            try:
                for change in changes:
                    self._apply_one(db, change)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                self._facets.stale = True
                raise

    def _apply_one(self, db: sqlite3.Connection, change: KeyChange) -> None:
        prefix, _, item_id = change.key.partition(".")
        try:
            if prefix + "." == TEXT:
                text = SearchText.model_validate_json(change.value) if change.value else None
                _put_text(db, item_id, text)
            elif prefix + "." == ENTRY:
                record = LibraryRecord.model_validate_json(change.value) if change.value else None
                _put_item(db, self._facets, "recording", item_id, record)
            elif prefix + "." == ARTICLE:
                article = ArticleItem.model_validate_json(change.value) if change.value else None
                _put_item(db, self._facets, "article", item_id, article)
            else:
                return
        except ValidationError as error:  # someone put what is not a record there: the item stays as it was
            log.warning("library.index_skipped", key=change.key, revision=change.revision, reason=str(error)[:300])
            return
        changed = change.at or (_changed_at(change.value, prefix) if change.value else None)
        if changed is not None and (self._updated is None or changed > self._updated):
            self._updated = changed

    def _search(self, query: SearchQuery) -> SearchPage:
        parsed = parse(query.q)
        filters = _bounded_filters(query.filters)
        per_page = min(max(query.per_page, 1), MAX_PER_PAGE)
        page = max(query.page, 1)
        with self._lock:
            db = self._db
            if db is None:
                return SearchPage(query, 0, [], {facet: [] for facet in FACETS}, page, 0)
            if self._facets.stale:
                self._facets.load(db)
            _collect_matches(db, parsed, query)
            matched_before_filters = _bitset(row[0] for row in db.execute("SELECT id FROM m"))
            chosen = self._facets.chosen(filters)
            matched = matched_before_filters
            for bits in chosen.values():
                matched &= bits
            total = matched.bit_count()
            newest = query.sort == "newest" or parsed.match() is None
            rows = _page_rows(db, filters, newest, per_page, (page - 1) * per_page)
            facets = self._facets.counts(matched_before_filters, chosen)
            hits = _hits(db, self._window, parsed, rows)
        return SearchPage(query, total, hits, facets, page, math.ceil(total / per_page))


_SCHEMA = f"""
PRAGMA temp_store = MEMORY;
CREATE TABLE items(
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    item_id TEXT NOT NULL,
    listed INTEGER NOT NULL,     -- published record, listed article
    internal INTEGER NOT NULL,
    at REAL NOT NULL,            -- when it took place (session) or was first shared (article): "newest"
    doc TEXT NOT NULL,           -- the record or article as JSON, what a hit carries
    title TEXT NOT NULL, tagline TEXT NOT NULL, tags TEXT NOT NULL, description TEXT NOT NULL, credits TEXT NOT NULL,
    UNIQUE(kind, item_id)
);
CREATE INDEX items_by_item ON items(item_id);
CREATE TABLE texts(item_id TEXT PRIMARY KEY, transcript TEXT NOT NULL, starts BLOB NOT NULL, article TEXT NOT NULL);
CREATE TABLE facets(facet TEXT NOT NULL, slug TEXT NOT NULL, item INTEGER NOT NULL, value TEXT NOT NULL,
                    PRIMARY KEY(facet, slug, item)) WITHOUT ROWID;
CREATE INDEX facets_by_item ON facets(item);
CREATE VIEW items_text AS
    SELECT i.id AS id, i.title AS title, i.tagline AS tagline, i.tags AS tags, i.description AS description,
           i.credits AS credits, coalesce(t.transcript, '') AS transcript, coalesce(t.article, '') AS article
    FROM items i LEFT JOIN texts t ON t.item_id = i.item_id;
-- What FTS5 reads back for highlight() and snippet(): the transcript only up to transcript_window() characters
-- (positions of a prefix are those of the whole), so finding a moment near the start does not tokenize it all.
CREATE VIEW docs_source AS
    SELECT id, title, tagline, tags, description, credits, substr(transcript, 1, transcript_window()) AS transcript,
           article
    FROM items_text;
CREATE VIRTUAL TABLE docs USING fts5({", ".join(COLUMNS)}, content='docs_source', content_rowid='id',
                                     tokenize='{TOKENIZER}');
-- The short fields again, on their own: a query of stop words only is ranked there, without reading the long texts.
CREATE VIRTUAL TABLE short_docs USING fts5({", ".join(COLUMNS[:SHORT_COLUMNS])}, content='items', content_rowid='id',
                                           tokenize='{TOKENIZER}');
CREATE TEMP TABLE m(id INTEGER PRIMARY KEY, score REAL NOT NULL, at REAL NOT NULL);
"""


def _change(msg: Msg, prefix: str) -> KeyChange:
    deleted = (msg.headers or {}).get("KV-Operation") in ("DEL", "PURGE")
    return KeyChange(
        key=msg.subject.removeprefix(prefix),
        value=None if deleted or not msg.data else msg.data,
        revision=msg.metadata.sequence.stream,
        at=msg.metadata.timestamp,
    )


def _changed_at(value: bytes, prefix: str) -> datetime | None:
    """Without the bus's time (records added directly): the record's last change, the article's first share."""
    try:
        body = json.loads(value)
        if prefix + "." == ENTRY:
            history = body.get("history") or []
            stamp = history[-1]["at"] if history else body["entry"]["created_at"]
        elif prefix + "." == ARTICLE:
            stamp = body["first_shared_at"]
        else:
            return None
        return datetime.fromisoformat(stamp)
    except (ValueError, KeyError, TypeError, IndexError):
        return None


def _clean(text: str) -> str:
    return text.translate(_CLEAN)


def _line(text: str) -> str:
    return text.translate(_ONE_LINE)


def _put_item(
    db: sqlite3.Connection,
    facets: _FacetSets,
    kind: ItemKind,
    item_id: str,
    item: LibraryRecord | ArticleItem | None,
) -> None:
    row = db.execute("SELECT id FROM items WHERE kind = ? AND item_id = ?", (kind, item_id)).fetchone()
    if row is not None:
        _unindex(db, row[0])
        facets.change(row[0], db.execute("SELECT facet, slug, value FROM facets WHERE item = ?", (row[0],)), False)
        db.execute("DELETE FROM facets WHERE item = ?", (row[0],))
    if item is None:
        if row is not None:
            db.execute("DELETE FROM items WHERE id = ?", (row[0],))
        return
    fields = _item_fields(item)
    if row is None:
        rowid = db.execute(
            "INSERT INTO items(kind, item_id, listed, internal, at, doc, title, tagline, tags, description, credits) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (kind, item_id, *fields),
        ).lastrowid
        assert rowid is not None
    else:
        rowid = row[0]
        db.execute(
            "UPDATE items SET listed = ?, internal = ?, at = ?, doc = ?, title = ?, tagline = ?, tags = ?, "
            "description = ?, credits = ? WHERE id = ?",
            (*fields, rowid),
        )
    rows: dict[tuple[str, str], str] = {}
    for facet, value in _facet_values(item):
        if value.strip():
            rows.setdefault((facet, facet_slug(value)), value)  # one value per slug and item: the first
    db.executemany(
        "INSERT INTO facets(facet, slug, item, value) VALUES (?, ?, ?, ?)",
        [(facet, slug, rowid, value) for (facet, slug), value in rows.items()],
    )
    facets.change(rowid, [(facet, slug, value) for (facet, slug), value in rows.items()], True)
    _index(db, rowid)


def _put_text(db: sqlite3.Connection, item_id: str, text: SearchText | None) -> None:
    rowids = [row[0] for row in db.execute("SELECT id FROM items WHERE item_id = ?", (item_id,))]
    for rowid in rowids:
        _unindex(db, rowid)
    if text is None:
        db.execute("DELETE FROM texts WHERE item_id = ?", (item_id,))
    else:
        lines, starts, size = [], array("d"), 0
        for cue in text.cues:
            line = _line(cue.text)
            size += len(line) + 1
            if size > MAX_TEXT_CHARS:
                break
            lines.append(line)
            starts.append(cue.start)
        db.execute(
            "INSERT OR REPLACE INTO texts(item_id, transcript, starts, article) VALUES (?, ?, ?, ?)",
            (item_id, "\n".join(lines), starts.tobytes(), _clean(text.article_text[:MAX_TEXT_CHARS])),
        )
    for rowid in rowids:
        _index(db, rowid)


def _index(db: sqlite3.Connection, rowid: int) -> None:
    row = db.execute(f"SELECT {', '.join(COLUMNS)} FROM items_text WHERE id = ?", (rowid,)).fetchone()
    db.execute(f"INSERT INTO docs(rowid, {', '.join(COLUMNS)}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", (rowid, *row))
    db.execute(f"INSERT INTO short_docs(rowid, {_SHORT}) VALUES (?, ?, ?, ?, ?, ?)", (rowid, *row[:SHORT_COLUMNS]))


def _unindex(db: sqlite3.Connection, rowid: int) -> None:
    """Take an item out of the FTS table with exactly the values it was indexed with (what an external-content FTS5
    table needs), read from its source before that changes."""
    row = db.execute(f"SELECT {', '.join(COLUMNS)} FROM items_text WHERE id = ?", (rowid,)).fetchone()
    if row is None:
        return
    db.execute(
        f"INSERT INTO docs(docs, rowid, {', '.join(COLUMNS)}) VALUES ('delete', ?, ?, ?, ?, ?, ?, ?, ?)", (rowid, *row)
    )
    db.execute(
        f"INSERT INTO short_docs(short_docs, rowid, {_SHORT}) VALUES ('delete', ?, ?, ?, ?, ?, ?)",
        (rowid, *row[:SHORT_COLUMNS]),
    )


def _item_fields(item: LibraryRecord | ArticleItem) -> tuple[int, int, float, str, str, str, str, str, str]:
    """(listed, internal, at, doc, title, tagline, tags, description, credits): only what a reader sees."""
    if isinstance(item, LibraryRecord):
        entry, source = item.entry, item.entry.provenance
        credits = [source.article_title, source.article_author or "", source.site_name or "", source.shared_by]
        return (
            int(item.published),
            int(entry.visibility == "internal"),
            entry.started_at.timestamp(),
            item.model_dump_json(),
            _line(entry.title),
            _line(entry.tagline),
            _line(", ".join([*entry.tags, *entry.topics])),
            _clean(entry.description),
            _line(", ".join(c for c in credits if c)),
        )
    credits = [item.author or "", item.site_name or "", item.shared_by]
    return (
        int(item.listed),
        int(item.visibility == "internal"),
        item.first_shared_at.timestamp(),
        item.model_dump_json(),
        _line(item.title),
        _line(item.tagline),
        _line(", ".join([*item.key_phrases, *item.topics])),
        _clean(item.summary),
        _line(", ".join(c for c in credits if c)),
    )


def _facet_values(item: LibraryRecord | ArticleItem) -> list[tuple[str, str]]:
    if isinstance(item, LibraryRecord):
        entry, source = item.entry, item.entry.provenance
        values = [("tag", tag) for tag in entry.tags] + [("topic", topic) for topic in entry.topics]
        values += [("author", source.article_author or ""), ("sharer", source.shared_by)]
        values += [("facilitator", source.host or ""), ("facilitator", source.approved_by or "")]
        return [*values, ("year", str(entry.started_at.year)), ("kind", "recording")]
    values = [("topic", topic) for topic in item.topics]
    values += [("author", item.author or ""), ("sharer", item.shared_by)]
    return [*values, ("year", str(item.first_shared_at.year)), ("kind", "article")]


def _bounded_filters(filters: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    """Known facets only, at most MAX_FILTER_VALUES values each, compared by slug."""
    bounded: dict[str, list[str]] = {}
    for facet, values in filters.items():
        if facet not in FACETS or isinstance(values, str):
            continue
        slugs = list(dict.fromkeys(facet_slug(str(value)[:200]) for value in values[:MAX_FILTER_VALUES]))
        if slugs:
            bounded[facet] = slugs
    return bounded


def _filter_clause(filters: Mapping[str, list[str]], leave_out: str | None = None) -> tuple[str, list[object]]:
    clauses: list[str] = []
    arguments: list[object] = []
    for facet, slugs in filters.items():
        if facet == leave_out:
            continue
        marks = ", ".join("?" * len(slugs))
        clauses.append(f" AND m.id IN (SELECT item FROM facets WHERE facet = ? AND slug IN ({marks}))")
        arguments += [facet, *slugs]
    return "".join(clauses), arguments


def _collect_matches(db: sqlite3.Connection, parsed: ParsedQuery, query: SearchQuery) -> None:
    """Every item the words and the reader's view allow (not yet the facet filters) into the temp table m."""
    db.execute("DELETE FROM m")
    scope: list[str] = []
    arguments: list[object] = []
    if not query.include_unlisted:
        scope.append("i.listed = 1")
    if not query.include_internal:
        scope.append("i.internal = 0")
    kinds = [kind for kind in query.kinds if kind in ("recording", "article")]
    scope.append(f"i.kind IN ({', '.join('?' * len(kinds))})" if kinds else "0")
    arguments += kinds
    visible = " AND ".join(scope)
    match = parsed.match()
    if match is not None and parsed.short_only:  # stop words only: ranked in the short fields, not the long texts
        weights = ", ".join(map(str, COLUMN_WEIGHTS[:SHORT_COLUMNS]))
        excluded = parsed.excluded()
        if excluded is not None:
            visible += " AND i.id NOT IN (SELECT rowid FROM docs WHERE docs MATCH ?)"
            arguments.append(excluded)
        db.execute(
            f"INSERT INTO m(id, score, at) SELECT short_docs.rowid, bm25(short_docs, {weights}), i.at FROM short_docs "
            f"JOIN items i ON i.id = short_docs.rowid WHERE short_docs MATCH ? AND {visible}",
            [" AND ".join(parsed.words), *arguments],
        )
        return
    if match is not None:
        weights = ", ".join(map(str, COLUMN_WEIGHTS))
        db.execute(
            f"INSERT INTO m(id, score, at) SELECT docs.rowid, bm25(docs, {weights}), i.at FROM docs "
            f"JOIN items i ON i.id = docs.rowid WHERE docs MATCH ? AND {visible}",
            [match, *arguments],
        )
        return
    excluded = parsed.excluded()
    if excluded is not None:
        visible += " AND i.id NOT IN (SELECT rowid FROM docs WHERE docs MATCH ?)"
        arguments.append(excluded)
    db.execute(f"INSERT INTO m(id, score, at) SELECT i.id, 0, i.at FROM items i WHERE {visible}", arguments)


def _page_rows(
    db: sqlite3.Connection, filters: Mapping[str, list[str]], newest: bool, limit: int, offset: int
) -> list[tuple[int, float, ItemKind, str, str, str]]:
    where, arguments = _filter_clause(filters)
    order = "m.at DESC, m.id DESC" if newest else "m.score, m.at DESC, m.id DESC"
    return db.execute(
        f"SELECT m.id, m.score, i.kind, i.item_id, i.doc, i.tagline FROM m JOIN items i ON i.id = m.id "
        f"WHERE 1 {where} ORDER BY {order} LIMIT ? OFFSET ?",
        [*arguments, limit, offset],
    ).fetchall()


def _hits(
    db: sqlite3.Connection,
    window: _Window,
    parsed: ParsedQuery,
    rows: list[tuple[int, float, ItemKind, str, str, str]],
) -> list[Hit]:
    """The page's hits: the record or article, a snippet, and for a recording whose transcript matched, the line that
    matched best as the snippet and its start as the moment. Only the page's rows are read, and of each only what it
    needs: the transcript's opening lines when they hold the words, the short fields, the article text."""
    match = parsed.match()
    snippets: dict[int, str] = {}
    moments: dict[int, float] = {}
    if match is not None and rows:
        recordings = [row[0] for row in rows if row[2] == "recording"]
        if recordings and not parsed.short_only:  # stop words only are found in the short fields
            for rowid, (moment, line) in _moments(db, window, parsed, recordings).items():
                moments[rowid] = moment
                snippets[rowid] = _around_marks(line)
        rest = [row[0] for row in rows if row[0] not in snippets]
        if rest:
            snippets.update(_short_snippets(db, match, rest))
        for column in (COLUMNS.index("article"), -1):  # the article text, then whatever matched
            rest = [row[0] for row in rows if row[0] not in snippets]
            if not rest:
                break
            marks = ", ".join("?" * len(rest))
            found = db.execute(
                f"SELECT rowid, snippet(docs, {column}, ?, ?, ?, {SNIPPET_TOKENS}) FROM docs "
                f"WHERE docs MATCH ? AND rowid IN ({marks})",
                [MARK_START, MARK_END, ELLIPSIS, match, *rest],
            )
            snippets.update((rowid, snippet) for rowid, snippet in found if snippet and MARK_START in snippet)
    hits = []
    for rowid, score, kind, item_id, doc, tagline in rows:
        snippet = snippets.get(rowid, tagline)
        if kind == "recording":
            record = LibraryRecord.model_validate_json(doc)
            hits.append(Hit(kind, item_id, -score or 0.0, snippet, moments.get(rowid), record, None))
        else:
            hits.append(Hit(kind, item_id, -score or 0.0, snippet, None, None, ArticleItem.model_validate_json(doc)))
    return hits


def _moments(
    db: sqlite3.Connection, window: _Window, parsed: ParsedQuery, rowids: list[int]
) -> dict[int, tuple[float, str]]:
    """(start, highlighted line) of the best-matching transcript line of each recording whose transcript matched.

    The opening MOMENT_WINDOW_CHARS characters first: a line there with as many distinct matched words as the query
    has terms is taken (the first such); otherwise the whole transcript is read and the first line with the most
    distinct matched words is. Common words are found near the start, so a page of them does not tokenize twenty
    whole transcripts."""
    terms = f"{{transcript}} : ({parsed.any_term()})"
    found: dict[int, tuple[float, str]] = {}
    todo = rowids
    for chars in (MOMENT_WINDOW_CHARS, MAX_TEXT_CHARS + 1):
        marks = ", ".join("?" * len(todo))
        window.chars = chars
        try:
            highlighted = db.execute(
                f"SELECT docs.rowid, highlight(docs, {COLUMNS.index('transcript')}, ?, ?), length(t.transcript), "
                f"t.starts FROM docs JOIN items i ON i.id = docs.rowid JOIN texts t ON t.item_id = i.item_id "
                f"WHERE docs MATCH ? AND docs.rowid IN ({marks})",
                [MARK_START, MARK_END, terms, *todo],
            ).fetchall()
        finally:
            window.chars = MAX_TEXT_CHARS + 1
        todo = []
        for rowid, text, length, starts in highlighted:
            cut = length > chars
            line = _best_line(text or "", drop_last=cut)
            if cut and (line is None or line[2] < len(parsed.words)):
                todo.append(rowid)  # not enough of the words in the opening lines: read the whole transcript
            elif line is not None:
                found[rowid] = (array("d", starts)[line[0]], line[1])
        if not todo:
            break
    return found


def _short_snippets(db: sqlite3.Connection, match: str, rowids: list[int]) -> dict[int, str]:
    """The short field (title .. credits) with the most distinct matched words, the first of equals, highlighted."""
    marks = ", ".join("?" * len(rowids))
    columns = ", ".join(f"highlight(docs, {column}, ?, ?)" for column in range(SHORT_COLUMNS))
    found = db.execute(
        f"SELECT rowid, {columns} FROM docs WHERE docs MATCH ? AND rowid IN ({marks})",
        [*[MARK_START, MARK_END] * SHORT_COLUMNS, match, *rowids],
    )
    snippets = {}
    for rowid, *fields in found:
        best, most = None, 0
        for text in fields:
            words = len({word.casefold() for word in _MARKED.findall(text or "")})
            if words > most:
                best, most = text, words
        if best is not None:
            snippets[rowid] = _around_marks(best)
    return snippets


def _best_line(highlighted: str, drop_last: bool = False) -> tuple[int, str, int] | None:
    """(number, text, words) of the transcript line with the most distinct highlighted words (the first of equals);
    `drop_last`: the text was cut, so its last line may be a piece of one."""
    if MARK_START not in highlighted:
        return None
    lines = highlighted.split("\n")
    if drop_last:
        lines.pop()
    best: tuple[int, int, str] | None = None
    for number, line in enumerate(lines):
        if MARK_START not in line:
            continue
        words = len({match.casefold() for match in _MARKED.findall(line)})
        if best is None or words > best[0]:
            best = (words, number, line)
    return (best[1], best[2], best[0]) if best else None


def _around_marks(line: str, width: int = 160) -> str:
    """A long line cut around its first highlighted word."""
    if len(line) <= width:
        return line
    first = max(line.index(MARK_START) - width // 3, 0)
    start = line.rfind(" ", 0, first) + 1 if first else 0
    piece = line[start : start + width]
    piece = piece[: piece.rfind(" ")] if len(line) > start + width and " " in piece else piece
    if piece.count(MARK_START) > piece.count(MARK_END):
        piece += MARK_END
    return (ELLIPSIS if start else "") + piece + (ELLIPSIS if start + len(piece) < len(line) else "")
