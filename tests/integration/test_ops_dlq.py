"""`impromptu dlq list|show|replay|discard` against a real nats-server, with a probe stage that fails on purpose."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from faststream.nats import NatsBroker

from pipeline import bus
from pipeline.app import new_broker, start_stages
from pipeline.errors import PermanentError
from pipeline.messages import Share
from pipeline.ops.dlq import DlqError, discard, get_dead_letter, list_dead_letters, replay, replay_headers
from pipeline.ops.trace import find_journey, where_it_stopped
from pipeline.settings import Settings
from pipeline.stage import StageRouter
from tests.integration.bus_helpers import jetstream, subject_counts, wait_for_count, wait_until

pytestmark = pytest.mark.nats

PROBE = bus.Topic("impromptu.probe", Share)
PROBED = bus.Topic("impromptu.probed", Share)  # what the probe stage emits once it handles a message
IMPROMPTU = str(Path(sys.executable).parent / "impromptu")
Handler = Callable[[Share], Awaitable[None]]


class FlakyStage:
    """Refuses every message (a poison message, as far as the stage can tell) until its cause is fixed."""

    def __init__(self, client: NatsBroker) -> None:
        self.client = client
        self.fixed = False
        self.received: list[str] = []
        self.processed: list[str] = []

    async def handle(self, message: Share) -> None:
        self.received.append(message.id)
        if not self.fixed:
            raise PermanentError("cannot handle example.com links yet")
        self.processed.append(message.id)
        await bus.publish(self.client, PROBED, message.model_copy(update={"id": f"probed:{message.id}"}))


@pytest.fixture
async def flaky(settings: Settings, client: NatsBroker) -> AsyncIterator[FlakyStage]:
    stage = FlakyStage(client)
    router = StageRouter("probe", settings)
    router.consume(PROBE)(stage.handle)
    broker = new_broker(settings.nats_url or "")
    broker.include_router(router)
    await start_stages(broker, settings)
    yield stage
    await broker.stop()


def share(n: int) -> Share:
    return Share.from_source(source="cli", native_id=str(n), sharer="@britz", url=f"https://example.com/{n}")


def impromptu(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMPROMPTU_")}
    env.update(NATS_URL=settings.nats_url or "", IMPROMPTU_DATA_DIR=str(settings.data_dir), IMPROMPTU_LOG_JSON="true")
    env["IMPROMPTU_FACILITATOR_LOGINS"] = '{"ana": {}, "bob": {}}'  # --by names a login
    return subprocess.run([IMPROMPTU, *args], env=env, capture_output=True, text=True, timeout=60)


async def poison(client: NatsBroker, n: int = 1) -> int:
    """Publish a message the probe refuses; return its dead letter's SEQ."""
    await bus.publish(client, PROBE, share(n))
    await wait_for_count(client, bus.dead_letter_subject("probe"), n)
    entries = await list_dead_letters(client, every=True)
    return entries[-1].seq


