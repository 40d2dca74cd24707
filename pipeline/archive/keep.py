"""Keeping a recording: each file streamed into the media store and checked, then the entry written, once.

A recording is accepted only for a session that has started (a person's early `impromptu record` is refused with
the reason; a provider never sends one before). Its files are stored under keys named after the recording, so a
worker killed mid-upload is replaced by a redelivery that restarts the same upload (the store cleans what the
killed one left) and never writes a second entry: the entry is written by compare-and-set after every file is
in, and a recording already applied to it is recognised by its id in the entry's history. A corrected recording
(another arrival for the same session) replaces the kinds of file it brings and keeps the others, and the files it
replaced are removed from the store once the entry no longer names them.
"""

from __future__ import annotations

import mimetypes
from collections.abc import AsyncIterator
from datetime import datetime, timedelta

import structlog
from faststream.nats import NatsBroker
from nats.js.kv import KeyValue
from slugify import slugify

from pipeline import stores
from pipeline.archive import sources
from pipeline.archive.media import MediaStore
from pipeline.domain import catalog
from pipeline.domain.approval import DecisionRefused, get_record, mark_archived
from pipeline.domain.article_cache import cached
from pipeline.domain.canonical import link_key
from pipeline.domain.catalog import AwaitingRecording, Cue, SearchText
from pipeline.domain.describe import describe, entry_id_for, reading_item
from pipeline.domain.transcripts import MAX_TEXT_BYTES, TranscriptUnreadable, chat_resources, parse_vtt
from pipeline.errors import NotYet, PermanentError
from pipeline.messages import (
    KeptFile,
    LibraryEntry,
    Recording,
    RecordingFile,
    RecordingFileKind,
    Resource,
    ScheduledSession,
    stable_id,
    utc_now,
)
from pipeline.settings import Settings

log = structlog.get_logger("pipeline.archive")

NOT_HELD = frozenset({"proposed", "rejected", "expired", "cancelled"})
HELD = frozenset({"live", "ended", "archived"})
TEXT_KINDS: frozenset[RecordingFileKind] = frozenset({"transcript", "chat"})
MEDIA_KINDS: frozenset[RecordingFileKind] = frozenset({"video", "audio"})
EXTENSIONS = {
    "video/mp4": ".mp4",
    "audio/mp4": ".m4a",
    "audio/x-m4a": ".m4a",
    "text/vtt": ".vtt",
    "audio/x-wav": ".wav",
}
PART_WAIT = timedelta(hours=24)  # a transcript that arrives before its video waits this long for it


class RecordingRefused(PermanentError):
    """The recording cannot be kept for this session (not started, cancelled, nothing to keep): the reason says."""


async def check_held(broker: NatsBroker, session: ScheduledSession, now: datetime) -> None:
    """A recording is kept only for a session that has started (the clock moved it live, or its start time has
    passed) and was not called off; RecordingRefused says why not."""
    try:
        record = await get_record(broker, session.proposal.id)
    except DecisionRefused:
        record = None  # a session made by hand, without a proposal: its start time alone decides
    if record is not None and record.state in NOT_HELD:
        raise RecordingRefused(f"session {session.id} was {record.state}, never held: no recording is kept for it")
    if (record is None or record.state not in HELD) and now < session.starts_at:
        raise RecordingRefused(
            f"session {session.id} has not started yet (it starts at {session.starts_at:%Y-%m-%d %H:%M} UTC): "
            "a recording is accepted once the session has started"
        )


def extension_of(content_type: str) -> str:
    return EXTENSIONS.get(content_type) or mimetypes.guess_extension(content_type) or ".bin"


def media_key(entry_id: str, recording: Recording, kind: str, content_type: str) -> str:
    """Named after the recording: a redelivery writes the same key (restarting a cut-short upload), a correction
    another one (so the entry never names a half-replaced file)."""
    return f"{entry_id}/{stable_id('r', recording.id)}/{kind}{extension_of(content_type)}"


async def _teed(chunks: AsyncIterator[bytes], kept: bytearray, limit: int) -> AsyncIterator[bytes]:
    async for chunk in chunks:
        if len(kept) < limit:
            kept.extend(chunk[: limit - len(kept)])
        yield chunk


async def store_file(
    store: MediaStore, settings: Settings, broker: NatsBroker, recording: Recording, file: RecordingFile, entry_id: str
) -> tuple[KeptFile, bytes]:
    """Stream one file into the store; returns what was kept and, for a transcript or chat, its text (bounded)."""
    text = bytearray()
    async with sources.open_file(file, recording, settings, broker) as opened:
        content_type = opened.content_type
        key = media_key(entry_id, recording, file.kind, content_type)
        chunks = _teed(opened.chunks, text, MAX_TEXT_BYTES) if file.kind in TEXT_KINDS else opened.chunks
        stored = await store.put(
            key,
            chunks,
            content_type=content_type,
            max_bytes=settings.recordings_max_bytes,
            expected_size=file.size,
        )
    title = slugify(recording.session.proposal.title, max_length=60, word_boundary=True) or "recording"
    kept = KeptFile(
        kind=file.kind,
        store=store.name,
        key=stored.key,
        content_type=stored.content_type,
        size=stored.size,
        sha256=stored.sha256,
        filename=f"{title}{extension_of(content_type)}",
    )
    log.info("library.file_kept", kind=file.kind, size=stored.size, sha256=stored.sha256[:16], store=store.name)
    return kept, bytes(text)


