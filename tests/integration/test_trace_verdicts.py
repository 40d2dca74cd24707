"""`impromptu trace` says why the trigger stage let a share go, as the stage decided it, on a real nats-server: an
untrusted sharer, a rule failing on its min_score, a share by someone already among the sharers of a link that
fired. The verdict is kept per share in a bounded bucket and read back with one key get."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import yaml
from faststream.nats import NatsBroker

from pipeline import bus, stores
from pipeline.messages import Share, TriggerFired
from pipeline.ops.trace import find_journey, render, where_it_stopped
from pipeline.settings import Settings
from pipeline.triggers.explain import VERDICT_MAX_BYTES, TriggerVerdict, kept_verdict, verdict_key
from tests.integration.bus_helpers import jetstream, models_on, running_stages, wait_drained

pytestmark = pytest.mark.nats

CHECKOUT = Path(__file__).resolve().parents[2]
RULES = {
    "people": [{"name": "Mark Britz", "x": "@britz", "trust": 0.9}, {"name": "Low One", "x": "@low", "trust": 0.3}],
    "topics": {"leadership": ["leadership"]},
    "rules": [{"name": "lead", "when": {"topics_any": ["leadership"], "min_score": 0.5}}],
}


def share(sharer: str, n: str, url: str) -> Share:
    return Share.from_source(source="x", native_id=n, sharer=sharer, network="x", text="on leadership", url=url)


@pytest.fixture
async def trigger_stage(settings: Settings, tmp_path: Path) -> AsyncIterator[Settings]:
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump(RULES), encoding="utf-8")
    settings = settings.model_copy(update={"rules_file": rules, "stages": ("trigger",)})
    async with running_stages(settings):
        yield settings


async def test_trace_says_why_no_rule_fired(trigger_stage: Settings, client: NatsBroker) -> None:
    stranger = share("@stranger", "1", "https://example.com/a")
    weak = share("@low", "2", "https://example.com/b")
    fired = share("@britz", "3", "https://example.com/c")
    again = share("@britz", "4", "https://example.com/c?utm_source=x")  # the same link, shared once more
    for each in (stranger, weak, fired):
        await bus.publish(client, bus.SHARES, each)
    await wait_drained(client, "trigger")  # the first share of the link fires before the second arrives: a fetched
    await bus.publish(client, bus.SHARES, again)  # batch is handled at once, so published together either may win
    await wait_drained(client, "trigger")
    assert [t.share.id for t in await models_on(client, bus.TRIGGERS_FIRED.subject, TriggerFired)] == [fired.id]

    js = jetstream(client)
    untrusted = await find_journey(js, stranger.id)
    assert where_it_stopped(untrusted) == "no trigger: @stranger is not in the trusted network"

    low = await find_journey(js, weak.url)
    assert where_it_stopped(low) == "no trigger: not fired: rule lead: score 0.28 < 0.50"
    assert "  rule lead: first failed condition min_score: score 0.28 < 0.50" in render(low).splitlines()

    duplicate = await find_journey(js, again.id)
    assert where_it_stopped(duplicate) == "no trigger: Mark Britz is already among the trigger's sharers"
    assert where_it_stopped(await find_journey(js, fired.id)) == "waiting for the enrich stage to read the page"

    # kept as the stage decided it: one small value per share; judging it again puts the same bytes
    kv = await stores.bucket(client, stores.VERDICTS)
    entry = await kv.get(verdict_key(weak.id))
    stored = TriggerVerdict.model_validate_json(entry.value or b"")
    assert stored.rules == ["lead: first failed condition min_score: score 0.28 < 0.50"]
    config = (await js.stream_info(f"KV_{stores.VERDICTS}")).config  # bounded: a TTL, one revision, small values
    assert config.max_msg_size == stores.MAX_VALUE_BYTES[stores.VERDICTS]
    assert config.max_age == stores.TTL[stores.VERDICTS] and config.max_msgs_per_subject == 1

    # and the command says it, on one line, through the worktree's own code
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMPROMPTU_")}
    env.update(NATS_URL=trigger_stage.nats_url or "", IMPROMPTU_DATA_DIR=str(trigger_stage.data_dir))
    cli = subprocess.run(
        [sys.executable, "-c", "from pipeline.cli import main; main()", "trace", stranger.id],
        cwd=CHECKOUT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert cli.returncode == 0, cli.stderr
    assert "no trigger: @stranger is not in the trusted network" in cli.stdout
    assert "or the trigger stage has not handled it yet" not in cli.stdout


async def test_a_share_not_judged_yet_keeps_the_old_words(client: NatsBroker) -> None:
    """No verdict (no trigger stage ran, or the verdict expired): trace says what it cannot know."""
    lonely = share("@stranger", "9", "https://example.com/lonely")
    await bus.publish(client, bus.SHARES, lonely)
    journey = await find_journey(jetstream(client), lonely.id)
    assert journey.trigger_verdict is None
    assert where_it_stopped(journey).startswith("no trigger: no rule fired for this share, or the trigger stage")


def test_a_kept_verdict_stays_small_whatever_the_share_holds() -> None:
    huge = share("@stranger", "x" * 20_000, "https://example.com/a").model_copy(update={"id": "é" * 20_000})
    kept = kept_verdict(huge, "ü" * 50_000, None)
    assert len(kept.model_dump_json().encode()) <= VERDICT_MAX_BYTES
    assert kept_verdict(huge, "ü" * 50_000, None) == kept  # the same share, the same record
    assert verdict_key(huge.id) == verdict_key(huge.id) and len(verdict_key(huge.id)) < 64
