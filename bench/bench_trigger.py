"""Shares/s through the trigger stage on a real nats-server, next to raw nats-py consume+ack in the same run.

    .venv/bin/python bench/bench_trigger.py [--shares 5000] [--runs 3]

Both sides read the same kind of pre-published messages from the same file-backed stream with a durable
pull consumer fetching 10 at a time; the trigger stage also validates each Share, evaluates the rules and
publishes a TriggerFired (with Nats-Msg-Id) for each. Prints medians and the ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path

import nats
import nats.aio.msg
from nats.js.api import AckPolicy, ConsumerConfig

from pipeline import bus
from pipeline.app import new_broker, start_stages
from pipeline.embedded import EmbeddedNats, free_port
from pipeline.logs import configure_logging
from pipeline.messages import Share
from pipeline.settings import DEFAULT_RULES, Settings
from pipeline.triggers.stage import trigger_router
from pipeline.triggers.rules import load_rules

RAW_SUBJECT = "impromptu.bench.raw"
LOG_LEVEL = os.environ.get("IMPROMPTU_LOG_LEVEL", "INFO")


def shares(run: int, count: int) -> list[Share]:
    return [
        Share.from_source(
            source="replay",
            native_id=f"{run}-{n}",
            sharer="@britz",
            text="A sharp piece on leadership and soft skills training",
            url=f"https://example.com/articles/{n}",
        )
        for n in range(count)
    ]


async def prepublish(js: nats.js.JetStreamContext, subject: str, bodies: list[bytes], prefix: str) -> None:
    for start in range(0, len(bodies), 500):
        await asyncio.gather(
            *(
                js.publish(subject, body, headers={"Nats-Msg-Id": f"{prefix}-{start + i}"})
                for i, body in enumerate(bodies[start : start + 500])
            )
        )


async def raw_consume(url: str, count: int, run: int, *, republish: bool = False) -> float:
    """Raw nats-py: fetch 10, ack each; with `republish`, also publish each to the stream (awaiting its
    PubAck) before acking, as a stage does, 10 at a time."""
    nc = await nats.connect(url)
    js = nc.jetstream()
    bodies = [s.model_dump_json().encode() for s in shares(run, count)]
    await prepublish(js, RAW_SUBJECT, bodies, f"raw-{run}-{republish}")
    durable = f"raw-{run}-{republish}"
    sub = await js.pull_subscribe(RAW_SUBJECT, durable=durable, config=ConsumerConfig(ack_policy=AckPolicy.EXPLICIT))
    started = time.perf_counter()
    done = 0

    async def handle(msg: nats.aio.msg.Msg) -> None:
        if republish:
            await js.publish(f"{RAW_SUBJECT}.out", msg.data, headers={"Nats-Msg-Id": f"out-{msg.reply}"})
        await msg.ack()

    while done < count:
        batch = await sub.fetch(batch=10, timeout=5)
        await asyncio.gather(*(handle(msg) for msg in batch))
        done += len(batch)
    elapsed = time.perf_counter() - started
    await js.delete_consumer(bus.STREAM, durable)
    await nc.close()
    return count / elapsed


async def stage_consume(settings: Settings, count: int, run: int) -> float:
    nc = await nats.connect(settings.nats_url or "")
    js = nc.jetstream()
    await prepublish(js, bus.SHARES, [s.model_dump_json().encode() for s in shares(run, count)], f"share-{run}")
    broker = new_broker(settings.nats_url or "")
    broker.include_router(trigger_router(settings, load_rules(DEFAULT_RULES)))
    started = time.perf_counter()
    await start_stages(broker, settings)
    while True:
        info = await js.consumer_info(bus.STREAM, "trigger")
        if info.num_pending == 0 and info.num_ack_pending == 0:
            break
        await asyncio.sleep(0.01)
    elapsed = time.perf_counter() - started
    await broker.stop()
    await js.delete_consumer(bus.STREAM, "trigger")
    await js.purge_stream(bus.STREAM)
    await nc.close()
    return count / elapsed


async def main(count: int, runs: int) -> None:
    configure_logging(json=True, level=LOG_LEVEL)  # as in production: one JSON line per share (to stderr)
    with tempfile.TemporaryDirectory() as store, EmbeddedNats(Path(store), port=free_port()) as server:
        settings = Settings(nats_url=server.url, data_dir=Path(store) / "data")
        probe = new_broker(server.url)
        await probe.connect()
        await bus.ensure_stream(probe, settings)
        await probe.stop()
        raw, relay, stage = [], [], []
        for run in range(runs):
            raw.append(await raw_consume(server.url, count, run))
            relay.append(await raw_consume(server.url, count, run, republish=True))
            stage.append(await stage_consume(settings, count, run))
            print(
                f"run {run + 1}: raw consume+ack {raw[-1]:,.0f} msg/s, raw consume+publish+ack {relay[-1]:,.0f} "
                f"msg/s, trigger stage {stage[-1]:,.0f} shares/s"
            )
    raw_median, relay_median, stage_median = (statistics.median(x) for x in (raw, relay, stage))
    print(f"median of {runs} runs, {count} messages each:")
    print(f"  raw nats-py JetStream consume+ack:         {raw_median:,.0f} msg/s")
    print(f"  raw nats-py consume+publish(PubAck)+ack:   {relay_median:,.0f} msg/s")
    print(f"  trigger stage (validate, rules, publish TriggerFired, ack): {stage_median:,.0f} shares/s")
    print(f"  ratio stage / raw consume+ack:             {stage_median / raw_median:.2f}")
    print(f"  ratio stage / raw consume+publish+ack:     {stage_median / relay_median:.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--shares", type=int, default=5000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(main(args.shares, args.runs))
