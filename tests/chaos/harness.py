"""The chaos harness behind `tests/chaos/` and `bench/chaos.py`: real `impromptu run` workers on one external
nats-server (file store), shares from a trusted sharer (each its own article on a local server), approvals through
the workers' API and the CLI, recordings, and faults from a seeded RNG: kill -9 of workers (also between a post's
`sending` and `posted`: the Mastodon fake SIGKILLs the worker that posts to it), kill -9 and restart of
nats-server (same store and port), poison messages, slow pages. Then the invariants, read from the bus and KV.

Every process started here is in its own process group and killed (SIGKILL to the group) in `Chaos.close`, which
`run_chaos` calls in a `finally`: a failing run leaves no nats-server or worker behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from contextvars import ContextVar
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import nats
import nats.errors
from fastapi import Request, Response
from faststream.nats import NatsBroker
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from pipeline import bus, stores
from pipeline.channels import records
from pipeline.demo import hold
from pipeline.embedded import free_port, nats_server_binary
from pipeline.errors import RetryableError
from pipeline.messages import DeadLetter, OutreachResult, Recording, RecordingFile, ScheduledSession, Share
from pipeline.ops.dlq import discard, list_dead_letters
from pipeline.ops.status import STAGE_CONSUMERS, gather_status, health_problems
from pipeline.web.auth import token_sha256
from tests.channel_fakes import FakeFacebook, FakeMastodon, Received, serve

IMPROMPTU = str(Path(sys.executable).parent / "impromptu")
SHARER = "@chaos"
CHANNELS = ("mastodon", "facebook")
RECORDING_BYTES = 64 * 1024
MP4_HEADER = b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom"
KINDS = ("scheduled", "recording")  # a recording walks its session to live and ended: no "starting now" post
API_TOKEN = "chaos-api-token-0123456789"
FETCH_TIMEOUT_SECONDS = 2.0
STAGE_DURABLES = frozenset(c.durable for c in STAGE_CONSUMERS)


@dataclass(frozen=True)
class Plan:
    """What one chaos run does. Every random choice comes from `seed`."""

    seed: int
    shares: int = 50
    workers: int = 2
    share_rate: float = 4.0  # shares/s while trickling
    burst: int = 0  # of the shares, published at once at the start (no pause between them)
    worker_kills: int = 2  # random kill -9 of a worker
    mid_post_kills: int = 1  # kill -9 of the worker posting to Mastodon, after the status exists, before it hears
    server_restarts: int = 1  # kill -9 of nats-server during the load, restarted on the same store and port
    final_server_restart: bool = True  # one more after the last share: the time to drain is measured from it
    fault_seconds: float = 0.0  # spread the faults over at least this long (default: while shares are published)
    slow_fraction: float = 0.15  # of the articles: the first fetch outlasts the fetch timeout, the next are slow
    poison: bool = True
    cli_approvals: int = 1  # of the approvals, through `impromptu proposals approve` (the others: the API)
    cli_recordings: int = 1  # of the recordings, through `impromptu record` (the others: published)
    settle_seconds: float = 120.0  # after the last fault: until every output is there, or nothing moves any more
    healthy_within: float = 60.0  # `impromptu status` healthy this long after the last fault at the latest
    consumers_within: float = 20.0  # the server's consumer count back to the stage durables within this
    ack_wait_seconds: int = 5


# --- processes --------------------------------------------------------------------------------------------------


async def _quiet(*_: object) -> None:
    """nats-py logs every failed reconnect with a traceback; a restart of the server is what we asked for."""


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def kill_group(process: subprocess.Popen[bytes] | asyncio.subprocess.Process) -> None:
    """SIGKILL the process's whole group (each was started in its own session)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)


class NatsProcess:
    """nats-server -js on a fixed loopback port and store dir, which a kill -9 and a restart keep."""

    def __init__(self, store_dir: Path) -> None:
        self.store_dir = store_dir
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self, timeout: float = 15.0) -> None:
        self.store_dir.mkdir(parents=True, exist_ok=True)
        with (self.store_dir / "nats-server.log").open("ab") as log:
            self.process = subprocess.Popen(
                [str(nats_server_binary()), "-js", "-sd", str(self.store_dir), "-a", "127.0.0.1", "-p", str(self.port)],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while not _accepts(self.port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"nats-server did not come up on {self.url}; see {self.store_dir}/nats-server.log")
            time.sleep(0.02)

    def kill(self) -> None:
        if self.process is not None:
            kill_group(self.process)
            self.process.wait()


@dataclass
class Worker:
    number: int
    process: subprocess.Popen[bytes]
    http_port: int
    log: Path
    killed: bool = False  # by us: any other death is a crash
    ready_once: bool = False

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def alive(self) -> bool:
        return self.process.poll() is None


# --- peers: articles, channel fakes -----------------------------------------------------------------------------


def article_html(number: int) -> bytes:
    title = f"Leadership lesson {number}: why soft skills training fails without practice"
    paragraph = (
        f"Lesson {number}. Leadership is learned by doing. Most soft skills training happens in a classroom, far "
        "from the work, and fades within weeks. Managers who practise with their teams, ask for feedback and "
        "reflect on what happened build the habits that last. This article looks at why leadership programmes "
        "fail, what the research says about practice and coaching, and how teams can learn together. "
    )
    body = "".join(f"<p>{paragraph}</p>" for _ in range(4))
    return (
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{title}</title>"
        f"<meta name='author' content='Chaos Writer'></head><body><article><h1>{title}</h1>"
        f"<p>By Chaos Writer</p>{body}</article></body></html>"
    ).encode()


class ArticleServer:
    """/a/N on 127.0.0.1: article N. A slow article's first request takes longer than the fetch timeout (a brief
    outage of that site); later ones are only slow."""

    def __init__(self, slow: set[int]) -> None:
        self.slow = slow
        self.requests: Counter[int] = Counter()
        self._lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                try:
                    number = int(self.path.rstrip("/").rsplit("/", 1)[-1])
                except ValueError:
                    self.send_error(404)
                    return
                with owner._lock:
                    owner.requests[number] += 1
                    first = owner.requests[number] == 1
                if number in owner.slow:
                    time.sleep(FETCH_TIMEOUT_SECONDS + 1.0 if first else 0.5)
                body = article_html(number)
                with contextlib.suppress(OSError):  # the fetch may have given up already
                    self.send_response(200)
                    self.send_header("Content-Type", "text/html; charset=utf-8")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="articles", daemon=True)

    def url(self, number: int) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/a/{number}"

    def __enter__(self) -> ArticleServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


