"""`impromptu tail` against a real nats-server: history with --since, new messages by default, and the stages'
durable consumers left exactly as they were."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncGenerator
from datetime import timedelta
from pathlib import Path

from faststream.nats import NatsBroker

from pipeline import bus
from pipeline.app import create_broker, start_stages
from pipeline.messages import Share, utc_now
from pipeline.ops.status import STAGE_CONSUMERS
from pipeline.ops.tail import TailLine, tail
from pipeline.settings import Settings
from tests.integration.bus_helpers import consumer, jetstream, wait_drained

IMPROMPTU = Path(sys.executable).with_name("impromptu")


def share(n: int) -> Share:
    return Share.from_source(source="cli", native_id=f"tail-{n}", sharer="@stranger", url=f"https://example.com/a-{n}")


async def take(lines: AsyncGenerator[TailLine, None], count: int) -> list[TailLine]:
    async def collect() -> list[TailLine]:
        return [await anext(lines) for _ in range(count)]

    try:
        return await asyncio.wait_for(collect(), timeout=10)
    finally:
        await lines.aclose()


async def consumer_positions(broker: NatsBroker) -> dict[str, tuple[int, int, int, int, int]]:
    positions = {}
    for stage in STAGE_CONSUMERS:
        info = await consumer(broker, stage.durable)
        positions[stage.durable] = (
            info.num_pending or 0,
            info.num_ack_pending or 0,
            info.delivered.stream_seq if info.delivered else 0,
            info.ack_floor.stream_seq if info.ack_floor else 0,
            info.num_redelivered or 0,
        )
    return positions


async def test_since_replays_history_without_disturbing_the_stages(settings: Settings, client: NatsBroker) -> None:
    stages = create_broker(settings)
    await start_stages(stages, settings)
    await stages.stop()  # the durable consumers exist; the shares below wait for the trigger stage
    for n in range(3):
        await bus.publish(client, bus.SHARES, share(n))
    before = await consumer_positions(client)
    assert before["trigger"][0] == 3

    lines = await take(tail(jetstream(client), since=utc_now() - timedelta(minutes=10)), 3)
    assert [line.subject for line in lines] == [bus.SHARES.subject] * 3
    assert [line.type for line in lines] == ["Share"] * 3
    assert lines[0].summary == "@stranger shared example.com/a-0 via cli"
    assert lines[0].correlation_id == share(0).correlation_id
    assert [line.seq for line in lines] == sorted(line.seq for line in lines)

    env = {**os.environ, "NATS_URL": settings.nats_url or "", "IMPROMPTU_DATA_DIR": str(settings.data_dir)}
    process = await asyncio.create_subprocess_exec(
        *(str(IMPROMPTU), "tail", "--since", "10m", "--count", "2", "--stage", "trigger"),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    output, errors = await asyncio.wait_for(process.communicate(), timeout=30)
    assert process.returncode == 0, errors.decode()
    piped = [json.loads(line) for line in output.decode().splitlines()]  # not a terminal: JSON lines
    assert [line["correlation_id"] for line in piped] == [share(0).correlation_id, share(1).correlation_id]

    assert await consumer_positions(client) == before  # nothing stolen, nothing acknowledged

    restarted = create_broker(settings)
    await start_stages(restarted, settings)
    try:
        await wait_drained(client, "trigger")  # the stage still gets all three
        assert (await consumer(client, "trigger")).ack_floor.stream_seq >= max(line.seq for line in lines)
    finally:
        await restarted.stop()


async def test_by_default_only_new_messages_and_the_stage_filter(pipeline: NatsBroker) -> None:
    await bus.publish(pipeline, bus.SHARES, share(0))
    await wait_drained(pipeline, "trigger")

    everything = tail(jetstream(pipeline))
    outreach_only = tail(jetstream(pipeline), stage="outreach")
    first = asyncio.ensure_future(take(everything, 1))
    none_for_outreach = asyncio.ensure_future(take(outreach_only, 1))
    await asyncio.sleep(0.5)  # both consumers exist before the next publish
    await bus.publish(pipeline, bus.SHARES, share(1))

    (line,) = await first
    assert line.summary == "@stranger shared example.com/a-1 via cli"  # share 0 was before the tail began
    await asyncio.sleep(0.5)
    assert not none_for_outreach.done()
    none_for_outreach.cancel()
    await asyncio.gather(none_for_outreach, return_exceptions=True)
