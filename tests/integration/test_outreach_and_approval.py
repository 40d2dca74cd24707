"""Approval decided exactly once; announcements posted exactly once, whatever is redelivered."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import pytest
from faststream.nats import NatsBroker

from pipeline import bus, stores
from pipeline.bus import jetstream
from pipeline.channels.records import PostRecord
from pipeline.domain.approval import DecisionRefused, advance_by_clock, decide, get_record
from pipeline.messages import OutreachResult, ScheduledSession, stable_id
from pipeline.settings import Settings
from tests.integration.bus_helpers import (
    consumer,
    messages_on,
    models_on,
    seed_proposal,
    subject_counts,
    wait_for_count,
    wait_until,
)

pytestmark = pytest.mark.nats


async def _settled(client: NatsBroker, durable: str) -> bool:
    info = await consumer(client, durable)
    return info.num_pending == 0 and info.num_ack_pending == 0


async def test_two_facilitators_approving_at_once_one_wins(pipeline: NatsBroker, client: NatsBroker) -> None:
    proposal = await seed_proposal(client)
    outcomes = await asyncio.gather(
        decide(client, proposal.id, "approved", by="ana"),
        decide(client, proposal.id, "approved", by="ben"),
        return_exceptions=True,
    )
    winners = [o for o in outcomes if not isinstance(o, BaseException)]
    losers = [o for o in outcomes if isinstance(o, DecisionRefused)]
    assert len(winners) == 1 and len(losers) == 1
    assert winners[0].decided_by in str(losers[0])  # the loser is told who decided
    await wait_for_count(client, bus.SESSIONS_SCHEDULED.subject, 1)
    await wait_until(lambda: _settled(client, "actions-schedule"), what="scheduling to settle")
    assert (await subject_counts(client))[bus.DECISIONS.subject] == 1


async def test_rejected_proposal_creates_no_session(pipeline: NatsBroker, client: NatsBroker) -> None:
    proposal = await seed_proposal(client)
    await decide(client, proposal.id, "rejected", by="ana", reason="off-topic this week")
    await wait_until(lambda: _settled(client, "actions-schedule"), what="the decision to be consumed")
    counts = await subject_counts(client)
    assert counts[bus.DECISIONS.subject] == 1 and bus.SESSIONS_SCHEDULED.subject not in counts
    record = await get_record(client, proposal.id)
    assert (record.state, record.reason) == ("rejected", "off-topic this week")
    with pytest.raises(DecisionRefused, match=r"already rejected \(by ana at"):
        await decide(client, proposal.id, "approved", by="ben")


async def test_a_lapsed_proposal_cannot_be_approved_and_the_clock_expires_it(
    pipeline: NatsBroker, client: NatsBroker
) -> None:
    proposal = await seed_proposal(client)
    late = proposal.expires_at + timedelta(seconds=1)
    with pytest.raises(DecisionRefused, match="lapsed at"):
        await decide(client, proposal.id, "approved", by="ana", now=late)
    assert (await get_record(client, proposal.id)).state == "proposed"
    assert [r.proposal.id for r in await advance_by_clock(client, late)] == [proposal.id]
    record = await get_record(client, proposal.id)
    assert (record.state, record.last and record.last.by) == ("expired", "clock")
    with pytest.raises(DecisionRefused, match=r"already expired \(by clock"):
        await decide(client, proposal.id, "approved", by="ana")


async def test_a_redelivered_session_is_announced_once_per_channel(
    pipeline: NatsBroker, client: NatsBroker, settings: Settings
) -> None:
    proposal = await seed_proposal(client)
    await decide(client, proposal.id, "approved", by="ana")
    await wait_for_count(client, bus.OUTREACH_RESULTS.subject, 3)
    (raw_session,) = await messages_on(client, bus.SESSIONS_SCHEDULED.subject)

    # The same session again under another message id, as after a crash past the duplicate window.
    js = jetstream(client)
    await js.publish(bus.SESSIONS_SCHEDULED.subject, raw_session, headers={"Nats-Msg-Id": "redelivered-session"})
    await wait_for_count(client, bus.SESSIONS_SCHEDULED.subject, 2)
    await wait_until(lambda: _settled(client, "outreach"), what="outreach to settle")
    await wait_until(lambda: _settled(client, "outreach-post"), what="the posts to settle")

    posts = sorted(p.relative_to(settings.outbox_dir).as_posix() for p in settings.outbox_dir.rglob("*.txt"))
    session = ScheduledSession.model_validate_json(raw_session)
    assert posts == [f"{ch}/{session.id}.scheduled.txt" for ch in ("facebook", "linkedin", "x")]
    results = await models_on(client, bus.OUTREACH_RESULTS.subject, OutreachResult)
    assert sorted((r.channel, r.status) for r in results) == [
        ("facebook", "posted"),
        ("linkedin", "posted"),
        ("x", "posted"),
    ]


async def test_a_post_interrupted_mid_way_is_reconciled_not_repeated(
    pipeline: NatsBroker, client: NatsBroker, settings: Settings
) -> None:
    proposal = await seed_proposal(client)
    session_id = stable_id("session", proposal.id)
    kv = await stores.bucket(client, stores.OUTREACH)
    # A worker died after posting to X but before confirming; LinkedIn was claimed but never posted.
    x_post = settings.outbox_dir / "x" / f"{session_id}.scheduled.txt"
    x_post.parent.mkdir(parents=True)
    x_post.write_text("posted before the crash\n")
    sending = PostRecord(state="sending").model_dump_json().encode()
    await kv.put(f"{session_id}.x.scheduled", sending)
    await kv.put(f"{session_id}.linkedin.scheduled", sending)

    await decide(client, proposal.id, "approved", by="ana")
    await wait_for_count(client, bus.OUTREACH_RESULTS.subject, 3)
    (session,) = await models_on(client, bus.SESSIONS_SCHEDULED.subject, ScheduledSession)
    assert session.id == session_id

    assert x_post.read_text() == "posted before the crash\n"  # not posted again
    linkedin = Path(settings.outbox_dir / "linkedin" / f"{session_id}.scheduled.txt")
    assert session.join_url in linkedin.read_text()
    statuses = {r.channel: r.status for r in await models_on(client, bus.OUTREACH_RESULTS.subject, OutreachResult)}
    assert statuses == {"x": "already_posted", "linkedin": "posted", "facebook": "posted"}
    for channel in ("x", "linkedin", "facebook"):
        entry = await kv.get(f"{session_id}.{channel}.scheduled")
        assert PostRecord.model_validate_json(entry.value or b"").state == "posted"
