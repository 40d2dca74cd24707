"""Build and run the pipeline: `create_app(settings)` wires every stage's router onto one broker."""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import structlog
from faststream import FastStream
from faststream.exceptions import IncorrectState
from faststream.nats import NatsBroker, NatsCredentials, NatsNKey, NatsRouter, NatsSecurity
from nats.aio.client import ErrorCallback

from pipeline import bus, pull_timeouts, stores
from pipeline.actions import actions_router, index
from pipeline.actions.approval import advance_by_clock, reindex
from pipeline.actions.notify import say_notice_status
from pipeline.actions.service import Approvals
from pipeline.archive import archive_router
from pipeline.archive.poll import poll_recordings
from pipeline.embedded import BusUser, BusUsers, EmbeddedNats
from pipeline.enrich import enrich_router, extractor_pool, warm_up
from pipeline.enrich.pool import ExtractorPool
from pipeline.errors import ConfigError
from pipeline.lifetime import tune_malloc
from pipeline.messages import utc_now
from pipeline.ops.metrics import PipelineMetrics, metrics_of
from pipeline.outreach.stage import outreach_router
from pipeline.settings import STAGE_NAMES, Settings
from pipeline.triggers.reload import LiveRules
from pipeline.triggers.sources import SourceRunner
from pipeline.triggers.stage import trigger_router
from pipeline.web import create_web_app, serve_http

log = structlog.get_logger("pipeline.app")


def new_broker(
    url: str, settings: Settings | None = None, error_cb: ErrorCallback | None = None, **connect_options: Any
) -> NatsBroker:
    """A broker for `url`; with `settings`, also their NATS credentials (a .creds file or an nkey seed) and TLS."""
    context: ssl.SSLContext | None = None
    if settings is not None and (settings.nats_tls_ca_file or settings.nats_tls_cert_file):
        context = ssl.create_default_context(cafile=settings.nats_tls_ca_file)
        if settings.nats_tls_cert_file:
            context.load_cert_chain(settings.nats_tls_cert_file, settings.nats_tls_key_file)
    security: NatsSecurity | None = None
    if settings is not None and settings.nats_credentials is not None and settings.nats_nkey_seed is not None:
        raise ConfigError("set IMPROMPTU_NATS_CREDENTIALS or IMPROMPTU_NATS_NKEY_SEED, not both")
    try:
        if settings is not None and settings.nats_credentials is not None:
            security = NatsCredentials.from_file(settings.nats_credentials, ssl_context=context)
        elif settings is not None and settings.nats_nkey_seed is not None:
            if not os.access(settings.nats_nkey_seed, os.R_OK):
                raise ConfigError(f"IMPROMPTU_NATS_NKEY_SEED: cannot read {settings.nats_nkey_seed}")
            # a path, read by nats-py at each (re)connect to sign the server's nonce: the seed stays in its file
            security = NatsNKey.from_file(settings.nats_nkey_seed, ssl_context=context)
        elif context is not None:
            security = NatsSecurity(ssl_context=context)
    except ImportError as error:
        raise ConfigError('NATS credentials need the nkeys package: pip install "nats-py[nkeys]"') from error
    # "nats://a:4222,nats://b:4222" (as the nats CLI takes it): every seed server, so a start with one node down works
    servers = [server.strip() for server in url.split(",") if server.strip()]
    pull_timeouts.install()  # an idle consumer's empty fetches must not pile up dead tasks (see pull_timeouts.py)
    # FastStream's own access log is off: our stages log structlog events with the correlation id.
    return NatsBroker(
        servers,
        logger=None,
        connect_timeout=5,
        name="impromptu",
        security=security,
        error_cb=error_cb,
        **connect_options,  # e.g. `impromptu tail`'s reconnect-forever options and callbacks
    )