async def keep_recording(
    broker: NatsBroker, settings: Settings, store: MediaStore, recording: Recording, now: datetime | None = None
) -> LibraryEntry:
    """Keep `recording` in the library and return its entry (the same one again for a recording already kept)."""
    now = now or utc_now()
    session = recording.session
    entry_id = entry_id_for(session.id)
    await check_held(broker, session, now)
    kv = await catalog.library_bucket(broker)
    current = await catalog.get_record(kv, entry_id)
    if catalog.applied(current, recording.id):
        assert current is not None
        await finish(broker, kv, current.entry, session)
        return current.entry
    brings_media = any(f.kind in MEDIA_KINDS for f in recording.files) or bool(recording.youtube_video_id)
    if current is None and not brings_media:
        if now - recording.created_at < PART_WAIT:
            kinds = ", ".join(f.kind for f in recording.files) or "empty"
            raise NotYet(f"the {kinds} recording of {session.id} waits for its video")
        raise RecordingRefused(f"no video or audio of session {session.id} arrived within {PART_WAIT}: nothing to keep")

    kept: list[KeptFile] = []
    texts: dict[str, bytes] = {}
    for file in recording.files:
        stored, text = await store_file(store, settings, broker, recording, file, entry_id)
        kept.append(stored)
        texts[file.kind] = text

    before = current.entry if current is not None else None
    new_kinds = {f.kind for f in kept}
    files = [*kept, *(f for f in (before.files if before else []) if f.kind not in new_kinds)]
    cues = _cues(texts.get("transcript"), session.id)
    if cues is None:
        cues = (await catalog.get_text(kv, entry_id)).cues if before else []
    resources: list[Resource] = list(before.resources) if before else []
    if "chat" in texts:
        resources = chat_resources(texts["chat"])
    entry = describe(recording, files, revision=before.revision + 1 if before else 1, cues=cues, resources=resources)
    if before is not None and not brings_media:  # a transcript or chat alone: the session's facts stay as they were
        keep_fields = ("youtube_video_id", "thumbnail_url", "started_at", "duration_seconds")
        entry = entry.model_copy(update={name: getattr(before, name) for name in keep_fields})
    article_text = (await catalog.get_text(kv, entry.article_id)).article_text if entry.article_id else ""
    await catalog.put_text(kv, entry_id, SearchText(cues=cues, article_text=article_text))
    record, previous = await catalog.keep(kv, entry, by=recording.submitted_by or recording.source)
    if record.entry.causation_id != recording.id:  # another recording of the session overtook this one
        await _remove_replaced(store, entry, record.entry)
    elif previous is not None:
        await _remove_replaced(store, previous.entry, record.entry)
    await finish(broker, kv, record.entry, session)
    log.info(
        "library.entry_kept",
        entry_id=entry_id,
        revision=record.entry.revision,
        files=[f.kind for f in record.entry.files],
        transcript_lines=len(cues),
    )
    return record.entry


def _cues(transcript: bytes | None, session_id: str) -> list[Cue] | None:
    if transcript is None:
        return None
    try:
        return parse_vtt(transcript)
    except TranscriptUnreadable as error:
        log.warning("library.transcript_unreadable", session_id=session_id, reason=str(error))
        return []


async def _remove_replaced(store: MediaStore, before: LibraryEntry, after: LibraryEntry) -> None:
    """Remove from the store the files `before` names and `after` no longer does."""
    still = {f.key for f in after.files}
    for file in before.files:
        if file.key not in still:
            await store.delete(file.key)
            log.info("library.file_replaced", kind=file.kind, key=file.key)


async def finish(broker: NatsBroker, kv: KeyValue, entry: LibraryEntry, session: ScheduledSession) -> None:
    """What follows a kept recording, each step idempotent (a redelivery repeats them all): the session is archived,
    no longer awaited, and its article links to it."""
    await mark_archived(broker, session.proposal.id, by="archive")
    await stores.erase(kv, catalog.awaiting_key(session.id))  # no delete marker for the pollers' reads to wade through
    await list_article(broker, kv, session, recording_entry=entry.entry_id)


async def list_article(
    broker: NatsBroker, kv: KeyValue, session: ScheduledSession, recording_entry: str | None = None
) -> catalog.ArticleItem:
    """Put the session's article on the reading list (once; a public session makes it public) with the text the
    enrich stage read (from its page cache, while it still has it), and link the recording it led to."""
    item = reading_item(session)
    if await catalog.read(kv, catalog.text_key(item.article_id), SearchText) is None:
        pages = await stores.bucket(broker, stores.PAGES)
        page = await cached(pages, link_key(session.proposal.content.trigger.canonical_url))
        await catalog.put_text(kv, item.article_id, SearchText(article_text=page.topic_text if page else ""))

    def change(current: catalog.ArticleItem | None) -> catalog.ArticleItem | None:
        base = current or item
        recordings = base.recordings
        if recording_entry and recording_entry not in recordings:
            recordings = [*recordings, recording_entry]
        visibility = "public" if "public" in (base.visibility, item.visibility) else "internal"
        if current is not None and recordings == current.recordings and visibility == current.visibility:
            return None
        return base.model_copy(update={"recordings": recordings, "visibility": visibility})

    listed = await catalog.update(kv, catalog.article_key(item.article_id), catalog.ArticleItem, change)
    assert listed is not None
    return listed


async def await_recording(broker: NatsBroker, session: ScheduledSession, ended_at: datetime) -> bool:
    """Note that `session` ended and waits for its recording (the pollers ask Zoom and YouTube for it); False when
    its recording is already kept."""
    kv = await catalog.library_bucket(broker)
    if await catalog.get_record(kv, entry_id_for(session.id)) is not None:
        return False
    waiting = AwaitingRecording(
        session_id=session.id, provider=session.provider, provider_id=session.provider_id, ended_at=ended_at
    )
    await catalog.update(kv, catalog.awaiting_key(session.id), AwaitingRecording, lambda current: current or waiting)
    return True
