"""A share source is one adapter class: a made-up "pigeon" source, defined here and nowhere else, is started by
`impromptu run`'s source runner beside the shipped ones, configured from its own IMPROMPTU_ variable, and its shares
reach the bus. (A share's `source` is a word of `messages.Share.source`, the bus contract: a new network's source adds
its word there; the pigeons bring theirs as webhook shares.)"""

from __future__ import annotations

from collections.abc import Iterator
from typing import ClassVar

import pytest
from faststream.nats import NatsBroker
from pydantic import Field

from pipeline import bus
from pipeline.domain.live_rules import LiveRules
from pipeline.messages import Share
from pipeline.settings import Settings
from pipeline.triggers.sources import SourceRunner
from pipeline.triggers.sources.base import SourceAdapter, SourceContext, SourceSettings
from pipeline.triggers.sources.registry import register, unregister
from tests.integration.bus_helpers import models_on, wait_until

pytestmark = pytest.mark.nats


class PigeonSourceSettings(SourceSettings):
    pigeon_coop: str = Field(default="", description="Where the pigeons bring shares to; unset: no pigeons.")


class PigeonSource(SourceAdapter):
    name: ClassVar[str] = "pigeon"
    Section = PigeonSourceSettings

    @classmethod
    def from_settings(cls, settings: Settings, context: SourceContext) -> PigeonSource | None:
        coop = PigeonSourceSettings.of(settings).pigeon_coop
        return cls(coop, context) if coop else None

    def __init__(self, coop: str, context: SourceContext) -> None:
        self.coop = coop
        self.context = context
        self.poll_seconds = 0.05
        self.polls = 0

    async def poll(self) -> float:
        self.polls += 1
        share = Share.from_source(
            source="webhook",
            native_id=f"pigeon-{self.polls}",
            sharer="@britz",
            text=f"flown in to {self.coop}",
            url="https://example.org/article",
        )
        await self.context.emit(share)
        return 3600.0  # once is enough here


@pytest.fixture
def pigeons(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("IMPROMPTU_PIGEON_COOP", "rooftop")
    register(PigeonSource)
    try:
        yield
    finally:
        unregister("pigeon")


async def test_a_registered_source_is_started_with_the_others_and_its_shares_reach_the_bus(
    pigeons: None, settings: Settings, client: NatsBroker
) -> None:
    runner = SourceRunner(settings, client, LiveRules.of(settings))
    try:
        started = await runner.start()

        async def shared() -> bool:
            return bool(await models_on(client, bus.SHARES, Share))

        await wait_until(shared, timeout=10, what="the pigeon's share")
    finally:
        await runner.stop()
    # X has no bearer token here: it stays off, as before; the feeds and Mastodon start, then the pigeons
    assert [source.name for source in started] == ["rss", "mastodon", "pigeon"]
    (share,) = await models_on(client, bus.SHARES, Share)
    assert (share.id, share.text) == ("webhook:pigeon-1", "flown in to rooftop")
