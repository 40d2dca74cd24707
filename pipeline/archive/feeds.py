"""The library's feeds, so people follow it where they already are: an Atom feed of the recordings
(/library/feed.xml) and an RSS podcast feed with enclosures (/library/podcast.xml), built with feedgen.

Plain functions of the records they are given (newest first); pipeline/web/library.py picks which: public,
published entries only, a bounded number. Links are absolute (IMPROMPTU_PUBLIC_URL). A podcast item encloses the
audio file when there is one, else the video; a YouTube-only entry has no file to enclose and is left out.
"""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import quote

from feedgen.ext.base import BaseEntryExtension
from feedgen.feed import FeedGenerator
from feedgen.util import xml_elem

from pipeline.domain.catalog import LibraryRecord
from pipeline.messages import KeptFile, LibraryEntry

TITLE = "Impromptu learning library"
SUBTITLE = "Recordings of impromptu sessions about what people shared, with their articles and resources."
EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


class AtomEnclosure(BaseEntryExtension):  # type: ignore[misc]  # feedgen has no type information: its base is Any
    """An Atom entry's <link rel="enclosure" type length>: feedgen 1.0 writes an entry's links without their
    attributes (its loop variable shadows the link), which would turn the enclosure into a second alternate link."""

    def __init__(self) -> None:
        self.href: str | None = None
        self.type = ""
        self.length = ""

    def set(self, href: str, type: str, length: int) -> None:
        self.href, self.type, self.length = href, type, str(length)

    def extend_atom(self, entry: object) -> object:
        if self.href:
            xml_elem("link", entry, href=self.href, rel="enclosure", type=self.type, length=self.length)
        return entry

    def extend_rss(self, item: object) -> object:
        return item


def entry_url(base_url: str, entry_id: str) -> str:
    return f"{base_url}/library/{quote(entry_id, safe='')}"


def media_url(base_url: str, entry_id: str, kind: str) -> str:
    return f"{entry_url(base_url, entry_id)}/media/{kind}"


def enclosure(entry: LibraryEntry) -> KeptFile | None:
    """What a podcast app downloads: the audio (smaller) when kept, else the video."""
    return entry.file("audio") or entry.file("video")


def changed_at(record: LibraryRecord) -> datetime:
    """When the entry last changed (kept, replaced, edited, published again): the item's <updated>."""
    return max([record.entry.started_at, *(change.at for change in record.history)])


def _content(entry: LibraryEntry) -> str:
    parts = [entry.tagline, entry.description, *entry.summary]
    return "\n\n".join(part for part in parts if part)


def _generator(base_url: str, self_path: str, records: list[LibraryRecord]) -> FeedGenerator:
    feed = FeedGenerator()
    feed.id(f"{base_url}/library")
    feed.title(TITLE)
    feed.subtitle(SUBTITLE)
    feed.link(href=f"{base_url}/library", rel="alternate")
    feed.link(href=f"{base_url}{self_path}", rel="self")
    feed.language("en")
    feed.generator("Impromptu")
    feed.updated(max((changed_at(r) for r in records), default=EPOCH))
    return feed


def atom_feed(records: list[LibraryRecord], *, base_url: str) -> bytes:
    """Atom 1.0: one item per recording, newest first as given."""
    feed = _generator(base_url, "/library/feed.xml", records)
    feed.author({"name": "Impromptu"})
    for record in records:
        entry = record.entry
        url = entry_url(base_url, entry.entry_id)
        item = feed.add_entry(order="append")
        item.id(url)
        item.title(entry.title)
        item.link(href=url, rel="alternate")
        item.summary(entry.tagline or entry.title)
        item.content(_content(entry), type="text")
        item.published(entry.started_at)
        item.updated(changed_at(record))
        item.author({"name": entry.provenance.shared_by or "Impromptu"})
        for tag in entry.tags:
            item.category(term=tag, label=tag)
        kept = enclosure(entry)
        if kept is not None:
            item.register_extension("atom_enclosure", AtomEnclosure, atom=True, rss=False)
            item.atom_enclosure.set(media_url(base_url, entry.entry_id, kept.kind), kept.content_type, kept.size)
    atom: bytes = feed.atom_str(pretty=True)  # feedgen has no type information
    return atom


def podcast_feed(records: list[LibraryRecord], *, base_url: str) -> bytes:
    """RSS 2.0 with the iTunes podcast extension: each recording with a file as an episode (length and type)."""
    feed = _generator(base_url, "/library/podcast.xml", records)
    feed.description(SUBTITLE)
    feed.load_extension("podcast")
    feed.podcast.itunes_author("Impromptu")
    feed.podcast.itunes_category("Education")
    feed.podcast.itunes_explicit("no")
    feed.podcast.itunes_summary(SUBTITLE)
    for record in records:
        entry = record.entry
        kept = enclosure(entry)
        if kept is None:  # YouTube-only: nothing a podcast app could download
            continue
        url = entry_url(base_url, entry.entry_id)
        item = feed.add_entry(order="append")
        item.guid(url, permalink=True)
        item.title(entry.title)
        item.link(href=url)
        item.description(_content(entry) or entry.title)
        item.published(entry.started_at)
        item.enclosure(media_url(base_url, entry.entry_id, kept.kind), str(kept.size), kept.content_type)
        item.podcast.itunes_duration(entry.duration_seconds)
        item.podcast.itunes_subtitle(entry.tagline[:255])
        for tag in entry.tags:
            item.category(term=tag)
    rss: bytes = feed.rss_str(pretty=True)
    return rss
