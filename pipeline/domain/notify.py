"""Tell facilitators about a new proposal: a Slack incoming webhook and/or an e-mail, each with a link to it.

With IMPROMPTU_SLACK_SIGNING_SECRET the Slack notice also carries Approve / Reject buttons (answered by
`POST /slack/actions`, pipeline/web/approval/slack.py); a recipient whose address is a login's `email` gets a
notice of their own with one-click Approve / Reject links (signed, single-use, expiring: pipeline/web/approval/
links.py). With neither channel configured, `notice_status` says what to set (`notify.disabled` at start, the ops
page).

User-written text (share text, article title, summary) only ever arrives as data: escaped for Slack mrkdwn
(&, <, >), auto-escaped in the HTML e-mail, and never compiled as a template.
Failures are PermanentError (a person must act: revoked webhook, archived channel, wrong SMTP password, refused
recipient) or RetryableError (rate limit, 5xx, timeouts, a server that is down). The webhook URL is a secret
and the SMTP password too: neither ever appears in an error message or a log line (only the host does).
"""

from __future__ import annotations

import email.utils
import ssl
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote, urlsplit

import aiosmtplib
import httpx
import jinja2
import structlog
from pydantic import BaseModel, ConfigDict, Field

from pipeline import http_retry
from pipeline.errors import ImpromptuError, PermanentError, RetryableError
from pipeline.messages import SessionProposal, as_utc
from pipeline.redaction import printable, redact
from pipeline.session_time import when
from pipeline.settings import Settings
from pipeline.text import shorten

log = structlog.get_logger("pipeline.actions.notify")

TEMPLATES = Path(__file__).parent / "templates" / "notify"
SLACK_ENV = "IMPROMPTU_NOTIFY_SLACK_WEBHOOK"
SIGNING_ENV = "IMPROMPTU_SLACK_SIGNING_SECRET"
EMAIL_ENVS = "IMPROMPTU_SMTP_HOST and IMPROMPTU_NOTIFY_EMAIL_TO"
APPROVE_ACTION = "approve_proposal"
REJECT_ACTION = "reject_proposal"
REVIEW_ACTION = "review_proposal"
HEADER_LIMIT = 150  # Slack: header block text
TITLE_LIMIT = 200
SUMMARY_LIMIT = 500
SHARE_TEXT_LIMIT = 280
SUBJECT_TITLE_LIMIT = 120
SMTP_TIMEOUT = 30.0

_NEW_WEBHOOK = f"set {SLACK_ENV} to a new one"
_OTHER_CHANNEL = f"set {SLACK_ENV} to a webhook for another channel"
SLACK_HINTS: dict[str, str] = {
    "invalid_payload": "Slack could not read the message; this is a bug in Impromptu's payload, please report it",
    "invalid_blocks": "Slack refused the message's blocks; this is a bug in Impromptu's payload, please report it",
    "invalid_blocks_format": "Slack refused the message's blocks; this is a bug in Impromptu's payload",
    "no_text": "the message had no text; this is a bug in Impromptu's payload, please report it",
    "action_prohibited": f"a Slack admin restricted posting to this channel; ask them to allow it or {_OTHER_CHANNEL}",
    "posting_to_general_channel_denied": f"only admins may post to this channel; {_OTHER_CHANNEL}",
    "no_service": f"the webhook URL was revoked; {_NEW_WEBHOOK}",
    "no_service_id": f"the webhook URL is not a valid webhook; {_NEW_WEBHOOK}",
    "no_team": f"the webhook's workspace no longer exists; {_NEW_WEBHOOK}",
    "team_disabled": f"the webhook's workspace is disabled; {_NEW_WEBHOOK}",
    "invalid_token": f"the webhook URL's token is invalid; {_NEW_WEBHOOK}",
    "channel_not_found": f"the webhook's channel was deleted; {_OTHER_CHANNEL}",
    "channel_is_archived": f"the webhook's channel is archived; unarchive it or {_OTHER_CHANNEL}",
}


