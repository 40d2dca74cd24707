"""A follow-up (starting now, the recording, a cancellation) goes after its channel's announcement, whatever that
announcement is doing when the follow-up comes due: queued behind a rate limit, or under way on another worker. It
waits (redelivered, without spending its retries), then posts once; when the announcement failed it is skipped
with the reason, as a result `impromptu trace` shows. Real channels: local fakes of Slack, Facebook and Mastodon.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from faststream.nats import NatsBroker
from pydantic import SecretStr

from pipeline import bus, stores
from pipeline.actions.service import Approvals, ProposalEdit
from pipeline.app import create_broker, start_stages
from pipeline.channels import records
from pipeline.domain.approval import advance_by_clock
from pipeline.domain.live_rules import LiveRules
from pipeline.messages import AnnouncementDue, LibraryEntry, OutreachResult, ScheduledSession
from pipeline.ops.trace import find_journey, where_it_stopped
from pipeline.settings import Settings
from tests.channel_fakes import FakeFacebook, FakeMastodon, FakeSlack, serve
from tests.integration.bus_helpers import jetstream, keep_at_start, messages_on, models_on, seed_proposal, wait_until
from tests.unit.conftest import make_session

pytestmark = pytest.mark.nats


class Fakes:
    def __init__(self) -> None:
        self.slack, self.facebook, self.mastodon = FakeSlack(), FakeFacebook(), FakeMastodon()


@pytest.fixture
def fakes() -> Iterator[tuple[Fakes, dict[str, object]]]:
    made = Fakes()
    with ExitStack() as stack:
        slack = stack.enter_context(serve(made.slack.app))
        facebook = stack.enter_context(serve(made.facebook.app))
        mastodon = stack.enter_context(serve(made.mastodon.app))
        yield (
            made,
            {
                "outreach_dry_run": False,
                "slack_webhook": SecretStr(made.slack.webhook(slack)),
                "facebook_graph_url": facebook,
                "facebook_page_id": made.facebook.page_id,
                "facebook_page_token": SecretStr(made.facebook.token),
                "mastodon_url": mastodon,
                "mastodon_access_token": SecretStr(made.mastodon.token),
                "outreach_timeout_seconds": 10.0,
            },
        )


@pytest.fixture
def live_settings(settings: Settings, fakes: tuple[Fakes, dict[str, object]]) -> Settings:
    return settings.model_copy(update=fakes[1])


async def _worker(settings: Settings) -> NatsBroker:
    broker = create_broker(settings)
    await start_stages(broker, settings)
    return broker


@pytest.fixture
async def workers(live_settings: Settings) -> AsyncIterator[list[NatsBroker]]:
    """Two workers sharing every stage's consumers, as `impromptu run` twice: while one is busy with an
    announcement, the other takes the follow-up."""
    started = [await _worker(live_settings), await _worker(live_settings)]
    yield started
    for broker in started:
        await broker.stop()


def _approvals(client: NatsBroker, settings: Settings) -> Approvals:
    return Approvals(client, settings, LiveRules.load(settings.rules_file))


async def _approved(client: NatsBroker, settings: Settings, channels: list[str]) -> ScheduledSession:
    proposal = await seed_proposal(client)
    approvals = _approvals(client, settings)
    await approvals.edit(proposal.id, ProposalEdit(channels=channels), by="ana")
    await approvals.approve(proposal.id, by="ana")

    async def scheduled() -> bool:
        return bool(await models_on(client, bus.SESSIONS_SCHEDULED.subject, ScheduledSession))

    await wait_until(scheduled, what="the session to be scheduled")
    (session,) = await models_on(client, bus.SESSIONS_SCHEDULED.subject, ScheduledSession)
    return session


async def _results(client: NatsBroker, kind: str, count: int = 1, timeout: float = 20) -> list[OutreachResult]:
    async def enough() -> bool:
        return (
            len([r for r in await models_on(client, bus.OUTREACH_RESULTS.subject, OutreachResult) if r.kind == kind])
            >= count
        )

    await wait_until(enough, timeout=timeout, what=f"{count} {kind} result(s)")
    found = [r for r in await models_on(client, bus.OUTREACH_RESULTS.subject, OutreachResult) if r.kind == kind]
    return sorted(found, key=lambda r: r.channel)


async def _dues(client: NatsBroker, kind: str) -> list[AnnouncementDue]:
    return [d for d in await models_on(client, bus.OUTREACH_DUE.subject, AnnouncementDue) if d.kind == kind]


async def _state(client: NatsBroker, key: str) -> str | None:
    record, _ = await records.read(await stores.bucket(client, stores.OUTREACH), key)
    return record.state if record else None


async def test_a_recording_kept_while_the_announcement_waits_out_a_rate_limit_is_posted_after_it(
    client: NatsBroker, live_settings: Settings, fakes: tuple[Fakes, dict[str, object]], tmp_path: Path
) -> None:
    slack = fakes[0].slack
    slack.fail_with("rate_limited", retry_after=4)  # the announcement waits 4 s, its record says "retry"
    pipeline = await _worker(live_settings)
    try:
        session = await _approved(client, live_settings, ["slack"])
        announcement = f"{session.id}.slack.scheduled"

        async def rate_limited() -> bool:
            return await _state(client, announcement) == "retry"

        await wait_until(rate_limited, what="the announcement's first try, refused with a 429")

        await keep_at_start(client, live_settings, session)

        async def recording_due() -> bool:
            return bool(await _dues(client, "recording"))

        await wait_until(recording_due, what="the recording's post to come due")
        # meanwhile trace says what waits, not "complete"
        waiting = where_it_stopped(await find_journey(jetstream(client), session.correlation_id))
        assert waiting.startswith("not complete: kept in the library"), waiting
        assert "waiting for 2 post(s): slack scheduled, slack recording" in waiting
        assert await _state(client, announcement) == "retry"  # it really came due before the announcement

        (recording,) = await _results(client, "recording")
        (entry,) = await models_on(client, bus.LIBRARY_ENTRIES.subject, LibraryEntry)
    finally:
        await pipeline.stop()
    assert recording.status == "posted"
    assert len(slack.messages) == 2  # the announcement, then the recording: one each, in that order
    assert session.join_url in str(slack.messages[0]) and f"/library/{entry.entry_id}" in str(slack.messages[1])
    assert [r.kind for r in await models_on(client, bus.OUTREACH_RESULTS.subject, OutreachResult)] == [
        "scheduled",
        "recording",
    ]
    settled = where_it_stopped(await find_journey(jetstream(client), session.correlation_id))
    assert settled == f"complete: kept in the library as {entry.entry_id}"


async def test_a_recording_kept_while_another_worker_is_posting_the_announcement_follows_it_once(
    workers: list[NatsBroker],
    client: NatsBroker,
    live_settings: Settings,
    fakes: tuple[Fakes, dict[str, object]],
    tmp_path: Path,
) -> None:
    slack = fakes[0].slack
    slack.delay = 2.5  # Slack holds its answers: the announcement stays "sending" on the worker that posts it
    session = await _approved(client, live_settings, ["slack"])
    await slack.wait_for(1)
    assert await _state(client, f"{session.id}.slack.scheduled") == "sending"

    await keep_at_start(client, live_settings, session)
    (recording,) = await _results(client, "recording")
    assert recording.status == "posted"
    assert len(slack.messages) == 2 and "library" in str(slack.messages[1])
    # the other worker took the recording's post while the announcement was sending: it waited, then went back on
    # the bus as a fresh message (its own retries start from zero)
    assert [d.after_announcement for d in await _dues(client, "recording")] == [False, True]


async def test_a_cancellation_while_the_announcement_is_sending_deletes_it_once(
    workers: list[NatsBroker],
    client: NatsBroker,
    live_settings: Settings,
    fakes: tuple[Fakes, dict[str, object]],
) -> None:
    facebook = fakes[0].facebook
    facebook.delay = 2.5  # the post is made, its answer held: "sending" while the session is cancelled
    session = await _approved(client, live_settings, ["facebook"])
    await facebook.wait_for(1)
    assert await _state(client, f"{session.id}.facebook.scheduled") == "sending"

    await _approvals(client, live_settings).cancel(session.proposal.id, by="ana", reason="the speaker fell ill")
    (cancelled,) = await _results(client, "cancelled")
    (scheduled,) = await _results(client, "scheduled")
    assert (scheduled.status, cancelled.status) == ("posted", "deleted")
    assert facebook.posts == {}  # the announcement is down
    deletes = [r for r in facebook.received if r.method == "DELETE"]
    assert len(deletes) == 1 and deletes[0].path.endswith(scheduled.location.rsplit("/", 1)[-1])  # type: ignore[union-attr]
    assert await _state(client, f"{session.id}.facebook.scheduled") == "deleted"


async def test_a_follow_up_on_a_channel_whose_announcement_failed_is_skipped_with_the_reason(
    client: NatsBroker, live_settings: Settings, fakes: tuple[Fakes, dict[str, object]]
) -> None:
    slack = fakes[0].slack
    slack.fail_with("invalid_blocks")  # Slack refuses this announcement; Mastodon posts its own
    pipeline = await _worker(live_settings)
    try:
        session = await _approved(client, live_settings, ["mastodon", "slack"])
        announced = await _results(client, "scheduled", 2)
        assert [(r.channel, r.status) for r in announced] == [("mastodon", "posted"), ("slack", "failed")]

        assert [r.state for r in await advance_by_clock(client, session.starts_at)] == ["live"]
        starting = await _results(client, "starting", 2)
    finally:
        await pipeline.stop()
    assert [(r.channel, r.status) for r in starting] == [("mastodon", "posted"), ("slack", "skipped")]
    reason = starting[1].reason or ""
    assert reason.startswith("the announcement on slack failed (") and "invalid_blocks" in reason
    assert len(slack.messages) == 0 and len(fakes[0].mastodon.statuses) == 2
    ending = where_it_stopped(await find_journey(jetstream(client), session.correlation_id))
    assert ending.startswith("announced: waiting for the recording")  # no post left waiting, the skip said why
    assert "post(s)" not in ending and ending.endswith(f"; skipped: slack starting ({reason})")


async def test_a_follow_up_whose_announcement_never_settles_waits_its_bound_then_says_so(
    client: NatsBroker, settings: Settings
) -> None:
    waiting_settings = settings.model_copy(update={"outreach_follow_up_wait_hours": 0.001})  # 3.6 s
    session = make_session()  # long over; its announcement was never made (no record at all)
    started = time.monotonic()  # the bound counts from the message's creation, before the worker's start-up
    due = AnnouncementDue.caused_by(
        session,
        id=f"due:{session.id}:slack:recording",
        session=session,
        channel="slack",
        kind="recording",
        library_url="http://127.0.0.1:8000/library/entry-1",
    )
    pipeline = await _worker(waiting_settings)
    try:
        await bus.publish(client, bus.OUTREACH_DUE, due)
        (recording,) = await _results(client, "recording")
        waited = time.monotonic() - started
    finally:
        await pipeline.stop()
    assert recording.status == "skipped" and waited >= 3.0
    assert (recording.reason or "").startswith("gave up waiting at ")
    assert (recording.reason or "").endswith(": the announcement on slack is still not made yet")
    # redelivered far more often than max_deliveries (3 here) while it waited, and still no dead letter
    assert await messages_on(client, bus.dead_letter_subject("outreach")) == []
    assert not (settings.outbox_dir / "slack" / f"{session.id}.recording.txt").exists()


async def test_a_cancellation_while_the_announcement_waits_out_a_rate_limit_skips_both_with_why(
    client: NatsBroker, live_settings: Settings, fakes: tuple[Fakes, dict[str, object]]
) -> None:
    slack = fakes[0].slack
    slack.fail_with("rate_limited", retry_after=3)
    pipeline = await _worker(live_settings)
    try:
        session = await _approved(client, live_settings, ["slack"])
        announcement = f"{session.id}.slack.scheduled"

        async def rate_limited() -> bool:
            return await _state(client, announcement) == "retry"

        await wait_until(rate_limited, what="the announcement's first try, refused with a 429")
        await _approvals(client, live_settings).cancel(session.proposal.id, by="ana", reason="double booked")
        (cancelled,) = await _results(client, "cancelled")
        (scheduled,) = await _results(client, "scheduled")
    finally:
        await pipeline.stop()
    # the announcement never went out (the session was cancelled before its retry), so nothing to take back
    assert (scheduled.status, scheduled.reason) == ("skipped", "the session was cancelled before this was posted")
    assert cancelled.status == "skipped"
    assert cancelled.reason == f"the announcement on slack was skipped ({scheduled.reason}): nothing to follow up"
    assert slack.messages == [] and await _state(client, announcement) == "skipped"
