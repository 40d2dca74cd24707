"""Real channels on the real bus: the outreach stage posting to local fakes of Mastodon, Slack, Teams and
Facebook (each answering as the provider documents), not a dry run.

A rate-limited channel waits alone; a 5xx is retried; a refused credential marks the channel broken, tells people
once and dead-letters its posts with the reason, until an operator resets it and replays them; a channel without
credentials is disabled with one warning and its posts say what to set.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
import structlog
from faststream.nats import NatsBroker
from pydantic import SecretStr

from pipeline import bus, stores
from pipeline.app import create_broker, start_stages
from pipeline.messages import OutreachResult, ScheduledSession
from pipeline.ops.dlq import list_dead_letters, replay
from pipeline.ops.status import gather_status, health_problems
from pipeline.outreach import health
from pipeline.settings import Settings
from tests.channel_fakes import FakeFacebook, FakeMastodon, FakeSlack, FakeTeams, serve
from tests.integration.bus_helpers import models_on, wait_drained, wait_until
from tests.unit.conftest import make_session

pytestmark = pytest.mark.nats


@dataclass
class Fakes:
    mastodon: FakeMastodon
    slack: FakeSlack
    teams: FakeTeams
    facebook: FakeFacebook
    notices: FakeSlack  # the facilitators' and ops' Slack channel


@pytest.fixture
def fakes() -> Iterator[tuple[Fakes, dict[str, object]]]:
    made = Fakes(FakeMastodon(), FakeSlack(), FakeTeams(), FakeFacebook(), FakeSlack("/services/T1/B1/notices"))
    with ExitStack() as stack:
        urls = {name: stack.enter_context(serve(getattr(made, name).app)) for name in made.__dataclass_fields__}
        settings = {
            "outreach_dry_run": False,
            "mastodon_url": urls["mastodon"],
            "mastodon_access_token": SecretStr(made.mastodon.token),
            "slack_webhook": SecretStr(made.slack.webhook(urls["slack"])),
            "teams_webhook": SecretStr(made.teams.webhook(urls["teams"])),
            "facebook_graph_url": urls["facebook"],
            "facebook_page_id": made.facebook.page_id,
            "facebook_page_token": SecretStr(made.facebook.token),
            "notify_slack_webhook": SecretStr(made.notices.webhook(urls["notices"])),
            "outreach_timeout_seconds": 5.0,
        }
        yield made, settings


@pytest.fixture
def live_settings(settings: Settings, fakes: tuple[Fakes, dict[str, object]]) -> Settings:
    return settings.model_copy(update=fakes[1])


@pytest.fixture
async def live_pipeline(live_settings: Settings) -> AsyncIterator[NatsBroker]:
    broker = create_broker(live_settings)
    await start_stages(broker, live_settings)
    yield broker
    await broker.stop()


def session_on(channels: list[str], native_id: str = "1") -> ScheduledSession:
    session = make_session(now=datetime.now(UTC), native_id=native_id)
    return session.model_copy(update={"proposal": session.proposal.model_copy(update={"channels": channels})})


async def results(client: NatsBroker, count: int) -> list[OutreachResult]:
    async def enough() -> bool:
        return len(await models_on(client, bus.OUTREACH_RESULTS.subject, OutreachResult)) >= count

    await wait_until(enough, timeout=20, what=f"{count} outreach result(s)")
    return await models_on(client, bus.OUTREACH_RESULTS.subject, OutreachResult)


async def test_a_rate_limited_channel_waits_alone_and_a_5xx_is_retried(
    live_pipeline: NatsBroker, client: NatsBroker, fakes: tuple[Fakes, dict[str, object]]
) -> None:
    made = fakes[0]
    made.mastodon.fail_rate_limited(datetime.now(UTC) + timedelta(seconds=3))
    made.teams.fail(503, {"error": {"code": "ServiceUnavailable", "message": "try later"}})
    started = time.monotonic()
    session = session_on(["mastodon", "slack", "teams", "facebook"])
    await bus.publish(client, bus.SESSIONS_SCHEDULED, session)

    first = await results(client, 3)
    assert sorted(r.channel for r in first[:3]) == ["facebook", "slack", "teams"]  # nobody waited for Mastodon
    everything = await results(client, 4)
    waited = time.monotonic() - started
    assert [r.channel for r in everything][-1] == "mastodon" and waited >= 2.5  # it waited as Mastodon asked
    assert {r.channel: r.status for r in everything} == dict.fromkeys(
        ["mastodon", "slack", "teams", "facebook"], "posted"
    )

    # exactly one post each, with the provider's own link where it gives one
    assert len(made.mastodon.statuses) == 1 and len(made.slack.messages) == 1
    assert len(made.teams.cards) == 1 and len(made.facebook.posts) == 1
    by_channel = {r.channel: r for r in everything}
    (status,) = made.mastodon.statuses.values()
    assert by_channel["mastodon"].location == status["url"]
    (post_id,) = made.facebook.posts
    assert by_channel["facebook"].location == f"https://www.facebook.com/{post_id}"
    assert session.join_url in status["content"]


async def test_a_refused_credential_breaks_the_channel_until_reset_and_replay(
    live_pipeline: NatsBroker, client: NatsBroker, fakes: tuple[Fakes, dict[str, object]]
) -> None:
    made = fakes[0]
    made.slack.fail_with("no_service")  # the webhook was revoked
    await bus.publish(client, bus.SESSIONS_SCHEDULED, session_on(["slack", "mastodon"]))
    first = await results(client, 2)
    assert {r.channel: r.status for r in first} == {"slack": "failed", "mastodon": "posted"}
    reason = next(r.reason for r in first if r.channel == "slack") or ""
    assert "no_service" in reason and "IMPROMPTU_SLACK_WEBHOOK" in reason and made.slack.path not in reason

    await wait_until(lambda: len(made.notices.messages) == 1, what="people to be told")
    assert (
        "slack" in made.notices.messages[0]["text"]
        and "impromptu channels reset slack" in made.notices.messages[0]["text"]
    )
    problems = health_problems(await gather_status(client))
    assert any("channel slack is broken" in p for p in problems)

    # the next session's Slack post does not even try, and nobody is told twice
    await bus.publish(client, bus.SESSIONS_SCHEDULED, session_on(["slack"], native_id="2"))
    await results(client, 3)
    await wait_drained(client, "outreach-post")
    assert len(made.slack.received) == 1 and len(made.notices.messages) == 1
    dead = [entry for entry in await list_dead_letters(client) if entry.dead_letter.stage == "outreach"]
    assert len(dead) == 2 and "broken since" in dead[1].dead_letter.reason

    # an operator fixes the webhook, resets the channel and replays: both posts go out, once
    assert await health.reset(await stores.bucket(client, stores.OUTREACH), "slack")
    for entry in dead:
        await replay(client, entry.seq, "ops")
    await wait_until(lambda: len(made.slack.messages) == 2, what="the replayed Slack posts")
    await wait_drained(client, "outreach-post")
    assert len(made.slack.messages) == 2
    assert not any("slack" in p for p in health_problems(await gather_status(client)))


async def test_a_channel_without_credentials_is_disabled_with_one_warning(
    settings: Settings, client: NatsBroker, fakes: tuple[Fakes, dict[str, object]]
) -> None:
    live = settings.model_copy(update=fakes[1])  # e-mail has no SMTP settings
    with structlog.testing.capture_logs() as logs:
        broker = create_broker(live)
    disabled = [e for e in logs if e["event"] == "outreach.channel_disabled"]
    assert {e["channel"] for e in disabled} == {"email", "linkedin", "x"}  # one warning each, at start
    email = next(e for e in disabled if e["channel"] == "email")
    assert email["set"] == ["IMPROMPTU_SMTP_HOST", "IMPROMPTU_OUTREACH_EMAIL_TO"]
    await start_stages(broker, live)
    try:
        await bus.publish(client, bus.SESSIONS_SCHEDULED, session_on(["email", "mastodon"]))
        done = {r.channel: r for r in await results(client, 2)}
    finally:
        await broker.stop()
    assert done["mastodon"].status == "posted"
    assert done["email"].status == "failed"
    assert done["email"].reason == "channel email is disabled: set IMPROMPTU_SMTP_HOST, IMPROMPTU_OUTREACH_EMAIL_TO"
