"""Deciding from a notice, against a real nats-server: Slack's Approve / Reject (`POST /slack/actions`, signed with the
app's signing secret, the message updated through a local stand-in for Slack's response_url) and the e-mail's
one-click links (signed, single-use, expiring; a GET never decides), each through the same state machine and audit
trail as the approval pages."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import time
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse
from faststream.nats import NatsBroker
from pydantic import SecretStr

from pipeline import bus
from pipeline.actions.service import Approvals
from pipeline.domain import approval
from pipeline.domain.decision_links import decision_links
from pipeline.domain.live_rules import LiveRules
from pipeline.domain.notify import APPROVE_ACTION, REJECT_ACTION, decision_buttons, send_notice, slack_payload
from pipeline.domain.sessions import propose
from pipeline.domain.slots import Slot
from pipeline.messages import FacilitatorDecision, SessionProposal, utc_now
from pipeline.settings import FacilitatorLogin, Settings
from pipeline.web.approval.slack import slack_headers
from pipeline.web.server import create_web_app
from tests.integration.bus_helpers import models_on, wait_until
from tests.peers import serve
from tests.smtp_server import Mailbox, smtp_server
from tests.unit.conftest import make_content

pytestmark = pytest.mark.nats

SIGNING_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
LOGINS = {
    "ana": FacilitatorLogin(slack_user_id="U0ANA", email="ana@example.org"),
    "ben": FacilitatorLogin(slack_user_id="U0BEN"),
    "olga": FacilitatorLogin(slack_user_id="U0OLGA", roles=["ops"]),  # not a facilitator: may not decide
}


def a_proposal(n: int = 1) -> SessionProposal:
    now = utc_now()
    slot = Slot(facilitator=None, starts_at=now + timedelta(hours=2), reason="test")
    draft = propose(make_content(title=f"Session {n}", native_id=str(n)), now, slot=slot, margin=timedelta(minutes=5))
    return draft.model_copy(update={"id": f"proposal-notice{n:04d}"})


@pytest.fixture
def slack_side() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A stand-in for Slack's response_url: keeps what the pipeline posts to it."""
    app = FastAPI()
    received: list[dict[str, Any]] = []

    @app.post("/actions/T1/123/abc")
    async def response_url(request: Request) -> PlainTextResponse:
        received.append(await request.json())
        return PlainTextResponse("ok")

    with serve(app) as url:
        yield url + "/actions/T1/123/abc", received


@pytest.fixture
def notice_settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={
            "facilitator_logins": LOGINS,
            "slack_signing_secret": SecretStr(SIGNING_SECRET),
            "public_url": "https://impromptu.example.org",
            "web_secret": SecretStr("a web secret of at least thirty-two characters"),
        }
    )


@pytest.fixture
async def http(notice_settings: Settings, client: NatsBroker) -> AsyncIterator[httpx.AsyncClient]:
    approvals = Approvals(client, notice_settings, LiveRules.load(notice_settings.rules_file))
    app = create_web_app(notice_settings, client, approvals)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="https://impromptu.example.org", timeout=20) as http:
        yield http


def click(proposal_id: str, action_id: str, user_id: str, response_url: str) -> bytes:
    """A block_actions payload shaped as Slack documents it, form-encoded as Slack sends it."""
    payload = {
        "type": "block_actions",
        "user": {"id": user_id, "username": "someone", "name": "someone", "team_id": "T1"},
        "api_app_id": "A1",
        "token": "legacy-verification-token",
        "container": {"type": "message", "message_ts": "1.2", "channel_id": "C1", "is_ephemeral": False},
        "trigger_id": "1.2.3",
        "team": {"id": "T1", "domain": "example"},
        "channel": {"id": "C1", "name": "facilitators"},
        "message": {"type": "message", "text": "New session proposal", "ts": "1.2", "blocks": []},
        "response_url": response_url,
        "actions": [
            {
                "action_id": action_id,
                "block_id": f"decide:{proposal_id}",
                "text": {"type": "plain_text", "text": "Approve"},
                "value": proposal_id,
                "type": "button",
                "action_ts": "1.3",
            }
        ],
    }
    return urlencode({"payload": json.dumps(payload)}).encode()


