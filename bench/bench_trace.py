"""How long `impromptu trace` takes on a large stream, next to a raw nats-py read of the same stream in the same run.

    .venv/bin/python bench/bench_trace.py [--messages 20000 100000] [--runs 3]

The seed story runs once through every real stage on an embedded nats-server (file storage), which leaves one
real journey of 16 messages on the stream. The stages are stopped and that journey is published again and again,
each copy with its own share id, correlation id, proposal and session ids and article URL, until the stream holds
the asked number of messages. Then, for a journey in the middle of the stream:

- **raw read**: nats-py, an ordered consumer over the whole stream, counting messages (the least any scan costs);
- **trace by correlation id** and **trace by URL**: `find_journey`, as `impromptu trace` runs it: one scan to
  resolve the id, then the journey's messages fetched by sequence.

Prints medians and the ratio of trace time to the raw read.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from nats.js import JetStreamContext

from pipeline import bus
from pipeline.app import connected, nats_for
from pipeline.demo import ASSETS, article_server, run_story, seed_share
from pipeline.embedded import free_port
from pipeline.logs import configure_logging
from pipeline.ops.trace import find_journey, read_stream
from pipeline.settings import Settings

PUBLISH_CONCURRENCY = 200
Stored = tuple[str, dict[str, str], bytes]  # subject, headers, body


async def seed_journey(settings: Settings, js: JetStreamContext) -> tuple[list[Stored], str]:
    with article_server((ASSETS / "bersin-article.html").read_bytes()) as article_url:
        await run_story(settings, article_url, say=lambda _line: None)
        return [(m.subject, dict(m.headers or {}), m.data) async for m in read_stream(js)], article_url


def copy_of(message: Stored, replacements: list[tuple[str, str]]) -> Stored:
    subject, headers, data = message
    text = data.decode()
    new_headers = dict(headers)
    for old, new in replacements:
        text = text.replace(old, new)
        new_headers = {k: v.replace(old, new) for k, v in new_headers.items()}
    new_headers.pop("Nats-Msg-Id", None)
    return subject, new_headers, text.encode()


async def fill(
    js: JetStreamContext, journey: list[Stored], article_url: str, share_id: str, correlation: str, target: int
) -> tuple[str, str]:
    """Copies of the journey until the stream holds `target` messages; returns the middle copy's (correlation, url)."""
    have = (await js.stream_info(bus.STREAM)).state.messages
    copies = max(0, (target - have) // len(journey))
    middle = copies // 2
    pending: set[asyncio.Future[object]] = set()
    for k in range(copies):
        replacements = [(correlation, f"{correlation}k{k}"), (share_id, f"{share_id}-k{k}")]
        replacements.append((article_url, f"{article_url}?k={k}"))
        for subject, headers, data in (copy_of(m, replacements) for m in journey):
            pending.add(asyncio.ensure_future(js.publish(subject, data, headers=headers)))
            if len(pending) >= PUBLISH_CONCURRENCY:
                _, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
    await asyncio.gather(*pending)
    return f"{correlation}k{middle}", f"{article_url}?k={middle}"


async def raw_read(js: JetStreamContext) -> int:
    sub = await js.subscribe(bus.ALL_SUBJECTS, stream=bus.STREAM, ordered_consumer=True)
    count = 0
    try:
        while True:
            msg = await sub.next_msg(timeout=5)
            count += 1
            if msg.metadata.num_pending == 0:
                return count
    finally:
        await sub.unsubscribe()


async def timed(runs: int, work: Callable[..., Awaitable[object]], *args: object) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        await work(*args)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


async def bench(sizes: list[int], runs: int) -> None:
    with tempfile.TemporaryDirectory(prefix="impromptu-bench-trace-") as scratch:
        settings = Settings(
            data_dir=Path(scratch), embedded_nats_port=free_port(), fetch_allow=["127.0.0.1/32"], nats_url=None
        )
        with nats_for(settings) as live:
            async with connected(live) as client:
                js = bus.jetstream(client)
                journey, article_url = await seed_journey(live, js)
                share = seed_share(article_url)
                print(f"seed journey: {len(journey)} messages; runs per figure: {runs}")
                print(f"{'messages':>9} {'raw read':>10} {'trace by id':>12} {'ratio':>6} {'by URL':>8} {'ratio':>6}")
                for size in sorted(sizes):
                    started = time.perf_counter()
                    correlation, url = await fill(js, journey, article_url, share.id, share.correlation_id, size)
                    stored = (await js.stream_info(bus.STREAM)).state.messages
                    filled = time.perf_counter() - started
                    found = await find_journey(js, correlation)
                    assert len(found.steps) == len(journey), (len(found.steps), len(journey))
                    raw = await timed(runs, raw_read, js)
                    by_id = await timed(runs, find_journey, js, correlation)
                    by_url = await timed(runs, find_journey, js, url)
                    print(
                        f"{stored:>9,} {raw:>9.2f}s {by_id:>11.2f}s {by_id / raw:>6.2f} {by_url:>7.2f}s "
                        f"{by_url / raw:>6.2f}   (filled in {filled:.1f}s)"
                    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, nargs="+", default=[20_000, 100_000])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    configure_logging(level="ERROR")
    asyncio.run(bench(args.messages, args.runs))


if __name__ == "__main__":
    main()