_client_port: ContextVar[int | None] = ContextVar("client_port", default=None)


class KillingMastodon(FakeMastodon):
    """FakeMastodon that notes which local port each request came from, so `before_answer` can find the worker."""

    async def _intercept(self, request: Request, call_next: Any) -> Response:
        token = _client_port.set(request.client.port if request.client else None)
        try:
            return await super()._intercept(request, call_next)
        finally:
            _client_port.reset(token)


def socket_owner(client_port: int, pids: list[int]) -> int | None:
    """The pid (among `pids`) holding the loopback TCP socket whose local port is `client_port`."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as lines:
            for line in list(lines)[1:]:
                parts = line.split()
                if int(parts[1].rsplit(":", 1)[1], 16) == client_port:
                    inodes.add(parts[9])
    wanted = {f"socket:[{inode}]" for inode in inodes}
    for pid in pids:
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    if os.readlink(f"/proc/{pid}/fd/{fd}") in wanted:
                        return pid
    return None


# --- reading the bus without leaving anything behind ------------------------------------------------------------


async def stream_messages(js: JetStreamContext, subject: str, after: int = 0) -> list[tuple[int, str, bytes, dict]]:
    """Messages on `subject` after stream sequence `after`, by direct gets (no consumer is created)."""
    found = []
    seq = after
    while True:
        try:
            raw = await js.get_msg(bus.STREAM, seq=seq + 1, subject=subject, next=True)
        except NotFoundError:
            return found
        seq = raw.seq or seq + 1
        found.append((seq, raw.subject or "", raw.data or b"", dict(raw.headers or {})))


async def consumer_counts(js: JetStreamContext) -> dict[str, int]:
    return {info.config.name: info.state.consumer_count for info in await js.streams_info()}


async def ephemeral_consumers(js: JetStreamContext) -> int:
    return sum(1 for info in await js.consumers_info(bus.STREAM) if info.name not in STAGE_DURABLES)


# --- the run ----------------------------------------------------------------------------------------------------


@dataclass
class Figures:
    seed: int
    shares: int = 0
    firing: int = 0
    faults: Counter[str] = field(default_factory=Counter)
    messages: int = 0
    by_subject: dict[str, int] = field(default_factory=dict)
    duplicates_suppressed: int = 0  # redeliveries answered "already posted", publishes JetStream dropped
    retries: int = 0  # messages a stage nak'ed to try again later (stage.retry)
    api_calls: Counter[str] = field(default_factory=Counter)
    drain_after_restart: float | None = None
    readyz_flap: list[float] = field(default_factory=list)
    readyz_reasons: Counter[str] = field(default_factory=Counter)  # why a ready worker's /readyz was not 200
    healthy_after: float | None = None
    consumers_peak: dict[str, int] = field(default_factory=dict)
    consumers_end: dict[str, int] = field(default_factory=dict)
    non_json_log_lines: int = 0
    worker_starts: int = 0
    elapsed: float = 0.0

    def lines(self) -> list[str]:
        faults = ", ".join(f"{name} {count}" for name, count in sorted(self.faults.items())) or "none"
        flap = max(self.readyz_flap, default=0.0)
        drain = f"{self.drain_after_restart:.1f} s" if self.drain_after_restart is not None else "-"
        healthy = f"{self.healthy_after:.1f} s" if self.healthy_after is not None else "never"
        peak = ", ".join(f"{name} {n}" for name, n in sorted(self.consumers_peak.items()) if n)
        return [
            f"seed {self.seed}: {self.shares} shares ({self.firing} firing), {self.worker_starts} worker starts, "
            f"{self.elapsed:.0f} s",
            f"faults injected: {faults}",
            f"messages on the bus: {self.messages} ("
            + ", ".join(f"{s.removeprefix('impromptu.')} {n}" for s, n in sorted(self.by_subject.items()))
            + ")",
            f"duplicates suppressed: {self.duplicates_suppressed} (handled again after a redelivery: re-publish "
            f"dropped by JetStream, or the post found already made); retries: {self.retries}",
            "API answers: " + ", ".join(f"{code} {n}" for code, n in sorted(self.api_calls.items())),
            f"drain after the last server restart: {drain}; /readyz flapped for at most {flap:.1f} s "
            f"(per outage: {', '.join(f'{f:.1f}' for f in self.readyz_flap)} s; not ready because: "
            + "; ".join(f"{why} x{n}" for why, n in self.readyz_reasons.most_common(3))
            + ")",
            f"`impromptu status` healthy {healthy} after the last fault",
            f"consumers at peak: {peak or 'none beyond the stage durables'}",
            "consumers at the end: " + ", ".join(f"{name} {n}" for name, n in sorted(self.consumers_end.items())),
            f"log lines that are not JSON: {self.non_json_log_lines}",
        ]


class Chaos:
    def __init__(self, plan: Plan, root: Path, say: Any = print) -> None:
        self.plan = plan
        self.root = root
        self.say = say
        # The fault schedule has its own generator, so the load's random choices never shift it
        self.fault_rng = random.Random(plan.seed)
        self.rng = random.Random(plan.seed + 1)
        self.figures = Figures(plan.seed)
        self.nats = NatsProcess(root / "nats")
        self.data_dir = root / "data"
        self.workers: list[Worker] = []
        self.children: list[asyncio.subprocess.Process] = []
        self.slow = {n for n in range(plan.shares) if self.fault_rng.random() < plan.slow_fraction}
        self.articles = ArticleServer(self.slow)
        self.mastodon = KillingMastodon()
        self.facebook = FakeFacebook()
        # Providers take a moment to answer: an announcement stays `sending` a while, as a recording may arrive
        self.mastodon.delay, self.facebook.delay = 0.2, 0.3
        self.mid_post_armed = 0
        self.mid_post_done: list[str] = []
        self.stopping = False
        self.server_down = False
        self.last_fault_at = 0.0
        self.shares: list[Share] = []
        self.poison_ids: dict[str, str] = {}  # Nats-Msg-Id -> what is wrong with it
        self.approved: set[str] = set()
        self.recorded: set[str] = set()
        self.api_500: list[str] = []
        self.crashed: list[str] = []
        self.readyz: dict[int, list[tuple[float, bool]]] = defaultdict(list)
        self.restarts: list[float] = []
        self.server_killed_at: list[float] = []
        self._stack = contextlib.ExitStack()
        self.nc: nats.NATS | None = None
        self.ops: NatsBroker | None = None  # what an operator's commands use (status, dlq)

    # processes

    def env(self, http_port: int) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("IMPROMPTU_") and k != "NATS_URL"}
        env.update(
            NATS_URL=self.nats.url,
            IMPROMPTU_DATA_DIR=str(self.data_dir),
            IMPROMPTU_RULES_FILE=str(self.root / "rules.yaml"),
            IMPROMPTU_HTTP_PORT=str(http_port),
            IMPROMPTU_SOURCES_ENABLED="false",
            IMPROMPTU_LOG_JSON="true",
            IMPROMPTU_ACK_WAIT_SECONDS=str(self.plan.ack_wait_seconds),
            IMPROMPTU_EXPIRY_CHECK_SECONDS="2",  # the clock reads the proposals as often as a busy queue page would
            IMPROMPTU_FETCH_ALLOW='["127.0.0.1/32"]',
            IMPROMPTU_FETCH_TIMEOUT_SECONDS=str(FETCH_TIMEOUT_SECONDS),
            IMPROMPTU_DELIVERY__BACKOFF_BASE_SECONDS="0.2",
            IMPROMPTU_DELIVERY__BACKOFF_MAX_SECONDS="2",
            IMPROMPTU_OUTREACH_DRY_RUN="false",  # the fakes count every post; the outbox would overwrite a second one
            IMPROMPTU_MASTODON_URL=self.mastodon_url,
            IMPROMPTU_MASTODON_ACCESS_TOKEN=self.mastodon.token,
            IMPROMPTU_FACEBOOK_GRAPH_URL=self.facebook_url,
            IMPROMPTU_FACEBOOK_PAGE_ID=self.facebook.page_id,
            IMPROMPTU_FACEBOOK_PAGE_TOKEN=self.facebook.token,
            IMPROMPTU_FACILITATOR_LOGINS=json.dumps({"chaos": {"token_sha256": token_sha256(API_TOKEN)}}),
            IMPROMPTU_WEB_SECRET="chaos-web-secret-not-for-production",
        )
        return env

    def start_worker(self) -> Worker:
        number = self.figures.worker_starts
        self.figures.worker_starts += 1
        port = free_port()
        log_path = self.root / f"worker-{number}.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [IMPROMPTU, "run"], env=self.env(port), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        worker = Worker(number, process, port, log_path)
        self.workers.append(worker)
        return worker

    def live_workers(self) -> list[Worker]:
        return [w for w in self.workers if w.alive() and not w.killed]

    def kill_worker(self, worker: Worker, why: str) -> None:
        worker.killed = True
        kill_group(worker.process)
        self.figures.faults[why] += 1
        self.last_fault_at = time.monotonic()
        self.say(f"[chaos] {why}: worker {worker.number} (pid {worker.process.pid})")

    async def cli(self, *args: str, timeout: float = 60.0) -> tuple[int, str]:
        process = await asyncio.create_subprocess_exec(
            IMPROMPTU,
            *args,
            env=self.env(0),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )
        self.children.append(process)
        try:
            out, _ = await asyncio.wait_for(process.communicate(), timeout)
        except TimeoutError:
            kill_group(process)
            await process.wait()
            return -1, "timed out"
        return process.returncode or 0, out.decode(errors="replace")

    def close(self) -> None:
        """Kill every process group we started, whatever state the run is in."""
        for worker in self.workers:
            kill_group(worker.process)
        for child in self.children:
            if child.returncode is None:
                kill_group(child)
        self.nats.kill()
        for worker in self.workers:
            with contextlib.suppress(Exception):
                worker.process.wait(timeout=10)
        self._stack.close()

    # the mid-post kill: runs in the fake's server thread once the status exists, before the worker hears of it

    def _maybe_kill_poster(self, received: Received) -> None:
        if received.method != "POST" or not self.mid_post_armed or self.stopping:
            return
        key = received.headers.get("idempotency-key", "")
        port = _client_port.get()
        if not key or port is None or key in self.mid_post_done:
            return
        live = self.live_workers()
        pid = socket_owner(port, [w.process.pid for w in live])
        for worker in live:
            if worker.process.pid == pid:
                self.mid_post_armed -= 1
                self.mid_post_done.append(key)
                self.kill_worker(worker, "kill -9 mid-post")
                return

    # setup

    def write_rules(self) -> None:
        (self.root / "rules.yaml").write_text(
            "people:\n"
            f"  - {{name: Chaos Sharer, x: '{SHARER}', trust: 0.9}}\n"
            "topics:\n"
            "  leadership: [leadership, soft skills]\n"
            "rules:\n"
            "  - name: chaos-leadership\n"
            "    when: {topics_any: [leadership]}\n"
            f"    session: {{channels: [{', '.join(CHANNELS)}]}}\n",
            encoding="utf-8",
        )

    async def connect(self) -> JetStreamContext:
        self.nc = await nats.connect(
            self.nats.url, max_reconnect_attempts=-1, reconnect_time_wait=0.5, error_cb=_quiet, disconnected_cb=_quiet
        )
        return self.nc.jetstream()

    async def start(self) -> JetStreamContext:
        self.root.mkdir(parents=True, exist_ok=True)
        self.write_rules()
        self._stack.enter_context(self.articles)
        self.mastodon.before_answer = self._maybe_kill_poster  # type: ignore[assignment]
        self.mastodon_url = self._stack.enter_context(serve(self.mastodon.app))
        self.facebook_url = self._stack.enter_context(serve(self.facebook.app))
        self.nats.start()
        js = await self.connect()
        self.ops = NatsBroker(
            self.nats.url, logger=None, max_reconnect_attempts=-1, reconnect_time_wait=0.5, error_cb=_quiet
        )
        await self.ops.connect()
        for _ in range(self.plan.workers):
            self.start_worker()
        await self.wait_ready(60.0)
        return js

    async def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(timeout=2) as http:
            while True:
                pending = [w for w in self.live_workers() if not w.ready_once]
                for worker in pending:
                    with contextlib.suppress(httpx.HTTPError):
                        if (await http.get(f"{worker.base}/readyz")).status_code == 200:
                            worker.ready_once = True
                if not [w for w in self.live_workers() if not w.ready_once]:
                    return
                if time.monotonic() > deadline:
                    raise AssertionError(f"workers not ready within {timeout}s; see {self.root}/worker-*.log")
                await asyncio.sleep(0.2)

    # load

    def make_shares(self) -> list[Share]:
        return [
            Share.from_source(
                source="cli",
                native_id=f"chaos-{self.plan.seed}-{n}",
                sharer=SHARER,
                network="x",
                text=f"On leadership and soft skills, lesson {n}",
                url=self.articles.url(n),
            )
            for n in range(self.plan.shares)
        ]

    async def publish_raw(self, js: JetStreamContext, subject: str, body: bytes, msg_id: str) -> None:
        """Publish until JetStream acknowledges (the same Nats-Msg-Id makes a retry safe), across server restarts."""
        while True:
            try:
                await js.publish(subject, body, headers={"Nats-Msg-Id": msg_id}, timeout=2)
                return
            except (nats.errors.Error, TimeoutError, ConnectionError):
                await asyncio.sleep(0.2)

    async def publish_shares(self, js: JetStreamContext) -> None:
        self.shares = self.make_shares()
        for n, share in enumerate(self.shares):
            await self.publish_raw(js, bus.SHARES.subject, share.model_dump_json().encode(), share.id)
            if n >= self.plan.burst:
                await asyncio.sleep(self.rng.expovariate(self.plan.share_rate))
        self.say(f"[load] {len(self.shares)} shares published")

    async def publish_poison(self, js: JetStreamContext) -> None:
        poison = [
            (bus.SHARES.subject, b'{"id": "cli:half-a-share", "url": ', "malformed JSON"),
            (bus.SHARES.subject, b"\xff\xfe not even text", "malformed JSON"),
            (
                bus.SHARES.subject,
                json.dumps({"id": "cli:no-url", "correlation_id": "c-x", "causation_id": None}).encode(),
                "",
            ),
            (bus.RECORDINGS.subject, json.dumps({"id": "recording:nothing", "media_url": "x"}).encode(), ""),
        ]
        for n, (subject, body, what) in enumerate(poison):
            msg_id = f"poison-{self.plan.seed}-{n}"
            self.poison_ids[msg_id] = what
            await self.publish_raw(js, subject, body, msg_id)
            self.figures.faults["poison message"] += 1
            await asyncio.sleep(self.rng.uniform(0.5, 3.0))

    async def approver(self, js: JetStreamContext) -> None:
        """Approve every proposal as it appears: through a random live worker's API, a few through the CLI."""
        seen = 0
        queue: list[str] = []
        cli_left = self.plan.cli_approvals
        async with httpx.AsyncClient(timeout=10, headers={"Authorization": f"Bearer {API_TOKEN}"}) as http:
            while not self.stopping:
                with contextlib.suppress(nats.errors.Error, TimeoutError, ConnectionError):
                    for seq, _, data, _ in await stream_messages(js, bus.PROPOSALS_CREATED.subject, seen):
                        seen = seq
                        queue.append(json.loads(data)["id"])
                if not queue:
                    await asyncio.sleep(0.3)
                    continue
                proposal_id = queue.pop(0)
                if cli_left > 0:
                    code, out = await self.cli("proposals", "approve", proposal_id, "--by", "chaos")
                    self.figures.api_calls[f"cli exit {code}"] += 1
                    if code == 0 or "already approved" in out:
                        cli_left -= 1
                        self.approved.add(proposal_id)
                    else:
                        queue.append(proposal_id)
                    continue
                if not await self.approve_by_api(http, proposal_id):
                    queue.append(proposal_id)
                    await asyncio.sleep(0.2)

    async def approve_by_api(self, http: httpx.AsyncClient, proposal_id: str) -> bool:
        live = self.live_workers()
        if not live:
            return False
        worker = self.rng.choice(live)
        try:
            answer = await http.post(f"{worker.base}/api/proposals/{proposal_id}/approve")
        except httpx.HTTPError:
            self.figures.api_calls["no answer"] += 1
            return False
        self.figures.api_calls[str(answer.status_code)] += 1
        if answer.status_code == 500:
            self.api_500.append(f"POST approve {proposal_id}: {answer.text[:160]}")
        if answer.status_code == 200 or (answer.status_code == 409 and "already" in answer.text):
            self.approved.add(proposal_id)
            return True
        return False

    async def recorder(self, js: JetStreamContext) -> None:
        """Hand each scheduled session's recording to the archive, soon after it is scheduled (often while its
        announcements are still being posted): published on the bus, a few through `impromptu record`."""
        seen = 0
        cli_left = self.plan.cli_recordings
        tasks: list[asyncio.Task[None]] = []

        async def record(session: ScheduledSession, use_cli: bool) -> None:
            await asyncio.sleep(self.rng.uniform(0.0, 0.6))
            await self.fast_forward(session)
            media = self.data_dir / "import" / "chaos" / f"{session.id}.mp4"
            media.parent.mkdir(parents=True, exist_ok=True)
            media.write_bytes(MP4_HEADER + self.rng.randbytes(RECORDING_BYTES))  # looks like a video from its start
            if use_cli:
                code, _ = await self.cli("record", session.id, "--media", str(media))
                self.figures.api_calls[f"cli exit {code}"] += 1
                if code == 0:
                    return
            video = RecordingFile(kind="video", location=f"import:chaos/{session.id}.mp4", content_type="video/mp4")
            recording = Recording.arrived(session, source="cli", files=[video])
            await self.publish_raw(js, bus.RECORDINGS.subject, recording.model_dump_json().encode(), recording.id)

        while not self.stopping:
            with contextlib.suppress(nats.errors.Error, TimeoutError, ConnectionError):
                for seq, _, data, _ in await stream_messages(js, bus.SESSIONS_SCHEDULED.subject, seen):
                    seen = seq
                    session = ScheduledSession.model_validate_json(data)
                    if session.id not in self.recorded:
                        self.recorded.add(session.id)
                        tasks.append(asyncio.create_task(record(session, cli_left > 0)))
                        cli_left -= 1
            await asyncio.sleep(0.3)
        await asyncio.gather(*tasks, return_exceptions=True)

    async def fast_forward(self, session: ScheduledSession) -> None:
        """Stand in for time: the session has been held (its recording is refused before its start); retried while
        the server is away."""
        assert self.ops is not None
        while not self.stopping:
            try:
                await hold(self.ops, session)
                return
            except (nats.errors.Error, TimeoutError, ConnectionError, RetryableError):
                await asyncio.sleep(0.5)

    async def janitor(self) -> None:
        """Discard each poison dead letter once it is there (an operator would): only they may be discarded."""
        assert self.ops is not None
        while not self.stopping:
            await asyncio.sleep(2.0)
            with contextlib.suppress(Exception):
                for entry in await list_dead_letters(self.ops):
                    if entry.dead_letter.headers.get("Nats-Msg-Id") in self.poison_ids:
                        await discard(self.ops, entry.seq, "chaos", "poison: the chaos suite's own bad message")

    async def supervisor(self) -> None:
        """Keep `plan.workers` workers running; a worker that died without being killed is a crash."""
        while not self.stopping:
            for worker in list(self.workers):
                if not worker.alive() and not worker.killed:
                    worker.killed = True  # counted once
                    self.crashed.append(f"worker {worker.number} exited with {worker.process.returncode}")
            missing = self.plan.workers - len(self.live_workers())
            for _ in range(missing):
                await asyncio.sleep(self.rng.uniform(0.3, 1.5))
                self.start_worker()
            await asyncio.sleep(0.3)

    async def watch_readyz(self) -> None:
        async with httpx.AsyncClient(timeout=3.0) as http:  # a probe that waits longer than this: not ready
            while not self.stopping:
                for worker in self.live_workers():
                    try:
                        answer = await http.get(f"{worker.base}/readyz")
                        ok = answer.status_code == 200
                        if not ok and worker.ready_once:
                            missing = answer.json().get("missing", []) if answer.status_code == 503 else []
                            self.figures.readyz_reasons[", ".join(missing[:2]) or str(answer.status_code)] += 1
                    except (httpx.HTTPError, ValueError) as error:
                        ok = False
                        if worker.ready_once:
                            self.figures.readyz_reasons[type(error).__name__] += 1
                    if ok:
                        worker.ready_once = True
                    if worker.ready_once and worker.alive() and not worker.killed:
                        self.readyz[worker.number].append((time.monotonic(), ok))
                await asyncio.sleep(0.5)

    async def watch_consumers(self, js: JetStreamContext) -> None:
        while not self.stopping:
            with contextlib.suppress(Exception):
                for name, count in (await consumer_counts(js)).items():
                    self.figures.consumers_peak[name] = max(self.figures.consumers_peak.get(name, 0), count)
            await asyncio.sleep(2.0)

    async def restart_server(self) -> None:
        self.say("[chaos] kill -9 nats-server")
        self.server_down = True
        self.nats.kill()
        self.server_killed_at.append(time.monotonic())
        self.figures.faults["kill -9 nats-server"] += 1
        await self.probe_api_while_down()
        await asyncio.sleep(self.fault_rng.uniform(1.0, 3.0))
        await asyncio.to_thread(self.nats.start)
        self.server_down = False
        self.last_fault_at = time.monotonic()
        self.restarts.append(self.last_fault_at)
        self.say("[chaos] nats-server restarted (same store, same port)")

    async def probe_api_while_down(self) -> None:
        """What a facilitator's client sees while NATS is away: 503 with a reason, never 500."""
        async with httpx.AsyncClient(timeout=10, headers={"Authorization": f"Bearer {API_TOKEN}"}) as http:
            for worker in self.live_workers():
                for path in ("/api/proposals", "/api/proposals/proposal-unknown"):
                    try:
                        answer = await http.get(f"{worker.base}{path}")
                    except httpx.HTTPError:
                        self.figures.api_calls["no answer"] += 1
                        continue
                    self.figures.api_calls[str(answer.status_code)] += 1
                    if answer.status_code == 500:
                        self.api_500.append(f"GET {path} while NATS was down: {answer.text[:160]}")

    async def faults(self, load_seconds: float) -> None:
        """The faults during the load, at seeded random times."""
        rng, plan = self.fault_rng, self.plan
        events: list[tuple[float, str]] = []
        events += [(rng.uniform(0.1, 0.9) * load_seconds, "worker") for _ in range(plan.worker_kills)]
        events += [(rng.uniform(0.2, 0.8) * load_seconds, "server") for _ in range(plan.server_restarts)]
        events += [(rng.uniform(0.1, 0.7) * load_seconds, "mid-post") for _ in range(plan.mid_post_kills)]
        started = time.monotonic()
        for at, what in sorted(events):
            await asyncio.sleep(max(0.0, started + at - time.monotonic()))
            if what == "server":
                await self.restart_server()
            elif what == "mid-post":
                self.mid_post_armed += 1  # the next new Mastodon status kills its poster: wait for it to happen
                waited = time.monotonic() + 120
                while self.mid_post_armed and time.monotonic() < waited:
                    await asyncio.sleep(0.2)
            else:
                waited = time.monotonic() + 60  # every worker is down (another fault): the next one that is up
                while not (live := [w for w in self.live_workers() if w.ready_once]) and time.monotonic() < waited:
                    await asyncio.sleep(0.2)
                if live:
                    self.kill_worker(self.fault_rng.choice(live), "kill -9 worker")

    # settling and checking

    async def backlog(self, js: JetStreamContext) -> int:
        total = 0
        for durable in STAGE_DURABLES:
            info = await js.consumer_info(bus.STREAM, durable)
            total += (info.num_pending or 0) + (info.num_ack_pending or 0)
        return total

    async def settle(self, js: JetStreamContext) -> None:
        """Until every expected output is on the bus, or nothing has moved for a while (something is missing)."""
        deadline = time.monotonic() + self.plan.settle_seconds
        expected_entries = len(self.shares)
        expected_results = len(self.shares) * len(CHANNELS) * len(KINDS)
        quiet_since: float | None = None
        last_seq = -1
        empty_since: float | None = None
        while time.monotonic() < deadline:
            await asyncio.sleep(1.0)
            try:
                counts = await subject_counts(js)
                moving = await self.backlog(js)
                seq = (await js.stream_info(bus.STREAM)).state.last_seq
            except (nats.errors.Error, TimeoutError, ConnectionError, NotFoundError):
                continue
            results = counts.get(bus.OUTREACH_RESULTS.subject, 0)
            if moving or not self.restarts:
                empty_since = None
            elif empty_since is None:
                empty_since = time.monotonic()
            elif self.figures.drain_after_restart is None:  # empty twice in a row: drained
                self.figures.drain_after_restart = empty_since - self.restarts[-1]
            if (
                counts.get(bus.LIBRARY_ENTRIES.subject, 0) >= expected_entries
                and results >= expected_results
                and not moving
            ):
                if self.figures.drain_after_restart is None and self.restarts:
                    self.figures.drain_after_restart = time.monotonic() - self.restarts[-1]
                return
            idle = moving == 0 and seq == last_seq  # (approvals refused again and again publish nothing either)
            last_seq = seq
            if not idle:
                quiet_since = None
            elif quiet_since is None:
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since > 3 * self.plan.ack_wait_seconds:
                self.say("[settle] nothing moves any more, although outputs are missing")
                return
        self.say(f"[settle] gave up after {self.plan.settle_seconds:.0f}s")

    async def wait_healthy(self) -> list[str]:
        assert self.ops is not None
        problems: list[str] = ["not looked yet"]
        while True:
            with contextlib.suppress(Exception):
                problems = health_problems(await gather_status(self.ops))
            if not problems:
                self.figures.healthy_after = time.monotonic() - self.last_fault_at
                return []
            if time.monotonic() > self.last_fault_at + self.plan.healthy_within:
                return problems
            await asyncio.sleep(1.0)

    async def wait_consumers(self, js: JetStreamContext) -> tuple[dict[str, int], int]:
        """Each stream's consumer count, polled until only the stage durables are left (or the bound passes)."""
        deadline = time.monotonic() + self.plan.consumers_within
        while True:
            counts = await consumer_counts(js)
            extra = await ephemeral_consumers(js)
            # by design, each live worker's library search index follows the library's bucket with one consumer
            allowed = {bus.STREAM: counts.get(bus.STREAM, 0), f"KV_{stores.LIBRARY}": len(self.live_workers())}
            beyond = {name: n for name, n in counts.items() if n > allowed.get(name, 0)}
            if (not beyond and extra == 0) or time.monotonic() > deadline:
                self.figures.consumers_end = counts
                return beyond, extra
            await asyncio.sleep(0.5)

    def readyz_flaps(self) -> list[float]:
        """For each kill of the server: how long until every worker's /readyz answered 200 again (the last sample
        that was not 200 before the next kill, over every worker that had been ready)."""
        flaps = []
        ends = [*self.server_killed_at[1:], float("inf")]
        for killed_at, next_kill in zip(self.server_killed_at, ends, strict=True):
            failing = [
                t
                for samples in self.readyz.values()
                for t, ok in samples
                if not ok and killed_at <= t < min(next_kill, killed_at + 180)
            ]
            flaps.append(max(failing) - killed_at if failing else 0.0)
        return flaps