def signed(body: bytes, *, at: float | None = None, secret: str = SIGNING_SECRET) -> dict[str, str]:
    stamp = str(int(at if at is not None else time.time()))
    return {**slack_headers(secret.encode(), body, stamp), "Content-Type": "application/x-www-form-urlencoded"}


async def test_slack_notice_carries_approve_and_reject_only_with_a_signing_secret() -> None:
    proposal = a_proposal()
    with_buttons = slack_payload(proposal, "https://x/proposals/1", buttons=True)
    without = slack_payload(proposal, "https://x/proposals/1", buttons=False)

    (actions,) = [b for b in with_buttons["blocks"] if b["type"] == "actions"]
    by_id = {e["action_id"]: e for e in actions["elements"]}
    assert by_id[APPROVE_ACTION]["value"] == by_id[REJECT_ACTION]["value"] == proposal.id
    assert by_id[APPROVE_ACTION]["type"] == "button" and by_id[REJECT_ACTION]["style"] == "danger"
    (plain,) = [b for b in without["blocks"] if b["type"] == "actions"]
    assert [e["action_id"] for e in plain["elements"]] == ["review_proposal"]
    assert decision_buttons(proposal.id) == actions["elements"][:2]


async def test_a_click_without_a_valid_signature_is_401_and_changes_nothing(
    http: httpx.AsyncClient, client: NatsBroker, slack_side: tuple[str, list[dict[str, Any]]]
) -> None:
    response_url, replies = slack_side
    proposal = await approval.save_new(client, a_proposal())
    body = click(proposal.id, APPROVE_ACTION, "U0ANA", response_url)
    form = {"Content-Type": "application/x-www-form-urlencoded"}

    unsigned = await http.post("/slack/actions", content=body, headers=form)
    wrong_secret = await http.post("/slack/actions", content=body, headers=signed(body, secret="not the secret"))
    stale = await http.post("/slack/actions", content=body, headers=signed(body, at=time.time() - 301))
    altered = await http.post("/slack/actions", content=body.replace(b"U0ANA", b"U0BEN"), headers=signed(body))

    for refused in (unsigned, wrong_secret, stale, altered):
        assert refused.status_code == 401, refused.text
    assert "more than 300 s" in stale.json()["detail"]
    record = await approval.get_record(client, proposal.id)
    assert record.state == "proposed" and record.history == [] and replies == []


async def test_a_linked_facilitator_approves_from_slack_once_and_the_message_shows_it(
    http: httpx.AsyncClient, client: NatsBroker, slack_side: tuple[str, list[dict[str, Any]]]
) -> None:
    response_url, replies = slack_side
    proposal = await approval.save_new(client, a_proposal())
    body = click(proposal.id, APPROVE_ACTION, "U0ANA", response_url)
    headers = signed(body)

    first = await http.post("/slack/actions", content=body, headers=headers)
    replay = await http.post("/slack/actions", content=body, headers=headers)  # the same request again

    assert first.status_code == replay.status_code == 200
    record = await approval.get_record(client, proposal.id)
    assert record.state == "approved" and record.decided_by == "ana"
    assert [(e.to_state, e.by) for e in record.history] == [("approved", "ana")]  # decided once, in the audit trail
    await wait_until(lambda: _replies(replies, 1), what="the notice to be updated")
    update = replies[0]
    assert update["replace_original"] is True
    assert "Approved by ana" in json.dumps(update["blocks"])
    assert all(b["type"] != "actions" for b in update["blocks"])  # no buttons left to click
    decisions = await models_on(client, bus.DECISIONS.subject, FacilitatorDecision)
    assert [(d.proposal.id, d.decision, d.decided_by) for d in decisions] == [(proposal.id, "approved", "ana")]


