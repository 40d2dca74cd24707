"""The e-mail channel: announcements to a list of people (IMPROMPTU_OUTREACH_EMAIL_TO), with the calendar invite.

The rendered text is "Subject: ...", a blank line, then the plain-text body. A "scheduled" announcement carries the
session's invite as iMIP, in the layout most clients understand (Outlook reads iMIP only from the first child of
multipart/mixed and treats a lone .ics attachment as a file):

    multipart/mixed
      multipart/alternative
        text/plain
        text/calendar; method=REQUEST      <- what calendar clients act on
      text/calendar; name=invite.ics       <- the same invite, for clients that only offer attachments

A "cancelled" one carries the same event as METHOD:CANCEL, STATUS:CANCELLED with a higher SEQUENCE, so calendars
remove it; "starting" and "recording" have no calendar part. Sending reuses the facilitator e-mail's SMTP code
(`pipeline.domain.notify.send_email`), whose errors are mapped to the channel contract here.
"""

from __future__ import annotations

import email.utils
import re
from datetime import UTC, datetime
from email.message import EmailMessage

import icalendar
from pydantic import Field, SecretStr

from pipeline.channels.base import (
    ChannelAdapter,
    ChannelBroken,
    ChannelSettings,
    NotSent,
    Post,
    Posted,
    PostRefused,
    Problem,
    redact,
    unset,
)
from pipeline.domain.notify import send_email
from pipeline.errors import PermanentError, RetryableError
from pipeline.settings import Settings

SUBJECT_MAX = 200

# send_email's reasons that a person must fix in the settings, not in the post
_SETTINGS_PROBLEMS = (
    "refused the login",
    "no SMTP server",
    "TLS certificate",
    "STARTTLS",
    "offers no login",
    "refused the sender",
    "refused every recipient",
)
# nothing was accepted: connection refused or unreachable, or a 4xx reply (the server said "not now")
_NOT_SENT = re.compile(r"could not be reached: .*(refused|Error connecting|unreachable|not known)|: 4\d\d ", re.I)


class EmailSettings(ChannelSettings):
    """The SMTP server is the facilitators' notices' too (pipeline.domain.notify)."""

    outreach_email_to: list[str] = Field(
        default_factory=list, description="Who receives announcements by e-mail (with the .ics invite)."
    )
    smtp_host: str | None = None
    smtp_port: int = 587
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_starttls: bool = True
    smtp_from: str = "impromptu@localhost"


class EmailChannel(ChannelAdapter):
    """The rendered text is "Subject: ...", a blank line, then the body (`email_parts`); no length limit."""

    name = "email"
    title = "E-mail"
    Section = EmailSettings
    can_find = False  # SMTP cannot tell whether an interrupted send went out
    can_delete = False  # a sent e-mail stays sent; a cancellation is a new e-mail (with a calendar CANCEL)

    @classmethod
    def shaped(cls, text: str) -> tuple[str, Problem | None]:
        try:
            subject, _ = email_parts(text)
        except ValueError as error:
            return text, Problem("bad_structure", f"is not an e-mail: {error}")
        if len(subject) > SUBJECT_MAX:
            return text, Problem("too_long", f"has a {len(subject)}-character subject, e-mail allows {SUBJECT_MAX}")
        return text, None

    @classmethod
    def from_settings(cls, settings: Settings) -> EmailChannel:
        return cls(settings)  # sending shares the notices' SMTP code, which reads the whole settings

    def __init__(self, settings: Settings, *, timeout: float | None = None) -> None:
        self.settings = settings
        self.timeout = timeout if timeout is not None else settings.outreach_timeout_seconds

    def missing(self) -> list[str]:
        return unset(
            {
                "IMPROMPTU_SMTP_HOST": self.settings.smtp_host,
                "IMPROMPTU_OUTREACH_EMAIL_TO": self.settings.outreach_email_to,
            }
        )

    async def post(self, post: Post) -> Posted:
        try:
            message = announcement(post, self.settings.smtp_from, list(self.settings.outreach_email_to))
        except ValueError as error:  # the rendered text is not "Subject: ...\n\nbody", or a bad address
            raise PostRefused(f"e-mail announcement {post.key}: {error}") from None
        try:
            await send_email(self.settings, message, timeout=self.timeout)
        except RetryableError as error:
            raise _retryable(self._reason(error)) from None
        except PermanentError as error:
            raise _permanent(self._reason(error)) from None
        return Posted(remote_id=message["Message-ID"], url=None)

    async def find(self, post: Post) -> Posted | None:
        raise NotImplementedError("e-mail cannot tell whether a message went out (can_find is False)")

    async def delete(self, posted: Posted) -> None:
        raise NotImplementedError("a sent e-mail cannot be deleted (can_delete is False)")

    def _reason(self, error: Exception) -> str:
        """The error's text for this channel: the recipients' setting named right, the password never shown."""
        password = self.settings.smtp_password.get_secret_value() if self.settings.smtp_password else ""
        text = str(error).replace("IMPROMPTU_NOTIFY_EMAIL_TO", "IMPROMPTU_OUTREACH_EMAIL_TO")
        return redact(text, [password])