class Notice(BaseModel):
    """What happened to one channel's notice about a proposal."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    channel: Literal["slack", "email"]
    status: Literal["sent", "failed", "skipped"]
    detail: str


class NoticeStatus(BaseModel):
    """How facilitators hear of a new proposal, and what to set for what is missing (start-up log, ops page)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    channels: list[str] = Field(description="Configured notice channels: slack, email.")
    missing: dict[str, str] = Field(description="Channel -> the settings that would turn it on.")
    slack_buttons: bool = Field(description="Slack notices carry Approve / Reject (the signing secret is set).")
    email_links: list[str] = Field(description="Logins whose e-mail notice carries one-click decision links.")

    @property
    def disabled(self) -> bool:
        return not self.channels

    def summary(self) -> str:
        if self.disabled:
            return (
                "new proposals are announced nowhere (only on /proposals and in the log): set "
                f"{SLACK_ENV} for Slack, or {EMAIL_ENVS} for e-mail"
            )
        said = []
        if "slack" in self.channels:
            said.append(
                "Slack" + (" with Approve / Reject" if self.slack_buttons else f" (buttons: set {SIGNING_ENV})")
            )
        if "email" in self.channels:
            links = f" with one-click links for {', '.join(self.email_links)}" if self.email_links else ""
            said.append(f"e-mail{links}")
        return "new proposals are sent by " + " and ".join(said)


def notice_status(settings: Settings) -> NoticeStatus:
    channels = notifiers(settings)
    missing = {}
    if "slack" not in channels:
        missing["slack"] = f"set {SLACK_ENV} (a Slack incoming webhook URL)"
    if "email" not in channels:
        missing["email"] = f"set {EMAIL_ENVS} (and IMPROMPTU_SMTP_PORT, _USERNAME, _PASSWORD, _FROM as needed)"
    return NoticeStatus(
        channels=channels,
        missing=missing,
        slack_buttons="slack" in channels and slack_buttons_on(settings),
        email_links=sorted(login for _, login in email_recipients(settings)[0]) if "email" in channels else [],
    )


def say_notice_status(settings: Settings) -> NoticeStatus:
    """Logged once at start: `notify.disabled` (a warning naming the settings) or `notify.enabled`."""
    status = notice_status(settings)
    if status.disabled:
        log.warning(
            "notify.disabled",
            reason=status.summary(),
            set=[SLACK_ENV, "IMPROMPTU_SMTP_HOST", "IMPROMPTU_NOTIFY_EMAIL_TO"],
        )
    else:
        log.info("notify.enabled", channels=status.channels, detail=status.summary(), missing=status.missing)
    return status


def slack_buttons_on(settings: Settings) -> bool:
    secret = settings.slack_signing_secret
    return secret is not None and bool(secret.get_secret_value().strip())


def email_recipients(settings: Settings) -> tuple[list[tuple[str, str]], list[str]]:
    """(address, login) of the recipients who are facilitator logins (their own notice, with decision links), and
    the other recipients (one shared notice with the page's link)."""
    by_address = {
        login.email.strip().lower(): name
        for name, login in sorted(settings.current_logins().items())
        if login.email and "facilitator" in login.roles
    }
    personal: list[tuple[str, str]] = []
    shared: list[str] = []
    for address in settings.notify_email_to:
        name = by_address.get(email.utils.parseaddr(address)[1].strip().lower())
        if name is None:
            shared.append(address)
        else:
            personal.append((address, name))
    return personal, shared