async def subject_counts(js: JetStreamContext) -> dict[str, int]:
    info = await js.stream_info(bus.STREAM, subjects_filter=">")
    return dict(info.state.subjects or {})


# --- the invariants ---------------------------------------------------------------------------------------------


async def check_invariants(chaos: Chaos, js: JetStreamContext) -> list[str]:
    """Every broken invariant, one line each with its counts; empty when all hold."""
    broken: list[str] = []
    everything = await stream_messages(js, bus.ALL_SUBJECTS)
    by_subject: dict[str, list[dict[str, Any]]] = defaultdict(list)
    dead: list[DeadLetter] = []
    for _, subject, data, _ in everything:
        if subject.startswith(bus.DEAD_LETTERS + "."):
            dead.append(DeadLetter.model_validate_json(data))
            continue
        with contextlib.suppress(ValueError):
            by_subject[subject].append(json.loads(data))
    figures = chaos.figures
    figures.messages = len(everything)
    figures.by_subject = Counter(subject for _, subject, _, _ in everything)

    correlations = {share.correlation_id for share in chaos.shares}
    figures.shares = figures.firing = len(chaos.shares)

    def per_share(subject: str, what: str) -> None:
        counts = Counter(m["correlation_id"] for m in by_subject[subject] if m["correlation_id"] in correlations)
        missing = [c for c in correlations if counts[c] == 0]
        twice = [c for c in correlations if counts[c] > 1]
        if missing or twice:
            broken.append(
                f"exactly one {what} per firing share: {len(missing)} of {len(correlations)} have none, "
                f"{len(twice)} have more than one (e.g. {(missing + twice)[:3]})"
            )

    per_share(bus.TRIGGERS_FIRED.subject, "trigger")
    per_share(bus.PROPOSALS_CREATED.subject, "proposal")
    per_share(bus.SESSIONS_SCHEDULED.subject, "session")
    per_share(bus.LIBRARY_ENTRIES.subject, "library entry")

    library_entries = await stores.scan(await js.key_value(stores.LIBRARY), "entry.>")
    if len(library_entries) != len(correlations):
        broken.append(f"library: {len(library_entries)} entries in KV for {len(correlations)} firing shares")

    # proposals in KV: each one archived (approved, scheduled, walked to the end by its recording)
    kv = await js.key_value(stores.PROPOSALS)
    states: Counter[str] = Counter()
    for proposal in by_subject[bus.PROPOSALS_CREATED.subject]:
        try:
            entry = await kv.get(proposal["id"])
            states[json.loads(entry.value or b"{}").get("state", "?")] += 1
        except NotFoundError:
            states["missing from KV"] += 1
    if set(states) - {"archived"}:
        broken.append(f"every proposal archived in KV: {dict(states)}")

    # posts: exactly one per (session, channel, kind), at the channel, in KV and as a result
    sessions = {m["id"] for m in by_subject[bus.SESSIONS_SCHEDULED.subject]}
    results: dict[str, list[OutreachResult]] = defaultdict(list)
    for message in by_subject[bus.OUTREACH_RESULTS.subject]:
        result = OutreachResult.model_validate(message)
        results[f"{result.session_id}.{result.channel}.{result.kind}"].append(result)
    figures.duplicates_suppressed = sum(r.status == "already_posted" for rs in results.values() for r in rs)
    expected = {f"{s}.{c}.{k}" for s in sessions for c in CHANNELS for k in KINDS}
    # Mastodon keeps one status per Idempotency-Key (as the real one does for an hour): count the keys that made one
    statuses_per_key = Counter(list(chaos.mastodon._keys))
    # A Facebook post links the session's join URL (its announcement) or its library page (its recording)
    key_of_link = {m["join_url"]: f"{m['id']}.facebook.scheduled" for m in by_subject[bus.SESSIONS_SCHEDULED.subject]}
    entries = by_subject[bus.LIBRARY_ENTRIES.subject]
    key_of_entry = {m["entry_id"]: f"{m['provenance']['session_id']}.facebook.recording" for m in entries}
    facebook_posts: Counter[str] = Counter()
    for post in chaos.facebook.posts.values():
        link = post.get("link") or ""
        facebook_posts[key_of_link.get(link) or key_of_entry.get(link.rsplit("/", 1)[-1], f"unknown link {link}")] += 1
    outreach_kv = await js.key_value(stores.OUTREACH)
    problems: dict[str, list[str]] = defaultdict(list)
    for key in sorted(expected):
        session_id, channel, kind = key.split(".")
        done = [r for r in results.get(key, []) if r.status in ("posted", "already_posted")]
        other = [r for r in results.get(key, []) if r.status not in ("posted", "already_posted")]
        if not done:
            problems[f"no posted result ({kind})"].append(key)
        for r in other:
            problems[f"result {r.status} ({kind}): {(r.reason or '')[:80]}"].append(key)
        if channel == "mastodon":
            made = statuses_per_key[key]
        else:
            made = facebook_posts[key]
        if made != 1:
            problems[f"{made} post(s) at {channel} ({kind})"].append(key)
        record, _ = await records.read(outreach_kv, key)
        if record is None or record.state != "posted":
            problems[f"KV record {record.state if record else 'missing'} ({kind})"].append(key)
    unexpected = set(results) - expected
    if unexpected:
        problems["posts nobody expected (kind not scheduled/recording, or an unknown session)"] += sorted(unexpected)
    for problem, keys in sorted(problems.items()):
        broken.append(
            f"exactly one post per (session, channel, kind): {len(keys)} of {len(expected)}: {problem} "
            f"(e.g. {keys[:2]})"
        )
    total_made = len(chaos.mastodon.statuses) + len(chaos.facebook.posts)
    if total_made != len(expected):
        broken.append(f"posts at the channels: {total_made} made for {len(expected)} expected")

    # dead letters: the poison ones, each once with its reason; nothing else
    poison_seen: Counter[str] = Counter()
    others: Counter[str] = Counter()
    for letter in dead:
        msg_id = letter.headers.get("Nats-Msg-Id", "")
        if msg_id in chaos.poison_ids:
            poison_seen[msg_id] += 1
            if not letter.reason.strip():
                broken.append(f"dead letter {msg_id} has no reason")
            elif chaos.poison_ids[msg_id] == "malformed JSON" and not {"json", "utf-8"} & set(
                letter.reason.lower().replace(":", " ").split()
            ):
                broken.append(f"dead letter {msg_id} (malformed JSON) does not say so: {letter.reason[:120]!r}")
        else:
            others[f"{letter.stage}: {letter.reason[:100]}"] += 1
    lost_poison = [m for m in chaos.poison_ids if poison_seen[m] != 1]
    if lost_poison:
        broken.append(
            f"poison: {len(lost_poison)} of {len(chaos.poison_ids)} not exactly one dead letter: "
            f"{ {m: poison_seen[m] for m in lost_poison} }"
        )
    if others:
        sample = dict(others.most_common(5))
        broken.append(f"no dead letter but the poison ones: {sum(others.values())} others: {sample}")

    if chaos.api_500:
        broken.append(f"faults answered as 500: {len(chaos.api_500)} (e.g. {chaos.api_500[:2]})")
    planned = {
        "kill -9 worker": chaos.plan.worker_kills,
        "kill -9 mid-post": chaos.plan.mid_post_kills,
        "kill -9 nats-server": chaos.plan.server_restarts + chaos.plan.final_server_restart,
    }
    short = {name: f"{figures.faults[name]} of {n}" for name, n in planned.items() if figures.faults[name] < n}
    if short:
        broken.append(f"the run did not inject every planned fault (it tested less than it should): {short}")
    if chaos.crashed:
        broken.append(f"workers that died on their own: {chaos.crashed}")
    if missing_approvals := {m["id"] for m in by_subject[bus.PROPOSALS_CREATED.subject]} - chaos.approved:
        broken.append(f"proposals the harness could not approve: {len(missing_approvals)}")
    return broken