def _retryable(reason: str) -> RetryableError:
    # a timeout may come after the message was accepted: the outcome is unknown, so it stays a plain RetryableError
    return NotSent(reason) if _NOT_SENT.search(reason) else RetryableError(reason)


def _permanent(reason: str) -> PermanentError:
    if any(problem in reason for problem in _SETTINGS_PROBLEMS):
        return ChannelBroken(reason)
    if "refused the message" in reason:
        return PostRefused(reason)
    return PermanentError(reason)


def from_settings(settings: Settings) -> EmailChannel:
    return EmailChannel.from_settings(settings)


def email_parts(text: str) -> tuple[str, str]:
    """("subject", "body") from "Subject: ...", a blank line, then the body; ValueError says what is wrong."""
    first, _, rest = text.partition("\n")
    if not first.startswith("Subject:"):
        raise ValueError('the first line must be "Subject: ..."')
    subject = first.removeprefix("Subject:").strip()
    if not subject:
        raise ValueError("the subject is empty")
    if not rest.strip():
        raise ValueError("the body is empty")
    blank, _, body = rest.partition("\n")
    if blank.strip():
        raise ValueError("a blank line must follow the subject")
    return subject, body.strip("\n")


# --- the message --------------------------------------------------------------------------------------------------


def announcement(post: Post, sender: str, recipients: list[str]) -> EmailMessage:
    """The e-mail for `post`: its subject and body, and for scheduled/cancelled sessions the calendar invite."""
    subject, body = email_parts(post.text)
    message = EmailMessage()
    message["Subject"] = subject
    message["From"] = sender
    message["To"] = ", ".join(recipients)
    message["Date"] = email.utils.format_datetime(datetime.now(UTC))
    domain = email.utils.parseaddr(sender)[1].rpartition("@")[2] or "impromptu.invalid"
    message["Message-ID"] = email.utils.make_msgid(post.kind, domain=domain)
    message["X-Impromptu-Session"] = post.session.id
    message.set_content(body + "\n")
    invite = calendar_part(post, sender, recipients)
    if invite is not None:
        method, ics = invite
        message.add_alternative(ics, subtype="calendar", params={"method": method})  # str: no maintype
        message.add_attachment(  # turns the message into multipart/mixed, the alternative part first
            ics.encode("utf-8"),
            maintype="text",
            subtype="calendar",
            filename="invite.ics",
            params={"method": method, "charset": "UTF-8"},
        )
    return message


def calendar_part(post: Post, organizer: str, attendees: list[str]) -> tuple[str, str] | None:
    """(METHOD, iCalendar text) for the post, or None when it carries no invite."""
    if post.kind not in ("scheduled", "cancelled") or not post.session.ics.strip():
        return None
    cancel = post.kind == "cancelled"
    return invite(post.session.ics, organizer, attendees, cancel=cancel)


def invite(ics: str, organizer: str, attendees: list[str], *, cancel: bool = False) -> tuple[str, str]:
    """The session's invite as an iMIP REQUEST (or CANCEL): an organizer and attendees, as RFC 6047 requires."""
    calendar = icalendar.Calendar.from_ical(ics)
    method = "CANCEL" if cancel else "REQUEST"
    calendar.pop("METHOD", None)
    calendar.add("method", method)
    for event in calendar.walk("VEVENT"):
        _address(event, organizer, attendees)
        sequence = int(event.pop("SEQUENCE", 0))
        event.add("sequence", sequence + 1 if cancel else sequence)  # a cancellation supersedes the invite
        if cancel:
            event.pop("STATUS", None)
            event.add("status", "CANCELLED")
            event.pop("DTSTAMP", None)
            event.add("dtstamp", datetime.now(UTC))
    return method, calendar.to_ical().decode("utf-8")


def _address(event: icalendar.Component, organizer: str, attendees: list[str]) -> None:
    event.pop("ORGANIZER", None)
    event.pop("ATTENDEE", None)
    name, address = email.utils.parseaddr(organizer)
    event.add("organizer", f"mailto:{address or organizer}", parameters={"CN": name or "Impromptu"})
    for attendee in attendees:
        name, address = email.utils.parseaddr(attendee)
        parameters = {"ROLE": "REQ-PARTICIPANT", "PARTSTAT": "NEEDS-ACTION", "RSVP": "FALSE"}
        if name:
            parameters["CN"] = name
        # RSVP=FALSE: an announcement, not a meeting request that needs answers; the join link is the point
        event.add("attendee", f"mailto:{address or attendee}", parameters=parameters)
