"""Pages/s through the enrich stage on a real nats-server, next to bare trafilatura extraction of the same pages
in the same run, and with two worker processes sharing the stage's durable consumer.

    .venv/bin/python bench/bench_enrich.py [--pages 400] [--runs 3]

The pages are the test corpus (tests/fixtures/articles/*.html) served by a local HTTP server; each trigger
points at its own URL (a distinct query string), so every one is a real fetch, never a cache hit. The stage
fetches through the safe fetcher, extracts (trafilatura, summary, key phrases, language), matches topics and
publishes EnrichedContent. Workers run as separate processes (`--worker URL`), as they would in production; the
clock starts when every worker is bound and warm and the triggers are published.
"""

from __future__ import annotations

import argparse
import asyncio
import http.server
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import nats
import trafilatura

from pipeline import bus, stores
from pipeline.app import new_broker, start_stages
from pipeline.demo import loopback_http_server
from pipeline.domain.canonical import canonical_url
from pipeline.domain.live_rules import LiveRules
from pipeline.embedded import EmbeddedNats, free_port
from pipeline.enrich.extract import extract
from pipeline.enrich.stage import enrich_router, warm_up
from pipeline.errors import PermanentError
from pipeline.logs import configure_logging
from pipeline.messages import Share, TriggerFired
from pipeline.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
CORPUS = sorted((ROOT / "tests" / "fixtures" / "articles").glob("*.html")) or [
    ROOT / "pipeline" / "demo_assets" / "bersin-article.html"
]
PAGE_BODIES = {f"/{path.name}": path.read_bytes() for path in CORPUS}


class PageHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body are two writes: with Nagle's algorithm the body waits for the client's delayed ACK
    # (40 ms on Linux), which would be most of a loopback fetch's time.
    disable_nagle_algorithm = True

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        body = PAGE_BODIES.get(self.path.split("?")[0])
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def settings_for(url: str, store: Path) -> Settings:
    return Settings(nats_url=url, data_dir=store / "data", fetch_allow=["127.0.0.1/32"], log_level="WARNING")


def triggers(base: str, run: int, count: int) -> list[TriggerFired]:
    names = list(PAGE_BODIES)
    made = []
    for n in range(count):
        url = f"{base}{names[n % len(names)]}?copy={run}-{n}"
        share = Share.from_source(source="replay", native_id=f"{run}-{n}", sharer="@britz", text="leadership", url=url)
        made.append(
            TriggerFired.caused_by(
                share, id=f"fired:{run}-{n}", share=share, canonical_url=canonical_url(url), rule="bench", score=0.9
            )
        )
    return made


def bare_extraction(count: int) -> float:
    """trafilatura alone on the same pages: the baseline the stage is compared with."""
    texts = [body.decode("utf-8", errors="replace") for body in PAGE_BODIES.values()]
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for n in range(count):
            trafilatura.bare_extraction(texts[n % len(texts)], with_metadata=True)
    return count / (time.perf_counter() - started)


def own_extraction(count: int) -> float:
    """Our whole extraction (trafilatura + metadata fallback + summary + key phrases + language), no fetch, no bus."""
    texts = [body.decode("utf-8", errors="replace") for body in PAGE_BODIES.values()]
    started = time.perf_counter()
    for n in range(count):
        try:
            extract(texts[n % len(texts)], url="https://bench.invalid/", final_url="https://bench.invalid/")
        except PermanentError:
            pass  # the corpus holds one page that is nothing but a login wall
    return count / (time.perf_counter() - started)


