"""The approval state machine on a real nats-server: edits, the whole life of a session, the audit trail on the bus,
and a provider session created once however often the approval is redelivered."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from faststream.nats import NatsBroker

from pipeline import bus, stores
from pipeline.actions import ProviderClaim, create_once
from pipeline.actions.service import Approvals, EditRefused, ProposalEdit
from pipeline.app import create_broker, start_stages
from pipeline.archive.keep import keep_recording
from pipeline.archive.media import media_store
from pipeline.demo import sample_recording
from pipeline.domain.approval import DecisionRefused, advance_by_clock, get_record
from pipeline.domain.live_rules import LiveRules
from pipeline.domain.sessions import session_id_for
from pipeline.messages import ProposalTransition, Recording, ScheduledSession, utc_now
from pipeline.providers import CreatedSession, ProviderPreview, SessionRequest
from pipeline.settings import Settings
from tests.integration.bus_helpers import models_on, seed_proposal, wait_for_count, wait_until

pytestmark = pytest.mark.nats


def _approvals(client: NatsBroker, settings: Settings) -> Approvals:
    return Approvals(client, settings, LiveRules.load(settings.rules_file))


async def test_a_proposal_carries_its_slot_reason_and_provider_preview(
    pipeline: NatsBroker, client: NatsBroker
) -> None:
    proposal = await seed_proposal(client)
    assert proposal.provider == "jitsi"
    assert proposal.preview is not None and proposal.preview.summary.startswith("Jitsi room")
    assert proposal.slot_reason == "30 min lead time (no facilitator hours configured)"
    assert proposal.expires_at == proposal.starts_at - timedelta(minutes=5)


async def test_edits_are_validated_kept_in_the_history_and_put_on_the_bus(
    pipeline: NatsBroker, client: NatsBroker, settings: Settings
) -> None:
    proposal = await seed_proposal(client)
    approvals = _approvals(client, settings)
    later = proposal.starts_at + timedelta(hours=2)

    record = await approvals.edit(
        proposal.id, ProposalEdit(starts_at=later, title="  Live:  eLearning and leadership ", channels=["x"]), by="ana"
    )
    assert record.proposal.starts_at == later
    assert record.proposal.title == "Live: eLearning and leadership"  # whitespace tidied
    assert record.proposal.expires_at == later - timedelta(minutes=5)  # the decision deadline moves with it
    assert record.proposal.channels == ["x"]
    assert record.last is not None and (record.last.by, record.last.from_state, record.last.to_state) == (
        "ana",
        "proposed",
        "proposed",
    )
    assert set(record.last.changes) == {"starts_at", "title", "channels"}
    assert record.last.changes["channels"].before == "x, linkedin, facebook"

    # Saving the same values again changes nothing and records nothing.
    again = await approvals.edit(proposal.id, ProposalEdit(starts_at=later), by="ana")
    assert len(again.history) == 1

    with pytest.raises(EditRefused) as refused:
        await approvals.edit(
            proposal.id,
            ProposalEdit(starts_at=utc_now() - timedelta(minutes=1), title=" ", duration_minutes=2, channels=["fax"]),
            by="ana",
        )
    assert set(refused.value.problems) == {"title", "duration_minutes", "channels"}  # all wrong fields at once
    assert "unknown: fax" in refused.value.problems["channels"]
    with pytest.raises(EditRefused) as refused:
        await approvals.edit(proposal.id, ProposalEdit(starts_at=utc_now() - timedelta(minutes=1)), by="ana")
    assert "in the past" in refused.value.problems["starts_at"]
    assert (await get_record(client, proposal.id)).proposal.starts_at == later  # refused edits left no trace

    await wait_until(
        lambda: _transitions_seen(client, 1), what="the edit's ProposalTransition on impromptu.proposals.transitions"
    )
    (edit,) = await models_on(client, bus.PROPOSALS_TRANSITIONS.subject, ProposalTransition)
    assert edit.proposal_id == proposal.id and edit.changes["starts_at"].after == later.isoformat()
    assert edit.correlation_id == proposal.correlation_id  # the edit is traced with its share


async def _transitions_seen(client: NatsBroker, count: int) -> bool:
    return len(await models_on(client, bus.PROPOSALS_TRANSITIONS.subject, ProposalTransition)) >= count


async def test_a_session_lives_from_proposed_to_archived(
    pipeline: NatsBroker, client: NatsBroker, settings: Settings, tmp_path: Path
) -> None:
    proposal = await seed_proposal(client)
    approvals = _approvals(client, settings)
    await approvals.approve(proposal.id, by="ana")
    await wait_for_count(client, bus.SESSIONS_SCHEDULED.subject, 1)
    (session,) = await models_on(client, bus.SESSIONS_SCHEDULED.subject, ScheduledSession)
    await wait_until(lambda: _state_is(client, proposal.id, "scheduled"), what="the proposal to be scheduled")
    record = await get_record(client, proposal.id)
    assert record.session is not None and record.session.join_url == session.join_url
    assert session.provider == "jitsi" and session.provider_id and session.provider_id in session.join_url

    with pytest.raises(DecisionRefused, match="only a proposed session can be edited"):
        await approvals.edit(proposal.id, ProposalEdit(title="Too late"), by="ben")

    assert [r.state for r in await advance_by_clock(client, session.starts_at)] == ["live"]
    assert [r.state for r in await advance_by_clock(client, session.ends_at)] == ["ended"]
    assert await advance_by_clock(client, session.ends_at) == []  # nothing left for the clock

    recording = sample_recording(session, settings.import_dir)
    await bus.publish(client, bus.RECORDINGS, recording)
    await wait_until(lambda: _state_is(client, proposal.id, "archived"), what="the proposal to be archived")

    steps = [(e.from_state, e.to_state, e.by) for e in (await get_record(client, proposal.id)).history]
    assert steps == [
        ("proposed", "approved", "ana"),
        ("approved", "scheduled", "actions"),
        ("scheduled", "live", "clock"),
        ("live", "ended", "clock"),
        ("ended", "archived", "archive"),
    ]
    await wait_until(lambda: _transitions_seen(client, 5), what="five transitions on the bus")
    on_bus = [
        (t.from_state, t.to_state, t.by)
        for t in await models_on(client, bus.PROPOSALS_TRANSITIONS.subject, ProposalTransition)
    ]
    assert on_bus == steps


async def _state_is(client: NatsBroker, proposal_id: str, state: str) -> bool:
    return (await get_record(client, proposal_id)).state == state


async def test_a_recording_after_the_start_but_before_the_clock_walks_the_session_forward(
    pipeline: NatsBroker, client: NatsBroker, settings: Settings
) -> None:
    proposal = await seed_proposal(client)
    await _approvals(client, settings).approve(proposal.id, by="ana")
    await wait_until(lambda: _state_is(client, proposal.id, "scheduled"), what="the proposal to be scheduled")
    (session,) = await models_on(client, bus.SESSIONS_SCHEDULED.subject, ScheduledSession)
    recording: Recording = sample_recording(session, settings.import_dir)
    store = await media_store(settings, client)
    try:  # the session has started, the clock has not ticked yet
        await keep_recording(client, settings, store, recording, now=session.starts_at + timedelta(minutes=1))
    finally:
        await store.close()
    assert (await get_record(client, proposal.id)).state == "archived"
    assert [e.by for e in (await get_record(client, proposal.id)).history][-3:] == ["archive"] * 3


async def test_cancelled_before_scheduling_creates_nothing(
    pipeline: NatsBroker, client: NatsBroker, settings: Settings
) -> None:
    proposal = await seed_proposal(client)
    approvals = _approvals(client, settings)
    record = await approvals.cancel(proposal.id, by="ana", reason="speaker is away")
    assert (record.state, record.last and record.last.reason) == ("cancelled", "speaker is away")
    with pytest.raises(DecisionRefused, match=r"already cancelled \(by ana"):
        await approvals.approve(proposal.id, by="ben")


class CountingProvider:
    """A provider that remembers what it made; `find` sees what `create` made, as a real provider's list would."""

    name = "jitsi"

    def __init__(self) -> None:
        self.made: dict[str, CreatedSession] = {}
        self.creates = 0

    def preview(self, request: SessionRequest) -> ProviderPreview:
        return ProviderPreview(provider="jitsi", summary="test")

    async def create(self, request: SessionRequest) -> CreatedSession:
        self.creates += 1
        made = CreatedSession(provider="jitsi", provider_id=f"room-{self.creates}", join_url="https://meet.example/r")
        self.made[request.session_id] = made
        return made

    async def find(self, request: SessionRequest) -> CreatedSession | None:
        return self.made.get(request.session_id)

    async def cancel(self, created: CreatedSession) -> None:
        self.made = {k: v for k, v in self.made.items() if v != created}


