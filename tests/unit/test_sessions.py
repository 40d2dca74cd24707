"""Session logic: start slot, proposal, Jitsi room name, calendar invite."""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import icalendar
import pytest

from pipeline.actions import schedule
from pipeline.domain.sessions import DECISION_MARGIN, calendar_invite, first_slot, propose
from pipeline.messages import EnrichedContent, FacilitatorDecision, ScheduledSession
from pipeline.providers import CreatedSession
from pipeline.providers.jitsi import jitsi_room_url

BuildContent = Callable[..., EnrichedContent]


def at(hour: int, minute: int, second: int = 0, microsecond: int = 0) -> datetime:
    return datetime(2025, 3, 4, hour, minute, second, microsecond, tzinfo=UTC)


@pytest.mark.parametrize(
    ("now", "lead", "expected"),
    [
        (at(10, 15), 30, at(10, 45)),  # already on a minute: exactly lead minutes out
        (at(10, 15, 30), 30, at(10, 46)),
        (at(10, 15, 0, 1), 30, at(10, 46)),
        (at(10, 15, 59, 999_999), 30, at(10, 46)),
        (at(10, 59, 59, 500_000), 0, at(11, 0)),
        (at(23, 45, 1), 30, datetime(2025, 3, 5, 0, 16, tzinfo=UTC)),  # over midnight
    ],
)
def test_first_slot_examples(now: datetime, lead: int, expected: datetime) -> None:
    assert first_slot(now, lead) == expected


def test_first_slot_is_the_next_whole_minute_after_the_lead() -> None:
    rng = random.Random(3)
    for _ in range(2000):
        micro = rng.choice([0, 1, 999_999, rng.randrange(10**6)])
        now = at(rng.randrange(24), rng.randrange(60), rng.randrange(60), micro)
        lead = rng.randrange(0, 120)
        slot = first_slot(now, lead)
        earliest = now + timedelta(minutes=lead)
        assert slot.second == 0 and slot.microsecond == 0, (now, lead, slot)
        assert timedelta(0) <= slot - earliest < timedelta(minutes=1), (now, lead, slot)


def test_proposal_times(build_content: BuildContent) -> None:
    now = at(10, 15, 30)
    proposal = propose(build_content(), now)
    assert proposal.starts_at == at(10, 46)
    assert proposal.expires_at == at(10, 41)
    assert proposal.starts_at - proposal.expires_at == DECISION_MARGIN == timedelta(minutes=5)
    assert proposal.duration_minutes == 60
    assert proposal.channels == ["x", "linkedin", "facebook"]


def test_proposal_text(build_content: BuildContent) -> None:
    content = build_content()
    proposal = propose(content, at(10, 15))
    assert proposal.title == f"Live: {content.article.title}"
    assert proposal.description.startswith(f'@britz shared "{content.article.title}" by Josh Bersin.')
    assert proposal.correlation_id == content.correlation_id
    assert proposal.causation_id == content.id


def test_proposal_without_author_does_not_say_by(build_content: BuildContent) -> None:
    assert " by " not in propose(build_content(author=None), at(10, 15)).description


def test_proposal_id_is_stable(build_content: BuildContent) -> None:
    first = propose(build_content(), at(10, 15))
    again = propose(build_content(), at(10, 15))
    later = propose(build_content(), at(11, 0))
    other = propose(build_content(native_id="2"), at(10, 15))
    assert first.id == again.id == later.id  # same share -> same proposal, whenever it is (re)computed
    assert other.id != first.id
    assert first.id.startswith("proposal-")


def test_jitsi_room_url_shape() -> None:
    url = jitsi_room_url("https://meet.jit.si", "Live: Why eLearning Isn't Working?")
    assert url.startswith("https://meet.jit.si/Impromptu-Live-Why-eLearning-Isn-t-Working-")
    token = url.rsplit("-", 1)[1]
    assert re.fullmatch(r"[A-Za-z0-9_-]{16,}", token)


def test_jitsi_room_url_is_unguessable() -> None:
    urls = {jitsi_room_url("https://meet.jit.si", "Same title") for _ in range(50)}
    assert len(urls) == 50


def test_jitsi_room_url_base_with_trailing_slash_and_unsafe_title() -> None:
    url = jitsi_room_url("https://meet.example.org/", "a/b?c#d  ")
    assert url.startswith("https://meet.example.org/Impromptu-a-b-c-d-")
    assert "//Impromptu" not in url
    assert not set("?#/ ") & set(url.removeprefix("https://meet.example.org/"))


def test_jitsi_room_url_empty_title() -> None:
    assert jitsi_room_url("https://meet.jit.si", "???").startswith("https://meet.jit.si/Impromptu-Session-")


def test_calendar_invite_parses_back() -> None:
    starts, ends = at(10, 46), at(11, 46)
    join = "https://meet.jit.si/Impromptu-Live-abcdefghijklmnopqrstuv"
    title = "Live: Leadership, soft skills; and more"
    ics = calendar_invite(
        uid="session-1", title=title, description="Talk.", starts_at=starts, ends_at=ends, join_url=join
    )
    calendar = icalendar.Calendar.from_ical(ics)
    (event,) = calendar.walk("VEVENT")
    assert event.decoded("dtstart") == starts
    assert event.decoded("dtend") == ends
    assert str(event["summary"]) == title
    assert str(event["location"]) == join
    assert str(event["url"]) == join
    assert join in str(event["description"])
    assert str(event["uid"]) == "session-1@impromptu"


def test_scheduled_session_invite_matches_session(build_content: BuildContent) -> None:
    proposal = propose(build_content(), at(10, 15))
    decision = FacilitatorDecision(
        id="d-1",
        correlation_id=proposal.correlation_id,
        causation_id=proposal.id,
        proposal=proposal,
        decision="approved",
        decided_by="fac",
    )
    room = CreatedSession(provider="jitsi", provider_id="Impromptu-x", join_url="https://meet.jit.si/Impromptu-x")
    session: ScheduledSession = schedule(decision, room)
    (event,) = icalendar.Calendar.from_ical(session.ics).walk("VEVENT")
    assert session.ends_at - session.starts_at == timedelta(minutes=60)
    assert event.decoded("dtstart") == session.starts_at
    assert event.decoded("dtend") == session.ends_at
    assert str(event["location"]) == session.join_url
    assert session.join_url.startswith("https://meet.jit.si/")
