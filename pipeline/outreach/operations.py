"""What a person does about outreach, from the CLI or the ops page: settle a post whose outcome is unknown, and
put a broken channel back to work. One place, so both say and do the same."""

from __future__ import annotations

from faststream.nats import NatsBroker

from pipeline import bus, stores
from pipeline.channels import records
from pipeline.channels.records import PostRecord
from pipeline.errors import PermanentError
from pipeline.outreach import health
from pipeline.outreach.health import ChannelHealth


async def resolve_post(broker: NatsBroker, key: str, *, posted_at: str | None) -> str:
    """It went out (at `posted_at`), or it did not: then it is posted again, once."""
    kv = await stores.bucket(broker, stores.OUTREACH)
    found, _ = await records.read(kv, key)
    due = found.due if found is not None else None
    if posted_at is None and found is not None and due is None:
        raise PermanentError(f"{key}: the announcement to post again is not recorded")
    record = await records.resolve(kv, key, posted_at=posted_at)  # refuses a post that is not unknown
    if posted_at is not None or due is None:
        return f"{key}: marked posted at {posted_at}"
    # a new message id: the first one is still in JetStream's duplicate window
    again = due.model_copy(update={"id": f"{due.id}:again:{record.attempts}"})
    await bus.publish(broker, bus.OUTREACH_DUE, again)
    return f"{key}: will be posted again"


async def reset_channel(broker: NatsBroker, name: str) -> str:
    kv = await stores.bucket(broker, stores.OUTREACH)
    if await health.reset(kv, name):
        return f"{name}: reset; replay its dead letters to post what waited"
    return f"{name}: not broken"


async def needing_a_person(broker: NatsBroker) -> tuple[list[ChannelHealth], list[tuple[str, PostRecord]]]:
    """Broken channels, and posts of unknown outcome with their records (both few: read each)."""
    kv = await stores.bucket(broker, stores.OUTREACH)
    unknown = []
    for key in await records.unknown_keys(kv):
        record, _ = await records.read(kv, key)
        if record is not None and record.state == "unknown":
            unknown.append((key, record))
    return await health.all_broken(kv), unknown
