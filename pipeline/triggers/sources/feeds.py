"""RSS and Atom feeds as a share source: each new entry of a trusted person's feed is a share of the entry's link.

- One conditional GET per feed and poll (If-None-Match / If-Modified-Since from the last answer), so an unchanged
  feed costs a 304 and no parsing. Bodies are read streaming, capped at `max_bytes`, within `timeout_seconds`.
- An entry is a share of its own link: an RSS `<link>`, an Atom `<link>` (rel "alternate" or none). An id is not a
  link: feedparser makes one of an entry's `<guid>`/`<id>` resolved against the feed's address (`<id>1</id>` becomes
  `http://feeds.example/1`), and such entries are skipped (`feed.entry_skipped`, with the reason) unless the RSS 2.0
  rules make the guid a permalink: `isPermaLink` not "false" and the guid written as an absolute http(s) URL. An Atom
  `<id>` is never a link.
- Entries are told apart by their id (guid, Atom id, rdf:about) or, lacking one, their link. The feed's checkpoint
  (`rss.<hash of the feed URL>`) keeps the ETag, Last-Modified and the ids already seen: the newest `SEEN_LIMIT`
  plus every id still in the feed, so neither a re-dated nor a long feed repeats an entry.
- The first poll of a feed emits only entries from the last 24 hours and remembers all of them as seen: adding a
  person's feed to the rules must not flood the triggers with their whole archive.
- Emit first, checkpoint after: a crash in between re-emits, and JetStream drops the repeated Nats-Msg-Ids.
- One feed failing does not stop the others. Every feed is polled, then the failures of this poll are raised together
  as one SourceUnavailable naming each feed and reason (run_source logs it and backs off). A feed answering 429 is
  held back until its Retry-After has passed while the other feeds keep their interval; a poll with only rate limits
  raises RateLimited.

"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar
from urllib.parse import urljoin

import feedparser
import httpx
import structlog
from pydantic import ValidationError

from pipeline.domain.rules import Person
from pipeline.messages import Share, stable_id, utc_now
from pipeline.settings import Settings
from pipeline.text import shorten
from pipeline.triggers.sources.base import (
    Checkpoints,
    Emit,
    RateLimited,
    SourceAdapter,
    SourceContext,
    SourceSettings,
    SourceUnavailable,
)
from pipeline.triggers.sources.http import (
    Clock,
    Fetched,
    HoldBacks,
    PollProblems,
    get_capped,
    html_to_text,
    is_http_url,
)

log = structlog.get_logger("pipeline.sources.feeds")

SEEN_LIMIT = 1000
FIRST_POLL_WINDOW = timedelta(hours=24)
TEXT_LIMIT = 500
FEED_TYPES = "application/rss+xml, application/atom+xml, application/rdf+xml, application/xml;q=0.9, text/xml;q=0.9"


# --- Feeds -----------------------------------------------------------------------------------------------------


def feed_urls(people: Iterable[Person]) -> list[str]:
    """Every feed URL once, in rules-file order (two people may curate the same feed)."""
    return list(dict.fromkeys(url.strip() for person in people for url in person.rss))


def checkpoint_key(feed_url: str) -> str:
    return f"rss.{stable_id('feed', feed_url)}"


def entry_native_id(feed_url: str, entry_key: str) -> str:
    return stable_id("entry", feed_url, entry_key)


@dataclass
class FeedState:
    """What a feed's checkpoint remembers."""

    etag: str | None = None
    last_modified: str | None = None
    seen: list[str] = field(default_factory=list)  # native ids: those in the feed, then older ones

    @classmethod
    def from_checkpoint(cls, saved: dict[str, Any]) -> FeedState:
        return cls(etag=saved.get("etag"), last_modified=saved.get("last_modified"), seen=list(saved.get("seen", [])))

    def to_checkpoint(self, feed_url: str) -> dict[str, Any]:
        return {"url": feed_url, "etag": self.etag, "last_modified": self.last_modified, "seen": self.seen}

    def conditional_headers(self) -> dict[str, str]:
        headers = {}
        if self.etag:
            headers["If-None-Match"] = self.etag
        if self.last_modified:
            headers["If-Modified-Since"] = self.last_modified
        return headers


def remember(seen: Sequence[str], in_feed: Sequence[str], limit: int = SEEN_LIMIT) -> list[str]:
    """The ids to keep: all of those in the feed now, then the most recent older ones up to `limit` in all."""
    current = list(dict.fromkeys(in_feed))
    in_current = set(current)
    older = [native_id for native_id in seen if native_id not in in_current]
    return current + older[: max(limit - len(current), 0)]


@dataclass(frozen=True)
class FeedEntry:
    native_id: str
    published: datetime | None
    share: Share | None  # None: the entry links nowhere we could fetch
    skipped: str | None = None  # why there is no share, for the log