async def test_reject_from_slack_records_who_and_why(
    http: httpx.AsyncClient, client: NatsBroker, slack_side: tuple[str, list[dict[str, Any]]]
) -> None:
    response_url, replies = slack_side
    proposal = await approval.save_new(client, a_proposal())
    body = click(proposal.id, REJECT_ACTION, "U0BEN", response_url)

    answer = await http.post("/slack/actions", content=body, headers=signed(body))

    assert answer.status_code == 200
    record = await approval.get_record(client, proposal.id)
    assert (record.state, record.decided_by, record.reason) == ("rejected", "ben", "rejected from Slack by ben")
    await wait_until(lambda: _replies(replies, 1), what="the notice to be updated")
    assert "Rejected by ben" in json.dumps(replies[0]["blocks"])


async def test_an_unknown_slack_user_is_refused_with_a_reason_only_they_see(
    http: httpx.AsyncClient, client: NatsBroker, slack_side: tuple[str, list[dict[str, Any]]]
) -> None:
    response_url, replies = slack_side
    proposal = await approval.save_new(client, a_proposal())
    stranger = click(proposal.id, APPROVE_ACTION, "U0STRANGER", response_url)
    ops_only = click(proposal.id, APPROVE_ACTION, "U0OLGA", response_url)

    for body in (stranger, ops_only):
        assert (await http.post("/slack/actions", content=body, headers=signed(body))).status_code == 200

    await wait_until(lambda: _replies(replies, 2), what="both refusals to be said")
    assert all(r["response_type"] == "ephemeral" and r["replace_original"] is False for r in replies)
    assert "U0STRANGER" in replies[0]["text"] and "impromptu facilitators link" in replies[0]["text"]
    record = await approval.get_record(client, proposal.id)
    assert record.state == "proposed" and record.history == []


async def test_a_click_after_someone_decided_on_the_page_says_so_and_changes_nothing(
    http: httpx.AsyncClient, client: NatsBroker, slack_side: tuple[str, list[dict[str, Any]]]
) -> None:
    response_url, replies = slack_side
    proposal = await approval.save_new(client, a_proposal())
    await approval.decide(client, proposal.id, "rejected", by="ben", reason="off topic")
    body = click(proposal.id, APPROVE_ACTION, "U0ANA", response_url)

    assert (await http.post("/slack/actions", content=body, headers=signed(body))).status_code == 200

    await wait_until(lambda: _replies(replies, 2), what="the refusal and the updated notice")
    assert "already rejected (by ben" in replies[0]["text"]
    assert replies[1]["replace_original"] is True
    record = await approval.get_record(client, proposal.id)
    assert record.state == "rejected" and [e.by for e in record.history] == ["ben"]


async def _replies(replies: list[dict[str, Any]], count: int) -> bool:
    return len(replies) >= count


# --- e-mail ----------------------------------------------------------------------------------------------------

LINK = re.compile(r"https://impromptu\.example\.org/decide/[A-Za-z0-9_.\-]+")


@pytest.fixture
def mailbox() -> Iterator[tuple[int, Mailbox]]:
    with smtp_server({}) as server:
        yield server.port, server.mailbox


async def mailed_links(notice_settings: Settings, mailbox: tuple[int, Mailbox], proposal: SessionProposal) -> list[str]:
    port, box = mailbox
    mail = notice_settings.model_copy(
        update={
            "smtp_host": "127.0.0.1",
            "smtp_port": port,
            "smtp_starttls": False,
            "notify_email_to": ["Ana <ana@example.org>", "team@example.org"],
        }
    )
    detail = await send_notice(mail, "email", proposal)
    assert detail == "sent to 2 recipient(s), 1 with decision links"
    personal, shared = sorted(box.messages(), key=lambda m: m["To"])
    assert personal["To"] == "Ana <ana@example.org>" and shared["To"] == "team@example.org"
    assert not LINK.search(shared.get_body(("plain",)).get_content())  # not a login: no links that decide
    links = LINK.findall(personal.get_body(("plain",)).get_content())
    assert links == LINK.findall(personal.get_body(("html",)).get_content())
    return links


