"""`impromptu demo`: the seed story, end to end, on a real (embedded) NATS JetStream server.

@britz shares a Josh Bersin article (served from a local fixture page) -> trigger -> enrich -> a proposal
30 minutes out -> a facilitator approves it through the same function `impromptu proposals approve` uses ->
announcements for X, LinkedIn and Facebook in the outbox -> a sample recording kept in the library.
"""

from __future__ import annotations

import asyncio
import http.server
import math
import shutil
import tempfile
import threading
import time
import wave
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from faststream.nats import NatsBroker
from nats.aio.msg import Msg

from pipeline import bus
from pipeline.app import create_broker, nats_for, start_stages
from pipeline.bus import M
from pipeline.connect import connected
from pipeline.domain.approval import DecisionRefused, advance_by_clock, decide, transition
from pipeline.embedded import free_port
from pipeline.messages import (
    LibraryEntry,
    OutreachResult,
    Recording,
    RecordingFile,
    ScheduledSession,
    Share,
)
from pipeline.settings import Settings
from pipeline.web.server import create_web_app, serve_http

ASSETS = Path(__file__).parent / "demo_assets"
ARTICLE_PATH = "/pulse/why-elearning-isnt-working-leadership-soft-skills-josh-bersin"
FACILITATOR = "facilitator@impromptu.example"


@contextmanager
def loopback_http_server(handler: type[http.server.BaseHTTPRequestHandler]) -> Iterator[str]:
    """Serve `handler` on a free 127.0.0.1 port for the block; yields the base URL."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@contextmanager
def article_server(html: bytes, path: str = ARTICLE_PATH) -> Iterator[str]:
    """A local stand-in for the LinkedIn article page, on a free loopback port."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.split("?", 1)[0] != path:  # a query string (distinct links to one page) is fine
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(html)))
            self.end_headers()
            self.wfile.write(html)

        def log_message(self, format: str, *args: object) -> None:
            pass

    with loopback_http_server(Handler) as base_url:
        yield f"{base_url}{path}"


def seed_share(url: str) -> Share:
    return Share.from_source(
        source="x",
        native_id="seed-britz-bersin",
        sharer="@britz",
        text="Josh Bersin with data on why eLearning isn't working for leadership and soft skills training",
        url=url,
    )


SAMPLE_SECONDS = 30


