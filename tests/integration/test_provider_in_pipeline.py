"""Sessions at a real provider API (a local server answering as Zoom documents it), driven by the running pipeline:
nothing is created before approval or after a rejection, an approval redelivered creates one meeting, a
cancellation deletes it, and an expired token is a clear reason on the proposal and in the dead letters."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from faststream.nats import NatsBroker
from pydantic import SecretStr

from pipeline import bus
from pipeline.actions.service import Approvals
from pipeline.app import create_broker, start_stages
from pipeline.domain.approval import decide, get_record
from pipeline.domain.live_rules import LiveRules
from pipeline.messages import DeadLetter, FacilitatorDecision, ScheduledSession
from pipeline.settings import Settings
from tests.integration.bus_helpers import models_on, seed_proposal, wait_for_count, wait_until
from tests.peers import serve
from tests.unit.test_provider_zoom import STATIC_TOKEN, FakeZoom

pytestmark = pytest.mark.nats


@pytest.fixture
def zoom() -> Iterator[FakeZoom]:
    fake = FakeZoom()
    fake.valid_tokens.add(STATIC_TOKEN)
    with serve(fake.app) as base:
        fake.base = base
        yield fake


@pytest.fixture
def zoom_settings(settings: Settings, zoom: FakeZoom) -> Settings:
    return settings.model_copy(
        update={
            "session_provider": "zoom",
            "zoom_api_url": f"{zoom.base}/v2",
            "zoom_access_token": SecretStr(STATIC_TOKEN),
            "provider_timeout_seconds": 2.0,
        }
    )


@pytest.fixture
async def zoom_pipeline(zoom_settings: Settings) -> AsyncIterator[NatsBroker]:
    broker = create_broker(zoom_settings)
    await start_stages(broker, zoom_settings)
    yield broker
    await broker.stop()


async def test_nothing_is_created_at_zoom_before_approval_or_after_rejection(
    zoom_pipeline: NatsBroker, client: NatsBroker, zoom: FakeZoom
) -> None:
    proposal = await seed_proposal(client)
    assert proposal.provider == "zoom"
    assert proposal.preview is not None and "cloud recording" in proposal.preview.summary
    await decide(client, proposal.id, "rejected", by="ana", reason="not this week")
    await wait_until(lambda: _consumed(client, "actions-schedule"), what="the rejection to be consumed")
    assert zoom.api() == [] and zoom.meetings == {}


async def test_an_approval_redelivered_makes_one_zoom_meeting_and_cancelling_deletes_it(
    zoom_pipeline: NatsBroker, client: NatsBroker, zoom: FakeZoom, zoom_settings: Settings
) -> None:
    proposal = await seed_proposal(client)
    decision = await decide(client, proposal.id, "approved", by="ana")
    await wait_for_count(client, bus.SESSIONS_SCHEDULED.subject, 1)
    # The same decision again under a new message id: as if redelivered after the duplicate window.
    await bus.publish(client, bus.DECISIONS, decision.model_copy(update={"id": "decision-again"}))
    await wait_until(lambda: _consumed(client, "actions-schedule"), what="the second decision to be consumed")

    (meeting,) = zoom.meetings.values()
    (session,) = await models_on(client, bus.SESSIONS_SCHEDULED.subject, ScheduledSession)
    assert session.provider == "zoom" and session.provider_id == str(meeting["id"])
    assert session.join_url == meeting["join_url"]
    assert f"impromptu-session: {session.id}" in meeting["agenda"]
    assert meeting["settings"]["auto_recording"] == "cloud"
    assert "start_url" not in session.model_dump_json()  # the host's link is a secret: never on the bus
    await wait_until(lambda: _state_is(client, proposal.id, "scheduled"), what="the proposal to be scheduled")

    approvals = Approvals(client, zoom_settings, LiveRules.load(zoom_settings.rules_file))
    await approvals.cancel(proposal.id, by="ben", reason="speaker ill")
    await wait_until(lambda: _no_meetings(zoom), what="the Zoom meeting to be deleted")
    assert [s.method for s in zoom.api()].count("POST") == 1


async def test_an_expired_zoom_token_is_a_clear_reason_on_the_proposal_and_a_dead_letter(
    zoom_pipeline: NatsBroker, client: NatsBroker, zoom: FakeZoom
) -> None:
    proposal = await seed_proposal(client)
    zoom.valid_tokens.clear()  # the token expired since the pipeline started
    await decide(client, proposal.id, "approved", by="ana")
    await wait_for_count(client, bus.dead_letter_subject("actions"), 1)
    (dead,) = await models_on(client, bus.dead_letter_subject("actions"), DeadLetter)
    assert "access token" in dead.reason and STATIC_TOKEN not in dead.reason
    record = await get_record(client, proposal.id)
    assert record.state == "approved" and record.problem is not None and "access token" in record.problem
    assert zoom.meetings == {}
    assert (await models_on(client, bus.DECISIONS.subject, FacilitatorDecision))[0].decided_by == "ana"


async def _consumed(client: NatsBroker, durable: str) -> bool:
    info = await bus.jetstream(client).consumer_info(bus.STREAM, durable)
    return info.num_pending == 0 and info.num_ack_pending == 0


async def _state_is(client: NatsBroker, proposal_id: str, state: str) -> bool:
    return (await get_record(client, proposal_id)).state == state


async def _no_meetings(zoom: FakeZoom) -> bool:
    return not zoom.meetings