async def test_a_crash_between_creating_and_recording_finds_the_session_instead_of_making_another(
    client: NatsBroker,
) -> None:
    kv = await stores.bucket(client, stores.SESSIONS)
    provider = CountingProvider()
    request = SessionRequest(
        session_id=session_id_for("proposal-1"), title="Live", description="", starts_at=utc_now(), duration_minutes=30
    )
    # The first attempt claimed and created, then "crashed" before completing its claim.
    await kv.create(f"provider.{request.session_id}", ProviderClaim(state="creating").model_dump_json().encode())
    await provider.create(request)

    found = await create_once(kv, provider, request)
    again = await create_once(kv, provider, request)
    assert found == again == provider.made[request.session_id]
    assert provider.creates == 1


async def test_a_crash_before_the_provider_was_asked_creates_once_on_retry(client: NatsBroker) -> None:
    kv = await stores.bucket(client, stores.SESSIONS)
    provider = CountingProvider()
    request = SessionRequest(
        session_id=session_id_for("proposal-2"), title="Live", description="", starts_at=utc_now(), duration_minutes=30
    )
    await kv.create(f"provider.{request.session_id}", ProviderClaim(state="creating").model_dump_json().encode())
    first = await create_once(kv, provider, request)  # nothing found at the provider: create now
    assert await create_once(kv, provider, request) == first
    assert provider.creates == 1


