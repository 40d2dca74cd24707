"""Never twice: one record per (session, channel, kind) in NATS KV, claimed before a post and confirmed after.

States: sending (claimed, the post is under way or was interrupted) -> posted | retry (surely not posted: safe to
try again) | failed (refused; a replay tries again) | unknown (interrupted and the channel cannot tell: a person
decides with `impromptu outreach resolve`) | deleted (a cancelled session's post was removed) | skipped (not made
on purpose, e.g. the session was cancelled before its announcement went out; with the reason).
Every change is a compare-and-set, so two workers holding the same message never both post.

A follow-up (starting, recording, cancelled) goes after its channel's announcement (`scheduled`): it waits while
that record is not SETTLED, and is skipped, with the reason, when the announcement was not posted.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue
from pydantic import BaseModel, ConfigDict

from pipeline import stores
from pipeline.channels.base import Channel, NotSent, Post
from pipeline.errors import PermanentError, RetryableError
from pipeline.messages import AnnouncementDue, utc_now

UNKNOWN = "unknown."  # + a post's key: an index of the posts a person must check

PostState = Literal["sending", "posted", "retry", "failed", "unknown", "deleted", "skipped"]
SETTLED: frozenset[str] = frozenset({"posted", "failed", "deleted", "skipped"})  # nothing more happens by itself
Status = Literal["posted", "already_posted", "failed", "unknown", "deleted", "skipped"]


class PostRecord(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    state: PostState
    location: str | None = None  # where a person can see the post
    remote_id: str | None = None  # what deleting it needs
    reason: str | None = None
    attempts: int = 0
    text: str = ""
    due: AnnouncementDue | None = None  # to post it again after `impromptu outreach resolve KEY --not-posted`
    updated_at: datetime | None = None


class Outcome(BaseModel):
    model_config = ConfigDict(frozen=True)

    status: Status
    record: PostRecord


async def read(kv: KeyValue, key: str) -> tuple[PostRecord | None, int]:
    try:
        entry = await kv.get(key)
    except KeyNotFoundError:
        return None, 0
    return PostRecord.model_validate_json(entry.value or b""), entry.revision or 0


async def write(kv: KeyValue, key: str, record: PostRecord, revision: int) -> int:
    """Compare-and-set; revision 0 creates. Losing the race means another worker has this post: try again later."""
    value = record.model_copy(update={"updated_at": utc_now()}).model_dump_json().encode()
    try:
        if revision == 0:
            return await kv.create(key, value)
        return await kv.update(key, value, last=revision)
    except KeyWrongLastSequenceError:
        raise RetryableError(f"post {key} is being handled by another worker") from None


async def post_once(kv: KeyValue, channel: Channel, post: Post, due: AnnouncementDue) -> Outcome:
    """Make `post` unless it was made; reconcile an interrupted attempt before posting again."""
    record, revision = await read(kv, post.key)
    if record is not None and record.state in ("posted", "deleted"):
        return Outcome(status="already_posted" if record.state == "posted" else "deleted", record=record)
    if record is not None and record.state == "unknown":
        await kv.put(UNKNOWN + post.key, b"")  # again: a worker killed between the two writes left none
        return Outcome(status="unknown", record=record)
    if record is not None and record.state == "sending":
        if (why := _cannot_tell(channel, record)) is not None:
            unknown = record.model_copy(
                update={
                    "state": "unknown",
                    "reason": f"an attempt to post on {channel.name} was interrupted and {why}: check the channel, "
                    f"then `impromptu outreach resolve {post.key} --posted URL` or `--not-posted`",
                }
            )
            await write(kv, post.key, unknown, revision)
            await kv.put(UNKNOWN + post.key, b"")  # so status finds them without reading every record
            return Outcome(status="unknown", record=unknown)
        if (found := await channel.find(post)) is not None:
            posted = record.model_copy(
                update={"state": "posted", "location": found.url, "remote_id": found.remote_id, "reason": None}
            )
            await write(kv, post.key, posted, revision)
            return Outcome(status="already_posted", record=posted)
    attempts = (record.attempts if record else 0) + 1
    sending = PostRecord(state="sending", attempts=attempts, text=post.text, due=due)
    revision = await write(kv, post.key, sending, revision)
    try:
        made = await channel.post(post)
    except NotSent as error:  # surely not posted: the next delivery may post
        await write(kv, post.key, sending.model_copy(update={"state": "retry", "reason": str(error)}), revision)
        raise
    except PermanentError as error:
        await write(kv, post.key, sending.model_copy(update={"state": "failed", "reason": str(error)}), revision)
        raise
    # any other error leaves "sending": the post may exist, so the next delivery reconciles first
    posted = sending.model_copy(update={"state": "posted", "location": made.url, "remote_id": made.remote_id})
    await write(kv, post.key, posted, revision)
    return Outcome(status="posted", record=posted)


def _cannot_tell(channel: Channel, record: PostRecord) -> str | None:
    """Why `find` cannot settle an interrupted post on this channel, or None when it can."""
    if not channel.can_find:
        return f"{channel.name} cannot be asked whether it went out"
    within: float | None = getattr(channel, "find_within", None)
    if within is not None and record.updated_at is not None:
        age = (utc_now() - record.updated_at).total_seconds()
        if age > within:
            return f"it was {age / 60:.0f} min ago, too long for {channel.name} to tell"
    return None


async def mark_not_made(kv: KeyValue, key: str, state: Literal["failed", "skipped"], reason: str) -> None:
    """Record why a post was not made (refused before it reached the channel, or skipped on purpose), so its
    follow-ups settle at once. A post that may exist (sending, unknown) or exists (posted, deleted) is left alone."""
    record, revision = await read(kv, key)
    if record is None or record.state in ("retry", "failed", "skipped"):
        base = record or PostRecord(state=state)
        await write(kv, key, base.model_copy(update={"state": state, "reason": reason}), revision)


async def mark_deleted(kv: KeyValue, key: str, reason: str) -> None:
    record, revision = await read(kv, key)
    if record is not None and record.state == "posted":
        await write(kv, key, record.model_copy(update={"state": "deleted", "reason": reason}), revision)


async def resolve(kv: KeyValue, key: str, *, posted_at: str | None) -> PostRecord:
    """A person's answer for an unknown post: it went out (at `posted_at`), or it did not (post again)."""
    record, revision = await read(kv, key)
    if record is None:
        raise PermanentError(f"no post record {key}")
    if record.state != "unknown":
        raise PermanentError(f"post {key} is {record.state}, not unknown: nothing to resolve")
    if posted_at is not None:
        update = {"state": "posted", "location": posted_at, "reason": "marked posted by a person"}
    else:
        update = {"state": "retry", "reason": "marked not posted by a person"}
    resolved = record.model_copy(update=update)
    await write(kv, key, resolved, revision)
    await kv.purge(UNKNOWN + key)
    return resolved


async def records_of(kv: KeyValue, session_id: str) -> dict[str, PostRecord]:
    """Every post record of one session, by key."""
    return {
        entry.key: PostRecord.model_validate_json(entry.value)
        for entry in await stores.scan(kv, f"{session_id}.>")
        if entry.value
    }


async def unknown_keys(kv: KeyValue) -> list[str]:
    """The posts waiting for a person, from their index: status reads this on every refresh of the ops page."""
    return sorted(entry.key.removeprefix(UNKNOWN) for entry in await stores.scan(kv, UNKNOWN + ">", headers_only=True))


async def all_records(kv: KeyValue) -> dict[str, PostRecord]:
    return {
        entry.key: PostRecord.model_validate_json(entry.value)
        for entry in await stores.scan(kv, "*.*.*")
        if entry.value and not entry.key.startswith(("channel.", "notify."))  # other records in the bucket
    }
