"""Share -> TriggerFired -> EnrichedContent -> SessionProposal latency through real `impromptu run` processes on a
real nats-server, next to the raw bus round trip and a bare fetch + trafilatura of the same pages in the same run.

    .venv/bin/python bench/bench_latency.py [--seconds 15] [--rate 100] [--firing 0.1] [--burst 200]   # ~75 s

- **floors**: a raw nats-py JetStream publish until a subscriber has it (the bus round trip), and an HTTP fetch
  of a corpus page plus `trafilatura.bare_extraction` (the page read); the floor of a firing share is three bus
  round trips (share, trigger, content) plus one page read.
- **mix**: one `impromptu run` (every stage, extraction processes = cores) gets `--rate` shares/s for
  `--seconds`; a `--firing` share of them come from a trusted sharer on a known topic (each its own page of the
  corpus, a distinct URL: a real fetch, never a cache hit), the rest from strangers, which do not fire.
- **burst**: `--burst` firing shares at once; drained when every one has its proposal. Three set-ups, each on a
  fresh nats-server: one process reading pages in-process (IMPROMPTU_EXTRACT_PROCESSES=0: the one-process rate),
  one process with its extraction pool, and `impromptu run --stages enrich` next to a process with the rest.

Latencies are timed in this process from just before the share's publish to the arrival of each message on a
core NATS subscription. Every set-up is warm (its first shares have gone through) before the clock starts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import nats
import nats.aio.msg
import nats.js
import trafilatura
from bench_enrich import PAGE_BODIES, PageHandler

from pipeline import bus
from pipeline.app import new_broker
from pipeline.demo import loopback_http_server
from pipeline.embedded import EmbeddedNats, free_port
from pipeline.enrich.extract import extract
from pipeline.errors import PermanentError
from pipeline.logs import configure_logging
from pipeline.messages import Share
from pipeline.settings import Settings

IMPROMPTU = str(Path(sys.executable).parent / "impromptu")
RTT_SUBJECT = "impromptu.bench.rtt"
LOG_LEVEL = os.environ.get("IMPROMPTU_LOG_LEVEL", "INFO")
CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _readable(body: bytes) -> bool:
    try:
        extract(body, url="https://bench.invalid/", final_url="https://bench.invalid/")
    except PermanentError:
        return False
    return True


# Pages the stage reads as articles: a firing share about a page that cannot be read makes no proposal by default.
ARTICLES = [name for name, body in PAGE_BODIES.items() if _readable(body)]


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))] if ordered else float("nan")


@dataclass
class Journeys:
    """When each share was published and when its trigger, content and proposal arrived (perf_counter seconds)."""

    sent: dict[str, float] = field(default_factory=dict)
    arrived: dict[str, dict[str, float]] = field(default_factory=dict)

    def seen(self, subject: str, correlation_id: str) -> None:
        self.arrived.setdefault(subject, {}).setdefault(correlation_id, time.perf_counter())

    def latencies(self, subject: str, ids: list[str]) -> list[float]:
        arrived = self.arrived.get(subject, {})
        return [(arrived[i] - self.sent[i]) * 1000 for i in ids if i in arrived]

    def count(self, subject: str, ids: list[str]) -> int:
        arrived = self.arrived.get(subject, {})
        return sum(1 for i in ids if i in arrived)


def share(base: str, label: str, n: int, *, fires: bool) -> Share:
    page = ARTICLES[n % len(ARTICLES)]
    url = f"{base}{page}?copy={label}-{n}"
    if fires:
        return Share.from_source(
            source="replay", native_id=f"{label}-{n}", sharer="@britz", text="Bersin on leadership training", url=url
        )
    return Share.from_source(
        source="replay", native_id=f"{label}-{n}", sharer=f"@stranger{n}", text="weekend photos", url=url
    )


class Bench:
    def __init__(self, base: str) -> None:
        self.base = base
        self.journeys = Journeys()

    async def observe(self, url: str) -> nats.NATS:
        nc = await nats.connect(url)

        async def on_message(msg: nats.aio.msg.Msg) -> None:
            self.journeys.seen(msg.subject, json.loads(msg.data)["correlation_id"])

        for subject in (bus.TRIGGERS_FIRED.subject, bus.CONTENT_ENRICHED.subject, bus.PROPOSALS_CREATED.subject):
            await nc.subscribe(subject, cb=on_message)
        return nc

    async def publish(self, js: nats.js.JetStreamContext, message: Share) -> None:
        self.journeys.sent[message.correlation_id] = time.perf_counter()
        await js.publish(bus.SHARES.subject, message.model_dump_json().encode(), headers={"Nats-Msg-Id": message.id})

    async def wait_for(self, ids: list[str], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.journeys.count(bus.PROPOSALS_CREATED.subject, ids) < len(ids):
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.01)
        return True

    async def warm(self, js: nats.js.JetStreamContext, label: str) -> None:
        """A few firing shares first: every worker has read a page and every consumer is bound."""
        batch = [share(self.base, f"{label}-warm", n, fires=True) for n in range(2 * CORES)]
        await asyncio.gather(*(self.publish(js, s) for s in batch))
        if not await self.wait_for([s.correlation_id for s in batch], 120):
            raise SystemExit(f"{label}: the warm-up shares made no proposals (see the processes' logs)")

    async def mix(self, js: nats.js.JetStreamContext, seconds: float, rate: float, firing: float) -> list[str]:
        """`rate` shares/s for `seconds`; every round(1/firing)-th fires. Returns the firing ones' ids."""
        every = max(1, round(1 / firing))
        total = int(seconds * rate)
        fired: list[str] = []
        pending = []
        started = time.perf_counter()
        for n in range(total):
            delay = started + n / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            message = share(self.base, "mix", n, fires=n % every == 0)
            if n % every == 0:
                fired.append(message.correlation_id)
            pending.append(asyncio.create_task(self.publish(js, message)))
        await asyncio.gather(*pending)
        if not await self.wait_for(fired, 60):
            print(f"  mix: only {self.journeys.count(bus.PROPOSALS_CREATED.subject, fired)} of {len(fired)} proposals")
        return fired

    async def burst(self, js: nats.js.JetStreamContext, label: str, count: int) -> Burst:
        """`count` firing shares at once; pages/s until the last one's content, proposals/s until its proposal."""
        batch = [share(self.base, label, n, fires=True) for n in range(count)]
        started = time.perf_counter()
        await asyncio.gather(*(self.publish(js, s) for s in batch))
        ids = [s.correlation_id for s in batch]
        if not await self.wait_for(ids, 300):
            print(f"  {label}: only {self.journeys.count(bus.PROPOSALS_CREATED.subject, ids)} of {count} proposals")
        arrived = self.journeys.arrived
        last_content = max(arrived.get(bus.CONTENT_ENRICHED.subject, {}).get(i, started) for i in ids)
        last_proposal = max(arrived[bus.PROPOSALS_CREATED.subject].get(i, started) for i in ids)
        return Burst(count / (last_content - started), count / (last_proposal - started), ids)


