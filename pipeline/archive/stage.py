"""Archive stage (the router): recordings become entries of the learning library.

- `archive` reads `impromptu.recordings`: each file into the media store, the entry into KV impromptu-library,
  the session to archived; emits `impromptu.library.entries` (LibraryEntry).
- `archive-ended` reads `impromptu.proposals.transitions`: a session that ended without a recording becomes
  `awaiting.<session>`, which the pollers look up at Zoom or YouTube (pipeline/archive/poll.py).
- `archive-reading-list` reads `impromptu.sessions.scheduled`: the article it discusses goes on the reading list
  (`article.<id>`).

Recordings arrive from Zoom's webhook, YouTube's and Zoom's lookups, the signed `POST /webhooks/recordings` and
`impromptu record` (pipeline/web/recordings.py, zoom.py, youtube.py, poll.py); how one is kept: keep.py.
"""

from __future__ import annotations

import asyncio

import structlog
from faststream.nats.annotations import NatsBroker, NatsMessage

from pipeline import bus
from pipeline.archive.keep import await_recording, keep_recording, list_article
from pipeline.archive.media import MediaStore, media_store
from pipeline.domain import catalog
from pipeline.domain.sessions import session_id_for
from pipeline.messages import ProposalTransition, Recording, ScheduledSession
from pipeline.settings import Settings
from pipeline.stage import STAGE, Emits, Outputs, Route, StageRouter, stage_router, still_working
from pipeline.stores import stored_session

log = structlog.get_logger("pipeline.archive")


class StoreOnce:
    """The media store, opened on first use (the broker is connected by then) and shared by the stage's handlers."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._store: MediaStore | None = None
        self._lock = asyncio.Lock()

    async def get(self, broker: NatsBroker) -> MediaStore:
        async with self._lock:
            if self._store is None:
                self._store = await media_store(self.settings, broker)
            return self._store

    async def close(self) -> None:
        if self._store is not None:
            await self._store.close()
            self._store = None


class ArchiveStage:
    """What the archive handlers share, given to them as `stage` (pipeline/stage.py)."""

    def __init__(self, settings: Settings, outputs: Outputs, store: StoreOnce) -> None:
        self.settings = settings
        self.outputs = outputs
        self.store = store


async def keep(recording: Recording, broker: NatsBroker, message: NatsMessage, stage: ArchiveStage = STAGE) -> None:
    # a 2 GB download takes minutes: no other worker may start it again meanwhile
    async with still_working(message, every=stage.settings.ack_wait_seconds / 3):
        entry = await keep_recording(broker, stage.settings, await stage.store.get(broker), recording)
    await stage.outputs.emit(bus.LIBRARY_ENTRIES, entry)  # a repeat has the same id: JetStream drops it


async def note_ended(change: ProposalTransition, broker: NatsBroker) -> None:
    if change.to_state != "ended" or change.by == "archive":
        return  # the archive walks a session through "ended" when its recording arrives: nothing to wait for
    session = await stored_session(broker, session_id_for(change.proposal_id))
    if session is not None and await await_recording(broker, session, change.created_at):
        log.info("recording.awaited", session_id=session.id, provider=session.provider)


async def list_reading(session: ScheduledSession, broker: NatsBroker) -> None:
    item = await list_article(broker, await catalog.library_bucket(broker), session)
    log.info("library.article_listed", article_id=item.article_id, title=item.title)


ENTRIES = Emits(bus.LIBRARY_ENTRIES, "A recording kept (or corrected) in the library.")

# What the archive stage reads, through which durable consumer, and what it emits.
ROUTES = (
    Route(keep, bus.RECORDINGS, emits=(ENTRIES,)),
    Route(note_ended, bus.PROPOSALS_TRANSITIONS, "archive-ended"),
    Route(list_reading, bus.SESSIONS_SCHEDULED, "archive-reading-list"),
)


def archive_router(settings: Settings, store: StoreOnce | None = None) -> StageRouter:
    media = store or StoreOnce(settings)
    return stage_router("archive", settings, ROUTES, lambda outputs: ArchiveStage(settings, outputs, media))
