"""Announcements say the date and the time in the session's time zone, with UTC beside it: a share at 20:27 UTC
whose slot working hours move to the next morning is announced as "Fri 11 Dec, 09:00 CET (08:00 UTC)" in every
channel's text, within each channel's limit."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from pipeline.actions import schedule
from pipeline.channels.registry import CHANNELS
from pipeline.channels.render import available_channels, check, environment, render
from pipeline.domain.notify import slack_payload
from pipeline.domain.rules import Facilitator
from pipeline.domain.sessions import propose
from pipeline.domain.slots import suggest_slot
from pipeline.messages import FacilitatorDecision, ScheduledSession, stable_id
from pipeline.providers import CreatedSession
from pipeline.session_time import when, when_local
from tests.unit.conftest import make_content

SHARED_AT = datetime(2026, 12, 10, 20, 27, tzinfo=UTC)  # a Thursday evening
BERLIN_HOURS = Facilitator(name="olga", hours="09:00-17:00", timezone="Europe/Berlin")


def next_morning_session(timezone: str, title: str = "Why eLearning Isn't Working") -> ScheduledSession:
    """The seed share at 20:27 UTC; Olga works 09:00-17:00 in Berlin, so the slot is Friday 09:00 CET."""
    slot = suggest_slot(
        SHARED_AT, lead_minutes=30, duration_minutes=60, facilitators=[BERLIN_HOURS], busy=[], default_timezone=timezone
    )
    proposal = propose(make_content(title=title), SHARED_AT, slot=slot, timezone=timezone)
    decision = FacilitatorDecision.caused_by(
        proposal, id=stable_id("decision", proposal.id), proposal=proposal, decision="approved", decided_by="olga"
    )
    room = f"Impromptu-Live-{proposal.id}"
    return schedule(
        decision, CreatedSession(provider="jitsi", provider_id=room, join_url=f"https://meet.jit.si/{room}")
    )


def test_the_slot_is_the_next_morning_in_berlin() -> None:
    session = next_morning_session("Europe/Berlin")
    assert session.starts_at == datetime(2026, 12, 11, 8, 0, tzinfo=UTC)
    assert when(session.starts_at, "Europe/Berlin") == "Fri 11 Dec, 09:00 CET (08:00 UTC)"
    assert when(session.starts_at, "Europe/Berlin", session.ends_at) == "Fri 11 Dec, 09:00–10:00 CET (08:00–09:00 UTC)"
    assert when_local(session.starts_at, "Europe/Berlin") == "Fri 11 Dec, 09:00 CET"


@pytest.mark.parametrize("kind", ["scheduled", "cancelled"])
@pytest.mark.parametrize("channel", CHANNELS)
def test_every_channel_says_the_date_and_the_local_time_and_utc(channel: str, kind: str) -> None:
    assert channel in available_channels(kind)
    session = next_morning_session("Europe/Berlin")
    text = render(environment(), channel, kind, session, reason="the host is ill" if kind == "cancelled" else "")
    shown = json.dumps(json.loads(text), ensure_ascii=False) if channel in ("slack", "teams") else text
    assert "Fri 11 Dec, 09:00" in shown and "CET" in shown and "08:00" in shown and "UTC)" in shown, shown
    assert "Thu 10 Dec" not in shown and "20:27" not in shown
    assert check(channel, text)[1] is None


@pytest.mark.parametrize("channel", CHANNELS)
def test_a_long_title_still_fits_with_the_date(channel: str) -> None:
    session = next_morning_session("Europe/Berlin", title="A rather long article title about learning " * 6)
    text = render(environment(), channel, "scheduled", session)
    assert check(channel, text)[1] is None
    assert "Fri 11 Dec, 09:00" in text


def test_a_session_in_utc_names_the_time_once() -> None:
    session = next_morning_session("UTC")
    text = render(environment(), "x", "scheduled", session)
    assert text.startswith("Live on Fri 11 Dec, 08:00 UTC: ")


def test_the_utc_part_names_its_own_date_when_it_differs() -> None:
    late = datetime(2026, 12, 10, 23, 30, tzinfo=UTC)
    assert when(late, "Europe/Berlin") == "Fri 11 Dec, 00:30 CET (Thu 10 Dec, 23:30 UTC)"
    assert when(late, "Asia/Kolkata") == "Fri 11 Dec, 05:00 IST (Thu 10 Dec, 23:30 UTC)"
    assert when(late, "Asia/Dubai") == "Fri 11 Dec, 03:30 UTC+4 (Thu 10 Dec, 23:30 UTC)"  # tzdata has no letters
    assert when(late, "Not/AZone") == "Thu 10 Dec, 23:30 UTC"


def test_the_facilitators_notice_says_it_the_same_way() -> None:
    session = next_morning_session("Europe/Berlin")
    payload = json.dumps(slack_payload(session.proposal, "https://impromptu.example/proposals/p"), ensure_ascii=False)
    assert "Fri 11 Dec, 09:00 CET (08:00 UTC)" in payload
