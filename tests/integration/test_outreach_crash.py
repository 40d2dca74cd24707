"""A worker killed between "post sent" and "ack": real `impromptu run` processes on a real nats-server, posting
to local fakes of Slack and Mastodon, each of which SIGKILLs the worker the moment it has accepted its first post
(before it even answers). The message is redelivered to the next worker, and still each channel has exactly one
post: Mastodon's is found again through its Idempotency-Key; Slack cannot be asked, so its post is flagged for a
person instead of being repeated."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from faststream.nats import NatsBroker

from pipeline import bus, stores
from pipeline.channels import records
from pipeline.embedded import EmbeddedNats
from pipeline.messages import OutreachResult
from pipeline.ops.status import gather_status, health_problems
from tests.channel_fakes import FakeMastodon, FakeSlack, Received, serve
from tests.integration.bus_helpers import models_on
from tests.unit.conftest import make_session

pytestmark = pytest.mark.nats

IMPROMPTU = str(Path(sys.executable).parent / "impromptu")


class Workers:
    """`impromptu run` processes, one at a time; `kill_current` is what a fake calls when it has the post."""

    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env = env
        self.logs = logs
        self.started: list[subprocess.Popen[bytes]] = []
        self.killed: list[str] = []

    def start(self) -> subprocess.Popen[bytes]:
        log = (self.logs / f"worker-{len(self.started)}.log").open("wb")
        process = subprocess.Popen([IMPROMPTU, "run"], env=self.env, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        self.started.append(process)
        return process

    def kill_on_first_post(self, channel: str) -> object:
        def kill(received: Received) -> None:
            if received.method == "POST" and channel not in self.killed:
                self.killed.append(channel)
                os.kill(self.started[-1].pid, signal.SIGKILL)  # the post is made; the worker never hears of it

        return kill

    def stop_all(self) -> None:
        for process in self.started:
            if process.poll() is None:
                process.kill()
            process.wait()


@pytest.fixture
def fakes() -> Iterator[tuple[FakeSlack, FakeMastodon, str, str]]:
    slack, mastodon = FakeSlack(), FakeMastodon()
    with serve(slack.app) as slack_url, serve(mastodon.app) as mastodon_url:
        yield slack, mastodon, slack.webhook(slack_url), mastodon_url


async def test_a_worker_killed_mid_post_leaves_exactly_one_post_per_channel(
    nats_server: EmbeddedNats,
    client: NatsBroker,
    tmp_path: Path,
    fakes: tuple[FakeSlack, FakeMastodon, str, str],
) -> None:
    slack, mastodon, webhook, mastodon_url = fakes
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMPROMPTU_")}
    env.update(
        NATS_URL=nats_server.url,
        IMPROMPTU_DATA_DIR=str(tmp_path / "data"),
        IMPROMPTU_HTTP_PORT="0",
        IMPROMPTU_SOURCES_ENABLED="false",
        IMPROMPTU_LOG_JSON="true",
        IMPROMPTU_ACK_WAIT_SECONDS="2",  # a dead worker's message comes back after 2 s
        IMPROMPTU_OUTREACH_DRY_RUN="false",
        IMPROMPTU_SLACK_WEBHOOK=webhook,
        IMPROMPTU_MASTODON_URL=mastodon_url,
        IMPROMPTU_MASTODON_ACCESS_TOKEN=mastodon.token,
    )
    workers = Workers(env, tmp_path)
    slack.before_answer = workers.kill_on_first_post("slack")  # type: ignore[assignment]
    mastodon.before_answer = workers.kill_on_first_post("mastodon")  # type: ignore[assignment]

    session = make_session(now=datetime.now(UTC))
    session = session.model_copy(
        update={"proposal": session.proposal.model_copy(update={"channels": ["slack", "mastodon"]})}
    )
    await bus.publish(client, bus.SESSIONS_SCHEDULED, session)
    try:
        deadline = time.monotonic() + 90
        while True:
            done = {r.channel: r for r in await models_on(client, bus.OUTREACH_RESULTS.subject, OutreachResult)}
            if set(done) == {"slack", "mastodon"}:
                break
            assert time.monotonic() < deadline, f"results so far: {done}; workers: {len(workers.started)}"
            if not workers.started or workers.started[-1].poll() is not None:
                workers.start()  # the first worker, or the next one after a kill
            time.sleep(0.2)
    finally:
        workers.stop_all()

    assert sorted(workers.killed) == ["mastodon", "slack"]  # a worker was killed mid-post on each channel
    # FastStream handles a fetched batch at once, so one worker may have had both posts under way when it died
    assert len(workers.started) in (2, 3) and all(w.returncode == -signal.SIGKILL for w in workers.started[:-1])
    assert len(slack.messages) == 1  # Slack's post was never repeated...
    assert done["slack"].status == "unknown"  # ...but flagged: Slack cannot say whether it arrived
    assert "impromptu outreach resolve" in (done["slack"].reason or "")
    assert len(mastodon.statuses) == 1  # Mastodon was asked again under the same Idempotency-Key
    keys = {r.headers.get("idempotency-key") for r in mastodon.received if r.method == "POST"}
    assert len([r for r in mastodon.received if r.method == "POST"]) == 2 and len(keys) == 1
    (status,) = mastodon.statuses.values()
    assert (done["mastodon"].status, done["mastodon"].location) == ("already_posted", status["url"])

    kv = await stores.bucket(client, stores.OUTREACH)
    states = {key.split(".")[1]: record.state for key, record in (await records.records_of(kv, session.id)).items()}
    assert states == {"slack": "unknown", "mastodon": "posted"}
    report = await gather_status(client)
    assert report.unknown_posts == [f"{session.id}.slack.scheduled"]  # `impromptu status` asks a person to check
    assert any("1 post(s) may or may not have gone out" in problem for problem in health_problems(report))
