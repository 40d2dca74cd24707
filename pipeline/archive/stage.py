"""Archive stage (the router): recordings become entries of the learning library.

- `archive` reads `impromptu.recordings`: each file into the media store, the entry into KV impromptu-library,
  the session to archived; emits `impromptu.library.entries` (LibraryEntry).
- `archive-ended` reads `impromptu.proposals.transitions`: a session that ended without a recording becomes
  `awaiting.<session>`, which the pollers look up at Zoom or YouTube (pipeline/archive/poll.py).
- `archive-reading-list` reads `impromptu.sessions.scheduled`: the article it discusses goes on the reading list
  (`article.<id>`).

Recordings arrive from Zoom's webhook, YouTube's and Zoom's lookups, the signed `POST /webhooks/recordings` and
`impromptu record` (pipeline/archive/hooks.py, zoom.py, youtube.py, poll.py); how one is kept: keep.py.
"""

from __future__ import annotations

import asyncio

import structlog
from faststream.nats.annotations import NatsBroker, NatsMessage

from pipeline import bus
from pipeline.actions.stage import session_id_for
from pipeline.archive import catalog
from pipeline.archive.keep import await_recording, keep_recording, list_article
from pipeline.archive.media import MediaStore, media_store
from pipeline.messages import LibraryEntry, ProposalTransition, Recording, ScheduledSession
from pipeline.outreach.stage import stored_session
from pipeline.settings import Settings
from pipeline.stage import StageRouter, emit, still_working

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


def archive_router(settings: Settings, store: StoreOnce | None = None) -> StageRouter:
    router = StageRouter("archive", settings)
    entries = router.output(bus.LIBRARY_ENTRIES, LibraryEntry, "A recording kept (or corrected) in the library.")
    stores = store or StoreOnce(settings)

    @router.consume(bus.RECORDINGS)
    async def keep(recording: Recording, broker: NatsBroker, message: NatsMessage) -> None:
        # a 2 GB download takes minutes: no other worker may start it again meanwhile
        async with still_working(message, every=settings.ack_wait_seconds / 3):
            entry = await keep_recording(broker, settings, await stores.get(broker), recording)
        await emit(entries, entry)  # a repeat has the same id: JetStream drops it

    @router.consume(bus.PROPOSALS_TRANSITIONS, durable="archive-ended")
    async def note_ended(change: ProposalTransition, broker: NatsBroker) -> None:
        if change.to_state != "ended" or change.by == "archive":
            return  # the archive walks a session through "ended" when its recording arrives: nothing to wait for
        session = await stored_session(broker, session_id_for(change.proposal_id))
        if session is not None and await await_recording(broker, session, change.created_at):
            log.info("recording.awaited", session_id=session.id, provider=session.provider)

    @router.consume(bus.SESSIONS_SCHEDULED, durable="archive-reading-list")
    async def list_reading(session: ScheduledSession, broker: NatsBroker) -> None:
        item = await list_article(broker, await catalog.library_bucket(broker), session)
        log.info("library.article_listed", article_id=item.article_id, title=item.title)

    return router
