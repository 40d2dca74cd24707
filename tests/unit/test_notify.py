"""Telling facilitators about a proposal: Slack over real HTTP (a local webhook stand-in answering as Slack documents)
and e-mail over real SMTP (aiosmtpd on loopback), including every documented refusal."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse
from pydantic import SecretStr

from pipeline.domain.notify import (
    Notice,
    SlackRateLimited,
    email_message,
    notifiers,
    notify,
    proposal_link,
    send_email,
    send_slack,
    slack_payload,
)
from pipeline.domain.sessions import propose
from pipeline.errors import PermanentError, RetryableError
from pipeline.messages import SessionProposal
from pipeline.settings import Settings
from tests.peers import serve
from tests.smtp_server import SmtpServer, smtp_server
from tests.unit.conftest import NOW, make_content

HOSTILE = "<script>alert(1)</script>"
SECRET = "XoXoS3cr3tT0kenZZ"
PASSWORD = "hunter2-Pa55word"
BASE = "https://impromptu.example"
RECIPIENTS = ["ada@example.org", "grace@example.org"]


def proposal(**content: Any) -> SessionProposal:
    return propose(make_content(**content), NOW)


def settings(**fields: Any) -> Settings:
    return Settings(public_url=BASE, **fields)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def mrkdwn_texts(payload: dict[str, Any]) -> list[str]:
    texts = [payload["text"]]
    for block in payload["blocks"]:
        for part in [block.get("text"), *block.get("fields", []), *block.get("elements", [])]:
            if isinstance(part, dict) and part.get("type") == "mrkdwn":
                texts.append(part["text"])
    return texts


# --- what the notice says -------------------------------------------------------------------------------------


def test_proposal_link_is_under_the_public_url() -> None:
    assert proposal_link(settings(), "proposal-abc") == f"{BASE}/proposals/proposal-abc"
    assert proposal_link(Settings(public_url="https://x.example/app/"), "p") == "https://x.example/app/proposals/p"
    assert proposal_link(Settings(public_url=None, http_host="0.0.0.0", http_port=9000), "p").endswith(
        ":9000/proposals/p"
    )


def test_notifiers_lists_only_configured_channels() -> None:
    assert notifiers(settings()) == []
    assert notifiers(settings(notify_slack_webhook=SecretStr("https://hooks.slack.com/services/T/B/x"))) == ["slack"]
    assert notifiers(settings(smtp_host="smtp.example")) == []  # no one to write to
    assert notifiers(settings(notify_email_to=RECIPIENTS)) == []  # no server
    both = settings(
        notify_slack_webhook=SecretStr("https://hooks.slack.com/services/T/B/x"),
        smtp_host="smtp.example",
        notify_email_to=RECIPIENTS,
    )
    assert notifiers(both) == ["slack", "email"]


def test_slack_payload_is_block_kit_with_a_review_button() -> None:
    prop = proposal()
    link = proposal_link(settings(), prop.id)
    payload = slack_payload(prop, link)

    header, article, facts, actions, context = payload["blocks"]
    assert header["type"] == "header" and header["text"]["type"] == "plain_text"
    assert "Why eLearning Isn't Working" in header["text"]["text"] and len(header["text"]["text"]) <= 150
    assert article["type"] == "section"
    assert "Why eLearning Isn't Working" in article["text"]["text"] and "Josh Bersin" in article["text"]["text"]
    assert "Companies spend billions" in article["text"]["text"]
    fields = "\n".join(f["text"] for f in facts["fields"])
    assert "@britz" in fields and "0.90" in fields
    assert "Worth a read on leadership" in fields
    assert "10:46 UTC" in fields and "2025-03-04T10:46:00+00:00" in fields
    (button,) = actions["elements"]
    assert button["type"] == "button" and button["text"]["text"] == "Review proposal" and button["url"] == link
    assert context["type"] == "context"
    assert link in payload["text"] and "Why eLearning" in payload["text"]  # notification fallback


def test_slack_payload_escapes_user_text_and_truncates_the_summary() -> None:
    prop = proposal(title=f"<!channel> & {HOSTILE}", summary="<@U123> " + "word " * 400)
    payload = slack_payload(prop, "https://impromptu.example/proposals/p")
    for text in mrkdwn_texts(payload):
        assert "<!channel>" not in text and "<script>" not in text and "<@U123>" not in text
    article = payload["blocks"][1]["text"]["text"]
    assert "&lt;!channel&gt; &amp; &lt;script&gt;alert(1)&lt;/script&gt;" in article
    assert "&lt;@U123&gt;" in article
    assert len(article) < 1000 and article.endswith("…")
    assert payload["blocks"][0]["text"]["text"].startswith("New proposal: <!channel> & <script>")  # plain_text
    assert len(payload["blocks"][0]["text"]["text"]) <= 150


def test_email_has_subject_text_and_escaped_html() -> None:
    prop = proposal(title=HOSTILE, summary="Tom & Jerry {{ 7 * 7 }} {% raw %}")
    link = proposal_link(settings(), prop.id)
    message = email_message(prop, link, "impromptu@example.org", RECIPIENTS)
    assert message["Subject"] == f"Proposal: {HOSTILE} at 10:46 UTC"
    assert message["To"] == "ada@example.org, grace@example.org"
    text = message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    html = message.get_body(("html",)).get_content()  # type: ignore[union-attr]
    assert link in text and link in html
    assert HOSTILE in text and "{{ 7 * 7 }} {% raw %}" in text  # data, never compiled as a template
    assert HOSTILE not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "Tom &amp; Jerry {{ 7 * 7 }} {% raw %}" in html
    assert "2025-03-04T10:46:00+00:00" in text and "@britz" in html
    assert "Worth a read on leadership" in text and "Worth a read on leadership" in html


# --- Slack over HTTP ------------------------------------------------------------------------------------------

SLACK_ERRORS = {
    "invalid": (400, "invalid_payload"),
    "prohibited": (403, "action_prohibited"),
    "revoked": (404, "no_service"),
    "archived": (410, "channel_is_archived"),
    "unknown": (400, "something_new"),
    "ratelimited": (429, "rate_limited"),
    "broken": (500, "internal_error"),
    "unavailable": (503, "service_unavailable"),
}


@dataclass
class SlackStandIn:
    url: str
    received: list[dict[str, Any]] = field(default_factory=list)

    def webhook(self, case: str) -> str:
        return f"{self.url}/services/T0001/B0002/{case}-{SECRET}"


@pytest.fixture
def slack() -> Iterator[SlackStandIn]:
    app = FastAPI()
    received: list[dict[str, Any]] = []

    @app.post("/services/{team}/{bot}/{token}")
    async def hook(team: str, bot: str, token: str, request: Request) -> PlainTextResponse:
        assert token.endswith(SECRET)
        received.append(await request.json())
        case = token.removesuffix(f"-{SECRET}")
        if case == "slow":
            await asyncio.sleep(1.5)
        if case in SLACK_ERRORS:
            status, body = SLACK_ERRORS[case]
            headers = {"Retry-After": "7"} if status == 429 else {}
            return PlainTextResponse(body, status_code=status, headers=headers)
        return PlainTextResponse("ok")

    with serve(app) as url:
        yield SlackStandIn(url, received)


async def test_slack_posts_the_payload(slack: SlackStandIn) -> None:
    prop = proposal()
    link = proposal_link(settings(), prop.id)
    payload = slack_payload(prop, link)
    await send_slack(slack.webhook("ok"), payload)
    assert slack.received == [payload]
    (got,) = slack.received
    assert got["blocks"][0]["type"] == "header"
    assert [e["url"] for b in got["blocks"] if b["type"] == "actions" for e in b["elements"]] == [link]
    assert got["text"].startswith("New session proposal:")


async def test_slack_with_a_given_client(slack: SlackStandIn) -> None:
    async with httpx.AsyncClient() as client:
        await send_slack(slack.webhook("ok"), {"text": "hi"}, client)
    assert slack.received == [{"text": "hi"}]


@pytest.mark.parametrize(
    ("case", "code", "advice"),
    [
        ("invalid", "invalid_payload", "bug in Impromptu"),
        ("prohibited", "action_prohibited", "admin"),
        (
            "revoked",
            "no_service",
            "no_service: the webhook URL was revoked; set IMPROMPTU_NOTIFY_SLACK_WEBHOOK to a new",
        ),
        ("archived", "channel_is_archived", "unarchive it"),
        ("unknown", "something_new", "Slack refused the message"),
    ],
)
async def test_slack_refusals_are_permanent_and_say_what_to_do(
    slack: SlackStandIn, case: str, code: str, advice: str
) -> None:
    webhook = slack.webhook(case)
    with pytest.raises(PermanentError) as caught:
        await send_slack(webhook, {"text": "hi"})
    message = str(caught.value)
    assert not isinstance(caught.value, RetryableError)
    assert code in message and advice in message and f"HTTP {SLACK_ERRORS[case][0]}" in message
    assert "127.0.0.1" in message
    assert SECRET not in message and webhook not in message and "/services/" not in message


async def test_slack_rate_limit_is_retryable_with_retry_after(slack: SlackStandIn) -> None:
    with pytest.raises(SlackRateLimited) as caught:
        await send_slack(slack.webhook("ratelimited"), {"text": "hi"})
    assert isinstance(caught.value, RetryableError)
    assert caught.value.retry_after == 7
    assert "429" in str(caught.value) and SECRET not in str(caught.value)


@pytest.mark.parametrize("case", ["broken", "unavailable"])
async def test_slack_server_errors_are_retryable(slack: SlackStandIn, case: str) -> None:
    with pytest.raises(RetryableError) as caught:
        await send_slack(slack.webhook(case), {"text": "hi"})
    assert str(SLACK_ERRORS[case][0]) in str(caught.value) and SECRET not in str(caught.value)


async def test_slack_timeout_is_retryable(slack: SlackStandIn) -> None:
    with pytest.raises(RetryableError) as caught:
        await send_slack(slack.webhook("slow"), {"text": "hi"}, timeout=0.2)
    assert "did not answer" in str(caught.value) and SECRET not in str(caught.value)


async def test_slack_connection_refused_is_retryable() -> None:
    webhook = f"http://127.0.0.1:{free_port()}/services/T/B/{SECRET}"
    with pytest.raises(RetryableError) as caught:
        await send_slack(webhook, {"text": "hi"}, timeout=2)
    assert "could not be reached" in str(caught.value)
    assert SECRET not in str(caught.value) and "127.0.0.1" in str(caught.value)


async def test_slack_webhook_that_is_not_http_is_permanent() -> None:
    with pytest.raises(PermanentError) as caught:
        await send_slack(f"ftp://hooks.example/services/{SECRET}", {"text": "hi"})
    assert "IMPROMPTU_NOTIFY_SLACK_WEBHOOK" in str(caught.value) and SECRET not in str(caught.value)


# --- e-mail over SMTP -----------------------------------------------------------------------------------------


@pytest.fixture
def smtp(request: pytest.FixtureRequest) -> Iterator[SmtpServer]:
    """A real SMTP server on loopback. `@pytest.mark.parametrize("smtp", [{...}], indirect=True)` configures it."""
    with smtp_server(getattr(request, "param", {})) as server:
        yield server


def smtp_settings(port: int, **fields: Any) -> Settings:
    defaults: dict[str, Any] = {
        "smtp_host": "127.0.0.1",
        "smtp_port": port,
        "smtp_starttls": False,
        "smtp_from": "impromptu@example.org",
        "notify_email_to": RECIPIENTS,
    }
    return settings(**(defaults | fields))


async def test_email_is_delivered_with_link_and_escaping(smtp: SmtpServer) -> None:
    config = smtp_settings(smtp.port)
    prop = proposal(title=HOSTILE)
    link = proposal_link(config, prop.id)
    await send_email(config, email_message(prop, link, config.smtp_from, config.notify_email_to))

    (envelope,) = smtp.mailbox.envelopes
    assert envelope.mail_from == "impromptu@example.org"
    assert envelope.rcpt_tos == RECIPIENTS
    (got,) = smtp.mailbox.messages()
    assert got["Subject"] == f"Proposal: {HOSTILE} at 10:46 UTC"
    assert got["To"] == ", ".join(RECIPIENTS)
    text = got.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    html = got.get_body(("html",)).get_content()  # type: ignore[union-attr]
    assert link in text and link in html
    assert HOSTILE in text
    assert HOSTILE not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html


@pytest.mark.parametrize("smtp", [{"reject_auth": True}], indirect=True)
async def test_email_login_refused_is_permanent_without_the_password(smtp: SmtpServer) -> None:
    config = smtp_settings(smtp.port, smtp_username="impromptu", smtp_password=SecretStr(PASSWORD))
    message = email_message(proposal(), "https://impromptu.example/proposals/p", config.smtp_from, RECIPIENTS)
    with pytest.raises(PermanentError) as caught:
        await send_email(config, message)
    text = str(caught.value)
    assert not isinstance(caught.value, RetryableError)
    assert "535" in text and "'impromptu'" in text
    assert PASSWORD not in text and PASSWORD not in repr(caught.value.args)
    assert smtp.logins and smtp.logins[0][1] == PASSWORD.encode()  # the login was really tried
    assert smtp.mailbox.envelopes == []


@pytest.mark.parametrize("smtp", [{"rcpt_reply": "550 5.1.1 No such user here"}], indirect=True)
async def test_email_recipients_refused_is_permanent(smtp: SmtpServer) -> None:
    config = smtp_settings(smtp.port)
    message = email_message(proposal(), "https://impromptu.example/proposals/p", config.smtp_from, RECIPIENTS)
    with pytest.raises(PermanentError) as caught:
        await send_email(config, message)
    assert "550" in str(caught.value) and "ada@example.org" in str(caught.value)
    assert "IMPROMPTU_NOTIFY_EMAIL_TO" in str(caught.value)


@pytest.mark.parametrize("smtp", [{"rcpt_reply": "451 4.3.0 Try again later"}], indirect=True)
async def test_email_transient_refusal_is_retryable(smtp: SmtpServer) -> None:
    config = smtp_settings(smtp.port)
    message = email_message(proposal(), "https://impromptu.example/proposals/p", config.smtp_from, RECIPIENTS)
    with pytest.raises(RetryableError) as caught:
        await send_email(config, message)
    assert "451" in str(caught.value)


async def test_email_starttls_required_but_not_offered_is_permanent(smtp: SmtpServer) -> None:
    config = smtp_settings(smtp.port, smtp_starttls=True)
    message = email_message(proposal(), "https://impromptu.example/proposals/p", config.smtp_from, RECIPIENTS)
    with pytest.raises(PermanentError) as caught:
        await send_email(config, message)
    assert "STARTTLS" in str(caught.value) and "IMPROMPTU_SMTP_STARTTLS" in str(caught.value)
    assert smtp.mailbox.envelopes == []


async def test_email_connection_refused_is_retryable() -> None:
    config = smtp_settings(free_port(), smtp_username="impromptu", smtp_password=SecretStr(PASSWORD))
    message = email_message(proposal(), "https://impromptu.example/proposals/p", config.smtp_from, RECIPIENTS)
    with pytest.raises(RetryableError) as caught:
        await send_email(config, message, timeout=5)
    assert "could not be reached" in str(caught.value) and PASSWORD not in str(caught.value)


async def test_email_without_a_server_is_permanent() -> None:
    message = email_message(proposal(), "https://impromptu.example/proposals/p", "a@example.org", RECIPIENTS)
    with pytest.raises(PermanentError, match="IMPROMPTU_SMTP_HOST"):
        await send_email(settings(), message)


# --- both -----------------------------------------------------------------------------------------------------


async def test_notify_sends_on_every_configured_channel(slack: SlackStandIn, smtp: SmtpServer) -> None:
    config = smtp_settings(smtp.port, notify_slack_webhook=SecretStr(slack.webhook("ok")))
    prop = proposal()
    notices = await notify(config, prop)
    assert [(n.channel, n.status) for n in notices] == [("slack", "sent"), ("email", "sent")]
    link = proposal_link(config, prop.id)
    assert slack.received[0]["blocks"][3]["elements"][0]["url"] == link
    (got,) = smtp.mailbox.messages()
    assert link in got.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert all(SECRET not in n.detail for n in notices)


async def test_notify_reports_one_failure_and_still_sends_the_other(slack: SlackStandIn, smtp: SmtpServer) -> None:
    config = smtp_settings(smtp.port, notify_slack_webhook=SecretStr(slack.webhook("revoked")))
    slack_notice, email_notice = await notify(config, proposal())
    assert slack_notice.status == "failed" and "no_service" in slack_notice.detail
    assert SECRET not in slack_notice.detail
    assert email_notice == Notice(channel="email", status="sent", detail="sent to 2 recipient(s)")


async def test_notify_skips_what_is_not_configured() -> None:
    notices = await notify(settings(), proposal())
    assert [(n.channel, n.status) for n in notices] == [("slack", "skipped"), ("email", "skipped")]
