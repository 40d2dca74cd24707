"""The archive stage on the real bus: a recording is kept once, only after its session started, in the media store
(checked by digest) and in KV; a correction replaces media with history; a transcript waits for its video."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from faststream.nats import NatsBroker

from pipeline import bus
from pipeline.archive.keep import keep_recording
from pipeline.archive.media import media_store
from pipeline.demo import sample_recording, write_sample_wav
from pipeline.domain import catalog
from pipeline.domain.approval import advance_by_clock, get_record
from pipeline.domain.describe import entry_id_for
from pipeline.errors import NotYet
from pipeline.messages import DeadLetter, LibraryEntry, OutreachResult, Recording, RecordingFile, ScheduledSession
from pipeline.settings import Settings
from tests.integration.bus_helpers import models_on, seed_proposal, wait_until

pytestmark = pytest.mark.nats


async def _scheduled(client: NatsBroker, settings: Settings) -> ScheduledSession:
    from pipeline.actions.service import Approvals
    from pipeline.domain.live_rules import LiveRules

    proposal = await seed_proposal(client)
    await Approvals(client, settings, LiveRules.load(settings.rules_file)).approve(proposal.id, by="ana")

    async def scheduled() -> bool:
        return bool(await models_on(client, bus.SESSIONS_SCHEDULED.subject, ScheduledSession))

    await wait_until(scheduled, what="the session scheduled")
    (session,) = await models_on(client, bus.SESSIONS_SCHEDULED.subject, ScheduledSession)
    return session


async def _ended(client: NatsBroker, settings: Settings) -> ScheduledSession:
    session = await _scheduled(client, settings)
    await advance_by_clock(client, session.starts_at)
    await advance_by_clock(client, session.ends_at)
    return session


def _video(settings: Settings, name: str, data: bytes) -> RecordingFile:
    path = settings.import_dir / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return RecordingFile(kind="video", location=f"import:{name}", content_type="video/mp4")


async def _entries(client: NatsBroker) -> list[LibraryEntry]:
    return await models_on(client, bus.LIBRARY_ENTRIES.subject, LibraryEntry)


async def test_a_recording_before_the_session_started_is_refused_with_the_reason(
    pipeline: NatsBroker, client: NatsBroker, settings: Settings
) -> None:
    session = await _scheduled(client, settings)
    await bus.publish(client, bus.RECORDINGS, sample_recording(session, settings.import_dir))

    async def refused() -> bool:
        return bool(await models_on(client, bus.dead_letter_subject("archive"), DeadLetter))

    await wait_until(refused, what="the early recording refused")
    (dead,) = await models_on(client, bus.dead_letter_subject("archive"), DeadLetter)
    assert "has not started yet" in dead.reason and dead.permanent
    assert await _entries(client) == []
    assert (await get_record(client, session.proposal.id)).state == "scheduled"
    results = await models_on(client, bus.OUTREACH_RESULTS.subject, OutreachResult)
    assert not [r for r in results if r.kind == "recording"]


async def test_a_held_sessions_recording_is_kept_once_and_announced_with_its_page(
    pipeline: NatsBroker, client: NatsBroker, settings: Settings
) -> None:
    session = await _ended(client, settings)
    recording = sample_recording(session, settings.import_dir)
    await bus.publish(client, bus.RECORDINGS, recording)

    async def announced() -> bool:
        results = await models_on(client, bus.OUTREACH_RESULTS.subject, OutreachResult)
        return len([r for r in results if r.kind == "recording"]) == len(session.proposal.channels)

    await wait_until(announced, what="the recording announced")
    (entry,) = await _entries(client)
    assert entry.entry_id == entry_id_for(session.id) and entry.revision == 1
    assert [f.kind for f in entry.files] == ["audio", "transcript", "chat"]
    assert (await get_record(client, session.proposal.id)).state == "archived"

    kv = await catalog.library_bucket(client)
    record = await catalog.get_record(kv, entry.entry_id)
    assert record is not None and record.entry == entry and record.published
    text = await catalog.get_text(kv, entry.entry_id)
    assert any("scaffolding" in cue.text for cue in text.cues)
    assert [r.url for r in entry.resources][0].startswith("https://www.linkedin.com/pulse/")
    article = await catalog.get_article(kv, entry.article_id or "")
    assert article is not None and article.recordings == [entry.entry_id]
    assert await catalog.read(kv, catalog.awaiting_key(session.id), catalog.AwaitingRecording) is None

    store = await media_store(settings, client)
    try:
        audio = entry.file("audio")
        assert audio is not None and audio.content_type == "audio/x-wav"
        stored = b"".join([chunk async for chunk in store.read(audio.key)])
        original = (settings.import_dir / "demo" / session.id / "recording.wav").read_bytes()
        assert stored == original and hashlib.sha256(stored).hexdigest() == audio.sha256
    finally:
        await store.close()

    results = await models_on(client, bus.OUTREACH_RESULTS.subject, OutreachResult)
    link = f"{settings.base_url}/library/{entry.entry_id}"
    assert all(link in r.text or r.channel in ("slack", "teams") for r in results if r.kind == "recording")

    # the same recording again (a redelivery, a retried webhook): still one entry, one revision
    again = await keep_recording(client, settings, store_for := await media_store(settings, client), recording)
    await store_for.close()
    assert again == entry
    record = await catalog.get_record(kv, entry.entry_id)
    assert record is not None and [change.what for change in record.history] == ["kept"]


async def test_a_corrected_recording_replaces_the_media_with_history_and_keeps_edits(
    client: NatsBroker, settings: Settings, pipeline: NatsBroker
) -> None:
    session = await _ended(client, settings)
    store = await media_store(settings, client)
    try:
        first = Recording.arrived(session, source="cli", files=[_video(settings, "wrong.mp4", b"wrong" * 1000)])
        kept = await keep_recording(client, settings, store, first)
        kv = await catalog.library_bucket(client)
        await catalog.edit(kv, kept.entry_id, by="ana", tagline="Bersin's numbers, talked through")

        second = Recording.arrived(session, source="cli", files=[_video(settings, "right.mp4", b"right" * 2000)])
        corrected = await keep_recording(client, settings, store, second)
        assert corrected.entry_id == kept.entry_id and corrected.revision == 2
        video = corrected.file("video")
        assert video is not None and video.size == 10_000
        assert corrected.tagline == "Bersin's numbers, talked through"  # a person's edit outlives new media
        old = kept.file("video")
        assert old is not None and await store.stat(old.key) is None  # the replaced media left the store
        record = await catalog.get_record(kv, kept.entry_id)
        assert record is not None
        assert [c.what for c in record.history] == ["kept", "edited", "media_replaced"]
    finally:
        await store.close()


async def test_a_transcript_before_its_video_waits_then_joins_the_entry(
    client: NatsBroker, settings: Settings, pipeline: NatsBroker, tmp_path: Path
) -> None:
    session = await _ended(client, settings)
    transcript_path = settings.import_dir / "t.vtt"
    transcript_path.parent.mkdir(parents=True, exist_ok=True)
    transcript_path.write_text("WEBVTT\n\n00:00:03.000 --> 00:00:05.000\nAna: We talked about scaffolding.\n")
    transcript = Recording.arrived(
        session, source="zoom", files=[RecordingFile(kind="transcript", location="import:t.vtt")]
    )
    store = await media_store(settings, client)
    try:
        with pytest.raises(NotYet, match="waits for its video"):
            await keep_recording(client, settings, store, transcript)
        write_sample_wav(settings.import_dir / "a.wav", seconds=1)
        audio = RecordingFile(kind="audio", location="import:a.wav")
        await keep_recording(client, settings, store, Recording.arrived(session, source="zoom", files=[audio]))
        merged = await keep_recording(client, settings, store, transcript)
        assert sorted(f.kind for f in merged.files) == ["audio", "transcript"] and merged.revision == 2
        text = await catalog.get_text(await catalog.library_bucket(client), merged.entry_id)
        assert [cue.text for cue in text.cues] == ["We talked about scaffolding."]
    finally:
        await store.close()


async def test_a_session_that_ends_without_a_recording_is_awaited(
    pipeline: NatsBroker, client: NatsBroker, settings: Settings
) -> None:
    session = await _ended(client, settings)
    kv = await catalog.library_bucket(client)

    async def awaited() -> bool:
        return await catalog.read(kv, catalog.awaiting_key(session.id), catalog.AwaitingRecording) is not None

    await wait_until(awaited, what="the session awaited")
    found = await catalog.read(kv, catalog.awaiting_key(session.id), catalog.AwaitingRecording)
    assert found is not None and found[0].provider == session.provider and found[0].provider_id == session.provider_id
