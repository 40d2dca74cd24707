"""The e-mail channel over real SMTP (aiosmtpd on loopback): the MIME layout calendar clients need, the invite and
its cancellation, and SMTP failures mapped to the channel contract without ever showing the password."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from email.message import EmailMessage
from typing import Any

import icalendar
import pytest
from pydantic import SecretStr

from pipeline.channels.base import ChannelBroken, Kind, NotSent, Post, PostRefused
from pipeline.channels.email import EmailChannel, from_settings, invite
from pipeline.channels.render import environment, render
from pipeline.errors import PermanentError, RetryableError
from pipeline.messages import ScheduledSession
from pipeline.settings import Settings
from tests.channel_fakes import HOSTILE_TITLE, hostile_session, make_post
from tests.smtp_server import Mailbox, free_port, smtp_server

RECIPIENTS = ["ada@example.org", "Grace Hopper <grace@example.org>"]
PASSWORD = "s3cret-smtp-password"
LIBRARY = "https://impromptu.example/library/session-1"
BuildSession = Callable[..., ScheduledSession]


# --- a real SMTP server -------------------------------------------------------------------------------------------


@pytest.fixture
def smtp(request: pytest.FixtureRequest) -> Iterator[tuple[int, Mailbox]]:
    with smtp_server(getattr(request, "param", {})) as server:
        yield server.port, server.mailbox


def channel_for(port: int, **fields: Any) -> EmailChannel:
    defaults: dict[str, Any] = {
        "smtp_host": "127.0.0.1",
        "smtp_port": port,
        "smtp_starttls": False,
        "smtp_from": "Impromptu <impromptu@example.org>",
        "outreach_email_to": RECIPIENTS,
    }
    return EmailChannel(Settings(**(defaults | fields)), timeout=5)


def post_for(session: ScheduledSession, kind: Kind, **render_options: Any) -> Post:
    return make_post(session, "email", render(environment(), "email", kind, session, **render_options), kind=kind)


def calendar_parts(message: EmailMessage) -> list[EmailMessage]:
    return [part for part in message.walk() if part.get_content_type() == "text/calendar"]  # type: ignore[misc]


# --- the contract -------------------------------------------------------------------------------------------------


def test_missing_names_what_to_set() -> None:
    channel = from_settings(Settings(smtp_host=None, outreach_email_to=[]))
    assert channel.name == "email" and not channel.can_find and not channel.can_delete
    assert channel.missing() == ["IMPROMPTU_SMTP_HOST", "IMPROMPTU_OUTREACH_EMAIL_TO"]
    assert from_settings(Settings(smtp_host="mail.example.org", outreach_email_to=RECIPIENTS)).missing() == []


# --- the message --------------------------------------------------------------------------------------------------


async def test_scheduled_announcement_carries_the_invite(
    smtp: tuple[int, Mailbox], build_session: BuildSession
) -> None:
    port, mailbox = smtp
    session = build_session()
    posted = await channel_for(port).post(post_for(session, "scheduled"))

    (envelope,) = mailbox.envelopes
    assert envelope.mail_from == "impromptu@example.org"
    assert envelope.rcpt_tos == ["ada@example.org", "grace@example.org"]
    (got,) = mailbox.messages()
    assert posted.remote_id == got["Message-ID"] and posted.url is None
    # a subject this long is folded after "Subject:"; Python's parser keeps the folding space, mail clients don't
    assert got["Subject"].strip() == f"Live on Tue 4 Mar, 10:46 UTC: {session.proposal.content.article.title}"
    assert got["To"] == ", ".join(RECIPIENTS)
    # multipart/mixed -> [multipart/alternative -> (text/plain, text/calendar; method=REQUEST)] + invite.ics
    assert got.get_content_type() == "multipart/mixed"
    alternative, attachment = got.get_payload()  # type: ignore[misc]
    assert alternative.get_content_type() == "multipart/alternative"
    plain, inline = alternative.get_payload()
    assert plain.get_content_type() == "text/plain"
    assert session.join_url in plain.get_content() and "Subject:" not in plain.get_content()
    assert inline.get_content_type() == "text/calendar" and inline.get_param("method") == "REQUEST"
    assert attachment.get_content_type() == "text/calendar" and attachment.get_filename() == "invite.ics"
    assert attachment.get_param("method") == "REQUEST"

    for part in (inline, attachment):
        content = part.get_content()
        calendar = icalendar.Calendar.from_ical(content if isinstance(content, str) else content.decode())
        assert calendar["METHOD"] == part.get_param("method")  # iMIP: the parameter matches METHOD
        (event,) = calendar.walk("VEVENT")
        assert str(event["UID"]) == f"{session.id}@impromptu"
        assert str(event["ORGANIZER"]) == "mailto:impromptu@example.org"
        attendees = event["ATTENDEE"]
        assert [str(a) for a in attendees] == ["mailto:ada@example.org", "mailto:grace@example.org"]
        assert attendees[1].params["CN"] == "Grace Hopper"
        assert int(event["SEQUENCE"]) == 0
        assert str(event["LOCATION"]) == session.join_url


async def test_cancellation_cancels_the_same_event(smtp: tuple[int, Mailbox], build_session: BuildSession) -> None:
    port, mailbox = smtp
    session = build_session()
    await channel_for(port).post(post_for(session, "cancelled", reason="the facilitator is ill"))

    (got,) = mailbox.messages()
    assert got["Subject"].strip().startswith("Cancelled: ")
    assert "the facilitator is ill" in got.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    parts = calendar_parts(got)
    assert [part.get_param("method") for part in parts] == ["CANCEL", "CANCEL"]
    calendar = icalendar.Calendar.from_ical(parts[0].get_content())
    assert calendar["METHOD"] == "CANCEL"
    (event,) = calendar.walk("VEVENT")
    original = icalendar.Calendar.from_ical(session.ics).walk("VEVENT")[0]
    assert event["UID"] == original["UID"]  # the same event, so calendars remove it
    assert event["STATUS"] == "CANCELLED"
    assert int(event["SEQUENCE"]) == int(original.get("SEQUENCE", 0)) + 1
    assert event["DTSTART"].dt == original["DTSTART"].dt


def test_cancelling_bumps_an_existing_sequence(build_session: BuildSession) -> None:
    method, ics = invite(build_session().ics, "impromptu@example.org", RECIPIENTS)
    assert method == "REQUEST"
    again = icalendar.Calendar.from_ical(ics)
    again.walk("VEVENT")[0]["SEQUENCE"] = 4
    method, cancelled = invite(again.to_ical().decode(), "impromptu@example.org", RECIPIENTS, cancel=True)
    (event,) = icalendar.Calendar.from_ical(cancelled).walk("VEVENT")
    assert method == "CANCEL" and int(event["SEQUENCE"]) == 5
    assert len(event["ATTENDEE"]) == 2  # not doubled by re-addressing


@pytest.mark.parametrize("kind", ["starting", "recording"])
async def test_starting_and_recording_have_no_calendar(
    smtp: tuple[int, Mailbox], build_session: BuildSession, kind: Kind
) -> None:
    port, mailbox = smtp
    session = build_session()
    await channel_for(port).post(post_for(session, kind, library_url=LIBRARY))
    (got,) = mailbox.messages()
    assert got.get_content_type() == "text/plain"
    assert calendar_parts(got) == []
    assert (LIBRARY if kind == "recording" else session.join_url) in got.get_content()


async def test_session_without_an_invite_sends_plain_text(
    smtp: tuple[int, Mailbox], build_session: BuildSession
) -> None:
    port, mailbox = smtp
    session = build_session().model_copy(update={"ics": ""})
    await channel_for(port).post(post_for(session, "scheduled"))
    (got,) = mailbox.messages()
    assert got.get_content_type() == "text/plain" and calendar_parts(got) == []


async def test_text_that_is_not_an_email_is_refused(smtp: tuple[int, Mailbox], build_session: BuildSession) -> None:
    port, mailbox = smtp
    post = post_for(build_session(), "scheduled")
    bad = Post(**{**post.__dict__, "text": "no subject line here"})
    with pytest.raises(PostRefused, match='"Subject: ..."'):
        await channel_for(port).post(bad)
    assert mailbox.envelopes == []


# --- SMTP failures ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("smtp", [{"reject_auth": True}], indirect=True)
async def test_login_refused_breaks_the_channel_without_the_password(
    smtp: tuple[int, Mailbox], build_session: BuildSession
) -> None:
    port, mailbox = smtp
    channel = channel_for(port, smtp_username="impromptu", smtp_password=SecretStr(PASSWORD))
    with pytest.raises(ChannelBroken) as caught:
        await channel.post(post_for(build_session(), "scheduled"))
    text = str(caught.value)
    assert "535" in text and "IMPROMPTU_SMTP_USERNAME" in text
    assert PASSWORD not in text and PASSWORD not in repr(caught.value.args)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__  # no chained error to leak it
    assert mailbox.envelopes == []


async def test_connection_refused_is_not_sent(build_session: BuildSession) -> None:
    channel = channel_for(free_port(), smtp_username="impromptu", smtp_password=SecretStr(PASSWORD))
    with pytest.raises(NotSent) as caught:
        await channel.post(post_for(build_session(), "scheduled"))
    assert "could not be reached" in str(caught.value) and PASSWORD not in str(caught.value)


@pytest.mark.parametrize("smtp", [{"rcpt_reply": "550 5.1.1 No such user here"}], indirect=True)
async def test_recipients_refused_names_the_outreach_setting(
    smtp: tuple[int, Mailbox], build_session: BuildSession
) -> None:
    port, _ = smtp
    with pytest.raises(ChannelBroken) as caught:
        await channel_for(port).post(post_for(build_session(), "scheduled"))
    assert "550" in str(caught.value) and "IMPROMPTU_OUTREACH_EMAIL_TO" in str(caught.value)
    assert "IMPROMPTU_NOTIFY_EMAIL_TO" not in str(caught.value)


@pytest.mark.parametrize("smtp", [{"rcpt_reply": "451 4.3.0 Try again later"}], indirect=True)
async def test_transient_refusal_is_not_sent(smtp: tuple[int, Mailbox], build_session: BuildSession) -> None:
    port, _ = smtp
    with pytest.raises(NotSent, match="451"):
        await channel_for(port).post(post_for(build_session(), "scheduled"))


@pytest.mark.parametrize("smtp", [{"data_reply": "554 5.7.1 Message rejected as spam"}], indirect=True)
async def test_message_refused_is_a_refused_post(smtp: tuple[int, Mailbox], build_session: BuildSession) -> None:
    port, _ = smtp
    with pytest.raises(PostRefused, match="554") as caught:
        await channel_for(port).post(post_for(build_session(), "scheduled"))
    assert not isinstance(caught.value, ChannelBroken) and isinstance(caught.value, PermanentError)
    assert not isinstance(caught.value, RetryableError)


async def test_starttls_not_offered_breaks_the_channel(smtp: tuple[int, Mailbox], build_session: BuildSession) -> None:
    port, mailbox = smtp
    with pytest.raises(ChannelBroken, match="IMPROMPTU_SMTP_STARTTLS"):
        await channel_for(port, smtp_starttls=True).post(post_for(build_session(), "scheduled"))
    assert mailbox.envelopes == []


async def test_find_and_delete_are_not_offered(build_session: BuildSession) -> None:
    channel = channel_for(free_port())
    with pytest.raises(NotImplementedError):
        await channel.find(post_for(build_session(), "scheduled"))


async def test_links_in_stranger_text_stay_plain_text(smtp: tuple[int, Mailbox], build_session: BuildSession) -> None:
    port, mailbox = smtp
    session = hostile_session(build_session)

    await channel_for(port).post(post_for(session, "scheduled"))

    (got,) = mailbox.messages()
    kinds = {part.get_content_type() for part in got.walk() if not part.is_multipart()}  # type: ignore[misc]
    assert kinds == {"text/plain", "text/calendar"}  # no HTML part: nothing renders markup, a link is its text
    plain = next(p for p in got.walk() if p.get_content_type() == "text/plain").get_content()  # type: ignore[misc]
    assert HOSTILE_TITLE in plain and session.join_url in plain
    assert "\n" not in got["Subject"].replace("\n ", "") and "[Join here]" in got["Subject"]  # one header line