class SlackRateLimited(RetryableError):
    """Slack answered 429; `retry_after` is its Retry-After, in seconds, when it sent one."""

    def __init__(self, message: str, retry_after: float | None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


# --- what the notice says -------------------------------------------------------------------------------------


def proposal_link(settings: Settings, proposal_id: str) -> str:
    return f"{settings.base_url}/proposals/{proposal_id}"


def notifiers(settings: Settings) -> list[str]:
    """The channels that are configured: "slack" with a webhook, "email" with an SMTP host and recipients."""
    channels: list[str] = []
    if settings.notify_slack_webhook is not None and settings.notify_slack_webhook.get_secret_value().strip():
        channels.append("slack")
    if settings.smtp_host and settings.notify_email_to:
        channels.append("email")
    return channels


def _truncate(text: str, limit: int) -> str:
    """At most `limit` characters, cut at a word boundary when there is one, with an ellipsis."""
    return shorten(" ".join(text.split()), limit)


def slack_escape(text: str) -> str:
    """Slack's three control characters, as Slack documents: & < > become &amp; &lt; &gt;."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _slack_url(url: str) -> str:
    """A URL safe inside <url|label>: no raw <, >, | or spaces; & escaped as in all mrkdwn text."""
    return slack_escape(quote(url, safe=":/?#[]@!$&'()*+,;=%~"))


def _human(moment: datetime) -> str:
    moment = as_utc(moment)
    return f"{moment:%a} {moment.day} {moment:%b %Y}, {moment:%H:%M} UTC"


def _facts(proposal: SessionProposal, link: str) -> dict[str, Any]:
    """Everything a notice shows, as plain (unescaped) text."""
    content = proposal.content
    article, trigger = content.article, content.trigger
    if trigger.shared_by:
        sharers = ", ".join(
            sharer.name if sharer.name == sharer.handle else f"{sharer.name} ({sharer.handle})"
            for sharer in trigger.shared_by
        )
    else:
        sharers = trigger.share.sharer
    starts_at = as_utc(proposal.starts_at)
    return {
        "title": _truncate(article.title, TITLE_LIMIT) or proposal.title,
        "author": article.author,
        "summary": _truncate(article.summary, SUMMARY_LIMIT),
        "article_url": article.final_url,
        "sharers": sharers,
        "share_text": _truncate(trigger.share.text, SHARE_TEXT_LIMIT),
        "score": f"{trigger.score:.2f}",
        "rule": trigger.rule,
        "start_human": when(starts_at, proposal.timezone),  # "Fri 11 Dec, 09:00 CET (08:00 UTC)"
        "start_iso": starts_at.isoformat(),
        "start_hhmm": f"{starts_at:%H:%M}",
        "duration": proposal.duration_minutes,
        "channels": ", ".join(proposal.channels),
        "expires_human": _human(proposal.expires_at),
        "on_timeout": timeout_said(proposal),
        "link": link,
    }


def timeout_said(proposal: SessionProposal) -> str:
    """What happens when nobody decides by the deadline, as the notices and the proposal page say it."""
    if proposal.content.trigger.plan.on_timeout == "auto_approve":
        return "then it is approved automatically (the rule says on_timeout: auto_approve)"
    return "then it lapses and nothing is created"


def _plain(text: str) -> dict[str, str]:
    return {"type": "plain_text", "text": text}


def decision_buttons(proposal_id: str) -> list[dict[str, Any]]:
    """Approve / Reject: Slack posts the click to POST /slack/actions with the proposal's id as the value."""
    return [
        {
            "type": "button",
            "action_id": APPROVE_ACTION,
            "style": "primary",
            "text": _plain("Approve"),
            "value": proposal_id,
            "confirm": {
                "title": _plain("Approve this session?"),
                "text": _plain("The session is created and announced on its channels."),
                "confirm": _plain("Approve"),
                "deny": _plain("Not yet"),
            },
        },
        {
            "type": "button",
            "action_id": REJECT_ACTION,
            "style": "danger",
            "text": _plain("Reject"),
            "value": proposal_id,
            "confirm": {
                "title": _plain("Reject this session?"),
                "text": _plain("Recorded as rejected from Slack by you. To give another reason, use the page."),
                "confirm": _plain("Reject"),
                "deny": _plain("Keep it"),
            },
        },
    ]


def slack_payload(proposal: SessionProposal, link: str, *, buttons: bool = False) -> dict[str, Any]:
    """A Block Kit message for an incoming webhook: what, who, when, a "Review proposal" link button and, with
    `buttons` (the app's signing secret is set), Approve / Reject."""
    facts = _facts(proposal, link)
    esc = {key: slack_escape(str(value)) for key, value in facts.items() if value is not None}
    by_author = f" by {esc['author']}" if facts["author"] else ""
    article = f"*<{_slack_url(facts['article_url'])}|{esc['title']}>*{by_author}"
    if facts["summary"]:
        article += f"\n{esc['summary']}"
    fields = [
        f"*Shared by*\n{esc['sharers']}" + (f"\n_“{esc['share_text']}”_" if facts["share_text"] else ""),
        f"*Score*\n{esc['score']} ({esc['rule']})",
        f"*Suggested start*\n{esc['start_human']}\n`{esc['start_iso']}`",
        f"*Duration*\n{facts['duration']} minutes",
    ]
    if facts["channels"]:
        fields.append(f"*Announce on*\n{esc['channels']}")
    fallback = (
        f"New session proposal: {esc['title']} (shared by {esc['sharers']}), "
        f"suggested start {esc['start_human']}. Review: <{_slack_url(link)}|Review proposal>"
    )
    return {
        "text": fallback,
        "unfurl_links": False,
        "unfurl_media": False,
        "blocks": [
            {
                "type": "header",
                # plain_text is not parsed as markup: shown as is, nothing to escape
                "text": {"type": "plain_text", "text": _truncate(f"New proposal: {facts['title']}", HEADER_LIMIT)},
            },
            {"type": "section", "text": {"type": "mrkdwn", "text": article, "verbatim": True}},
            {
                "type": "section",
                "fields": [{"type": "mrkdwn", "text": text, "verbatim": True} for text in fields],
            },
            {
                "type": "actions",
                "block_id": f"decide:{proposal.id}"[:255],
                "elements": [
                    *(decision_buttons(proposal.id) if buttons else []),
                    {
                        "type": "button",
                        "action_id": REVIEW_ACTION,
                        **({} if buttons else {"style": "primary"}),
                        "text": {"type": "plain_text", "text": "Review proposal"},
                        "url": link,
                    },
                ],
            },
            {
                "type": "context",
                "elements": [
                    {
                        "type": "mrkdwn",
                        "text": f"Decide by {esc['expires_human']}, {esc['on_timeout']} · "
                        f"proposal `{slack_escape(proposal.id)}`",
                        "verbatim": True,
                    }
                ],
            },
        ],
    }


def slack_outcome(proposal: SessionProposal, link: str, outcome: str) -> dict[str, Any]:
    """The notice as it reads once decided, for the click's response_url (replace_original): no buttons, the
    outcome ("Approved by ana at 14:02 UTC") in their place. `outcome` is plain text."""
    message = slack_payload(proposal, link, buttons=False)
    blocks = [block for block in message["blocks"] if block["type"] not in ("actions", "context")]
    blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": f"*{slack_escape(outcome)}*"}})
    blocks.append(
        {
            "type": "context",
            "elements": [{"type": "mrkdwn", "text": f"<{_slack_url(link)}|Open the proposal>", "verbatim": True}],
        }
    )
    return {"replace_original": True, "text": f"{outcome}: {slack_escape(proposal.title)}", "blocks": blocks}


def _environment(*, html: bool) -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        undefined=jinja2.StrictUndefined,
        autoescape=html,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


_TEXT = _environment(html=False)
_HTML = _environment(html=True)


class DecisionLinks(BaseModel):
    """One facilitator's one-click links in their e-mail notice (each opens a confirm page; a GET never decides)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    login: str
    approve: str
    reject: str
    expires_human: str


def email_message(
    proposal: SessionProposal,
    link: str,
    sender: str,
    recipients: list[str],
    decision_links: DecisionLinks | None = None,
) -> EmailMessage:
    """A text e-mail with an HTML alternative; the subject says what and when: "Proposal: <title> at HH:MM UTC".
    With `decision_links` (a notice to one facilitator), it carries their one-click Approve / Reject links."""
    facts = _facts(proposal, link) | {"decide": decision_links.model_dump() if decision_links else None}
    message = EmailMessage()
    message["Subject"] = f"Proposal: {_truncate(facts['title'], SUBJECT_TITLE_LIMIT)} at {facts['start_hhmm']} UTC"
    message["From"] = sender
    message["To"] = ", ".join(recipients)
    message["Date"] = email.utils.format_datetime(datetime.now(UTC))
    domain = email.utils.parseaddr(sender)[1].rpartition("@")[2] or "impromptu.invalid"
    message["Message-ID"] = email.utils.make_msgid("proposal", domain=domain)
    message["X-Impromptu-Proposal"] = proposal.id
    message.set_content(_TEXT.get_template("proposal.txt.j2").render(facts))
    message.add_alternative(_HTML.get_template("proposal.html.j2").render(facts), subtype="html")
    return message


# --- Slack ----------------------------------------------------------------------------------------------------


def _host(url: str) -> str:
    try:
        return urlsplit(url).hostname or "(no host)"
    except ValueError:
        return "(invalid URL)"


async def send_slack(
    webhook_url: str, payload: dict[str, Any], client: httpx.AsyncClient | None = None, timeout: float = 10
) -> None:
    """Post `payload` to a Slack incoming webhook. Slack answers 200 "ok", or a 4xx/5xx with an error string."""
    host = _host(webhook_url)
    parts = urlsplit(webhook_url) if host not in {"(no host)", "(invalid URL)"} else None
    secrets = [webhook_url, parts.path if parts and len(parts.path) > 1 else "", parts.query if parts else ""]
    where = f"Slack webhook at {host}"
    try:
        if client is None:
            async with httpx.AsyncClient(timeout=timeout, follow_redirects=False) as own:
                response = await own.post(webhook_url, json=payload)
        else:
            response = await client.post(webhook_url, json=payload, timeout=timeout)
    except httpx.UnsupportedProtocol:
        raise PermanentError(f"{where}: the URL is not http(s); {_NEW_WEBHOOK}") from None
    except httpx.InvalidURL:
        raise PermanentError(f"{where}: the URL is not valid; {_NEW_WEBHOOK}") from None
    except httpx.TimeoutException as error:
        kind = type(error).__name__
        raise RetryableError(f"{where} did not answer within {timeout:g}s ({kind})") from None
    except httpx.TransportError as error:
        detail = redact(printable(str(error), 200), secrets) or type(error).__name__
        raise RetryableError(f"{where} could not be reached: {detail}") from None

    status = response.status_code
    if 200 <= status < 300:
        log.info("notify.slack.sent", host=host)
        return
    code = redact(printable(response.text, 200), secrets) or "(no body)"
    if status == 429:
        retry_after = http_retry.retry_after_seconds(response.headers.get("retry-after"))
        wait = f"; retry after {retry_after:g}s" if retry_after is not None else ""
        raise SlackRateLimited(f"{where} is rate limiting (HTTP 429, {code}){wait}", retry_after)
    if status >= 500:
        raise RetryableError(f"{where} failed (HTTP {status}, {code}); Slack may be having trouble, will retry")
    hint = SLACK_HINTS.get(code, "Slack refused the message; check the webhook in Slack's app settings")
    raise PermanentError(f"{where} refused the notice (HTTP {status}) {code}: {hint}")


# --- e-mail ---------------------------------------------------------------------------------------------------


def _smtp_refusal(where: str, code: int, text: str, password: str, what: str) -> ImpromptuError:
    """SMTP reply codes: 4xx is transient (try again later), 5xx is permanent."""
    detail = redact(printable(text, 300), [password])
    kind = RetryableError if 400 <= code < 500 else PermanentError
    return kind(f"{where} {what}: {code} {detail}")


def _smtp_hint(detail: str) -> str:
    if "STARTTLS" in detail:
        return "; the server offers no STARTTLS: set IMPROMPTU_SMTP_STARTTLS=false only for a trusted local relay"
    if "AUTH" in detail:
        return "; the server offers no login (some offer it only after STARTTLS): check IMPROMPTU_SMTP_USERNAME"
    return ""


async def _smtp_send(
    settings: Settings, message: EmailMessage, recipients: list[str] | None, timeout: float
) -> tuple[dict[str, aiosmtplib.SMTPResponse], bool]:
    """Send with aiosmtplib: implicit TLS on port 465, else STARTTLS when `smtp_starttls`; login if a user is set.
    Returns the recipients refused at RCPT (with the server's reply) and whether that was every one of them;
    raises RetryableError/PermanentError for what concerns the message as a whole (connection, login, sender, DATA).
    """
    if not settings.smtp_host:
        raise PermanentError("no SMTP server: set IMPROMPTU_SMTP_HOST")
    password = settings.smtp_password.get_secret_value() if settings.smtp_password else ""
    where = f"SMTP server {settings.smtp_host}:{settings.smtp_port}"
    implicit_tls = settings.smtp_port == 465
    try:
        refused, _ = await aiosmtplib.send(
            message,
            recipients=recipients,
            hostname=settings.smtp_host,
            port=settings.smtp_port,
            username=settings.smtp_username or None,
            password=password if settings.smtp_username else None,
            use_tls=implicit_tls,
            start_tls=False if implicit_tls else settings.smtp_starttls,
            timeout=timeout,
        )
    except aiosmtplib.SMTPRecipientsRefused as error:
        return {r.recipient: aiosmtplib.SMTPResponse(r.code, r.message) for r in error.recipients}, True
    except aiosmtplib.SMTPAuthenticationError as error:
        what = f"refused the login of {settings.smtp_username!r} (check IMPROMPTU_SMTP_USERNAME and _PASSWORD)"
        raise _smtp_refusal(where, error.code, error.message, password, what) from None
    except aiosmtplib.SMTPSenderRefused as error:
        what = f"refused the sender {error.sender!r} (check IMPROMPTU_SMTP_FROM)"
        raise _smtp_refusal(where, error.code, error.message, password, what) from None
    except aiosmtplib.SMTPConnectResponseError as error:
        raise _smtp_refusal(where, error.code, error.message, password, "refused the connection") from None
    except aiosmtplib.SMTPResponseException as error:
        raise _smtp_refusal(where, error.code, error.message, password, "refused the message") from None
    except aiosmtplib.SMTPTimeoutError:
        raise RetryableError(f"{where} did not answer within {timeout:g}s") from None
    except (aiosmtplib.SMTPConnectError, aiosmtplib.SMTPServerDisconnected) as error:
        if isinstance(error.__cause__, ssl.SSLCertVerificationError):
            raise PermanentError(f"{where}: its TLS certificate could not be verified ({error.__cause__})") from None
        detail = redact(printable(error.message, 200), [password])
        raise RetryableError(f"{where} could not be reached: {detail}") from None
    except ssl.SSLCertVerificationError as error:
        raise PermanentError(f"{where}: its TLS certificate could not be verified ({error.verify_message})") from None
    except OSError as error:
        raise RetryableError(f"{where} could not be reached: {error.strerror or type(error).__name__}") from None
    except aiosmtplib.SMTPException as error:  # STARTTLS or AUTH not offered, and the like: settings to fix
        detail = redact(printable(str(error), 200), [password])
        raise PermanentError(f"{where}: {detail}{_smtp_hint(detail)}") from None
    return refused, False


async def send_email(settings: Settings, message: EmailMessage, *, timeout: float = SMTP_TIMEOUT) -> None:
    """Send to the message's own recipients; refused by all of them, raises (4xx each: RetryableError), refused by
    some, logs `notify.email.partly_refused` (the others got it: retrying would send it to them again)."""
    refused, everyone = await _smtp_send(settings, message, None, timeout)
    where = f"SMTP server {settings.smtp_host}:{settings.smtp_port}"
    if everyone:
        each = "; ".join(
            f"{address}: {reply.code} {printable(reply.message, 200)}" for address, reply in refused.items()
        )
        kind = RetryableError if all(400 <= reply.code < 500 for reply in refused.values()) else PermanentError
        raise kind(f"{where} refused every recipient ({each}); check IMPROMPTU_NOTIFY_EMAIL_TO")
    if refused:
        log.warning(
            "notify.email.partly_refused",
            host=settings.smtp_host,
            refused={address: f"{reply.code} {printable(reply.message, 200)}" for address, reply in refused.items()},
        )
    log.info(
        "notify.email.sent",
        host=settings.smtp_host,
        recipients=len(email.utils.getaddresses(message.get_all("To", []))),
    )


async def deliver_email(
    settings: Settings, message: EmailMessage, recipients: list[str], *, timeout: float = SMTP_TIMEOUT
) -> dict[str, ImpromptuError]:
    """Send `message` to exactly `recipients` (the envelope; its To header may name more). Returns each recipient
    the server refused with the reason (4xx: RetryableError, 5xx: PermanentError); the others have it. Raises for
    the message as a whole, as `send_email` does."""
    refused, _ = await _smtp_send(settings, message, recipients, timeout)
    password = settings.smtp_password.get_secret_value() if settings.smtp_password else ""
    where = f"SMTP server {settings.smtp_host}:{settings.smtp_port}"
    log.info("notify.email.sent", host=settings.smtp_host, recipients=len(recipients) - len(refused))
    return {
        address: _smtp_refusal(
            where,
            reply.code,
            reply.message,
            password,
            f"refused the recipient {address} (check IMPROMPTU_NOTIFY_EMAIL_TO)",
        )
        for address, reply in refused.items()
    }


class EmailNotice(BaseModel):
    """One message of a proposal's e-mail notice: a facilitator's own (`login`: with their decision links), or the
    one the other recipients share."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    recipients: list[str]
    login: str | None = None


def email_notices(settings: Settings) -> list[EmailNotice]:
    personal, shared = email_recipients(settings)
    notices = [EmailNotice(recipients=[address], login=login) for address, login in personal]
    if shared:
        notices.append(EmailNotice(recipients=shared))
    return notices


async def send_email_notice(
    settings: Settings, proposal: SessionProposal, notice: EmailNotice, recipients: list[str]
) -> dict[str, ImpromptuError]:
    """Send `notice` to `recipients` (some of its own: those not yet told); what `deliver_email` returns."""
    from pipeline.domain.decision_links import decision_links  # imports notify: imported when used

    links = decision_links(settings, proposal, notice.login) if notice.login else None
    link = proposal_link(settings, proposal.id)
    message = email_message(proposal, link, settings.smtp_from, notice.recipients, links)
    return await deliver_email(settings, message, recipients)


# --- both -----------------------------------------------------------------------------------------------------


async def send_notice(
    settings: Settings, channel: str, proposal: SessionProposal, *, client: httpx.AsyncClient | None = None
) -> str:
    """Send one configured channel's notice; returns what was done, raises PermanentError/RetryableError."""
    link = proposal_link(settings, proposal.id)
    if channel == "slack" and settings.notify_slack_webhook is not None:
        webhook = settings.notify_slack_webhook.get_secret_value()
        await send_slack(webhook, slack_payload(proposal, link, buttons=slack_buttons_on(settings)), client)
        return f"posted to {_host(webhook)}"
    if channel == "email":  # unrecorded (the actions stage records each recipient's: `email_notice_once`)
        notices = email_notices(settings)
        refused: dict[str, ImpromptuError] = {}
        for notice in notices:
            refused |= await send_email_notice(settings, proposal, notice, notice.recipients)
        everyone = [address for notice in notices for address in notice.recipients]
        if refused and len(refused) == len(everyone):
            kind = RetryableError if all(isinstance(e, RetryableError) for e in refused.values()) else PermanentError
            raise kind("; ".join(str(error) for error in refused.values()))
        if refused:
            log.warning("notify.email.partly_refused", refused={a: str(e) for a, e in refused.items()})
        personal = sum(1 for notice in notices if notice.login)
        with_links = f", {personal} with decision links" if personal else ""
        return f"sent to {len(everyone) - len(refused)} recipient(s){with_links}"
    raise PermanentError(f"notice channel {channel!r} is not configured")


async def notify(
    settings: Settings, proposal: SessionProposal, *, client: httpx.AsyncClient | None = None
) -> list[Notice]:
    """Tell facilitators on every configured channel; one channel failing does not stop the other.

    Never raises an ImpromptuError: each channel's outcome is a Notice (retrying a whole message would resend the
    notice on the channel that already worked).
    """
    configured = notifiers(settings)
    skipped = {
        "slack": f"{SLACK_ENV} is not set",
        "email": "IMPROMPTU_SMTP_HOST or IMPROMPTU_NOTIFY_EMAIL_TO is not set",
    }
    notices: list[Notice] = []
    for channel in ("slack", "email"):
        if channel not in configured:
            notices.append(Notice(channel=channel, status="skipped", detail=skipped[channel]))
            continue
        try:
            detail = await send_notice(settings, channel, proposal, client=client)
            notices.append(Notice(channel=channel, status="sent", detail=detail))
        except ImpromptuError as error:
            notices.append(Notice(channel=channel, status="failed", detail=str(error)))
    for notice in notices:
        log.info("notify.result", proposal_id=proposal.id, **notice.model_dump())
    return notices
