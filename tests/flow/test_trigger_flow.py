"""Trigger handler logic on FastStream's in-memory broker (no delivery semantics here: see tests/integration)."""

from __future__ import annotations

import pytest
from faststream.nats import NatsBroker, TestNatsBroker

from pipeline import bus
from pipeline.messages import Share, TriggerFired
from pipeline.settings import DEFAULT_RULES, Settings
from pipeline.triggers import trigger_router
from pipeline.triggers.rules import load_rules


@pytest.fixture
def broker() -> NatsBroker:
    broker = NatsBroker()
    broker.include_router(trigger_router(Settings(), load_rules(DEFAULT_RULES)))
    return broker


@pytest.fixture
def fired(broker: NatsBroker) -> list[TriggerFired]:
    """What the trigger stage emits, collected by a subscriber on its output subject."""
    collected: list[TriggerFired] = []

    @broker.subscriber(bus.TRIGGERS_FIRED, stream=bus.STREAM)
    async def collect(message: TriggerFired) -> None:
        collected.append(message)

    return collected


def _share(sharer: str, text: str) -> Share:
    return Share.from_source(
        source="x", native_id=f"{sharer}-{len(text)}", sharer=sharer, text=text, url="https://example.com/a"
    )


async def test_trusted_sharer_on_topic_fires(broker: NatsBroker, fired: list[TriggerFired]) -> None:
    async with TestNatsBroker(broker) as test_broker:
        share = _share("@Britz", "Great read on leadership training")
        await test_broker.publish(share, bus.SHARES)

    (trigger,) = fired
    assert trigger.share == share and trigger.id == f"fired:{share.id}"
    assert trigger.causation_id == share.id and trigger.correlation_id == share.correlation_id
    assert trigger.rule == "trusted-share-on-leadership-or-learning"
    assert trigger.plan.lead_minutes == 30


async def test_unknown_sharer_or_off_topic_does_not_fire(broker: NatsBroker, fired: list[TriggerFired]) -> None:
    async with TestNatsBroker(broker) as test_broker:
        await test_broker.publish(_share("@stranger", "Great read on leadership training"), bus.SHARES)
        await test_broker.publish(_share("@britz", "What I had for lunch"), bus.SHARES)

    assert fired == []
