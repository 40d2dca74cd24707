"""A stage built from its table (pipeline/stage.py `stage_router`): each router's handlers get that stage's own
resources as `stage`, and a stage publishes only on the topics its routes declare."""

from __future__ import annotations

from pathlib import Path

import pytest
from faststream.nats import NatsBroker, TestNatsBroker

from pipeline import bus
from pipeline.messages import Share
from pipeline.settings import Settings
from pipeline.stage import STAGE, Emits, Outputs, Route, stage_router


class Seen:
    """A stage's resources in these tests: the shares its handler was given."""

    def __init__(self) -> None:
        self.shares: list[str] = []


async def note_share(share: Share, stage: Seen = STAGE) -> None:
    stage.shares.append(share.id)


def probe_settings(tmp_path: Path) -> Settings:
    return Settings(nats_url="nats://127.0.0.1:1", data_dir=tmp_path)


async def test_each_stage_router_gives_its_handlers_its_own_resources(tmp_path: Path) -> None:
    settings = probe_settings(tmp_path)
    first, second = Seen(), Seen()
    broker = NatsBroker()
    for name, seen in (("first", first), ("second", second)):
        routes = (Route(note_share, bus.SHARES, name),)
        broker.include_router(stage_router(name, settings, routes, lambda _, given=seen: given))
    share = Share.from_source(source="cli", native_id="1", sharer="@britz", url="https://example.com/1")
    async with TestNatsBroker(broker) as test_broker:
        await bus.publish(test_broker, bus.SHARES, share)
    assert first.shares == second.shares == [share.id]  # once each: neither saw the other's resources


def test_a_stage_emits_only_on_the_topics_its_routes_declare(tmp_path: Path) -> None:
    fired = Emits(bus.TRIGGERS_FIRED, "A share passed a trigger rule.")
    router = stage_router(
        "probe", probe_settings(tmp_path), (Route(note_share, bus.SHARES, emits=(fired,)),), lambda outputs: outputs
    )
    outputs = router.resources
    assert isinstance(outputs, Outputs)
    assert outputs[bus.TRIGGERS_FIRED].topic is bus.TRIGGERS_FIRED
    with pytest.raises(KeyError, match=r"declares no output on impromptu\.triggers\.joined"):
        outputs[bus.TRIGGERS_JOINED]
    published = {p.subject.broker_address for p in router.publishers} - {bus.dead_letter_subject("probe")}
    assert published == {bus.TRIGGERS_FIRED.subject}


def test_one_output_described_two_ways_is_refused(tmp_path: Path) -> None:
    routes = (
        Route(note_share, bus.SHARES, "one", emits=(Emits(bus.TRIGGERS_FIRED, "fired"),)),
        Route(note_share, bus.SHARES, "two", emits=(Emits(bus.TRIGGERS_FIRED, "something else"),)),
    )
    with pytest.raises(ValueError, match=r"describes its output impromptu\.triggers\.fired twice"):
        stage_router("probe", probe_settings(tmp_path), routes, lambda outputs: outputs)
