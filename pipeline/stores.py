"""NATS KV buckets holding state that must survive restarts and be shared by every worker."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import nats.errors
from faststream.nats import NatsBroker, StorageType
from nats.aio.msg import Msg
from nats.js import api
from nats.js.errors import BucketNotFoundError, KeyNotFoundError, KeyWrongLastSequenceError, NotFoundError
from nats.js.kv import KeyValue
from pydantic import BaseModel

from pipeline import bus
from pipeline.messages import ScheduledSession

ModelT = TypeVar("ModelT", bound=BaseModel)
ValueT = TypeVar("ValueT")

PROPOSALS = "impromptu-proposals"  # proposal id -> ProposalRecord
SESSIONS = "impromptu-sessions"  # session id -> ScheduledSession
OUTREACH = "impromptu-outreach"  # <session>.<channel>.<kind> -> PostRecord
TRIGGERS = "impromptu-triggers"  # link.<id> -> LinkEpisode, budget -> BudgetRecord (30 days)
SOURCES = "impromptu-sources"  # source checkpoints: X since_id, feed ETags, Mastodon ids

PAGES = "impromptu-pages"  # link.<id> -> PageRecord: the enrich stage's cache (6 hours)
LOGINS = "impromptu-logins"  # failed.<name|address>.<sha256> -> recent failed logins (15 minutes)
SIGNINS = "impromptu-signins"  # login.<sha256 of name> -> the login's epoch; logging out replaces it (no TTL)
LIBRARY = "impromptu-library"  # entry.<id>, text.<id>, article.<id>, awaiting.<session>: the learning library
DOWNLOADS = "impromptu-downloads"  # zoom.<event>: a Zoom event's download_token, for its 24 hours
VERDICTS = "impromptu-verdicts"  # share.<sha256 of share id> -> TriggerVerdict: why it fired nothing (30 days)

# other buckets keep their keys
TTL: dict[str, float] = {
    TRIGGERS: 30 * 24 * 3600.0,
    PAGES: 6 * 3600.0,
    LOGINS: 15 * 60.0,
    DOWNLOADS: 24 * 3600.0,
    VERDICTS: 30 * 24 * 3600.0,
}
# Buckets written once per message of a busy subject: one revision a key, and a bound on each value (the server
# refuses a bigger one), so their size follows the number of keys the TTL keeps, never what a user wrote.
HISTORY: dict[str, int] = {VERDICTS: 1}
MAX_VALUE_BYTES: dict[str, int] = {VERDICTS: 8192}


async def bucket(broker: NatsBroker, name: str) -> KeyValue:
    """Bind to the bucket if it exists, whatever its replicas (ops may have created it with `nats kv add`); else
    create it: file storage, 16 revisions, the bucket's TTL, and as many replicas as the stream has, so that on
    a cluster (IMPROMPTU_STREAM_REPLICAS=3) the state survives a lost node as the messages do."""
    try:
        return await broker.key_value(name, declare=False)
    except BucketNotFoundError:
        replicas = await stream_replicas(broker)
        return await broker.key_value(
            name,
            storage=StorageType.FILE,
            history=HISTORY.get(name, 16),
            ttl=TTL.get(name),
            max_value_size=MAX_VALUE_BYTES.get(name),
            replicas=replicas,
        )


async def stream_replicas(broker: NatsBroker) -> int:
    try:
        info = await bus.jetstream(broker).stream_info(bus.STREAM)
    except NotFoundError:  # no stream yet (a command run before the pipeline ever started)
        return 1
    return info.config.num_replicas or 1


async def save_once(kv: KeyValue, key: str, value: ModelT) -> ModelT:
    """Store `value` unless the key exists; return what is stored, so a redelivered message reuses it."""
    try:
        await kv.create(key, value.model_dump_json().encode())
        return value
    except KeyWrongLastSequenceError:
        entry = await kv.get(key)
        return type(value).model_validate_json(entry.value or b"")


CAS_ATTEMPTS = 20  # conflicts on one key before giving up: each means another worker wrote it meanwhile


async def compare_and_set(
    kv: KeyValue,
    key: str,
    change: Callable[[ValueT | None], ValueT | None],
    *,
    decode: Callable[[bytes], ValueT],
    encode: Callable[[ValueT], bytes],
    gave_up: Exception,
    attempts: int = CAS_ATTEMPTS,
) -> ValueT | None:
    """Read `key`, let `change` compute its new value from the current one (None: never written, deleted or
    empty) and write it only if nobody wrote in between; on a conflict read again and let `change` judge the newer
    value. `change` returning None writes nothing (an idempotent repeat). Returns the value written, or the current
    one when nothing was written; raises `gave_up` after `attempts` conflicts."""
    for _ in range(attempts):
        try:
            entry: KeyValue.Entry | None = await kv.get(key)
        except KeyNotFoundError:  # also a deleted key: `create` takes care of its tombstone
            entry = None
        current = decode(entry.value) if entry is not None and entry.value else None
        updated = change(current)
        if updated is None:
            return current
        try:
            if entry is None:
                await kv.create(key, encode(updated))
            else:
                await kv.update(key, encode(updated), last=entry.revision)
        except KeyWrongLastSequenceError:
            continue
        return updated
    raise gave_up


# A read that dies before it can delete its consumer (a killed worker) leaves it this long, not nats-py's 5 minutes.
SCAN_INACTIVE_SECONDS = 10.0
SCAN_BATCH = 256
SCAN_TIMEOUT_SECONDS = 5.0


async def scan(kv: KeyValue, keys: str = ">", *, headers_only: bool = False) -> list[KeyValue.Entry]:
    """The latest entry of every key matching `keys` (deleted ones left out), in one read through a consumer of our
    own, deleted when the read ends.

    Not nats-py's `watch()` (nor `keys()`, built on it): its consumer stays on the server for 5 minutes after
    `stop()`, so a thousand reads in five minutes hit the server's consumer limit; and it can say "caught up" before
    the first entry has arrived (it compares the server's pending count, already 0 once the entries are pushed, with
    what it has received), so a read returned nothing now and then. Here the consumer is pulled until the server
    says nothing is left. For ops and cold paths, or a known small range of keys: hot paths read by key."""
    js, stream, prefix = kv._js, kv._stream, kv._pre  # nats-py keeps the bucket's stream and subject prefix private
    config = api.ConsumerConfig(
        deliver_policy=api.DeliverPolicy.LAST_PER_SUBJECT,
        ack_policy=api.AckPolicy.NONE,
        filter_subject=prefix + keys,
        headers_only=headers_only,
        mem_storage=True,
        num_replicas=1,
        inactive_threshold=SCAN_INACTIVE_SECONDS,
    )
    consumer = await js.add_consumer(stream, config)
    entries = []
    try:
        pending = consumer.num_pending or 0
        if pending:
            subscription = await js.pull_subscribe_bind(consumer=consumer.name, stream=stream)
            try:
                while pending > 0:
                    for msg in await subscription.fetch(min(pending, SCAN_BATCH), timeout=SCAN_TIMEOUT_SECONDS):
                        pending = msg.metadata.num_pending
                        if (msg.headers or {}).get("KV-Operation") in ("DEL", "PURGE"):
                            continue
                        entries.append(_entry(kv, prefix, msg))
            finally:
                await subscription.unsubscribe()
    finally:
        await _delete_consumer(kv, consumer.name)
    return entries


def _entry(kv: KeyValue, prefix: str, msg: Msg) -> KeyValue.Entry:
    return KeyValue.Entry(
        bucket=kv._name,
        key=msg.subject.removeprefix(prefix),
        value=msg.data,
        revision=msg.metadata.sequence.stream,
        delta=msg.metadata.num_pending,
        created=None,
        operation=None,
    )


async def _delete_consumer(kv: KeyValue, name: str) -> None:
    try:
        await kv._js.delete_consumer(kv._stream, name)
    except (NotFoundError, nats.errors.TimeoutError, nats.errors.ConnectionClosedError):
        pass  # gone already, or the server is away: its short inactivity threshold removes it


async def erase(kv: KeyValue, key: str) -> None:
    """Remove `key` and its history without the delete marker `kv.delete()` leaves: a ranged read of an index would
    still be handed one marker per key ever removed, so its cost would grow with history."""
    await kv._js.purge_stream(kv._stream, subject=kv._pre + key)


async def stored_session(broker: NatsBroker, session_id: str) -> ScheduledSession | None:
    """A scheduled session as the actions stage stored it, or None."""
    kv = await bucket(broker, SESSIONS)
    try:
        entry = await kv.get(session_id)
    except (KeyNotFoundError, ValueError):  # ValueError: not a valid key (a stranger's id)
        return None
    return ScheduledSession.model_validate_json(entry.value) if entry.value else None
