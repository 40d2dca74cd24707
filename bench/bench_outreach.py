"""What "never twice" costs per announcement: the outreach stage's post consumer against raw nats-py, same run.

    .venv/bin/python bench/bench_outreach.py [--posts 2000] [--runs 3] 2>/dev/null

One embedded nats-server (JetStream, file storage). Each run pre-publishes N AnnouncementDue messages (one per
session, channel x or slack) and measures how fast they are drained:

- raw consume+ack: nats-py, fetch 10, ack each (the baseline);
- raw never-twice: nats-py doing by hand what a post needs for "nothing twice": read the record, create it
  `sending`, update it `posted`, publish the result (awaiting its PubAck), ack;
- outreach stage, dry run: the real `outreach-post` consumer rendering the X template (with its weighted length
  check) and writing the outbox file, with its KV record and result;
- outreach stage, Slack: the same with the real Slack adapter posting Block Kit to a local fake webhook over HTTP.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import nats
from nats.js.api import AckPolicy, ConsumerConfig
from pydantic import SecretStr

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository: tests.unit.conftest, tests.channel_fakes

from bench_trigger import prepublish  # noqa: E402

from pipeline import bus, stores  # noqa: E402
from pipeline.app import new_broker, start_stages  # noqa: E402
from pipeline.embedded import EmbeddedNats, free_port  # noqa: E402
from pipeline.logs import configure_logging  # noqa: E402
from pipeline.messages import AnnouncementDue  # noqa: E402
from pipeline.outreach.stage import outreach_router  # noqa: E402
from pipeline.settings import Settings  # noqa: E402
from tests.channel_fakes import FakeSlack, serve  # noqa: E402
from tests.unit.conftest import make_session  # noqa: E402

RAW_SUBJECT = "impromptu.bench.outreach"  # in the stream, read by no stage


def dues(run: int, count: int, channel: str) -> list[bytes]:
    template = make_session(now=datetime.now(UTC))
    made = []
    for n in range(count):
        session = template.model_copy(update={"id": f"session-{run}-{channel}-{n}"})
        due = AnnouncementDue.caused_by(
            session, id=f"due:{session.id}:{channel}", session=session, channel=channel, kind="scheduled"
        )
        made.append(due.model_dump_json().encode())
    return made


async def raw(url: str, count: int, run: int, *, never_twice: bool) -> float:
    nc = await nats.connect(url)
    js = nc.jetstream()
    kv = await js.create_key_value(bucket=f"bench-{run}-{never_twice}")
    await prepublish(js, RAW_SUBJECT, dues(run, count, "x"), f"raw-{run}-{never_twice}")
    durable = f"raw-{run}-{never_twice}"
    sub = await js.pull_subscribe(RAW_SUBJECT, durable=durable, config=ConsumerConfig(ack_policy=AckPolicy.EXPLICIT))
    started = time.perf_counter()
    done = 0
    while done < count:
        for msg in await sub.fetch(batch=10, timeout=5):  # one at a time, as the stage posts
            if never_twice:
                key = f"k{done}"
                try:
                    await kv.get(key)
                except nats.js.errors.KeyNotFoundError:
                    pass
                revision = await kv.create(key, b'{"state":"sending"}')
                await kv.update(key, b'{"state":"posted"}', last=revision)
                await js.publish(f"{RAW_SUBJECT}.result", b"{}", headers={"Nats-Msg-Id": f"result-{run}-{done}"})
            await msg.ack()
            done += 1
    elapsed = time.perf_counter() - started
    await js.delete_consumer(bus.STREAM, durable)
    await nc.close()
    return count / elapsed


async def stage(settings: Settings, count: int, run: int, channel: str) -> float:
    nc = await nats.connect(settings.nats_url or "")
    js = nc.jetstream()
    await prepublish(js, bus.OUTREACH_DUE.subject, dues(run, count, channel), f"due-{run}-{channel}")
    broker = new_broker(settings.nats_url or "")
    broker.include_router(outreach_router(settings))
    started = time.perf_counter()
    await start_stages(broker, settings)
    while True:
        info = await js.consumer_info(bus.STREAM, "outreach-post")
        if info.num_pending == 0 and info.num_ack_pending == 0:
            break
        await asyncio.sleep(0.01)
    elapsed = time.perf_counter() - started
    await broker.stop()
    results = ((await js.stream_info(bus.STREAM, subjects_filter=">")).state.subjects or {}).get(
        bus.OUTREACH_RESULTS.subject
    )
    assert results == count, f"{results} results for {count} posts"
    await js.delete_consumer(bus.STREAM, "outreach-post")
    await js.purge_stream(bus.STREAM)
    await js.delete_key_value(stores.OUTREACH)
    await nc.close()
    return count / elapsed


async def main(count: int, runs: int) -> None:
    configure_logging(json=True, level="WARNING")
    slack = FakeSlack()
    with (
        tempfile.TemporaryDirectory() as store,
        EmbeddedNats(Path(store) / "nats", port=free_port()) as server,
        serve(slack.app) as slack_url,
    ):
        dry = Settings(nats_url=server.url, data_dir=Path(store) / "data")
        live = dry.model_copy(update={"outreach_dry_run": False, "slack_webhook": SecretStr(slack.webhook(slack_url))})
        probe = new_broker(server.url)
        await probe.connect()
        await bus.ensure_stream(probe, dry)
        await probe.stop()
        figures: dict[str, list[float]] = {"raw": [], "never_twice": [], "dry": [], "slack": []}
        for run in range(runs):
            figures["raw"].append(await raw(server.url, count, run, never_twice=False))
            figures["never_twice"].append(await raw(server.url, count, run, never_twice=True))
            figures["dry"].append(await stage(dry, count, run, "x"))
            figures["slack"].append(await stage(live, count, run, "slack"))
            print(f"run {run + 1}: " + ", ".join(f"{k} {v[-1]:,.0f}/s" for k, v in figures.items()))
        assert len(slack.messages) == count * runs, "every Slack post arrived once"
    base = statistics.median(figures["raw"])
    print(f"median of {runs} runs, {count} announcements each:")
    for name, label in (
        ("raw", "raw nats-py consume+ack"),
        ("never_twice", "raw nats-py never-twice (KV read+create+update, publish, ack)"),
        ("dry", "outreach-post stage, dry run (render X, outbox file)"),
        ("slack", "outreach-post stage, Slack adapter to a local webhook"),
    ):
        median = statistics.median(figures[name])
        print(f"  {label:<62} {median:>8,.0f}/s  {median / base:>5.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--posts", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=3)
    arguments = parser.parse_args()
    asyncio.run(main(arguments.posts, arguments.runs))
