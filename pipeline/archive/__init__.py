"""Archive stage: consumes Recording on `impromptu.recordings`, keeps it in the library folder and emits
LibraryEntry on `impromptu.library.entries`."""

from __future__ import annotations

import structlog

from pipeline import bus
from pipeline.archive.library import describe, keep_media, save
from pipeline.messages import LibraryEntry, Recording
from pipeline.settings import Settings
from pipeline.stage import StageRouter, emit

log = structlog.get_logger("pipeline.archive")


def archive_router(settings: Settings) -> StageRouter:
    router = StageRouter("archive", settings)
    entries = router.output(bus.LIBRARY_ENTRIES, LibraryEntry, "A recording kept in the learning library.")

    @router.consume(bus.RECORDINGS)
    async def keep_recording(recording: Recording) -> None:
        entry = keep_media(settings.library_dir, describe(recording))
        path = save(settings.library_dir, entry)
        await emit(entries, entry)
        log.info("library.entry_saved", entry_id=entry.id, path=str(path), tags=entry.tags)

    return router
