"""`impromptu status` against a real nats-server: a stopped stage shows a backlog and no worker; dead letters count."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

from faststream.nats import NatsBroker

from pipeline import bus
from pipeline.app import create_broker, start_stages
from pipeline.messages import Share
from pipeline.ops.dlq import discard, list_dead_letters
from pipeline.ops.status import StatusReport, gather_status, health_problems
from pipeline.settings import Settings
from tests.integration.bus_helpers import wait_drained, wait_until

IMPROMPTU = Path(sys.executable).with_name("impromptu")


async def status_of(broker: NatsBroker) -> StatusReport:
    return await gather_status(broker)


def stranger_share(n: int) -> Share:
    # An untrusted sharer: the trigger stage acks it and nothing fires, so no other stage gets work.
    return Share.from_source(
        source="cli", native_id=f"status-{n}", sharer="@stranger", url=f"https://example.com/article-{n}"
    )


async def run_status(settings: Settings, *args: str) -> tuple[int, str]:
    """The real command in a subprocess; asyncio's, so the stages in this event loop keep pulling meanwhile."""
    env = {**os.environ, "NATS_URL": settings.nats_url or "", "IMPROMPTU_DATA_DIR": str(settings.data_dir)}
    process = await asyncio.create_subprocess_exec(
        str(IMPROMPTU), "status", *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    output, _ = await process.communicate()
    return process.returncode or 0, output.decode()


async def test_a_stopped_stage_shows_its_backlog_and_clears_when_restarted(
    settings: Settings, client: NatsBroker
) -> None:
    stages = create_broker(settings)
    await start_stages(stages, settings)
    await stages.stop()  # every durable consumer now exists, with nobody pulling
    for n in range(3):
        await bus.publish(client, bus.SHARES, stranger_share(n))
    await asyncio.sleep(0.2)

    report = await status_of(client)
    trigger = next(stage for stage in report.stages if stage.durable == "trigger")
    assert trigger.exists and not trigger.live
    assert trigger.pending == 3 and trigger.ack_pending == 0
    assert trigger.oldest_unacked_age > 0
    problems = health_problems(report, max_age=0.1)
    assert "trigger: no live worker (no pull request waiting, nothing being handled)" in problems
    assert any(problem.startswith("trigger: backlog of 3 message(s)") for problem in problems)

    code, output = await run_status(settings, "--max-age", "0.1")
    assert code == 1
    assert "UNHEALTHY" in output and "trigger: backlog of 3 message(s)" in output

    restarted = create_broker(settings)
    await start_stages(restarted, settings)
    try:
        await wait_drained(client, "trigger")

        async def healthy() -> bool:
            return health_problems(await status_of(client)) == []

        await wait_until(healthy, what="a healthy status")
        report = await status_of(client)
        trigger = next(stage for stage in report.stages if stage.durable == "trigger")
        assert trigger.pending == 0 and trigger.oldest_unacked_age == 0 and trigger.live
        assert trigger.last_active is not None
        assert report.stream.messages >= 3

        code, output = await run_status(settings, "--json")
        assert code == 0, output
        verdict = json.loads(output)
        assert verdict["healthy"] is True and verdict["problems"] == []
        assert {stage["durable"] for stage in verdict["stages"]} >= {"trigger", "enrich", "actions-schedule"}
    finally:
        await restarted.stop()


async def test_dead_letters_make_it_unhealthy(pipeline: NatsBroker, settings: Settings) -> None:
    # Not a Share: the trigger stage dead-letters it at once.
    await pipeline.publish(
        b'{"not": "a share"}', bus.SHARES.subject, headers={"Nats-Msg-Id": "garbage-1"}, stream=bus.STREAM
    )

    async def dead_lettered() -> bool:
        return (await status_of(pipeline)).dead_letters.get("trigger", 0) == 1

    await wait_until(dead_lettered, what="a dead letter from the trigger stage")
    report = await status_of(pipeline)
    assert report.dead_letters["trigger"] == 1
    assert health_problems(report) == ["trigger: 1 dead letter(s) waiting on impromptu.dlq.trigger"]

    code, output = await run_status(settings)
    assert code == 1
    assert "trigger: 1 dead letter(s) waiting on impromptu.dlq.trigger" in output

    # Once it is dealt with (discarded, with a record of who and why) it no longer counts as waiting.
    (entry,) = await list_dead_letters(pipeline)
    await discard(pipeline, entry.seq, by="ops-ana", reason="garbage from a broken test client")
    report = await status_of(pipeline)
    assert (report.dead_letters, report.dead_letters_stored) == ({"trigger": 0}, {"trigger": 1})
    assert health_problems(report) == []
    assert (await run_status(settings))[0] == 0