def entry_time(entry: Mapping[str, Any]) -> datetime | None:
    # published first: asking for updated_parsed when only published_parsed exists makes feedparser warn
    for name in ("published_parsed", "updated_parsed", "created_parsed"):
        value: time.struct_time | None = entry.get(name)
        if value:
            return datetime(*value[:6], tzinfo=UTC)
    return None


def entry_text(entry: Mapping[str, Any]) -> str:
    title = html_to_text(entry.get("title", ""))
    summary = " ".join(html_to_text(entry.get("summary", "")).split())
    return shorten(" — ".join(part for part in (title, summary) if part), TEXT_LIMIT)


def entry_language(entry: Mapping[str, Any], feed_language: str | None) -> str | None:
    for detail in ("summary_detail", "title_detail"):
        language: str | None = (entry.get(detail) or {}).get("language")
        if language:
            return language
    return feed_language


def own_link(entry: Mapping[str, Any]) -> str | None:
    """The entry's own link: an RSS `<link>`, or an Atom `<link>` whose rel is "alternate" (its default)."""
    for link in entry.get("links") or ():
        if link.get("rel", "alternate") == "alternate" and link.get("href"):
            return str(link["href"])
    return None


def permalink_guid(entry: Mapping[str, Any], as_written: Mapping[str, Any] | None, version: str) -> str | None:
    """The RSS guid when RSS 2.0 makes it the entry's permalink: `isPermaLink` is not "false" (feedparser's
    `guidislink`) and the guid is written as an absolute http(s) URL (feedparser resolves a relative one against the
    feed's address: `as_written` is the entry parsed without that address). None for Atom and RSS 1.0 ids."""
    if not version.startswith("rss") or version in ("rss090", "rss10") or not entry.get("guidislink"):
        return None
    guid = entry.get("id")
    written = (as_written or {}).get("id")
    return guid if is_http_url(guid) and written == guid else None


def read_entry(
    feed_url: str,
    entry: Mapping[str, Any],
    feed_language: str | None,
    now: datetime,
    *,
    version: str = "",
    as_written: Mapping[str, Any] | None = None,
) -> FeedEntry | None:
    """The entry as a share of its link; None when it has neither id nor link, so it cannot be told apart. An entry
    without a link of its own (see the module docstring) is a FeedEntry without a share, and says why."""
    key = entry.get("id") or entry.get("link")
    if not key:
        return None
    native_id = entry_native_id(feed_url, key)
    published = entry_time(entry)
    link = own_link(entry) or permalink_guid(entry, as_written, version)
    if link is None:
        ident = (as_written or {}).get("id") or entry.get("id")
        why = f"no link: the entry has no <link>, and its id {ident!r} is not a link" if ident else "no link"
        return FeedEntry(native_id, published, None, skipped=why)
    if not is_http_url(link):
        return FeedEntry(native_id, published, None, skipped=f"its link {shorten(link, 200)!r} is not http(s)")
    try:
        share = Share.from_source(
            source="rss",
            native_id=native_id,
            sharer=feed_url,
            network="rss",
            text=entry_text(entry),
            url=link,
            shared_at=published or now,
            language=entry_language(entry, feed_language),
        )
    except ValidationError as error:  # one odd entry must not block the feed: it is remembered as seen, unshared
        return FeedEntry(native_id, published, None, skipped=shorten(str(error), 300))
    return FeedEntry(native_id, published, share)


def parse_feed(feed_url: str, fetched: Fetched, now: datetime) -> list[FeedEntry]:
    """The entries of a feed body, or SourceUnavailable when it is not a feed."""
    server_location = fetched.headers.get("content-location")
    headers = {
        "content-type": fetched.headers.get("content-type", "application/xml"),
        "content-language": fetched.headers.get("content-language", ""),
        # the base for relative links: the URL we read it from (feedparser knows nothing of it otherwise)
        "content-location": urljoin(fetched.url, server_location) if server_location else fetched.url,
    }
    parsed = feedparser.parse(fetched.body, response_headers=headers)
    if not parsed.entries:
        if parsed.get("bozo"):
            raise SourceUnavailable(f"not a feed: {parsed.get('bozo_exception')}")
        if not parsed.get("version"):
            raise SourceUnavailable("not a feed: no RSS, RDF or Atom document in the answer")
    language = parsed.feed.get("language") or None
    version = parsed.get("version") or ""
    as_written: list[Any] = [None] * len(parsed.entries)
    if any(own_link(entry) is None for entry in parsed.entries):
        # only then, and once: the same body without our base, so an id written relative ("1") stays as written
        unresolved = feedparser.parse(fetched.body, response_headers={**headers, "content-location": ""})
        if len(unresolved.entries) == len(parsed.entries):
            as_written = list(unresolved.entries)
    entries = (
        read_entry(feed_url, entry, language, now, version=version, as_written=written)
        for entry, written in zip(parsed.entries, as_written, strict=True)
    )
    return [entry for entry in entries if entry is not None]


