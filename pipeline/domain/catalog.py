"""The learning library's records in NATS KV (bucket impromptu-library), shared by every worker on every machine.

    entry.<entry_id>    LibraryRecord: the entry as shown, whether it is published, its history
    text.<item_id>      SearchText: what search reads but pages rarely need (transcript cues, article text)
    article.<item_id>   ArticleItem: an article that led to a session, on the reading list
    awaiting.<session>  AwaitingRecording: a session that ended and whose recording has not been kept yet

Every change is a compare-and-set on the key's revision, so two workers (or two facilitators) never lose each
other's writes; each change to an entry is kept in its history. The search index of each process follows these
keys (pipeline/archive/search.py); nothing here reads the whole bucket.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Literal, TypeVar

import structlog
from faststream.nats import NatsBroker
from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue
from pydantic import BaseModel, ConfigDict, Field

from pipeline import stores
from pipeline.errors import ImpromptuError, RetryableError
from pipeline.messages import FieldChange, LibraryEntry, Visibility, utc_now

log = structlog.get_logger("pipeline.archive")

CAS_ATTEMPTS = 20
ENTRY = "entry."
TEXT = "text."
ARTICLE = "article."
AWAITING = "awaiting."

Model = TypeVar("Model", bound=BaseModel)


class Cue(BaseModel):
    """One timed line of a transcript."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    start: float = Field(ge=0, description="Seconds from the start of the recording.")
    text: str
    speaker: str | None = None


