"""The learning library: describing a recording, saving it idempotently, keeping media, searching."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from pipeline.archive.library import describe, entries, keep_media, save, search
from pipeline.messages import LibraryEntry, Recording, ScheduledSession, stable_id

BuildSession = Callable[..., ScheduledSession]
RECORDED = datetime(2025, 3, 4, 11, 50, tzinfo=UTC)


def recording(session: ScheduledSession, media_url: str = "https://recordings.example.com/r1.mp4") -> Recording:
    return Recording.caused_by(
        session,
        id=stable_id("recording", session.id),
        session=session,
        media_url=media_url,
        duration_minutes=57,
        recorded_at=RECORDED,
    )


@pytest.fixture
def entry(build_session: BuildSession) -> LibraryEntry:
    return describe(recording(build_session()))


def test_tagline_names_the_article_and_author(entry: LibraryEntry) -> None:
    assert entry.tagline == (
        'A live conversation on "Why eLearning Isn\'t Working for Leadership and Soft Skills" by Josh Bersin'
    )


def test_tags_hold_topics_author_and_site(entry: LibraryEntry) -> None:
    assert {"leadership", "learning", "josh-bersin", "linkedin"} <= set(entry.tags)
    assert entry.tags == sorted(set(entry.tags))


def test_tags_are_slugs(build_session: BuildSession) -> None:
    entry = describe(recording(build_session(author="Renée O'Neil", site_name=None, topics=("Soft Skills", "L&D"))))
    assert set(entry.tags) == {"ren-e-o-neil", "soft-skills", "l-d"}


def test_provenance_carries_sharer_and_article(entry: LibraryEntry, build_session: BuildSession) -> None:
    session = build_session()
    assert entry.provenance.shared_by == "@britz"
    assert entry.provenance.article_url == session.proposal.content.article.final_url
    assert entry.provenance.article_author == "Josh Bersin"
    assert entry.provenance.rule == "trusted-share-on-leadership-or-learning"
    assert entry.provenance.session_id == session.id


def test_description_mentions_date_length_and_approver(entry: LibraryEntry) -> None:
    assert entry.description.startswith("Recorded 2025-03-04, 57 min. @britz shared the article;")
    assert "facilitator@example.com approved" in entry.description


def test_describe_is_deterministic(build_session: BuildSession) -> None:
    session = build_session()
    first, again = describe(recording(session)), describe(recording(session))
    assert first.id == again.id  # the same recording always becomes the same entry
    assert first.model_dump(exclude={"created_at"}) == again.model_dump(exclude={"created_at"})


def test_save_is_idempotent(tmp_path: Path, entry: LibraryEntry) -> None:
    first = save(tmp_path / "library", entry)
    second = save(tmp_path / "library", entry)
    assert first == second
    assert sorted(p.name for p in (tmp_path / "library").iterdir()) == [f"{entry.id}.json"]
    assert LibraryEntry.model_validate_json(first.read_text(encoding="utf-8")) == entry


def test_keep_media_copies_a_local_file(tmp_path: Path, build_session: BuildSession) -> None:
    source = tmp_path / "recording.mp4"
    source.write_bytes(b"\x00\x00\x00 ftypisom fake video")
    library = tmp_path / "library"
    entry = describe(recording(build_session(), media_url=str(source)))
    kept = keep_media(library, entry)
    assert Path(kept.media_url) == library / "media" / f"{entry.id}.mp4"
    assert Path(kept.media_url).read_bytes() == source.read_bytes()
    source.unlink()
    assert Path(kept.media_url).is_file()  # outlives the original


def test_keep_media_accepts_file_url(tmp_path: Path, build_session: BuildSession) -> None:
    source = tmp_path / "r.webm"
    source.write_bytes(b"webm")
    kept = keep_media(tmp_path / "library", describe(recording(build_session(), media_url=f"file://{source}")))
    assert Path(kept.media_url).parent == tmp_path / "library" / "media"


def test_keep_media_leaves_remote_urls_alone(tmp_path: Path, entry: LibraryEntry) -> None:
    assert keep_media(tmp_path / "library", entry) == entry
    assert not (tmp_path / "library").exists()


@pytest.fixture
def library(tmp_path: Path, entry: LibraryEntry) -> Path:
    folder = tmp_path / "library"
    save(folder, entry)
    return folder


@pytest.mark.parametrize("query", ["leadership", "josh-bersin", "Bersin", "britz", "BERSIN leadership"])
def test_search_finds(library: Path, entry: LibraryEntry, query: str) -> None:
    assert search(library, query) == [entry]


@pytest.mark.parametrize("query", ["kubernetes", "bersin kubernetes"])
def test_search_misses_absent_words(library: Path, query: str) -> None:
    assert search(library, query) == []


def test_entries_of_missing_folder(tmp_path: Path) -> None:
    assert entries(tmp_path / "nowhere") == []
    assert search(tmp_path / "nowhere", "anything") == []