# A stage's log event when it published, and the subject it published on: more events than messages means a
# redelivered message was handled again and its re-publish dropped by JetStream as a duplicate (same Nats-Msg-Id).
PUBLISHED_EVENTS = {
    "trigger.fired": bus.TRIGGERS_FIRED.subject,
    "content.enriched": bus.CONTENT_ENRICHED.subject,
    "proposal.created": bus.PROPOSALS_CREATED.subject,
    "session.scheduled": bus.SESSIONS_SCHEDULED.subject,
    "library.entry_kept": bus.LIBRARY_ENTRIES.subject,
    "outreach.result": bus.OUTREACH_RESULTS.subject,
}


def read_logs(logs: list[Path]) -> tuple[Counter[str], int]:
    """Each log event's count over the workers' logs, and how many lines were not JSON."""
    events: Counter[str] = Counter()
    bad = 0
    for path in logs:
        with contextlib.suppress(OSError):
            for line in path.read_text(errors="replace").splitlines():
                try:
                    events[json.loads(line).get("event", "?")] += 1
                except (ValueError, AttributeError):
                    bad += line.strip() != ""
    return events, bad


async def run_chaos(plan: Plan, root: Path, say: Any = print) -> tuple[list[str], Figures]:
    """One chaos run; returns the broken invariants (empty: all held) and the figures."""
    chaos = Chaos(plan, root, say)
    say(f"[chaos] seed {plan.seed} (rerun with the same seed to replay the same faults); logs in {root}")
    started = time.monotonic()
    tasks: list[asyncio.Task[None]] = []
    try:
        js = await chaos.start()
        tasks = [
            asyncio.create_task(coroutine)
            for coroutine in (
                chaos.approver(js),
                chaos.recorder(js),
                chaos.janitor(),
                chaos.supervisor(),
                chaos.watch_readyz(),
                chaos.watch_consumers(js),
            )
        ]
        load_seconds = max(5.0, (plan.shares - plan.burst) / plan.share_rate, plan.fault_seconds)
        load = [chaos.publish_shares(js), chaos.faults(load_seconds)]
        if plan.poison:
            load.append(chaos.publish_poison(js))
        await asyncio.gather(*load)
        if plan.final_server_restart:
            await asyncio.sleep(1.0)
            await chaos.restart_server()
        if chaos.mid_post_armed:
            say(f"[chaos] {chaos.mid_post_armed} mid-post kill(s) armed but never hit a new post")
        chaos.mid_post_armed = 0
        await chaos.settle(js)
        problems = await chaos.wait_healthy()
        chaos.stopping = True
        await asyncio.gather(*tasks, return_exceptions=True)
        broken = await check_invariants(chaos, js)
        if problems:
            broken.append(
                f"`impromptu status` healthy within {plan.healthy_within:.0f}s of the last fault: still "
                f"{len(problems)} problem(s): {problems[:4]}"
            )
        code, out = await chaos.cli("status", "--json")
        if code != 0:
            broken.append(f"`impromptu status` exits {code} at the end: {out[-300:]}")
        beyond, extra = await chaos.wait_consumers(js)
        if beyond or extra:
            broken.append(
                f"server consumers back to the stage durables within {plan.consumers_within:.0f}s: "
                f"{extra} non-durable on {bus.STREAM}, KV buckets {beyond}"
            )
        chaos.figures.readyz_flap = chaos.readyz_flaps()
        events, chaos.figures.non_json_log_lines = read_logs([w.log for w in chaos.workers])
        chaos.figures.retries = events["stage.retry"]
        chaos.figures.duplicates_suppressed += sum(
            max(0, events[event] - chaos.figures.by_subject.get(subject, 0))
            for event, subject in PUBLISHED_EVENTS.items()
        )
        chaos.figures.elapsed = time.monotonic() - started
        return broken, chaos.figures
    finally:
        chaos.stopping = True
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        with contextlib.suppress(Exception):
            if chaos.ops is not None:
                await chaos.ops.stop()
            if chaos.nc is not None:
                await chaos.nc.close()
        chaos.close()


def seed_from_env(default: int | None = None) -> int:
    """IMPROMPTU_CHAOS_SEED replays a run; otherwise a fresh seed (printed, so a failure can be replayed)."""
    given = os.environ.get("IMPROMPTU_CHAOS_SEED")
    if given:
        return int(given)
    return default if default is not None else random.SystemRandom().randrange(1, 2**31)
