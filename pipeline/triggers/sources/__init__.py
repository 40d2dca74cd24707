"""Share sources polled by `impromptu run`: X, RSS/Atom feeds, Mastodon, and any registered since (see registry.py).
Each runs in its own task, so a source
that is rate-limited or down delays only itself; the webhook, `impromptu share` and `impromptu replay` publish
shares directly."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import httpx
import structlog
from faststream.nats import NatsBroker

from pipeline import bus, stores
from pipeline.domain.live_rules import LiveRules
from pipeline.domain.rules import Person
from pipeline.messages import Share
from pipeline.settings import Settings
from pipeline.triggers.sources.base import KvCheckpoints, Source, SourceContext, run_source
from pipeline.triggers.sources.registry import configured_sources

log = structlog.get_logger("pipeline.sources")

USER_AGENT = "Impromptu/0.1 (+https://github.com/impromptu; share sources)"  # some feed hosts refuse httpx's


class SourceRunner:
    """Starts every configured source against one broker; `stop()` cancels them and closes their HTTP client."""

    def __init__(self, settings: Settings, broker: NatsBroker, live: LiveRules) -> None:
        self.settings = settings
        self.broker = broker
        self.live = live
        self.tasks: list[asyncio.Task[None]] = []
        self.http: httpx.AsyncClient | None = None

    def people(self) -> Sequence[Person]:
        return self.live.rules.people  # read on every poll: the rules file hot-reloads

    async def emit(self, share: Share) -> None:
        await bus.publish(self.broker, bus.SHARES, share)

    async def start(self) -> list[Source]:
        checkpoints = KvCheckpoints(await stores.bucket(self.broker, stores.SOURCES))
        self.http = httpx.AsyncClient(headers={"User-Agent": USER_AGENT}, follow_redirects=True)
        context = SourceContext(self.people, checkpoints, self.emit, self.http)
        sources: list[Source] = list(configured_sources(self.settings, context))
        for source in sources:
            # a failing source waits at least its own interval, so its healthy feeds are not polled faster
            task = run_source(source, failure_backoff=max(30.0, source.poll_seconds))
            self.tasks.append(asyncio.create_task(task, name=f"source-{source.name}"))
        log.info("sources.started", sources=[s.name for s in sources])
        return sources

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.tasks.clear()
        if self.http is not None:
            await self.http.aclose()