async def drain(url: str, store: Path, base: str, run: int, count: int, workers: int) -> float:
    """Start `workers` processes, wait until each is warm and consuming, then publish `count` triggers and time
    them until the stage's consumer has acknowledged every one."""
    nc = await nats.connect(url)
    js = nc.jetstream()
    env = {**os.environ, "NATS_URL": url, "IMPROMPTU_DATA_DIR": str(store / "data")}
    processes = [
        subprocess.Popen(
            [sys.executable, __file__, "--worker", url, "--store", str(store)], env=env, stdout=subprocess.PIPE
        )
        for _ in range(workers)
    ]
    try:
        for process in processes:  # each prints one line once its consumer is bound and extraction is warm
            assert process.stdout is not None
            await asyncio.to_thread(process.stdout.readline)
        batch = triggers(base, run, count)
        started = time.perf_counter()
        for start in range(0, count, 200):
            await asyncio.gather(
                *(
                    js.publish(bus.TRIGGERS_FIRED.subject, t.model_dump_json().encode(), headers={"Nats-Msg-Id": t.id})
                    for t in batch[start : start + 200]
                )
            )
        while True:
            await asyncio.sleep(0.02)
            info = await js.consumer_info(bus.STREAM, "enrich")
            if info.num_pending == 0 and info.num_ack_pending == 0 and info.ack_floor.stream_seq > 0:
                break
        elapsed = time.perf_counter() - started
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            process.wait(timeout=30)
    stored = (await js.stream_info(bus.STREAM, subjects_filter=">")).state.subjects or {}
    done = stored.get(bus.CONTENT_ENRICHED.subject, 0) + stored.get(bus.CONTENT_FAILED.subject, 0)
    await js.purge_stream(bus.STREAM)
    await js.delete_consumer(bus.STREAM, "enrich")
    await js.delete_key_value(stores.PAGES)
    await nc.close()
    if done != count:
        raise SystemExit(f"only {done} of {count} pages came out of the stage")
    return count / elapsed


async def worker(url: str, store: Path) -> None:
    """One enrich worker process: the stage's router on its own connection, until SIGTERM."""
    settings = settings_for(url, store)
    broker = new_broker(url)
    broker.include_router(enrich_router(settings, LiveRules.load(settings.rules_file)))
    await start_stages(broker, settings)
    await warm_up()  # as `impromptu run` does at start
    print("ready", flush=True)  # a long-running worker is warm: its first page does not load yake's model
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await broker.stop()


async def main(count: int, runs: int) -> None:
    configure_logging(json=True, level="WARNING")
    average = sum(map(len, PAGE_BODIES.values())) // len(PAGE_BODIES)
    print(f"corpus: {len(PAGE_BODIES)} pages, {average:,} bytes on average")
    with (
        tempfile.TemporaryDirectory() as folder,
        EmbeddedNats(Path(folder) / "nats", port=free_port()) as server,
        loopback_http_server(PageHandler) as base,
    ):
        store = Path(folder)
        probe = new_broker(server.url)
        await probe.connect()
        await bus.ensure_stream(probe, settings_for(server.url, store))
        await probe.stop()
        bare, own, one, two = [], [], [], []
        extract(
            next(iter(PAGE_BODIES.values())).decode(), url="https://warm.invalid/", final_url="https://warm.invalid/"
        )
        for run in range(runs):
            bare.append(bare_extraction(count))
            own.append(own_extraction(count))
            one.append(await drain(server.url, store, base, run * 2, count, workers=1))
            two.append(await drain(server.url, store, base, run * 2 + 1, count, workers=2))
            print(
                f"run {run + 1}: bare trafilatura {bare[-1]:,.0f} pages/s, our extraction {own[-1]:,.0f} pages/s, "
                f"enrich stage 1 worker {one[-1]:,.0f} "
                f"pages/s, 2 workers {two[-1]:,.0f} pages/s"
            )
    bare_median, own_median, one_median, two_median = (statistics.median(x) for x in (bare, own, one, two))
    print(f"median of {runs} runs, {count} pages each:")
    print(f"  bare trafilatura.bare_extraction:   {bare_median:,.1f} pages/s")
    print(f"  our extract() alone (no fetch/bus):  {own_median:,.1f} pages/s")
    print(f"  enrich stage, 1 worker process:      {one_median:,.1f} pages/s")
    print(f"  enrich stage, 2 worker processes:    {two_median:,.1f} pages/s")
    print(f"  ratio 1 worker / bare trafilatura:   {one_median / bare_median:.2f}")
    print(f"  ratio 1 worker / our extract():      {one_median / own_median:.2f}")
    print(f"  ratio 2 workers / 1 worker:          {two_median / one_median:.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--pages", type=int, default=400)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--store", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        configure_logging(json=True, level="WARNING")
        asyncio.run(worker(args.worker, Path(args.store)))
    else:
        asyncio.run(main(args.pages, args.runs))