class SearchText(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    cues: list[Cue] = Field(default_factory=list, description="The transcript, line by line with its time.")
    article_text: str = Field(default="", description="The text of the article the session discussed.")


ChangeKind = Literal["kept", "media_replaced", "edited", "unpublished", "published"]


class EntryChange(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    at: datetime
    by: str
    what: ChangeKind
    changes: dict[str, FieldChange] = Field(default_factory=dict)
    detail: str = ""
    recording_id: str | None = Field(default=None, description="The recording a kept / media_replaced change applied.")


class LibraryRecord(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    entry: LibraryEntry
    published: bool = True
    history: list[EntryChange] = Field(default_factory=list)


class ArticleItem(BaseModel):
    """An article that triggered a session: on the reading list, linked to the recordings it led to."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    article_id: str
    url: str
    title: str
    author: str | None = None
    site_name: str | None = None
    published: str | None = Field(default=None, description="The article's own date, as the page states it.")
    summary: str = ""
    tagline: str = ""
    key_phrases: list[str] = Field(default_factory=list)
    topics: list[str] = Field(default_factory=list)
    language: str | None = None
    image: str | None = None
    shared_by: str = ""
    sharer_handle: str = ""
    first_shared_at: datetime
    recordings: list[str] = Field(default_factory=list, description="Entry ids of the sessions it led to.")
    visibility: Visibility = "public"
    listed: bool = Field(default=True, description="Shown on the reading list (false: taken down).")


class AwaitingRecording(BaseModel):
    """A session that ended and is waiting for its recording: what the pollers look up at the provider."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    session_id: str
    provider: str
    provider_id: str | None = None
    ended_at: datetime
    checks: int = 0
    last_check: datetime | None = None
    last_problem: str | None = None


class EntryMissing(ImpromptuError):
    """No library entry with that id."""


def entry_key(entry_id: str) -> str:
    return ENTRY + entry_id


def text_key(item_id: str) -> str:
    return TEXT + item_id


def article_key(article_id: str) -> str:
    return ARTICLE + article_id


def awaiting_key(session_id: str) -> str:
    return AWAITING + session_id


async def library_bucket(broker: NatsBroker) -> KeyValue:
    return await stores.bucket(broker, stores.LIBRARY)


async def read(kv: KeyValue, key: str, model: type[Model]) -> tuple[Model, int] | None:
    """The value at `key` and its revision, or None when there is none (never set, or deleted)."""
    try:
        found = await kv.get(key)
    except (KeyNotFoundError, ValueError):  # ValueError: a key nats-py finds invalid (an id from a URL)
        return None
    if not found.value:
        return None
    return model.model_validate_json(found.value), found.revision or 0


async def get_record(kv: KeyValue, entry_id: str) -> LibraryRecord | None:
    found = await read(kv, entry_key(entry_id), LibraryRecord)
    return found[0] if found else None


async def get_text(kv: KeyValue, item_id: str) -> SearchText:
    found = await read(kv, text_key(item_id), SearchText)
    return found[0] if found else SearchText()


async def get_article(kv: KeyValue, article_id: str) -> ArticleItem | None:
    found = await read(kv, article_key(article_id), ArticleItem)
    return found[0] if found else None


async def update(
    kv: KeyValue, key: str, model: type[Model], change: Callable[[Model | None], Model | None]
) -> Model | None:
    """Compare-and-set: `change` gets the current value (None if absent) and returns the new one, or None to leave
    it as it is (an idempotent repeat); after a conflict it runs again on the newer value."""
    return await stores.compare_and_set(
        kv,
        key,
        change,
        decode=model.model_validate_json,
        encode=lambda value: value.model_dump_json().encode(),
        gave_up=RetryableError(f"library key {key} kept changing under us; try again"),
        attempts=CAS_ATTEMPTS,
    )


async def put_text(kv: KeyValue, item_id: str, text: SearchText) -> None:
    await kv.put(text_key(item_id), text.model_dump_json().encode())


async def keep(kv: KeyValue, entry: LibraryEntry, *, by: str) -> tuple[LibraryRecord, LibraryRecord | None]:
    """Store a newly kept (or corrected) recording's entry; returns (the record now, the record before, if any).

    A first recording creates the record; a later one for the same session replaces its files and keeps what
    people edited (tagline, description, tags) and whether it is published. The same revision again is a repeat."""
    before: list[LibraryRecord | None] = [None]

    def change(current: LibraryRecord | None) -> LibraryRecord | None:
        before[0] = current
        now = utc_now()
        recording_id = entry.causation_id
        if current is None:
            kept = EntryChange(at=now, by=by, what="kept", recording_id=recording_id)
            return LibraryRecord(entry=entry, history=[kept])
        if applied(current, recording_id) or current.entry.revision >= entry.revision:
            return None  # this recording is in already (a redelivery), or a newer one overtook it
        edited = {c for change in current.history if change.what == "edited" for c in change.changes}
        people_edited: dict[str, object] = {
            name: getattr(current.entry, name) for name in ("tagline", "description", "tags") if name in edited
        }
        replaced = entry.model_copy(update=people_edited)
        detail = ", ".join(sorted(f"{f.kind} {f.sha256[:12]}" for f in current.entry.files)) or "nothing"
        change = EntryChange(
            at=now, by=by, what="media_replaced", detail=f"replaced {detail}", recording_id=recording_id
        )
        return current.model_copy(update={"entry": replaced, "history": [*current.history, change]})

    record = await update(kv, entry_key(entry.entry_id), LibraryRecord, change)
    assert record is not None
    return record, before[0]


def applied(record: LibraryRecord | None, recording_id: str | None) -> bool:
    """Whether the recording `recording_id` is already in the entry (kept, or a correction applied)."""
    return record is not None and any(c.recording_id == recording_id for c in record.history if c.recording_id)


EDITABLE = ("tagline", "description", "tags")


async def edit(
    kv: KeyValue,
    entry_id: str,
    *,
    by: str,
    tagline: str | None = None,
    description: str | None = None,
    tags: list[str] | None = None,
) -> LibraryRecord:
    """A facilitator's edit of what people read; each changed field is kept in the history, before and after."""
    asked = {"tagline": tagline, "description": description, "tags": tags}

    def change(current: LibraryRecord | None) -> LibraryRecord | None:
        if current is None:
            raise EntryMissing(f"no library entry {entry_id!r}: see `impromptu library list`")
        new = {name: value for name, value in asked.items() if value is not None}
        changes = {
            name: FieldChange(before=_shown(getattr(current.entry, name)), after=_shown(value))
            for name, value in new.items()
            if getattr(current.entry, name) != value
        }
        if not changes:
            return None
        entry = current.entry.model_copy(update={name: new[name] for name in changes})
        history = [*current.history, EntryChange(at=utc_now(), by=by, what="edited", changes=changes)]
        return current.model_copy(update={"entry": entry, "history": history})

    record = await update(kv, entry_key(entry_id), LibraryRecord, change)
    if record is None:
        raise EntryMissing(f"no library entry {entry_id!r}: see `impromptu library list`")
    return record


async def set_published(kv: KeyValue, entry_id: str, published: bool, *, by: str, reason: str = "") -> LibraryRecord:
    """Unpublish (taken off every page, feed and search, media kept) or publish again."""

    def change(current: LibraryRecord | None) -> LibraryRecord | None:
        if current is None:
            raise EntryMissing(f"no library entry {entry_id!r}: see `impromptu library list`")
        if current.published == published:
            return None
        what: ChangeKind = "published" if published else "unpublished"
        history = [*current.history, EntryChange(at=utc_now(), by=by, what=what, detail=reason)]
        return current.model_copy(update={"published": published, "history": history})

    record = await update(kv, entry_key(entry_id), LibraryRecord, change)
    if record is None:
        raise EntryMissing(f"no library entry {entry_id!r}: see `impromptu library list`")
    return record


async def forget(kv: KeyValue, entry_id: str) -> None:
    """Delete an entry and its search text (the caller removes its media from the store first). A delete marker is
    left on purpose: every process's search index follows the bucket and must see the entry go."""
    for key in (entry_key(entry_id), text_key(entry_id)):
        try:
            await kv.delete(key)
        except KeyNotFoundError:
            pass


def _shown(value: object) -> str:
    return ", ".join(map(str, value)) if isinstance(value, list) else str(value)
