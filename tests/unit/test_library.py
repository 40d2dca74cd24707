"""The learning library's descriptions: what an entry says about a recording, its tags, transcript and resources."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from pipeline.domain.catalog import Cue
from pipeline.domain.describe import (
    describe,
    entry_id_for,
    length_text,
    readable_tags,
    reading_item,
    tag_slug,
    visibility_of,
)
from pipeline.domain.transcripts import TranscriptUnreadable, chat_resources, parse_vtt, transcript_text
from pipeline.messages import KeptFile, LibraryEntry, Recording, RecordingFile, ScheduledSession

BuildSession = Callable[..., ScheduledSession]
STARTED = datetime(2025, 3, 4, 10, 47, tzinfo=UTC)
VIDEO = KeptFile(
    kind="video", store="nats", key="k/video.mp4", content_type="video/mp4", size=10, sha256="ab" * 32, filename="v.mp4"
)
TRANSCRIPT = b"""WEBVTT

1
00:00:01.000 --> 00:00:05.000
Mark Britz: Soft skills are learned by practice and feedback, and a module on its own gives neither of them.

2
00:01:02.500 --> 00:01:06.000
Ana: The answer is scaffolding around the content: coaching, peers and real situations at work.

3
00:02:10.000 --> 00:02:16.000
Ana: Leaders learn from other leaders, which is why social learning should come first in the plan.
"""


def recording(session: ScheduledSession, **fields: object) -> Recording:
    files = [RecordingFile(kind="video", location="https://zoom.example/rec/1.mp4")]
    return Recording.arrived(session, source="zoom", files=files, started_at=STARTED, duration_seconds=3420, **fields)


@pytest.fixture
def entry(build_session: BuildSession) -> LibraryEntry:
    return describe(recording(build_session()), [VIDEO], revision=1, cues=parse_vtt(TRANSCRIPT), resources=[])


def test_tagline_names_the_article_and_author(entry: LibraryEntry) -> None:
    assert entry.tagline == (
        'A live conversation on "Why eLearning Isn\'t Working for Leadership and Soft Skills" by Josh Bersin'
    )


def test_an_entry_is_one_per_session_and_its_message_one_per_revision(
    build_session: BuildSession, entry: LibraryEntry
) -> None:
    session = build_session()
    assert entry.entry_id == entry_id_for(session.id)
    again = describe(recording(session), [VIDEO], revision=2, cues=[], resources=[])
    assert again.entry_id == entry.entry_id and again.id != entry.id


def test_real_time_and_length_of_the_session(entry: LibraryEntry) -> None:
    assert entry.started_at == STARTED and entry.duration_seconds == 3420
    assert "live session of 57 min on 4 March 2025" in entry.description


def test_without_provider_times_the_schedule_counts(build_session: BuildSession) -> None:
    session = build_session()
    bare = Recording.arrived(session, source="cli", files=[RecordingFile(kind="audio", location="import:a.m4a")])
    described = describe(bare, [], revision=1, cues=[], resources=[])
    assert described.started_at == session.starts_at and described.duration_seconds == 3600


def test_tags_stay_readable(build_session: BuildSession) -> None:
    session = build_session(topics=("Café Zürich", "leadership"), author="José Müller")
    described = describe(recording(session), [], revision=1, cues=[], resources=[])
    assert "Café Zürich" in described.tags and "José Müller" in described.tags
    assert tag_slug("Café Zürich") == "cafe-zurich"


def test_tags_are_each_once_whatever_their_case() -> None:
    assert readable_tags(["Leadership", "leadership", " LEADERSHIP ", "Soft  skills", ""]) == [
        "Leadership",
        "Soft skills",
    ]


def test_nothing_internal_in_what_people_read(entry: LibraryEntry) -> None:
    shown = " ".join([entry.title, entry.tagline, entry.description, *entry.tags, *entry.summary])
    assert entry.provenance.rule not in shown and "facilitator@example.com" not in shown
    assert entry.provenance.rule == "trusted-share-on-leadership-or-learning"  # kept, for the people who need it
    assert entry.provenance.approved_by == "facilitator@example.com"


def test_summary_comes_from_what_was_said(entry: LibraryEntry) -> None:
    assert entry.summary and all(sentence in TRANSCRIPT.decode() for sentence in entry.summary)


def test_visibility_follows_where_it_was_announced(build_session: BuildSession) -> None:
    session = build_session()
    internal = session.model_copy(update={"proposal": session.proposal.model_copy(update={"channels": ["slack"]})})
    assert visibility_of(session) == "public" and visibility_of(internal) == "internal"
    assert reading_item(internal).visibility == "internal"


def test_reading_item_names_the_article_and_sharer(build_session: BuildSession) -> None:
    item = reading_item(build_session())
    assert item.title.startswith("Why eLearning") and item.author == "Josh Bersin"
    assert item.tagline.endswith("shared by @britz") and item.recordings == []


def test_vtt_cues_keep_time_and_speaker() -> None:
    cues = parse_vtt(TRANSCRIPT)
    assert [(c.start, c.speaker) for c in cues] == [(1.0, "Mark Britz"), (62.5, "Ana"), (130.0, "Ana")]
    assert cues[1].text.startswith("The answer is scaffolding")


def test_transcript_text_is_one_paragraph_per_turn() -> None:
    cues = [Cue(start=0, text="a.", speaker="A"), Cue(start=1, text="b.", speaker="A"), Cue(start=2, text="c.")]
    assert transcript_text(cues) == "a. b.\n\nc."


@pytest.mark.parametrize("data", [b"", b"hello", b"\xff\xfe\x00garbage", b"<html>login</html>"])
def test_what_is_not_webvtt_is_refused_with_a_reason(data: bytes) -> None:
    with pytest.raises(TranscriptUnreadable, match="not a WebVTT transcript"):
        parse_vtt(data)


def test_invalid_utf8_in_a_transcript_is_replaced_not_fatal() -> None:
    cues = parse_vtt(b"WEBVTT\n\n00:00:01.000 --> 00:00:02.000\nGen\xe8ve is lovely\n")
    assert cues[0].text == "Gen\ufffdve is lovely"


def test_chat_links_become_resources_once_each_with_who_and_when() -> None:
    chat = (
        b"00:05:12 From  Mark Britz  to  Everyone:\n\thttps://joshbersin.com/a-study.\n"
        b"00:07:00\t From  Ana : again https://joshbersin.com/a-study and https://example.org/b?c=1)\n"
    )
    resources = chat_resources(chat)
    assert [(r.url, r.shared_by, r.at_seconds) for r in resources] == [
        ("https://joshbersin.com/a-study", "Mark Britz", 312.0),
        ("https://example.org/b?c=1", "Ana", 420.0),
    ]


def test_chat_without_links_gives_no_resources() -> None:
    assert chat_resources(b"00:01:00 From  Ana  to  Everyone:\n\thello all\n") == []


@pytest.mark.parametrize(
    ("seconds", "said"), [(30, "30 s"), (59, "59 s"), (60, "1 min"), (3420, "57 min"), (5400, "1 h 30 min")]
)
def test_lengths_read_as_people_say_them(seconds: int, said: str) -> None:
    assert length_text(seconds) == said