def create_broker(
    settings: Settings, live: LiveRules | None = None, extractor: ExtractorPool | None = None
) -> NatsBroker:
    """A broker with the routers of `settings.stages` (all by default): only their consumers subscribe."""
    if settings.nats_url is None:
        raise ConfigError("no NATS URL: set NATS_URL, or run through `impromptu run` which embeds a server")
    live = live or LiveRules.of(settings)
    broker = new_broker(settings.nats_url, settings)
    routers: dict[str, Callable[[], NatsRouter]] = {
        "trigger": lambda: trigger_router(settings, live),
        "enrich": lambda: enrich_router(settings, live, extractor),
        "actions": lambda: actions_router(settings, live),
        "outreach": lambda: outreach_router(settings),
        "archive": lambda: archive_router(settings),
    }
    for stage in settings.stages:
        broker.include_router(routers[stage]())
    PipelineMetrics().install(broker)  # one registry per pipeline; served at GET /metrics
    return broker


async def prepare_bus(broker: NatsBroker, settings: Settings) -> None:
    """Connect and declare the stream before any stage subscribes (their consumers live in it)."""
    await broker.connect()
    await bus.ensure_stream(broker, settings)


async def start_stages(broker: NatsBroker, settings: Settings) -> None:
    await prepare_bus(broker, settings)
    await broker.start()


async def run_clock(broker: NatsBroker, every: float) -> None:
    """Let time move proposals: undecided ones lapse, scheduled sessions go live and end. Safe on every worker:
    each move is a compare-and-set, so when several workers see the same due proposal, one moves it. The same
    read of the index of proposals in play sets the gauge of proposals in play by state."""
    metrics = metrics_of(broker)
    while True:
        try:
            kv = await stores.bucket(broker, stores.PROPOSALS)
            entries = await index.in_play(kv)
            states = {proposal_id: entry.state for proposal_id, entry in entries.items()}
            for record in await advance_by_clock(broker, in_play=entries):
                log.info("proposal.clock", proposal_id=record.proposal.id, state=record.state)
                states[record.proposal.id] = record.state
            if metrics is not None:
                metrics.set_proposal_states(Counter(states.values()))
            await index.prune(kv, utc_now())
        except Exception as error:  # NATS away for a moment: try again next tick
            log.warning("proposal.clock_failed", error=f"{type(error).__name__}: {error}")
        await asyncio.sleep(every)


async def index_proposals(broker: NatsBroker) -> None:
    """Index proposals stored before the index existed (once per bucket; every worker checks at start)."""
    try:
        if count := await reindex(broker, unless_done=True):
            log.info("proposals.indexed", proposals=count)
    except Exception as error:  # the clock and every write repair the index as they go; say it and carry on
        log.warning("proposals.index_failed", error=f"{type(error).__name__}: {error}")