async def test_the_slot_follows_the_hosts_days_and_edits_outside_them_are_refused(
    settings: Settings, client: NatsBroker, tmp_path: Path
) -> None:
    # a day after the one the 30 min lead time lands on, whatever the time (near midnight UTC: the day after tomorrow)
    tomorrow = (utc_now() + timedelta(minutes=60) + timedelta(days=1)).date()
    weekday = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")[tomorrow.weekday()]
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(
        settings.rules_file.read_text()
        + f"\nfacilitators:\n  - name: Ana\n    timezone: UTC\n    days: [{weekday}]\n    max_sessions_per_day: 2\n"
    )
    hosted = settings.model_copy(update={"rules_file": rules_file})
    broker = create_broker(hosted)
    await start_stages(broker, hosted)
    try:
        proposal = await seed_proposal(client)
    finally:
        await broker.stop()
    assert proposal.facilitator == "Ana"
    assert proposal.starts_at.date() == tomorrow
    assert "Ana" in proposal.slot_reason and weekday.capitalize() in proposal.slot_reason

    approvals = Approvals(client, hosted, LiveRules.load(rules_file))
    with pytest.raises(EditRefused) as refused:
        await approvals.edit(proposal.id, ProposalEdit(starts_at=proposal.starts_at + timedelta(days=1)), by="ana")
    assert "Ana" in refused.value.problems["starts_at"]


def _cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMPROMPTU_")}
    env.update(NATS_URL=settings.nats_url or "", IMPROMPTU_DATA_DIR=str(settings.data_dir))
    env["IMPROMPTU_FACILITATOR_LOGINS"] = '{"ana": {}}'  # --by names a login
    command = [str(Path(sys.executable).parent / "impromptu"), *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)


async def test_the_cli_shows_edits_and_cancels_with_reasons(
    pipeline: NatsBroker, client: NatsBroker, settings: Settings
) -> None:
    proposal = await seed_proposal(client)
    shown = await asyncio.to_thread(_cli, settings, "proposals", "show", proposal.id)
    assert shown.returncode == 0, shown.stderr
    assert "why then: 30 min lead time" in shown.stdout and "creates: Jitsi room" in shown.stdout
    assert "    x (" in shown.stdout and "/280): Live on" in shown.stdout  # the X preview with its weighted length

    later = (proposal.starts_at + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M")
    edited = await asyncio.to_thread(
        _cli, settings, "proposals", "edit", proposal.id, "--by", "ana", "--start", later, "--channels", "x,linkedin"
    )
    assert edited.returncode == 0, edited.stderr
    assert "channels: x, linkedin, facebook -> linkedin, x" in edited.stdout
    assert f"{proposal.id} edited by ana" in edited.stdout

    past = await asyncio.to_thread(
        _cli, settings, "proposals", "edit", proposal.id, "--by", "ana", "--start", "2020-01-01T10:00"
    )
    assert past.returncode == 1 and "starts_at: is in the past" in past.stderr

    cancelled = await asyncio.to_thread(
        _cli, settings, "proposals", "cancel", proposal.id, "--by", "ana", "--reason", "speaker is ill"
    )
    assert cancelled.stdout.strip() == f"{proposal.id} cancelled by ana"
    history = (await get_record(client, proposal.id)).history
    assert [(e.to_state, e.reason) for e in history] == [("proposed", ""), ("cancelled", "speaker is ill")]