class FeedSettings(SourceSettings):
    rss_poll_seconds: float = 300.0


class FeedSource(SourceAdapter):
    """Polls every feed of every person in the rules; see the module docstring."""

    name: ClassVar[str] = "rss"
    Section = FeedSettings

    @classmethod
    def from_settings(cls, settings: Settings, context: SourceContext) -> FeedSource:
        return feed_source(settings, context.people, context.checkpoints, context.emit, context.http)

    def __init__(
        self,
        people: Callable[[], Sequence[Person]],
        checkpoints: Checkpoints,
        emit: Emit,
        http: httpx.AsyncClient,
        *,
        poll_seconds: float = 300.0,
        timeout_seconds: float = 15.0,
        max_bytes: int = 5 * 1024 * 1024,
        first_poll_window: timedelta = FIRST_POLL_WINDOW,
        clock: Clock = utc_now,
    ) -> None:
        self.people = people
        self.checkpoints = checkpoints
        self.emit = emit
        self.http = http
        self.poll_seconds = poll_seconds
        self.timeout_seconds = timeout_seconds
        self.max_bytes = max_bytes
        self.first_poll_window = first_poll_window
        self.clock = clock
        self.held_back = HoldBacks(clock)

    async def poll(self) -> float:
        problems = PollProblems()
        for feed_url in feed_urls(self.people()):
            if self.held_back.is_held(feed_url):
                log.debug("feed.held_back", feed=feed_url, until=self.held_back.until[feed_url].isoformat())
                continue
            try:
                await self.poll_feed(feed_url)
            except RateLimited as limit:
                self.held_back.hold(feed_url, limit.retry_after)
                log.warning("feed.rate_limited", feed=feed_url, retry_in_seconds=round(limit.retry_after))
                problems.rate_limited(feed_url, str(limit))
            except SourceUnavailable as error:
                log.warning("feed.unavailable", feed=feed_url, reason=str(error))
                problems.failed(feed_url, str(error))
        problems.raise_if_any(self.poll_seconds)
        return self.poll_seconds

    async def poll_feed(self, feed_url: str) -> None:
        """Emit the feed's new entries, then checkpoint them. Emit errors propagate: the bus is down for all feeds."""
        key = checkpoint_key(feed_url)
        saved = await self.checkpoints.load(key)
        state = FeedState.from_checkpoint(saved) if saved is not None else FeedState()
        fetched = await get_capped(
            self.http,
            feed_url,
            timeout_seconds=self.timeout_seconds,
            max_bytes=self.max_bytes,
            clock=self.clock,
            headers={"Accept": FEED_TYPES, **state.conditional_headers()},
        )
        if fetched.status == 304:
            log.debug("feed.not_modified", feed=feed_url)
            return
        now = self.clock()
        entries = await asyncio.to_thread(parse_feed, feed_url, fetched, now)  # a big feed must not stall the loop
        fresh = self.fresh_entries(entries, state.seen, first_poll=saved is None, now=now, feed_url=feed_url)
        for share in fresh:
            await self.emit(share)
        state.etag = fetched.headers.get("etag")
        state.last_modified = fetched.headers.get("last-modified")
        state.seen = remember(state.seen, [entry.native_id for entry in entries])
        await self.checkpoints.save(key, state.to_checkpoint(feed_url))
        if fresh:
            log.info("feed.shares_emitted", feed=feed_url, count=len(fresh))

    def fresh_entries(
        self, entries: list[FeedEntry], seen: list[str], *, first_poll: bool, now: datetime, feed_url: str = ""
    ) -> list[Share]:
        """New entries with a link, oldest first; on a feed's first poll only those from the last window. A new entry
        without a link is logged once (`feed.entry_skipped`, with why), when it is first seen."""
        known = set(seen)
        shares = []
        for entry in entries:
            if entry.native_id in known:
                continue
            if first_poll and (entry.published is None or entry.published < now - self.first_poll_window):
                continue
            known.add(entry.native_id)  # a feed listing an entry twice emits it once
            if entry.share is None:
                log.warning("feed.entry_skipped", feed=feed_url, entry=entry.native_id, reason=entry.skipped)
                continue
            shares.append(entry.share)
        return sorted(shares, key=lambda share: share.shared_at)


def feed_source(
    settings: Settings,
    people: Callable[[], Sequence[Person]],
    checkpoints: Checkpoints,
    emit: Emit,
    http: httpx.AsyncClient,
) -> FeedSource:
    section = FeedSettings.of(settings)
    return FeedSource(
        people,
        checkpoints,
        emit,
        http,
        poll_seconds=section.rss_poll_seconds,
        timeout_seconds=section.source_timeout_seconds,
        max_bytes=section.source_max_bytes,
    )
