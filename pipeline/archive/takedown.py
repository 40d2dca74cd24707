"""Taking an entry down for good (a speaker asked): `impromptu library delete` and the library's delete page."""

from __future__ import annotations

import structlog
from nats.js.kv import KeyValue

from pipeline.archive.media import MediaStore
from pipeline.domain import catalog
from pipeline.domain.catalog import ArticleItem, LibraryRecord

log = structlog.get_logger("pipeline.archive")


async def remove(kv: KeyValue, store: MediaStore, entry_id: str, *, by: str) -> LibraryRecord:
    """Delete an entry for good (a speaker asked to be taken down): its media leave the store, then the entry and its
    text leave KV (every process's search index follows), and its article no longer links to it."""
    record = await catalog.get_record(kv, entry_id)
    if record is None:
        raise catalog.EntryMissing(f"no library entry {entry_id!r}: see `impromptu library list`")
    for file in record.entry.files:
        await store.delete(file.key)
    await catalog.forget(kv, entry_id)
    if record.entry.article_id:

        def unlink(current: ArticleItem | None) -> ArticleItem | None:
            if current is None or entry_id not in current.recordings:
                return None
            return current.model_copy(update={"recordings": [r for r in current.recordings if r != entry_id]})

        await catalog.update(kv, catalog.article_key(record.entry.article_id), ArticleItem, unlink)
    log.info("library.entry_deleted", entry_id=entry_id, by=by, files=len(record.entry.files))
    return record