async def test_an_email_link_asks_first_and_then_decides_once_as_its_facilitator(
    http: httpx.AsyncClient, client: NatsBroker, notice_settings: Settings, mailbox: tuple[int, Mailbox]
) -> None:
    proposal = await approval.save_new(client, a_proposal())
    approve, reject = await mailed_links(notice_settings, mailbox, proposal)
    path = urlsplit(approve).path

    scanned = await http.get(path)  # a mail scanner, then the person, open it
    opened = await http.get(path)
    assert scanned.status_code == opened.status_code == 200
    assert "text/html" in opened.headers["content-type"] and "Approve this session?" in opened.text
    assert f'action="{path}"' in opened.text and "as ana" in opened.text
    assert (await approval.get_record(client, proposal.id)).history == []  # a GET never decides

    twice = await asyncio.gather(http.post(path), http.post(path))  # a double click, two tabs

    assert sorted(r.status_code for r in twice) == [200, 409]
    done = next(r for r in twice if r.status_code == 200)
    assert "Approved as ana" in done.text
    record = await approval.get_record(client, proposal.id)
    assert [(e.to_state, e.by) for e in record.history] == [("approved", "ana")]

    again = await http.get(path)
    assert again.status_code == 409 and "already used" in again.text
    other = await http.post(urlsplit(reject).path)
    assert other.status_code == 409 and "already approved (by ana" in other.text
    assert (await approval.get_record(client, proposal.id)).state == "approved"


async def test_a_reject_link_takes_a_reason_on_its_confirm_page(
    http: httpx.AsyncClient, client: NatsBroker, notice_settings: Settings, mailbox: tuple[int, Mailbox]
) -> None:
    proposal = await approval.save_new(client, a_proposal())
    _, reject = await mailed_links(notice_settings, mailbox, proposal)
    path = urlsplit(reject).path

    page = await http.get(path)
    assert page.status_code == 200 and 'name="reason"' in page.text
    done = await http.post(path, data={"reason": "we covered this last week"})

    assert done.status_code == 200
    record = await approval.get_record(client, proposal.id)
    assert (record.state, record.decided_by, record.reason) == ("rejected", "ana", "we covered this last week")


async def test_forged_and_expired_links_get_a_clear_page_and_decide_nothing(
    http: httpx.AsyncClient, client: NatsBroker, notice_settings: Settings
) -> None:
    proposal = await approval.save_new(client, a_proposal())
    good = urlsplit(decision_links(notice_settings, proposal, "ana").approve).path
    forged = good[:-3] + ("AAA" if not good.endswith("AAA") else "BBB")
    content, signature = good.removeprefix("/decide/").rsplit(".", 1)
    claims = json.loads(base64.urlsafe_b64decode(content + "=" * (-len(content) % 4)))
    assert claims["f"] == "ana"
    as_ben = "/decide/" + base64.urlsafe_b64encode(json.dumps({**claims, "f": "ben"}).encode()).decode().rstrip("=")
    as_ben += "." + signature  # the readable part changed, the signature kept: it no longer matches
    lapsed = proposal.model_copy(update={"expires_at": utc_now() - timedelta(minutes=1)})
    expired = urlsplit(decision_links(notice_settings, lapsed, "ana").approve).path

    for path, status, said in (
        (forged, 400, "This link is not valid"),
        (as_ben, 400, "This link is not valid"),
        (expired, 410, "This link has expired"),
        ("/decide/" + "x" * 5000, 400, "This link is not valid"),
    ):
        for answer in (await http.get(path), await http.post(path)):
            assert answer.status_code == status, (path, answer.text)
            assert "text/html" in answer.headers["content-type"] and said in answer.text
            assert "Traceback" not in answer.text
    assert (await approval.get_record(client, proposal.id)).history == []
