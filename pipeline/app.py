"""Build and run the pipeline: `create_app(settings)` wires every stage's router onto one broker."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import cast

import structlog
from faststream import FastStream
from faststream.exceptions import IncorrectState
from faststream.nats import NatsBroker, NatsRouter

from pipeline import bus, tracing
from pipeline.actions import actions_router
from pipeline.actions.clock import index_proposals, run_clock
from pipeline.actions.service import Approvals
from pipeline.archive import archive_router
from pipeline.archive.poll import poll_recordings
from pipeline.connect import (  # noqa: F401  re-exported: joining the bus lives apart, a bus command needs no stage
    CLOSE_SECONDS,
    CONNECT_SECONDS,
    _as_user,
    connected,
    discover,
    discover_url,
    new_broker,
)
from pipeline.domain.live_rules import LiveRules
from pipeline.domain.notify import say_notice_status
from pipeline.embedded import BusUsers, EmbeddedNats
from pipeline.enrich.pool import ExtractorPool
from pipeline.enrich.stage import enrich_router, extractor_pool, warm_up
from pipeline.errors import ConfigError
from pipeline.lifetime import tune_malloc
from pipeline.ops.metrics import PipelineMetrics, metrics_of
from pipeline.outreach.stage import outreach_router
from pipeline.settings import STAGE_NAMES, Settings
from pipeline.triggers.sources import SourceRunner
from pipeline.triggers.stage import trigger_router
from pipeline.web.server import create_web_app, serve_http

log = structlog.get_logger("pipeline.app")


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
            for sub in bus.subscribers(broker)
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
            metrics = metrics_of(broker)
            count_states = metrics.set_proposal_states if metrics is not None else None
            clock = run_clock(broker, settings.expiry_check_seconds, count_states)
            background.append(asyncio.create_task(clock, name="clock"))
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


async def serve(settings: Settings) -> None:
    """`impromptu run`: the stages (all, or `settings.stages`) and, with actions, the HTTP server, until
    SIGINT/SIGTERM; then they drain and an embedded NATS stops. Traced when OTEL_EXPORTER_OTLP_ENDPOINT is set."""
    with tracing.traced(settings.stages):  # before any broker is built; its spans flushed after the last stops
        await _serve(settings)


async def _serve(settings: Settings) -> None:
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
        broker = cast(NatsBroker, app.broker)  # create_app's; FastStream types it by the base class, and optional
        web = create_web_app(live, broker, Approvals(broker, live, rules))
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
