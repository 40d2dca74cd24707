"""Outreach follows a session through its life on the real bus: announced, "starting now" when it goes live, the
recording with its library link, and a cancellation (deleted where the channel can delete, a notice elsewhere).

These run as a dry run (the default): every channel writes to the outbox, as `make run` does on a fresh machine.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from faststream.nats import NatsBroker
from markupsafe import escape

from pipeline import bus
from pipeline.actions.service import Approvals, ProposalEdit
from pipeline.demo import sample_recording
from pipeline.domain.approval import advance_by_clock, get_record
from pipeline.domain.live_rules import LiveRules
from pipeline.messages import AnnouncementDue, LibraryEntry, OutreachResult, ScheduledSession
from pipeline.settings import Settings
from pipeline.web.server import create_web_app
from tests.integration.bus_helpers import keep_at_start, models_on, seed_proposal, wait_drained, wait_until

pytestmark = pytest.mark.nats


def _approvals(client: NatsBroker, settings: Settings) -> Approvals:
    return Approvals(client, settings, LiveRules.load(settings.rules_file))


async def _results(client: NatsBroker) -> list[OutreachResult]:
    return await models_on(client, bus.OUTREACH_RESULTS.subject, OutreachResult)


async def _results_of(client: NatsBroker, kind: str, count: int) -> list[OutreachResult]:
    async def enough() -> bool:
        return len([r for r in await _results(client) if r.kind == kind]) >= count

    await wait_until(enough, what=f"{count} {kind} result(s)")
    return sorted((r for r in await _results(client) if r.kind == kind), key=lambda r: r.channel)


async def _scheduled(client: NatsBroker, settings: Settings, channels: list[str]) -> ScheduledSession:
    proposal = await seed_proposal(client)
    approvals = _approvals(client, settings)
    await approvals.edit(proposal.id, ProposalEdit(channels=channels), by="ana")
    await approvals.approve(proposal.id, by="ana")
    await _results_of(client, "scheduled", len(channels))
    (session,) = await models_on(client, bus.SESSIONS_SCHEDULED.subject, ScheduledSession)
    return session


def _outbox(settings: Settings, channel: str, session: ScheduledSession, kind: str) -> Path:
    return settings.outbox_dir / channel / f"{session.id}.{kind}.txt"


async def test_starting_now_and_the_recording_follow_the_announcement(
    pipeline: NatsBroker, client: NatsBroker, settings: Settings, tmp_path: Path
) -> None:
    session = await _scheduled(client, settings, ["mastodon", "slack", "x"])
    assert [r.state for r in await advance_by_clock(client, session.starts_at)] == ["live"]
    starting = await _results_of(client, "starting", 3)
    assert [(r.channel, r.status) for r in starting] == [("mastodon", "posted"), ("slack", "posted"), ("x", "posted")]
    assert session.join_url in _outbox(settings, "x", session, "starting").read_text()

    await advance_by_clock(client, session.ends_at)
    await bus.publish(client, bus.RECORDINGS, sample_recording(session, settings.import_dir))
    recording = await _results_of(client, "recording", 3)
    (entry,) = await models_on(client, bus.LIBRARY_ENTRIES.subject, LibraryEntry)
    library_url = f"{settings.base_url}/library/{entry.entry_id}"
    assert all(r.status == "posted" for r in recording)
    for channel in ("mastodon", "x"):
        assert library_url in _outbox(settings, channel, session, "recording").read_text()
    assert library_url in _outbox(settings, "slack", session, "recording").read_text()  # the Slack button's url

    # the link in the announcement leads to the recording's public page
    app = create_web_app(settings, client)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=settings.base_url) as web:
        page = await web.get(f"/library/{entry.entry_id}")
        missing = await web.get("/library/entry-0000")
        sneaky = await web.get("/library/..%2Fnats.url")
    assert page.status_code == 200 and escape(entry.tagline) in page.text
    assert escape(entry.provenance.article_url) in page.text
    assert missing.status_code == 404 and sneaky.status_code == 404


async def test_a_cancelled_session_is_taken_down_where_it_can_be_and_noticed_elsewhere(
    pipeline: NatsBroker, client: NatsBroker, settings: Settings
) -> None:
    session = await _scheduled(client, settings, ["email", "facebook", "slack"])
    for channel in ("email", "facebook", "slack"):
        assert _outbox(settings, channel, session, "scheduled").exists()

    await _approvals(client, settings).cancel(session.proposal.id, by="ana", reason="the speaker fell ill")
    cancelled = await _results_of(client, "cancelled", 3)
    assert [(r.channel, r.status) for r in cancelled] == [
        ("email", "posted"),  # e-mail cannot be unsent: a cancellation goes out
        ("facebook", "deleted"),  # Facebook posts can be deleted: the announcement disappears
        ("slack", "posted"),  # incoming webhooks cannot delete: a notice
    ]
    assert not _outbox(settings, "facebook", session, "scheduled").exists()
    assert "the speaker fell ill" in _outbox(settings, "slack", session, "cancelled").read_text()
    email = _outbox(settings, "email", session, "cancelled").read_text()
    assert email.startswith("Subject:") and "cancel" in email.lower()

    # the session's page shows what each channel did
    shown = {
        (a.channel, a.kind): a.state
        for a in await _approvals(client, settings).announcements(await get_record(client, session.proposal.id))
    }
    assert shown == {
        ("email", "scheduled"): "posted",
        ("email", "cancelled"): "posted",
        ("facebook", "scheduled"): "deleted",
        ("slack", "scheduled"): "posted",
        ("slack", "cancelled"): "posted",
    }


async def test_starting_now_is_not_said_once_the_session_is_over(
    pipeline: NatsBroker, client: NatsBroker, settings: Settings, tmp_path: Path
) -> None:
    session = await _scheduled(client, settings, ["x"])
    # the recording arrives after the start, before the clock moved the session: the archive walks it live -> ended
    # -> archived (by "archive", which outreach does not take for a start)
    await keep_at_start(client, settings, session)
    (recording,) = await _results_of(client, "recording", 1)
    assert recording.status == "posted"
    await wait_drained(client, "outreach-followups")
    await wait_drained(client, "outreach-post")
    assert [r for r in await _results(client) if r.kind == "starting"] == []
    assert not _outbox(settings, "x", session, "starting").exists()

    # a "starting now" that comes due late (workers were down while the clock moved it) is skipped, with why
    late = AnnouncementDue.caused_by(session, id="due:late", session=session, channel="x", kind="starting")
    await bus.publish(client, bus.OUTREACH_DUE, late)
    (starting,) = await _results_of(client, "starting", 1)
    assert starting.status == "skipped" and "too late" in (starting.reason or "")
    assert not _outbox(settings, "x", session, "starting").exists()