def create_app(settings: Settings, live: LiveRules | None = None) -> FastStream:
    """The stages of `settings.stages` and what goes with them: the sources with trigger, the clock with actions,
    the extraction processes with enrich (the HTTP server, also with actions, is `serve`'s)."""
    live = live or LiveRules.of(settings)
    stages = set(settings.stages)
    extractor = extractor_pool(settings) if "enrich" in stages else None
    broker = create_broker(settings, live, extractor)
    background: list[asyncio.Task[None]] = []
    sources = SourceRunner(settings, broker, live)

    async def declare_stream() -> None:  # FastStream runs startup hooks before it starts the broker
        await prepare_bus(broker, settings)

    async def announce_ready() -> None:
        consumers = sorted(
            f"{sub.config.durable_name} <- {sub.subject.broker_address}"
            for sub in broker.subscribers
            if sub.config.durable_name
        )
        log.info("pipeline.ready", nats_url=settings.nats_url, stages=list(settings.stages), consumers=consumers)
        background.append(asyncio.create_task(live.watch(settings.rules_reload_seconds), name="rules-reload"))
        if extractor is not None:
            # after the broker: a NATS blip during these seconds must not cost the stages their start
            await extractor.start()  # its workers warm up in their own processes
        elif "enrich" in stages:
            background.append(asyncio.create_task(warm_up(), name="extraction-warm-up"))
        if "actions" in stages:
            say_notice_status(settings)  # notify.disabled: nobody hears of a proposal unless they open /proposals
            background.append(asyncio.create_task(index_proposals(broker), name="index-proposals"))
            background.append(asyncio.create_task(run_clock(broker, settings.expiry_check_seconds), name="clock"))
        if "archive" in stages:  # recordings that no webhook brought: asked of Zoom and YouTube
            background.append(asyncio.create_task(poll_recordings(broker, settings), name="recordings-poll"))
        if "trigger" in stages and settings.sources_enabled:
            try:
                await sources.start()
            except IncorrectState:  # SIGINT/SIGTERM came while starting: the broker is closed, nothing to read for
                log.info("sources.not_started", reason="the pipeline is stopping")

    async def stop_background() -> None:
        await sources.stop()
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)

    async def stop_extractor() -> None:  # after the broker: pages in flight finish first
        if extractor is not None:
            await extractor.stop()

    return FastStream(
        broker,
        logger=None,
        on_startup=[declare_stream],
        after_startup=[announce_ready],
        on_shutdown=[stop_background],
        after_shutdown=[stop_extractor],
    )


@contextmanager
def nats_for(settings: Settings) -> Iterator[Settings]:
    """Settings pointing at a NATS server: NATS_URL as given, or an embedded server for this block, which only its
    users may join (made at its first start in DATA_DIR/nats-auth); the settings yielded are the pipeline user's."""
    if settings.nats_url is not None:
        yield settings
        return
    users = BusUsers.ensure(settings.nats_auth_dir)
    with EmbeddedNats(
        settings.nats_store_dir, host=settings.embedded_nats_host, port=settings.embedded_nats_port, users=users
    ) as server:
        settings.embedded_url_file.write_text(server.url)
        try:
            yield _as_user(settings, server.url, "pipeline")
        finally:
            settings.embedded_url_file.unlink(missing_ok=True)


def _as_user(settings: Settings, url: str, user: BusUser) -> Settings:
    """`settings` joining the embedded server at `url` as `user` (no seed yet: its server predates them)."""
    seed = BusUsers(settings.nats_auth_dir).seed_file(user)
    update: dict[str, object] = {"nats_url": url}
    if seed.exists():
        update.update(nats_nkey_seed=seed, nats_credentials=None)
    return settings.model_copy(update=update)


def discover_url(settings: Settings) -> str:
    """For commands that join a running pipeline: NATS_URL, else the embedded server `impromptu run` started."""
    if settings.nats_url is not None:
        return settings.nats_url
    if settings.embedded_url_file.exists():
        return settings.embedded_url_file.read_text().strip()
    raise ConfigError("no NATS server to talk to: start the pipeline with `make run`, or set NATS_URL")


def discover(settings: Settings, user: BusUser = "admin") -> Settings:
    """`settings` joining a running pipeline: NATS_URL with its own credentials as given, else the embedded server
    `impromptu run` started, as its `user` (the CLI and ops: admin; a worker started with --stages: pipeline)."""
    if settings.nats_url is not None:
        return settings
    return _as_user(settings, discover_url(settings), user)


CONNECT_SECONDS = 10.0
CLOSE_SECONDS = 1.0


