"""What the proposal path reads instead of the whole proposals bucket: an index kept in KV beside the records.

Reading every proposal cost O(all proposals ever) on every new proposal, approval, clock tick and queue page, and
each read left a server consumer behind. So the records are indexed, in the same bucket, under keys with several
tokens (a record's key is its id, one token):

- `index.play.<YYYY-MM-DD>.<id>`: one proposal starting that UTC day, with what the slot check and the clock need
  (state, host, start, end, decision deadline) and the record's revision it was written from; erased (no delete
  marker left) once the proposal is finished (rejected, expired, cancelled, ended, archived);
- `index.days`: the days that may have proposals in play;
- `index.made.<YYYY-MM-DD>.<id>`: one proposal created that UTC day (the history pages, newest day first);
- `index.history`: the days that have created proposals;
- `index.built`: there once the records made before the index existed were indexed.

A proposal's own keys are written by whoever writes its record, so writers of different proposals never contend
(one key per day did, under a burst). An entry is only replaced by one from a newer record revision. The index is
written after the record, so a crash in between leaves it behind: the step's redelivery re-notes the record, the
clock judges each due entry on its record, and `approval.reindex` re-notes them all.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue
from pydantic import BaseModel, ConfigDict, Field

from pipeline import stores
from pipeline.errors import RetryableError
from pipeline.messages import IN_PLAY, ProposalState, SessionProposal

PLAY = "index.play."
DAYS = "index.days"
MADE = "index.made."
HISTORY = "index.history"
BUILT = "index.built"
CAS_ATTEMPTS = 20
PRUNE_AFTER = timedelta(days=2)  # an empty day this far in the past can take no new proposal: forget it

ModelT = TypeVar("ModelT", bound=BaseModel)


class Entry(BaseModel):
    """One proposal in play, as much as the slot check and the clock need."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    state: ProposalState
    facilitator: str | None
    title: str
    starts_at: datetime
    ends_at: datetime
    expires_at: datetime
    revision: int = Field(description="The record's KV revision this entry was written from.")

    @classmethod
    def of(cls, proposal: SessionProposal, state: ProposalState, revision: int) -> Entry:
        return cls(
            state=state,
            facilitator=proposal.facilitator,
            title=proposal.title,
            starts_at=proposal.starts_at,
            ends_at=proposal.starts_at + timedelta(minutes=proposal.duration_minutes),
            expires_at=proposal.expires_at,
            revision=revision,
        )


class Days(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    days: list[str] = Field(default_factory=list)


def utc_day(moment: datetime) -> str:
    return moment.astimezone(UTC).date().isoformat()


def play_key(starts_at: datetime, proposal_id: str) -> str:
    return f"{PLAY}{utc_day(starts_at)}.{proposal_id}"


async def _read(kv: KeyValue, key: str, model: type[ModelT]) -> tuple[ModelT | None, int | None]:
    try:
        entry = await kv.get(key)
    except KeyNotFoundError:  # never written, or deleted
        return None, None
    return (model.model_validate_json(entry.value) if entry.value else None), entry.revision


async def _days(kv: KeyValue, key: str) -> list[str]:
    value, _ = await _read(kv, key, Days)
    return value.days if value else []


async def _change_days(kv: KeyValue, key: str, change: Callable[[list[str]], list[str]]) -> None:
    """Compare-and-set a list of days; written only when `change` changes it (most calls only read)."""

    def changed(value: Days | None) -> Days | None:  # after a conflict: judged again on the newer value
        days = value.days if value else []
        updated = change(days)
        return None if updated == days else Days(days=updated)

    await stores.compare_and_set(
        kv,
        key,
        changed,
        decode=Days.model_validate_json,
        encode=lambda value: value.model_dump_json().encode(),
        gave_up=RetryableError(f"index {key} kept changing under us; try again"),
        attempts=CAS_ATTEMPTS,
    )


def _with(day: str) -> Callable[[list[str]], list[str]]:
    return lambda days: days if day in days else sorted([*days, day])


async def note(
    kv: KeyValue,
    proposal: SessionProposal,
    state: ProposalState,
    revision: int,
    *,
    moved_from: datetime | None = None,
) -> None:
    """Make the index say what the record (at `revision`) says. `moved_from`: the start before an edit."""
    key = play_key(proposal.starts_at, proposal.id)
    for _ in range(CAS_ATTEMPTS):
        current, entry_revision = await _read(kv, key, Entry)
        if current is not None and current.revision > revision:
            break  # a newer record was indexed meanwhile
        try:
            if state in IN_PLAY:
                wanted = Entry.of(proposal, state, revision)
                if current == wanted:
                    break
                await _change_days(kv, DAYS, _with(utc_day(proposal.starts_at)))  # first: the clock must see the day
                if entry_revision is None:
                    await kv.create(key, wanted.model_dump_json().encode())
                else:
                    await kv.update(key, wanted.model_dump_json().encode(), last=entry_revision)
            elif current is not None:
                await stores.erase(kv, key)
            break
        except KeyWrongLastSequenceError:
            continue
    else:
        raise RetryableError(f"index {key} kept changing under us; try again")
    if moved_from is not None and utc_day(moved_from) != utc_day(proposal.starts_at):
        await forget(kv, moved_from, proposal.id)


async def forget(kv: KeyValue, starts_at: datetime, proposal_id: str) -> None:
    """The day of `starts_at` no longer lists the proposal."""
    await stores.erase(kv, play_key(starts_at, proposal_id))


async def note_created(kv: KeyValue, proposal: SessionProposal) -> None:
    day = utc_day(proposal.created_at)
    await _change_days(kv, HISTORY, _with(day))
    try:
        await kv.create(f"{MADE}{day}.{proposal.id}", b"")
    except KeyWrongLastSequenceError:
        pass  # noted already (a redelivery)


async def in_play(kv: KeyValue) -> dict[str, Entry]:
    """The proposals in play, by id. One ranged read per day that may have some: the cost follows the days with
    proposals in play, never the proposals ever made."""
    found: dict[str, Entry] = {}
    for day in await _days(kv, DAYS):
        for item in await stores.scan(kv, f"{PLAY}{day}.*"):
            if item.value:
                found[item.key.rsplit(".", 1)[1]] = Entry.model_validate_json(item.value)
    return found


async def prune(kv: KeyValue, now: datetime) -> None:
    """Forget past days with nothing left in play, so `in_play` reads only days that matter."""
    horizon = utc_day(now - PRUNE_AFTER)
    empty = {day for day in await _days(kv, DAYS) if day < horizon and not await stores.scan(kv, f"{PLAY}{day}.*")}
    if empty:
        await _change_days(kv, DAYS, lambda days: [d for d in days if d not in empty])


async def recent_ids(kv: KeyValue, limit: int) -> list[str]:
    """Ids of at least the newest `limit` proposals (whole days of them, newest day first)."""
    ids: list[str] = []
    for day in reversed(await _days(kv, HISTORY)):
        ids.extend(item.key.rsplit(".", 1)[1] for item in await stores.scan(kv, f"{MADE}{day}.*", headers_only=True))
        if len(ids) >= limit:
            break
    return ids


async def is_built(kv: KeyValue) -> bool:
    try:
        await kv.get(BUILT)
    except KeyNotFoundError:
        return False
    return True


async def mark_built(kv: KeyValue) -> None:
    await kv.put(BUILT, b"1")
