"""The library's feeds as feed readers and podcast apps read them (feedparser): valid, absolute links, enclosures with
length and type, YouTube-only entries left out of the podcast, readable tags, text escaped."""

from __future__ import annotations

from datetime import UTC, datetime

import feedparser

from pipeline.archive.feeds import atom_feed, podcast_feed
from pipeline.domain.catalog import EntryChange, LibraryRecord
from pipeline.messages import KeptFile, LibraryEntry, Provenance

BASE = "https://library.example.org"


def record(
    entry_id: str,
    title: str,
    started_at: datetime,
    *,
    files: list[str] = ("audio",),  # type: ignore[assignment]
    youtube: str | None = None,
    edited_at: datetime | None = None,
) -> LibraryRecord:
    kept = [
        KeptFile(
            kind=kind,  # type: ignore[arg-type]
            store="nats",
            key=f"{entry_id}/r/{kind}",
            content_type={"audio": "audio/mp4", "video": "video/mp4"}[kind],
            size={"audio": 1234, "video": 98765}[kind],
            sha256="0" * 64,
            filename=f"{title}.{kind}",
        )
        for kind in files
    ]
    entry = LibraryEntry(
        id=f"msg-{entry_id}",
        correlation_id="c",
        causation_id=None,
        entry_id=entry_id,
        title=title,
        tagline=f"Why {title} matters <b>now</b> & later",
        description="Long description.",
        tags=["Café Zürich", "Genève"],
        started_at=started_at,
        duration_seconds=3725,
        files=kept,
        youtube_video_id=youtube,
        provenance=Provenance(
            shared_by="Mark Britz",
            share_url="https://social.example/1",
            share_text="",
            article_url="https://blog.example/a",
            article_author=None,
            rule="internal-rule",
            session_id="s-1",
        ),
    )
    history = [EntryChange(at=started_at, by="archive", what="kept")]
    if edited_at:
        history.append(EntryChange(at=edited_at, by="ana", what="edited"))
    return LibraryRecord(entry=entry, history=history)


RECORDS = [
    record("rec-3", "Video only", datetime(2025, 3, 1, 18, tzinfo=UTC), files=["video"]),
    record("rec-2", "YouTube only", datetime(2025, 2, 1, 18, tzinfo=UTC), files=[], youtube="dQw4w9WgXcQ"),
    record("rec-1", "Audio and video", datetime(2025, 1, 1, 18, tzinfo=UTC), files=["video", "audio"]),
]


def test_the_atom_feed_is_valid_with_absolute_links_readable_tags_and_enclosures() -> None:
    parsed = feedparser.parse(atom_feed(RECORDS, base_url=BASE))

    assert not parsed.bozo, parsed.get("bozo_exception")
    assert parsed.version == "atom10"
    assert parsed.feed.title == "Impromptu learning library"
    assert {link.rel: link.href for link in parsed.feed.links} == {
        "alternate": f"{BASE}/library",
        "self": f"{BASE}/library/feed.xml",
    }
    assert [e.title for e in parsed.entries] == ["Video only", "YouTube only", "Audio and video"]
    first = parsed.entries[0]
    assert first.id == f"{BASE}/library/rec-3"
    assert [t.term for t in first.tags] == ["Café Zürich", "Genève"]
    assert first.summary == "Why Video only matters <b>now</b> & later"  # text, not markup
    links = {link.rel: link for link in first.links}
    assert links["alternate"].href == f"{BASE}/library/rec-3"
    assert (links["enclosure"].href, links["enclosure"].type, links["enclosure"].length) == (
        f"{BASE}/library/rec-3/media/video",
        "video/mp4",
        "98765",
    )
    assert [link.rel for link in parsed.entries[1].links] == ["alternate"]  # YouTube-only: nothing to enclose
    assert "internal-rule" not in str(parsed) and "rec-3/r/video" not in str(parsed)


def test_the_podcast_feed_encloses_the_audio_else_the_video_and_leaves_out_youtube_only_entries() -> None:
    parsed = feedparser.parse(podcast_feed(RECORDS, base_url=BASE))

    assert not parsed.bozo, parsed.get("bozo_exception")
    assert parsed.version == "rss20"
    assert [e.title for e in parsed.entries] == ["Video only", "Audio and video"]
    video_only, both = parsed.entries
    assert [(x.href, x.type, x.length) for x in video_only.enclosures] == [
        (f"{BASE}/library/rec-3/media/video", "video/mp4", "98765")
    ]
    assert [(x.href, x.type, x.length) for x in both.enclosures] == [
        (f"{BASE}/library/rec-1/media/audio", "audio/mp4", "1234")
    ]
    assert both.link == f"{BASE}/library/rec-1"
    assert both.itunes_duration == "3725"  # seconds, as Apple's podcast spec allows


def test_the_feeds_updated_time_is_the_newest_change_and_an_empty_library_still_makes_a_valid_feed() -> None:
    june = datetime(2025, 6, 1, tzinfo=UTC)
    edited = record("rec-e", "Edited later", datetime(2025, 1, 1, tzinfo=UTC), edited_at=june)
    parsed = feedparser.parse(atom_feed([edited], base_url=BASE))
    empty_atom = feedparser.parse(atom_feed([], base_url=BASE))
    empty_podcast = feedparser.parse(podcast_feed([], base_url=BASE))

    assert parsed.feed.updated.startswith("2025-06-01") and parsed.entries[0].updated.startswith("2025-06-01")
    assert parsed.entries[0].published.startswith("2025-01-01")
    assert not empty_atom.bozo and not empty_podcast.bozo
    assert empty_atom.entries == [] and empty_podcast.entries == []
