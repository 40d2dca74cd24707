"""Reading KV leaves nothing behind on the server, and the proposal path reads by key, not the whole bucket.

nats-py's `kv.watch()` leaves its ephemeral consumer on the server for 5 minutes after `stop()`: an operator's
load run hit the server's 1,000-consumer limit that way and proposals became dead letters.
"""

from __future__ import annotations

import pytest
from faststream.nats import NatsBroker

from pipeline import bus, stores
from pipeline.channels import records
from pipeline.domain import approval
from pipeline.messages import Share
from pipeline.ops.trace import read_stream
from pipeline.outreach import health

pytestmark = pytest.mark.nats

READS = 1000


def share() -> Share:
    return Share.from_source(source="cli", native_id="1", sharer="@britz", url="https://example.com/1")


async def consumers_of(broker: NatsBroker, bucket: str) -> int:
    info = await bus.jetstream(broker).stream_info(f"KV_{bucket}")
    return info.state.consumer_count


async def test_a_thousand_reads_of_every_kind_leave_no_consumer_behind(client: NatsBroker) -> None:
    outreach = await stores.bucket(client, stores.OUTREACH)
    await outreach.put("session-a.x.scheduled", records.PostRecord(state="posted").model_dump_json().encode())
    await outreach.put(records.UNKNOWN + "session-a.x.scheduled", b"")
    await stores.bucket(client, stores.PROPOSALS)
    before = {b: await consumers_of(client, b) for b in (stores.PROPOSALS, stores.OUTREACH)}

    for _ in range(READS // 4):
        await approval.list_records(client)
        assert set(await records.records_of(outreach, "session-a")) == {"session-a.x.scheduled"}
        assert await records.unknown_keys(outreach) == ["session-a.x.scheduled"]
        await health.all_broken(outreach)

    after = {b: await consumers_of(client, b) for b in (stores.PROPOSALS, stores.OUTREACH)}
    assert after == before, f"consumers before {before}, after {READS} reads {after}"


async def test_reading_the_stream_leaves_no_consumer_behind(client: NatsBroker) -> None:
    """`trace`, the dead-letter list and the ops page's unread pages read the stream with an ordered consumer."""
    await bus.publish(client, bus.SHARES, share())
    js = bus.jetstream(client)
    before = (await js.stream_info(bus.STREAM)).state.consumer_count

    for _ in range(200):
        assert [msg.subject async for msg in read_stream(js, bus.SHARES.subject)] == [bus.SHARES.subject]

    assert (await js.stream_info(bus.STREAM)).state.consumer_count == before
