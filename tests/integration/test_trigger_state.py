"""The trigger stage's memory in NATS KV: one session per link however many share it, redeliveries and races
that change nothing, cooldowns and caps that hold across links, workers and crashes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from faststream.nats import NatsBroker

from pipeline import bus, stores
from pipeline.app import connected, create_broker, start_stages
from pipeline.demo import ASSETS, article_server
from pipeline.domain.approval import list_records
from pipeline.domain.canonical import canonical_url, link_key
from pipeline.domain.live_rules import LiveRules
from pipeline.domain.trigger_state import TriggerState
from pipeline.messages import Share, SharerJoined, TriggerFired, utc_now
from pipeline.settings import Settings
from pipeline.triggers.stage import TriggerJudge
from tests.integration.bus_helpers import models_on, subject_counts, wait_for_count, wait_until

pytestmark = pytest.mark.nats

START = datetime(2026, 3, 4, 12, 0, tzinfo=UTC)
RULES: dict[str, Any] = {
    "people": [
        {"name": "Mark Britz", "x": "@britz", "trust": 0.9},
        {"name": "Low One", "x": "low", "trust": 0.5},
        {"name": "Low Two", "x": "low2", "trust": 0.5},
        {"name": "Low Three", "x": "low3", "trust": 0.5},
    ],
    "topics": {"leadership": ["leadership"]},
    "merge_window_minutes": 60,
    "rules": [{"name": "lead", "when": {"topics_any": ["leadership"]}}],
}


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def write_rules(tmp_path: Path) -> Callable[..., Path]:
    def write(**changes: Any) -> Path:
        path = tmp_path / "rules.yaml"
        path.write_text(yaml.safe_dump({**RULES, **changes}), encoding="utf-8")
        return path

    return write


@pytest.fixture
def judge_for(client: NatsBroker, clock: Clock, write_rules: Callable[..., Path]) -> Callable[..., Any]:
    async def make(**changes: Any) -> TriggerJudge:
        kv = await stores.bucket(client, stores.TRIGGERS)
        return TriggerJudge(LiveRules.load(write_rules(**changes)), TriggerState(kv), clock=clock)

    return make


def share(sharer: str, n: str, url: str = "https://example.com/article", at: datetime = START) -> Share:
    return Share.from_source(
        source="x", native_id=n, sharer=sharer, network="x", text="on leadership", url=url, shared_at=at
    )


async def test_second_sharer_lifts_the_link_and_later_sharers_join(judge_for: Callable[..., Any]) -> None:
    judge = await judge_for()
    first = share("low", "1", url="https://example.com/article?utm_source=twitter")
    assert (await judge.decide(first)).kind == "ignored"  # 0.40 < 0.50 alone

    second = share("low2", "2", url="https://EXAMPLE.com/article#comments")
    fired = await judge.decide(second)
    assert fired.kind == "fired" and isinstance(fired.message, TriggerFired)
    trigger = fired.message
    assert [s.name for s in trigger.shared_by] == ["Low One", "Low Two"]
    assert trigger.canonical_url == "https://example.com/article"
    assert trigger.id == f"fired:{link_key(trigger.canonical_url)}.1"
    assert trigger.terms is not None and trigger.terms.crowd == 0.5

    third = await judge.decide(share("low3", "3"))
    assert third.kind == "joined" and isinstance(third.message, SharerJoined)
    assert third.message.trigger_id == trigger.id and third.message.sharer.name == "Low Three"

    # redeliveries change nothing: the firing share re-publishes the same trigger, the joiner the same join
    assert (await judge.decide(second)).message == trigger
    again = await judge.decide(share("low3", "3"))
    assert again.message is not None and again.message.id == third.message.id
    assert (await judge.decide(first)).kind == "ignored"  # already counted in the trigger
    assert (await judge.decide(share("low3", "4"))).reason == "Low Three already shared this link"


async def test_after_the_merge_window_the_same_link_can_fire_again(judge_for: Callable[..., Any], clock: Clock) -> None:
    judge = await judge_for()
    first = await judge.decide(share("@britz", "1"))
    clock.now = START + timedelta(minutes=61)
    second = await judge.decide(share("@britz", "2", at=clock.now))
    assert first.kind == second.kind == "fired"
    assert first.message is not None and second.message is not None
    assert first.message.id.endswith(".1") and second.message.id.endswith(".2")


async def test_two_workers_racing_on_one_link_create_one_trigger(
    client: NatsBroker, judge_for: Callable[..., Any]
) -> None:
    workers = [await judge_for() for _ in range(4)]
    shares = [share(h, h) for h in ("@britz", "low", "low2", "low3")]
    outcomes = await asyncio.gather(*(w.decide(s) for w, s in zip(workers, shares, strict=True)))
    triggers = {o.message.id for o in outcomes if isinstance(o.message, TriggerFired)}
    assert len(triggers) == 1
    assert sorted(o.kind for o in outcomes).count("fired") == 1


async def test_rule_cooldown_and_daily_cap_hold_across_links(judge_for: Callable[..., Any], clock: Clock) -> None:
    judge = await judge_for(
        max_sessions_per_day=2,
        rules=[{"name": "lead", "when": {"topics_any": ["leadership"]}, "cooldown_minutes": 30}],
    )
    assert (await judge.decide(share("@britz", "1", url="https://example.com/1"))).kind == "fired"
    blocked = await judge.decide(share("@britz", "2", url="https://example.com/2"))
    assert blocked.kind == "ignored" and "rests 30 min" in blocked.reason
    clock.now = START + timedelta(minutes=31)
    assert (await judge.decide(share("@britz", "3", url="https://example.com/3"))).kind == "fired"
    clock.now = START + timedelta(minutes=62)
    capped = await judge.decide(share("@britz", "4", url="https://example.com/4"))
    assert capped.kind == "ignored" and "2 of 2 sessions today" in capped.reason


async def test_a_crash_after_reserving_the_budget_does_not_lose_the_trigger(
    client: NatsBroker, judge_for: Callable[..., Any]
) -> None:
    judge = await judge_for(max_sessions_per_day=1)
    s = share("@britz", "1")
    fired = await judge.decide(s)
    assert fired.kind == "fired"
    # as if the worker died after reserving today's only session but before recording the trigger on the link
    kv = await stores.bucket(client, stores.TRIGGERS)
    await kv.delete(link_key(canonical_url(s.url)))
    redelivered = await judge.decide(s)
    assert redelivered.kind == "fired" and redelivered.message is not None
    assert fired.message is not None and redelivered.message.id == fired.message.id
    other = await judge.decide(share("@britz", "2", url="https://example.com/other"))
    assert "1 of 1 sessions today" in other.reason


@pytest.fixture
async def stages(settings: Settings, write_rules: Callable[..., Path]) -> AsyncIterator[Settings]:
    """Every stage running with the RULES above; yields their settings."""
    live = settings.model_copy(update={"rules_file": write_rules()})
    broker = create_broker(live)
    await start_stages(broker, live)
    yield live
    await broker.stop()


async def test_the_stage_on_the_bus_emits_one_trigger_and_one_join(stages: Settings) -> None:
    async with connected(stages) as client:
        now = utc_now()
        for s in (share("low", "1", at=now), share("low2", "2", at=now), share("low3", "3", at=now)):
            await bus.publish(client, bus.SHARES, s)
        await wait_for_count(client, bus.TRIGGERS_JOINED.subject, 1)
        fired = await models_on(client, bus.TRIGGERS_FIRED.subject, TriggerFired)
        joined = await models_on(client, bus.TRIGGERS_JOINED.subject, SharerJoined)
    # the stage judges shares concurrently: any two of the three may be the pair that lifted the link
    assert len(fired) == 1 and len(fired[0].shared_by) == 2
    assert len(joined) == 1 and joined[0].trigger_id == fired[0].id
    everyone = {s.name for s in fired[0].shared_by} | {joined[0].sharer.name}
    assert everyone == {"Low One", "Low Two", "Low Three"}


async def test_a_later_sharer_shows_on_the_proposal_not_as_a_second_session(stages: Settings) -> None:
    with article_server((ASSETS / "bersin-article.html").read_bytes()) as url:
        async with connected(stages) as client:
            now = utc_now()
            await bus.publish(client, bus.SHARES, share("@britz", "1", url=url, at=now))
            await wait_for_count(client, bus.PROPOSALS_CREATED.subject, 1)
            await bus.publish(client, bus.SHARES, share("low", "2", url=f"{url}?utm_source=mastodon", at=now))
            await wait_until(lambda: _has_joiner(client), what="the joiner on the proposal")
            (record,) = await list_records(client)
            counts = await subject_counts(client)
    assert [s.name for s in record.also_shared_by] == ["Low One"]
    assert counts.get(bus.TRIGGERS_FIRED.subject) == 1 and counts.get(bus.PROPOSALS_CREATED.subject) == 1
    assert counts.get(bus.TRIGGERS_JOINED.subject) == 1


async def _has_joiner(client: NatsBroker) -> bool:
    return any(r.also_shared_by for r in await list_records(client))