@dataclass(frozen=True)
class Burst:
    pages_per_second: float  # until the last EnrichedContent
    proposals_per_second: float  # until the last SessionProposal
    ids: list[str]


def env_for(url: str, store: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMPROMPTU_") and k != "NATS_URL"}
    env.update(
        NATS_URL=url,
        IMPROMPTU_DATA_DIR=str(store / "data"),
        IMPROMPTU_FETCH_ALLOW='["127.0.0.1/32"]',
        IMPROMPTU_HTTP_PORT="0",
        IMPROMPTU_SOURCES_ENABLED="false",
        IMPROMPTU_LOG_JSON="true",
        IMPROMPTU_LOG_LEVEL=LOG_LEVEL,
        **extra,
    )
    return env


def tree_cpu_seconds(pids: list[int]) -> float:
    """CPU time (user + system) of these processes and their descendants (the extraction workers) so far."""
    total, todo, seen = 0.0, list(pids), set()
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
            for task in Path(f"/proc/{pid}/task").iterdir():
                todo.extend(int(child) for child in (task / "children").read_text().split())
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


@contextmanager
def processes(store: Path, *commands: tuple[list[str], dict[str, str]]) -> Iterator[list[int]]:
    """`impromptu run` processes for the block (yields their pids); stopped with SIGINT as Ctrl-C would."""
    started = []
    for n, (args, env) in enumerate(commands):
        with (store / f"run-{n}.log").open("wb") as log:
            started.append(subprocess.Popen([IMPROMPTU, "run", *args], env=env, stdout=log, stderr=subprocess.STDOUT))
    try:
        yield [process.pid for process in started]
    finally:
        for process in started:
            process.send_signal(signal.SIGINT)
        for process in started:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


async def round_trips(url: str, count: int) -> list[float]:
    """Raw nats-py: a JetStream publish (PubAck awaited) until a core subscriber has the message, one at a time."""
    nc = await nats.connect(url)
    js = nc.jetstream()
    got: asyncio.Queue[float] = asyncio.Queue()

    async def on_message(msg: nats.aio.msg.Msg) -> None:
        got.put_nowait(time.perf_counter())

    await nc.subscribe(RTT_SUBJECT, cb=on_message)
    times = []
    for n in range(count + 20):
        started = time.perf_counter()
        await js.publish(RTT_SUBJECT, b'{"n": %d}' % n)
        arrived = await got.get()
        if n >= 20:  # the first ones warm the connection
            times.append((max(arrived, time.perf_counter()) - started) * 1000)
    await nc.close()
    return times


def bare_reads(base: str, count: int) -> list[float]:
    """An HTTP fetch of a corpus page and trafilatura's reading of it, one at a time (no bus, no safety checks)."""
    times = []
    with httpx.Client() as client, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for n in range(count):
            started = time.perf_counter()
            html = client.get(f"{base}{ARTICLES[n % len(ARTICLES)]}?bare={n}").text
            trafilatura.bare_extraction(html, with_metadata=True)
            times.append((time.perf_counter() - started) * 1000)
    return times


def extraction_costs(passes: int = 3) -> tuple[list[float], list[float]]:
    """Per page of the corpus, ms: trafilatura.bare_extraction, then our whole extract() (trafilatura, metadata
    fallback, language, summary, key phrases), alternately on the same page."""
    bare, ours = [], []
    texts = [body.decode("utf-8", errors="replace") for body in PAGE_BODIES.values()]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(passes):
            for text in texts:
                started = time.perf_counter()
                trafilatura.bare_extraction(text, with_metadata=True)
                middle = time.perf_counter()
                try:
                    extract(text, url="https://bench.invalid/", final_url="https://bench.invalid/")
                except PermanentError:
                    pass
                bare.append((middle - started) * 1000)
                ours.append((time.perf_counter() - middle) * 1000)
    return bare, ours


@contextmanager
def fresh_server(folder: Path, name: str) -> Iterator[tuple[str, Path]]:
    store = folder / name
    with EmbeddedNats(store / "nats", port=free_port()) as server:
        yield server.url, store


async def prepare(url: str, store: Path) -> tuple[nats.NATS, nats.js.JetStreamContext]:
    probe = new_broker(url)
    await probe.connect()
    await bus.ensure_stream(probe, Settings(nats_url=url, data_dir=store / "data"))
    await probe.stop()
    nc = await nats.connect(url)
    return nc, nc.jetstream()


def line(label: str, values: list[float]) -> str:
    return f"  {label:<44} p50 {statistics.median(values):7.1f} ms   p99 {pct(values, 99):7.1f} ms   (n={len(values)})"


async def main(seconds: float, rate: float, firing: float, burst_size: int) -> None:
    configure_logging(json=True, level="WARNING")
    print(f"{CORES} cores; {len(ARTICLES)} corpus pages that read as articles; log level {LOG_LEVEL}")
    with tempfile.TemporaryDirectory() as tmp, loopback_http_server(PageHandler) as base:
        folder = Path(tmp)
        results: dict[str, float] = {}

        with fresh_server(folder, "floor") as (url, store):
            nc, _ = await prepare(url, store)
            await nc.close()
            rtt = await round_trips(url, 300)
            bare = bare_reads(base, 100)
        floor = 3 * statistics.median(rtt) + statistics.median(bare)
        trafilatura_only, ours = extraction_costs()
        print("extraction, per corpus page (no fetch, no bus):")
        print(line("trafilatura.bare_extraction", trafilatura_only))
        print(line("our extract()", ours))
        ratio, total = statistics.median(ours) / statistics.median(trafilatura_only), sum(ours) / sum(trafilatura_only)
        print(f"  ratio of the medians: {ratio:.2f} (target <= 2); of the sums: {total:.2f}")
        print("floors (same run):")
        print(line("raw nats-py JetStream publish -> subscriber", rtt))
        print(line("bare fetch + trafilatura of a corpus page", bare))
        print(f"  floor of a firing share (3 round trips + 1 read): {floor:.1f} ms")

        # one process, every stage, extraction pool = cores: the mix, then a burst
        with fresh_server(folder, "one") as (url, store):
            nc, js = await prepare(url, store)
            bench = Bench(base)
            observer = await bench.observe(url)
            with processes(store, ([], env_for(url, store))) as pids:
                await bench.warm(js, "one")
                cpu, wall = tree_cpu_seconds(pids), time.perf_counter()
                fired = await bench.mix(js, seconds, rate, firing)
                busy = (tree_cpu_seconds(pids) - cpu) / (time.perf_counter() - wall)
                pool = await bench.burst(js, "burst-pool", burst_size or 1)  # --burst 0: the mix alone
            j = bench.journeys
            print(
                f"mix: {int(seconds * rate)} shares at {rate:g}/s, {len(fired)} firing; one `impromptu run` "
                f"(it and its extraction processes used {busy:.2f} cores meanwhile; load average "
                f"{os.getloadavg()[0]:.1f}):"
            )
            print(line("share -> TriggerFired", j.latencies(bus.TRIGGERS_FIRED.subject, fired)))
            print(line("share -> EnrichedContent", j.latencies(bus.CONTENT_ENRICHED.subject, fired)))
            mix_proposal = j.latencies(bus.PROPOSALS_CREATED.subject, fired)
            print(line("share -> SessionProposal", mix_proposal))
            results["mix_p50"], results["mix_p99"] = statistics.median(mix_proposal), pct(mix_proposal, 99)
            burst_pool = j.latencies(bus.PROPOSALS_CREATED.subject, pool.ids)
            await observer.close()
            await nc.close()
        if not burst_size:
            return

        # one process, pages read in-process: the one-process rate
        with fresh_server(folder, "inproc") as (url, store):
            nc, js = await prepare(url, store)
            bench = Bench(base)
            observer = await bench.observe(url)
            with processes(store, ([], env_for(url, store, IMPROMPTU_EXTRACT_PROCESSES="0"))):
                await bench.warm(js, "inproc")
                one = await bench.burst(js, "burst-inproc", burst_size)
            burst_one = bench.journeys.latencies(bus.PROPOSALS_CREATED.subject, one.ids)
            await observer.close()
            await nc.close()

        # `--stages enrich` (its pool = cores) next to a process with the rest
        with fresh_server(folder, "split") as (url, store):
            nc, js = await prepare(url, store)
            bench = Bench(base)
            observer = await bench.observe(url)
            rest = ["--stages", "trigger,actions,outreach,archive"]
            with processes(store, (rest, env_for(url, store)), (["--stages", "enrich"], env_for(url, store))):
                await bench.warm(js, "split")
                split = await bench.burst(js, "burst-split", burst_size)
            burst_split = bench.journeys.latencies(bus.PROPOSALS_CREATED.subject, split.ids)
            await observer.close()
            await nc.close()

        print(f"burst: {burst_size} firing shares at once (rates up to the last content, to the last proposal):")
        setups = [
            ("one process, in-process extraction", one, burst_one),
            (f"one process, {CORES} extraction processes", pool, burst_pool),
            ("--stages enrich + the rest", split, burst_split),
        ]
        for label, burst, latencies in setups:
            rates = f"{burst.pages_per_second:.1f} pages/s, {burst.proposals_per_second:.1f} proposals/s"
            print(f"  {label:<44} {rates}")
            print(line("  share -> SessionProposal", latencies))
        print("summary:")
        print(f"  mix p99 share -> proposal:            {results['mix_p99']:.0f} ms (target < 250)")
        print(f"  mix p50 / same-run floor:             {results['mix_p50'] / floor:.2f} (target <= 2)")
        for label, burst, _latencies in setups[1:]:
            pages = burst.pages_per_second / one.pages_per_second
            proposals = burst.proposals_per_second / one.proposals_per_second
            print(f"  {label} / in-process: pages {pages:.2f}, proposals {proposals:.2f} (cores: {CORES})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--rate", type=float, default=100)
    parser.add_argument("--firing", type=float, default=0.1, help="share of the mix that fires")
    parser.add_argument("--burst", type=int, default=200)
    args = parser.parse_args()
    asyncio.run(main(args.seconds, args.rate, args.firing, args.burst))
