"""The seed story end to end against a real nats-server, checked against what the bus and the disk hold."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from faststream.nats import NatsBroker

from pipeline import bus
from pipeline.demo import ASSETS, article_server, run_story
from pipeline.domain import catalog
from pipeline.domain.approval import list_records
from pipeline.embedded import free_port
from pipeline.messages import LibraryEntry, OutreachResult, ScheduledSession, SessionProposal
from pipeline.settings import Settings
from tests.integration.bus_helpers import STORY_STEPS, messages_on, models_on, subject_counts

pytestmark = pytest.mark.nats


async def test_seed_story_runs_end_to_end(settings: Settings, client: NatsBroker) -> None:
    settings = settings.model_copy(update={"http_port": free_port()})  # the story serves its library page there
    lines: list[str] = []
    with article_server((ASSETS / "bersin-article.html").read_bytes()) as url:
        await run_story(settings, url, lines.append)

    steps = [line.split("]")[0].strip("[ ") for line in lines]
    assert steps == STORY_STEPS
    assert "@britz" in lines[0] and "fired" in lines[0]
    assert "Josh Bersin" in lines[1]
    assert "(200: a player, 7 transcript lines, 2 resources)" in lines[-2]
    assert "/library/feed.xml (200, 1 entry)" in lines[-1] and "/library/podcast.xml (200, 1 episode)" in lines[-1]

    counts = await subject_counts(client)
    for subject in (
        bus.SHARES.subject,
        bus.TRIGGERS_FIRED.subject,
        bus.CONTENT_ENRICHED.subject,
        bus.PROPOSALS_CREATED.subject,
        bus.DECISIONS.subject,
        bus.SESSIONS_SCHEDULED.subject,
        bus.RECORDINGS.subject,
        bus.LIBRARY_ENTRIES.subject,
    ):
        assert counts.get(subject) == 1, (subject, counts)
    assert counts.get(bus.OUTREACH_RESULTS.subject) == 9  # three channels: the session, "starting now", its recording
    assert not any(subject.startswith(bus.DEAD_LETTERS) for subject in counts), counts

    (proposal,) = await models_on(client, bus.PROPOSALS_CREATED.subject, SessionProposal)
    lead = proposal.starts_at - proposal.created_at
    assert timedelta(minutes=30) <= lead <= timedelta(minutes=31)
    assert proposal.content.article.author == "Josh Bersin"
    (record,) = await list_records(client)
    assert record.state == "archived" and record.decided_by  # approved, scheduled, and its recording kept
    assert [e.to_state for e in record.history] == ["approved", "scheduled", "live", "ended", "archived"]

    (session,) = await models_on(client, bus.SESSIONS_SCHEDULED.subject, ScheduledSession)
    assert session.join_url.startswith("https://meet.jit.si/Impromptu-")
    assert "BEGIN:VEVENT" in session.ics and session.join_url in session.ics.replace("\r\n ", "")

    (entry,) = await models_on(client, bus.LIBRARY_ENTRIES.subject, LibraryEntry)
    results = await models_on(client, bus.OUTREACH_RESULTS.subject, OutreachResult)
    assert sorted((r.kind, r.channel) for r in results) == [
        (kind, channel) for kind in ("recording", "scheduled", "starting") for channel in ("facebook", "linkedin", "x")
    ]
    for result in results:
        assert result.status == "posted"
        assert result.location is not None
        assert Path(result.location).read_text().strip() == result.text
        link = session.join_url if result.kind != "recording" else f"{settings.base_url}/library/{entry.entry_id}"
        assert link in result.text

    assert "Why eLearning Isn't Working" in entry.tagline
    assert {"leadership", "Josh Bersin"} <= set(entry.tags)
    assert (entry.provenance.shared_by, entry.provenance.sharer_handle) == ("Mark Britz", "@britz")
    assert entry.provenance.article_author == "Josh Bersin"
    assert [f.kind for f in entry.files] == ["audio", "transcript", "chat"]
    record = await catalog.get_record(await catalog.library_bucket(client), entry.entry_id)
    assert record is not None and record.entry == entry

    # One correlation id follows the share through every stage.
    journey = [data for subject in counts for data in await messages_on(client, subject)]
    correlation_ids = {
        SessionProposal.model_validate_json(d).correlation_id
        for d in await messages_on(client, bus.PROPOSALS_CREATED.subject)
    }
    assert len(correlation_ids) == 1
    (correlation_id,) = correlation_ids
    assert all(f'"correlation_id":"{correlation_id}"'.encode() in data for data in journey)
