"""The library's search index: a projection of the KV bucket impromptu-library into SQLite FTS5, kept by each process
that serves search. Rebuilt from KV at start, kept current by following the bucket (puts and deletes of `entry.*`,
`article.*` and `text.*` from any worker on any machine).

(Interface fixed for the pages, the API and the CLI; the implementation is being built.)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from nats.js.kv import KeyValue

from pipeline.archive.catalog import ArticleItem, LibraryRecord

FACETS = ("tag", "topic", "author", "sharer", "facilitator", "year", "kind")
Sort = Literal["relevance", "newest"]
ItemKind = Literal["recording", "article"]


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


class LibraryIndex:
    """One per process that serves search. `start(kv)` rebuilds from the bucket and follows it; `stop()` deletes
    the server-side consumer it used. `search` never blocks the event loop for long (queries are bounded)."""

    async def start(self, kv: KeyValue) -> None:
        raise NotImplementedError

    async def stop(self) -> None:
        raise NotImplementedError

    async def wait_for(self, key: str, revision: int, timeout: float = 5.0) -> bool:
        """Wait until the index has applied `key` at `revision` or later (a page shown right after an edit)."""
        raise NotImplementedError

    async def search(self, query: SearchQuery) -> SearchPage:
        raise NotImplementedError

    def updated_at(self) -> datetime | None:
        """When the newest indexed item changed (feeds' <updated>)."""
        raise NotImplementedError
