"""Archive stage: consumes Recording on `impromptu.recordings`, keeps it in the library folder and emits
LibraryEntry on `impromptu.library.entries`; the session's proposal moves to `archived`."""

from __future__ import annotations

import structlog
from faststream.nats.annotations import NatsBroker

from pipeline import bus
from pipeline.actions.approval import mark_archived
from pipeline.archive.library import describe, keep_media, save
from pipeline.messages import LibraryEntry, Recording
from pipeline.settings import Settings
from pipeline.stage import StageRouter, emit

log = structlog.get_logger("pipeline.archive")


def archive_router(settings: Settings) -> StageRouter:
    router = StageRouter("archive", settings)
    entries = router.output(bus.LIBRARY_ENTRIES, LibraryEntry, "A recording kept in the learning library.")

    @router.consume(bus.RECORDINGS)
    async def keep_recording(recording: Recording, broker: NatsBroker) -> None:
        entry = keep_media(settings.library_dir, describe(recording))
        path = save(settings.library_dir, entry)
        await mark_archived(broker, recording.session.proposal.id, by="archive")
        await emit(entries, entry)
        log.info("library.entry_saved", entry_id=entry.id, path=str(path), tags=entry.tags)

    return router
