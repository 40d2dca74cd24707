"""Shares/s through the trigger stage on a real nats-server, next to raw nats-py consume+ack in the same run.

    .venv/bin/python bench/bench_trigger.py [--shares 5000] [--runs 3]

The stage runs with a generated rules file of 10,000 trusted people, 200 topics and 1,000 rules. The shares
are a mix: 70% from trusted people (30% from strangers), texts that hit topic keywords or not, and 10% of the
links shared by several people, so the stage reads and writes link state in NATS KV, merges sharers, fires some
rules and publishes TriggerFired / SharerJoined. Both sides read the same kind of pre-published messages from
the same file-backed stream with a durable pull consumer. Prints medians and the ratio; `--rules-only` adds the
pure rule evaluation rate (no bus) to show where the time goes.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import nats
import nats.aio.msg
import yaml
from nats.js.api import AckPolicy, ConsumerConfig

from pipeline import bus
from pipeline.app import new_broker, start_stages
from pipeline.domain.live_rules import LiveRules
from pipeline.domain.scoring import evaluate
from pipeline.embedded import EmbeddedNats, free_port
from pipeline.logs import configure_logging
from pipeline.messages import Share, utc_now
from pipeline.settings import Settings
from pipeline.stage import StageRouter
from pipeline.triggers.stage import trigger_router

RAW_SUBJECT = "impromptu.bench.raw"
LOG_LEVEL = os.environ.get("IMPROMPTU_LOG_LEVEL", "INFO")
PEOPLE, TOPICS, RULES = 10_000, 200, 1_000
WORDS = [f"word{n}" for n in range(2_000)]


def rules_document(seed: int = 7) -> dict[str, object]:
    rng = random.Random(seed)
    topics = {f"topic{t}": [f"kw{t}a", f"kw{t}b", f"key phrase {t}"] for t in range(TOPICS)}
    return {
        "people": [
            {"name": f"Person {n}", "x": f"p{n}", "trust": round(rng.uniform(0.3, 0.95), 2)} for n in range(PEOPLE)
        ],
        "authors": [{"name": f"Author {n}", "domains": [f"author{n}.example"], "respect": 0.8} for n in range(100)],
        "topics": topics,
        "rules": [
            {
                "name": f"rule{r}",
                "when": {"topics_any": rng.sample(sorted(topics), 2), "min_score": round(rng.uniform(0.5, 0.8), 2)},
            }
            for r in range(RULES)
        ],
    }


def shares(run: int, count: int) -> list[Share]:
    rng = random.Random(run)
    now = utc_now()
    made = []
    for n in range(count):
        trusted = rng.random() < 0.7
        sharer = f"@p{rng.randrange(PEOPLE)}" if trusted else f"@stranger{rng.randrange(100_000)}"
        words = rng.sample(WORDS, 12)
        if rng.random() < 0.5:
            words[rng.randrange(12)] = f"kw{rng.randrange(TOPICS)}a"
        popular = rng.random() < 0.1
        url = f"https://news.example/popular/{rng.randrange(20)}" if popular else f"https://blog{n}.example/{run}/{n}"
        made.append(
            Share.from_source(
                source="x",
                native_id=f"{run}-{n}",
                sharer=sharer,
                network="x",
                text=" ".join(words),
                url=url,
                shared_at=now - timedelta(seconds=rng.randrange(600)),
            )
        )
    return made


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


def rules_only(live: LiveRules, count: int, run: int) -> float:
    batch = shares(run, count)
    now = utc_now()
    started = time.perf_counter()
    for share in batch:
        evaluate(live.known, share, now=now)
    return count / (time.perf_counter() - started)


def empty_stage(settings: Settings) -> StageRouter:
    """The framework's share of the cost: same router, consumer, middleware and Share validation, no work."""
    router = StageRouter("trigger", settings)

    @router.consume(bus.SHARES, concurrency=settings.trigger_concurrency)
    async def handle_share(share: Share) -> None:
        return None

    return router