@asynccontextmanager
async def connected(settings: Settings, **connect_options: Any) -> AsyncIterator[NatsBroker]:
    """A broker with no subscribers, for the CLI: publish, read KV; on the embedded server as its admin user. A TLS
    failure is reported at once (retrying cannot fix a certificate), an unreachable server after CONNECT_SECONDS,
    each with the cause nats-py met. `connect_options` go to nats-py (`impromptu tail` reconnects forever)."""
    settings = discover(settings, "admin")
    url = settings.nats_url or ""
    failures: list[Exception] = []

    async def fail_fast_on_tls(error: Exception) -> None:
        failures[:] = [error]  # the last is the cause; a client reconnecting for days must not keep them all
        if isinstance(error, ssl.SSLError):
            raise error

    broker = new_broker(url, settings, error_cb=fail_fast_on_tls, **connect_options)
    try:
        await asyncio.wait_for(broker.connect(), CONNECT_SECONDS)
    except Exception as error:
        await broker.stop()
        cause = error if not isinstance(error, TimeoutError) or not failures else failures[-1]
        hint = ""
        anonymous = settings.nats_nkey_seed is None and settings.nats_credentials is None
        if anonymous and "authorization violation" in str(cause).lower():
            hint = (
                f"; if it is `impromptu run`'s own server, it takes only its users: leave NATS_URL unset to find it "
                f"through {settings.embedded_url_file}, or set "
                f"IMPROMPTU_NATS_NKEY_SEED={settings.nats_auth_dir / 'admin.nk'}"
            )
        raise ConfigError(f"cannot connect to NATS at {url}: {cause or type(cause).__name__}{hint}") from error
    try:
        await bus.ensure_stream(broker, settings, update=False)
        yield broker
    finally:
        connection = broker._connection  # FastStream's; stop() drains it, which a reconnecting client cannot do
        try:
            await broker.stop()
        except bus.NOT_ANSWERING:  # the server is away (Ctrl-C on a tail waiting for it): nothing to drain, close
            if connection is not None:
                with contextlib.suppress(TimeoutError):  # nats-py may wait on the lost socket: the process is ending
                    await asyncio.wait_for(connection.close(), CLOSE_SECONDS)
            broker.config.disconnect()


async def serve(settings: Settings) -> None:
    """`impromptu run`: the stages (all, or `settings.stages`) and, with actions, the HTTP server, until
    SIGINT/SIGTERM; then they drain and an embedded NATS stops."""
    tune_malloc()
    if settings.stages != STAGE_NAMES and settings.nats_url is None:
        # Some stages only: they join a pipeline, never embed a server of their own on its port.
        try:
            settings = discover(settings, "pipeline")
        except ConfigError:
            raise ConfigError(
                f"--stages {','.join(settings.stages)} joins a running pipeline: set NATS_URL, or start "
                "`impromptu run` (every stage, with its embedded NATS) first"
            ) from None
    with nats_for(settings) as live:
        rules = LiveRules.of(live)
        app = create_app(live, rules)
        if "actions" not in live.stages:  # no HTTP server, so several such workers can share one machine
            log.info("pipeline.starting", nats_url=live.nats_url, stages=list(live.stages), http="off")
            await app.run()
            log.info("pipeline.stopped")
            return
        web = create_web_app(live, app.broker, Approvals(app.broker, live, rules))
        http_ready = asyncio.Event()
        http = asyncio.create_task(serve_http(live, web, http_ready), name="http")

        async def stop_http() -> None:  # a shutdown hook: in-flight POSTs still publish before the broker stops
            http.cancel()
            await asyncio.gather(http, return_exceptions=True)

        app.on_shutdown(stop_http)

        async def warm_library() -> None:  # the search index is rebuilt from KV now, not on the first reader's visit
            try:
                await web.state.library.index()
            except Exception as error:  # NATS away: the first request tries again
                log.warning("library.index_not_ready", error=f"{type(error).__name__}: {error}")

        app.after_startup(warm_library)
        log.info("pipeline.starting", nats_url=live.nats_url, stages=list(live.stages), rules=str(live.rules_file))
        try:
            # A taken HTTP port fails here, before any stage starts.
            listening = asyncio.create_task(http_ready.wait())
            await asyncio.wait([http, listening], return_when=asyncio.FIRST_COMPLETED)
            listening.cancel()
            if http.done():
                http.result()
            await app.run()
        finally:
            await stop_http()
        log.info("pipeline.stopped")