async def test_a_poison_message_is_listed_then_replayed_once_after_the_fix(
    flaky: FlakyStage, client: NatsBroker, settings: Settings
) -> None:
    seq = await poison(client)

    (entry,) = await list_dead_letters(client)
    assert entry.seq == seq and entry.record.state == "waiting"
    assert entry.dead_letter.reason == "cannot handle example.com links yet"
    dead = entry.dead_letter
    assert (dead.stage, dead.subject, dead.deliveries) == ("probe", PROBE.subject, 1)

    listed = impromptu(settings, "dlq", "list")
    assert listed.returncode == 0, listed.stderr
    (line,) = listed.stdout.splitlines()
    assert line.split()[0] == str(seq)
    assert "probe" in line and PROBE.subject in line and "x1" in line
    assert line.endswith("cannot handle example.com links yet")
    assert impromptu(settings, "dlq", "list", "--stage", "trigger").stdout.strip() == "no waiting dead letters"

    shown = impromptu(settings, "dlq", "show", str(seq))
    assert shown.returncode == 0, shown.stderr
    whole = json.loads(shown.stdout)
    assert whole["seq"] == seq and whole["record"]["state"] == "waiting"
    original = Share.model_validate_json(whole["dead_letter"]["data"])
    assert (original.id, original.url) == ("cli:1", "https://example.com/1")
    assert whole["dead_letter"]["headers"]["Nats-Msg-Id"] == "cli:1"

    stopped = await find_journey(jetstream(client), "cli:1")
    assert stopped.subjects == [PROBE.subject, bus.dead_letter_subject("probe")]
    assert where_it_stopped(stopped).startswith("stopped: the probe stage gave up: cannot handle")

    flaky.fixed = True  # the cause is fixed: now the replay must get through, once
    replayed = impromptu(settings, "dlq", "replay", str(seq), "--by", "ana")
    assert replayed.returncode == 0, replayed.stderr
    assert replayed.stdout.strip().startswith(f"{seq} replayed by ana as cli:1:replay:{seq}")
    await wait_until(lambda: flaky.processed, what="the replayed message to be handled")
    await wait_for_count(client, PROBED.subject, 1)
    await asyncio.sleep(0.3)  # room for a wrong second delivery

    assert flaky.received == ["cli:1", "cli:1"] and flaky.processed == ["cli:1"]
    assert (await subject_counts(client))[PROBED.subject] == 1
    assert await list_dead_letters(client) == []
    (after,) = await list_dead_letters(client, every=True)
    assert (after.record.state, after.record.by, after.record.replay_msg_id) == (
        "replayed",
        "ana",
        f"cli:1:replay:{seq}",
    )
    journey = await find_journey(jetstream(client), "cli:1")
    assert journey.subjects == [PROBE.subject, bus.dead_letter_subject("probe"), PROBE.subject, PROBED.subject]

    # Replaying twice is refused; a replay retried after a crash (same message id) is dropped by JetStream.
    with pytest.raises(DlqError, match="cannot replay dead letter .*: already replayed by ana"):
        await replay(client, seq, "bob")
    again = impromptu(settings, "dlq", "replay", str(seq), "--by", "bob")
    assert again.returncode == 1 and "already replayed by ana" in again.stderr
    dead = (await get_dead_letter(client, seq)).dead_letter
    retried = await jetstream(client).publish(dead.subject, dead.data.encode(), headers=replay_headers(after, "ana"))
    assert retried.duplicate
    await asyncio.sleep(0.3)
    assert flaky.processed == ["cli:1"] and (await subject_counts(client))[PROBED.subject] == 1


async def test_discard_records_who_and_why_and_hides_it_from_the_default_list(
    flaky: FlakyStage, client: NatsBroker, settings: Settings
) -> None:
    kept = await poison(client, 1)
    dropped = await poison(client, 2)

    done = impromptu(settings, "dlq", "discard", str(dropped), "--by", "ana", "--reason", "test link, never real")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"{dropped} discarded by ana: test link, never real"

    assert [entry.seq for entry in await list_dead_letters(client)] == [kept]
    waiting = impromptu(settings, "dlq", "list").stdout.splitlines()
    assert [line.split()[0] for line in waiting] == [str(kept)]
    every = impromptu(settings, "dlq", "list", "--all").stdout.splitlines()
    assert [line.split()[:2] for line in every] == [[str(kept), "waiting"], [str(dropped), "discarded"]]
    record = json.loads(impromptu(settings, "dlq", "show", str(dropped)).stdout)["record"]
    assert (record["state"], record["by"], record["reason"]) == ("discarded", "ana", "test link, never real")
    assert record["at"]

    second = impromptu(settings, "dlq", "discard", str(dropped), "--by", "bob", "--reason", "again")
    assert second.returncode == 1
    assert f"error: cannot discard dead letter {dropped}: already discarded by ana" in second.stderr
    assert "test link, never real" in second.stderr
    with pytest.raises(DlqError, match="already discarded by ana"):
        await replay(client, dropped, "bob")
    with pytest.raises(DlqError, match="already discarded"):
        await discard(client, dropped, "bob", "again")
    assert (await subject_counts(client)).get(bus.dead_letter_subject("probe")) == 2  # nothing was deleted


async def test_unknown_seq_is_an_error(flaky: FlakyStage, client: NatsBroker, settings: Settings) -> None:
    await poison(client)
    missing = impromptu(settings, "dlq", "show", "9999")
    assert missing.returncode == 1 and "error: no dead letter 9999" in missing.stderr
    not_a_dead_letter = impromptu(settings, "dlq", "replay", "1", "--by", "ana")  # seq 1 is the share itself
    assert not_a_dead_letter.returncode == 1
    assert f"error: no dead letter 1: message 1 is on {PROBE.subject}" in not_a_dead_letter.stderr
    with pytest.raises(DlqError, match="no dead letter 9999"):
        await discard(client, 9999, "ana", "gone")