async def stage_consume(settings: Settings, router: StageRouter, count: int, run: int) -> tuple[float, int]:
    nc = await nats.connect((settings.nats_url or "").split(","))
    js = nc.jetstream()
    await prepublish(js, bus.SHARES.subject, [s.model_dump_json().encode() for s in shares(run, count)], f"share-{run}")
    broker = new_broker(settings.nats_url or "")
    broker.include_router(router)
    started = time.perf_counter()
    await start_stages(broker, settings)
    while True:
        info = await js.consumer_info(bus.STREAM, "trigger")
        if info.num_pending == 0 and info.num_ack_pending == 0:
            break
        await asyncio.sleep(0.01)
    elapsed = time.perf_counter() - started
    await broker.stop()
    subjects = (await js.stream_info(bus.STREAM, subjects_filter=">")).state.subjects or {}
    await js.delete_consumer(bus.STREAM, "trigger")
    await js.purge_stream(bus.STREAM)
    await nc.close()
    return count / elapsed, subjects.get(bus.TRIGGERS_FIRED.subject, 0) + subjects.get(bus.TRIGGERS_JOINED.subject, 0)


async def main(count: int, runs: int, concurrency: int) -> None:
    configure_logging(json=True, level=LOG_LEVEL)  # as in production: one JSON line per share (to stderr)
    with tempfile.TemporaryDirectory() as store, EmbeddedNats(Path(store), port=free_port()) as server:
        rules_file = Path(store) / "rules.yaml"
        rules_file.write_text(yaml.safe_dump(rules_document()), encoding="utf-8")
        loading = time.perf_counter()
        live = LiveRules.load(rules_file)
        loaded = time.perf_counter() - loading
        print(f"rules: {PEOPLE:,} people, {TOPICS} topics, {RULES:,} rules, loaded in {loaded:.2f} s")
        settings = Settings(
            nats_url=server.url, data_dir=Path(store) / "data", rules_file=rules_file, trigger_concurrency=concurrency
        )
        probe = new_broker(server.url)
        await probe.connect()
        await bus.ensure_stream(probe, settings)
        await probe.stop()
        raw, relay, empty, stage, pure = [], [], [], [], []
        for run in range(runs):
            raw.append(await raw_consume(server.url, count, run))
            relay.append(await raw_consume(server.url, count, run, republish=True))
            empty.append((await stage_consume(settings, empty_stage(settings), count, run + 100))[0])
            rate, emitted = await stage_consume(settings, trigger_router(settings, live), count, run)
            stage.append(rate)
            pure.append(rules_only(live, count, run + 1000))
            print(
                f"run {run + 1}: raw consume+ack {raw[-1]:,.0f} msg/s, raw consume+publish+ack {relay[-1]:,.0f} "
                f"msg/s, empty stage {empty[-1]:,.0f} msg/s, trigger stage {stage[-1]:,.0f} shares/s "
                f"({emitted} fired or joined), rules alone {pure[-1]:,.0f} shares/s"
            )
    medians = [statistics.median(x) for x in (raw, relay, empty, stage, pure)]
    raw_median, relay_median, empty_median, stage_median, pure_median = medians
    print(f"median of {runs} runs, {count} messages each, trigger concurrency {concurrency}:")
    print(f"  raw nats-py JetStream consume+ack:         {raw_median:,.0f} msg/s")
    print(f"  raw nats-py consume+publish(PubAck)+ack:   {relay_median:,.0f} msg/s")
    print(f"  empty FastStream stage (validate, ack):    {empty_median:,.0f} msg/s")
    print(f"  trigger stage:                             {stage_median:,.0f} shares/s")
    print(f"  rule evaluation alone (no bus):            {pure_median:,.0f} shares/s")
    print(f"  ratio empty stage / raw consume+ack:       {empty_median / raw_median:.2f}")
    print(f"  ratio stage / raw consume+ack:             {stage_median / raw_median:.2f}")
    print(f"  ratio stage / raw consume+publish+ack:     {stage_median / relay_median:.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--shares", type=int, default=5000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=Settings().trigger_concurrency)
    args = parser.parse_args()
    asyncio.run(main(args.shares, args.runs, args.concurrency))
