"""NATS KV buckets holding state that must survive restarts and be shared by every worker."""

from __future__ import annotations

from typing import TypeVar

from faststream.nats import NatsBroker, StorageType
from nats.js.errors import BucketNotFoundError, KeyWrongLastSequenceError, NotFoundError
from nats.js.kv import KeyValue
from pydantic import BaseModel

from pipeline import bus

ModelT = TypeVar("ModelT", bound=BaseModel)

PROPOSALS = "impromptu-proposals"  # proposal id -> ProposalRecord
SESSIONS = "impromptu-sessions"  # session id -> ScheduledSession
OUTREACH = "impromptu-outreach"  # <session>.<channel>.<kind> -> PostRecord
TRIGGERS = "impromptu-triggers"  # link.<id> -> LinkEpisode, budget -> BudgetRecord (30 days)
SOURCES = "impromptu-sources"  # source checkpoints: X since_id, feed ETags, Mastodon ids

PAGES = "impromptu-pages"  # link.<id> -> PageRecord: the enrich stage's cache (6 hours)
LOGINS = "impromptu-logins"  # failed.<name|address>.<sha256> -> recent failed logins (15 minutes)

# other buckets keep their keys
TTL: dict[str, float] = {TRIGGERS: 30 * 24 * 3600.0, PAGES: 6 * 3600.0, LOGINS: 15 * 60.0}


async def bucket(broker: NatsBroker, name: str) -> KeyValue:
    """Bind to the bucket if it exists, whatever its replicas (ops may have created it with `nats kv add`); else
    create it: file storage, 16 revisions, the bucket's TTL, and as many replicas as the stream has, so that on
    a cluster (IMPROMPTU_STREAM_REPLICAS=3) the state survives a lost node as the messages do."""
    try:
        return await broker.key_value(name, declare=False)
    except BucketNotFoundError:
        replicas = await stream_replicas(broker)
        return await broker.key_value(name, storage=StorageType.FILE, history=16, ttl=TTL.get(name), replicas=replicas)


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