def write_sample_wav(path: Path, seconds: int = SAMPLE_SECONDS) -> None:
    """A real, playable recording for the demo: a quiet two-tone chime, 8 kHz mono 16-bit PCM."""
    rate = 8000
    frames = bytearray()
    for n in range(rate * seconds):
        tone = 440.0 if (n // rate) % 2 == 0 else 554.4
        frames += int(3000 * math.sin(2 * math.pi * tone * n / rate)).to_bytes(2, "little", signed=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(bytes(frames))


def sample_recording(session: ScheduledSession, import_dir: Path) -> Recording:
    """The session's recording as a person would hand it in: files put in the import folder (audio, the transcript,
    the chat with the links people shared), named by their place in it."""
    folder = import_dir / "demo" / session.id
    write_sample_wav(folder / "recording.wav")
    shutil.copyfile(ASSETS / "session-transcript.vtt", folder / "transcript.vtt")
    shutil.copyfile(ASSETS / "session-chat.txt", folder / "chat.txt")
    place = f"import:demo/{session.id}"
    return Recording.arrived(
        session,
        source="demo",
        files=[
            RecordingFile(kind="audio", location=f"{place}/recording.wav"),
            RecordingFile(kind="transcript", location=f"{place}/transcript.vtt"),
            RecordingFile(kind="chat", location=f"{place}/chat.txt"),
        ],
        started_at=session.starts_at,
        duration_seconds=SAMPLE_SECONDS,
        submitted_by=FACILITATOR,
    )


async def hold(broker: NatsBroker, session: ScheduledSession) -> None:
    """For runs that cannot wait for the clock (soaks, chaos runs): walk `session` through live and ended as the
    archive does for a recording that arrives before the clock's tick, so its recording is accepted and no "starting
    now" is said. The clock itself moves every other proposal as usual."""
    for state in ("live", "ended"):
        try:
            await transition(broker, session.proposal.id, state, by="archive", reason="held (time passes)")
        except DecisionRefused:
            pass  # already there, or further on


class Watcher:
    """Collects what flows on the bus (a plain core subscription: it takes nothing from the stages)."""

    def __init__(self) -> None:
        self.seen: dict[str, list[bytes]] = {}
        self.arrived = asyncio.Event()

    async def on_message(self, msg: Msg) -> None:
        self.seen.setdefault(msg.subject, []).append(msg.data)
        self.arrived.set()

    async def wait_for(self, subject: str, count: int = 1, timeout: float = 20.0) -> list[bytes]:
        deadline = time.monotonic() + timeout
        while len(self.seen.get(subject, [])) < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                dead = {s: len(v) for s, v in self.seen.items() if s.startswith(bus.DEAD_LETTERS)}
                raise TimeoutError(f"nothing on {subject} after {timeout}s (dead letters: {dead or 'none'})")
            self.arrived.clear()
            try:
                await asyncio.wait_for(self.arrived.wait(), remaining)
            except TimeoutError:
                continue
        return self.seen[subject][:count]

    async def first(self, topic: bus.Topic[M]) -> M:
        """The first message on `topic`, as its model."""
        return topic.model.model_validate_json((await self.wait_for(topic.subject))[0])


async def run_demo(settings: Settings, say: Callable[[str], None] = print, *, serve: bool = False) -> None:
    """The seed story; with `serve`, the library and the bus stay up afterwards (until Ctrl-C) to be looked at."""
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="impromptu-demo-") as scratch:
        html = (ASSETS / "bersin-article.html").read_bytes()
        with article_server(html) as article_url:
            demo_settings = settings.model_copy(
                update={
                    "data_dir": Path(scratch),
                    # the fixture page is on loopback: allow exactly its address and port, nothing else
                    "fetch_allow": [*settings.fetch_allow, f"127.0.0.1:{httpx.URL(article_url).port}"],
                    "embedded_nats_port": free_port(),
                    # the library is served here, and the announcements link here
                    "http_host": "127.0.0.1",
                    "http_port": free_port(),
                    "public_url": None,
                }
            )
            with nats_for(demo_settings) as live:
                say(f"[bus     ] NATS JetStream at {live.nats_url} (file store in a temp folder)")
                await run_story(live, article_url, say, serve=serve, started=started)
    if not serve:
        say(f"[done    ] the seed story ran end to end in {time.monotonic() - started:.1f}s")


def say_results(raws: list[bytes], kind: str, say: Callable[[str], None]) -> None:
    results = (OutreachResult.model_validate_json(raw) for raw in raws)
    for result in sorted((r for r in results if r.kind == kind), key=lambda r: r.channel):
        first_line = result.text.splitlines()[0] if result.text else result.reason
        say(f"[outreach] {result.channel:<8} {kind} {result.status}: {first_line}")


async def run_story(
    settings: Settings,
    article_url: str,
    say: Callable[[str], None],
    *,
    serve: bool = False,
    started: float | None = None,
) -> None:
    pipeline = create_broker(settings)
    await start_stages(pipeline, settings)
    web = create_web_app(settings, pipeline)
    listening = asyncio.Event()
    http = asyncio.create_task(serve_http(settings, web, listening), name="demo-http")
    try:
        async with connected(settings) as client:
            watcher = Watcher()
            await client.config.connection_state.connection.subscribe(bus.ALL_SUBJECTS, cb=watcher.on_message)

            share = seed_share(article_url)
            await bus.publish(client, bus.SHARES, share)
            fired = await watcher.first(bus.TRIGGERS_FIRED)
            say(
                f"[trigger ] {share.sharer} shared {share.url} -> rule {fired.rule!r} fired "
                f"(score {fired.score:.2f}, topics: {', '.join(fired.topics)})"
            )

            content = await watcher.first(bus.CONTENT_ENRICHED)
            article = content.article
            say(
                f'[enrich  ] "{article.title}" by {article.author} on {article.site_name} '
                f"({article.word_count} words; topics: {', '.join(content.topics)})"
            )

            proposal = await watcher.first(bus.PROPOSALS_CREATED)
            lead = round((proposal.starts_at - proposal.created_at).total_seconds() / 60)
            say(
                f'[propose ] {proposal.id}: "{proposal.title}" at {proposal.starts_at:%H:%M} UTC '
                f"(in {lead} min), awaiting a facilitator until {proposal.expires_at:%H:%M} UTC"
            )

            await decide(client, proposal.id, "approved", by=FACILITATOR)
            say(f"[approve ] impromptu proposals approve {proposal.id} --by {FACILITATOR}")

            session = await watcher.first(bus.SESSIONS_SCHEDULED)
            say(f"[schedule] {session.id}: join {session.join_url} (calendar invite attached)")

            announced = await watcher.wait_for(bus.OUTREACH_RESULTS.subject, count=len(proposal.channels))
            say_results(announced, "scheduled", say)

            # the demo does not wait half an hour: the clock is asked about the session's start, then its end
            await advance_by_clock(client, now=session.starts_at)
            live_now = await watcher.wait_for(bus.OUTREACH_RESULTS.subject, count=2 * len(proposal.channels))
            say(f"[clock   ] {session.starts_at:%H:%M} UTC (fast-forward): the session is live")
            say_results(live_now, "starting", say)
            await advance_by_clock(client, now=session.ends_at)
            say(f"[clock   ] {session.ends_at:%H:%M} UTC (fast-forward): the session ended")

            await bus.publish(client, bus.RECORDINGS, sample_recording(session, settings.import_dir))
            entry = await watcher.first(bus.LIBRARY_ENTRIES)
            kept = ", ".join(f"{f.kind} {f.size:,} bytes" for f in entry.files)
            say(f"[archive ] {entry.entry_id}: {entry.tagline} ({kept}) [tags: {', '.join(entry.tags)}]")
            everything = await watcher.wait_for(bus.OUTREACH_RESULTS.subject, count=3 * len(proposal.channels))
            say_results(everything, "recording", say)  # "the recording is in the library", with its link

            journey = sum(1 for raws in watcher.seen.values() for r in raws if share.correlation_id.encode() in r)
            say(f"[trace   ] correlation id {share.correlation_id} carried by {journey} messages")

            await listening.wait()
            await show_library(settings, entry, say)
            if serve:
                say(f"[done    ] the seed story ran in {time.monotonic() - (started or 0):.1f}s; serving until Ctrl-C")
                await asyncio.Event().wait()
    finally:
        http.cancel()
        await asyncio.gather(http, return_exceptions=True)
        await pipeline.stop()


async def show_library(settings: Settings, entry: LibraryEntry, say: Callable[[str], None]) -> None:
    """Open the entry's page and the feeds as a reader would, and say where they are."""
    page_url = f"{settings.base_url}/library/{entry.entry_id}"
    async with httpx.AsyncClient(timeout=10) as web:
        page = await web.get(page_url)
        feed = await web.get(f"{settings.base_url}/library/feed.xml")
        podcast = await web.get(f"{settings.base_url}/library/podcast.xml")
    player = "a player" if "<audio" in page.text or "<video" in page.text else "no player"
    lines = page.text.count('<li id="c')
    said = f"{page.status_code}: {player}, {lines} transcript lines, {len(entry.resources)} resources"
    say(f"[library ] {page_url} ({said})")
    episodes = podcast.text.count("<enclosure")
    say(
        f"[library ] feeds: {settings.base_url}/library/feed.xml ({feed.status_code}, {feed.text.count('<entry>')} "
        f"entry), {settings.base_url}/library/podcast.xml ({podcast.status_code}, {episodes} episode)"
    )


def main(settings: Settings) -> None:
    asyncio.run(run_demo(settings))
