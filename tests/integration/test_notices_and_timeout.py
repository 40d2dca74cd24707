"""Nobody hears of a proposal when no notice is configured: said at start (`notify.disabled`), on the ops page, and
each proposal logged with its link. A rule's `on_timeout` says what the clock does with an undecided proposal:
expire (as before) or auto_approve (through the same state machine and audit trail, unless the host is booked by
then). Against a real nats-server."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from faststream.nats import NatsBroker
from structlog.testing import capture_logs

from pipeline import bus
from pipeline.actions.service import Approvals
from pipeline.app import create_broker, start_stages
from pipeline.domain import approval
from pipeline.domain.live_rules import LiveRules
from pipeline.domain.notify import email_message, say_notice_status, slack_payload
from pipeline.domain.rules import load_rules
from pipeline.domain.sessions import propose
from pipeline.domain.slots import Slot
from pipeline.errors import ConfigError
from pipeline.messages import FacilitatorDecision, SessionProposal, utc_now
from pipeline.settings import FacilitatorLogin, Settings
from pipeline.web.auth import hash_password
from pipeline.web.server import create_web_app
from tests.integration.bus_helpers import models_on, seed_proposal
from tests.unit.conftest import make_content

pytestmark = pytest.mark.nats

PASSWORD = "olga's long password"


def a_proposal(
    n: int, *, on_timeout: str = "expire", facilitator: str | None = "ana", in_hours: float = 2
) -> SessionProposal:
    now = utc_now()
    content = make_content(title=f"Session {n}", native_id=str(n))
    plan = content.trigger.plan.model_copy(update={"on_timeout": on_timeout})
    content = content.model_copy(update={"trigger": content.trigger.model_copy(update={"plan": plan})})
    slot = Slot(facilitator=facilitator, starts_at=now + timedelta(hours=in_hours), reason="test")
    draft = propose(content, now, slot=slot, margin=timedelta(minutes=5))
    return draft.model_copy(update={"id": f"proposal-clock{n:04d}"})


def test_no_notice_configured_is_a_warning_naming_the_settings(settings: Settings) -> None:
    with capture_logs() as logs:
        status = say_notice_status(settings)

    assert status.disabled
    (warning,) = [e for e in logs if e["event"] == "notify.disabled"]
    assert warning["log_level"] == "warning"
    assert "IMPROMPTU_NOTIFY_SLACK_WEBHOOK" in warning["reason"] and "IMPROMPTU_SMTP_HOST" in warning["reason"]
    assert "IMPROMPTU_NOTIFY_EMAIL_TO" in warning["set"]


async def test_the_ops_page_says_notices_are_off(settings: Settings, client: NatsBroker) -> None:
    ops = settings.model_copy(
        update={"facilitator_logins": {"olga": FacilitatorLogin(password_hash=hash_password(PASSWORD), roles=["ops"])}}
    )
    app = create_web_app(ops, client, Approvals(client, ops, LiveRules.load(ops.rules_file)))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as http:
        form = await http.get("/login", params={"next": "/ops"})
        token = re.search(r'name="csrftoken" value="([^"]+)"', form.text)
        assert token is not None
        data = {"csrftoken": token.group(1), "name": "olga", "password": PASSWORD, "next": "/ops"}
        assert (await http.post("/login", data=data)).status_code == 303
        page = await http.get("/ops")
        status = await http.get("/ops/status.json")

    assert page.status_code == 200
    block = page.text[page.text.index('id="notices"') :][:800]
    assert "Off:" in block and "IMPROMPTU_NOTIFY_SLACK_WEBHOOK" in block and "IMPROMPTU_SMTP_HOST" in block
    assert status.json()["notices"]["channels"] == [] and "announced nowhere" in status.json()["notices"]["summary"]


async def test_each_new_proposal_is_logged_with_its_link(settings: Settings, client: NatsBroker) -> None:
    public = settings.model_copy(update={"public_url": "https://impromptu.example.org"})
    broker = create_broker(public)
    await start_stages(broker, public)
    try:
        with capture_logs() as logs:
            proposal = await seed_proposal(client)
    finally:
        await broker.stop()

    created = [e for e in logs if e["event"] == "proposal.created"]
    assert created and created[0]["url"] == f"https://impromptu.example.org/proposals/{proposal.id}"
    assert created[0]["notices"].startswith("none") and created[0]["on_timeout"] == "expire"


async def test_an_undecided_proposal_expires_by_default(client: NatsBroker) -> None:
    proposal = await approval.save_new(client, a_proposal(1))

    await approval.advance_by_clock(client, now=proposal.expires_at + timedelta(seconds=1))

    record = await approval.get_record(client, proposal.id)
    assert record.state == "expired" and record.decided_by is None
    assert await models_on(client, bus.DECISIONS.subject, FacilitatorDecision) == []


async def test_auto_approve_approves_through_the_state_machine_and_the_bus(client: NatsBroker) -> None:
    proposal = await approval.save_new(client, a_proposal(2, on_timeout="auto_approve"))

    before = await approval.advance_by_clock(client, now=proposal.expires_at - timedelta(seconds=1))
    moved = await approval.advance_by_clock(client, now=proposal.expires_at + timedelta(seconds=1))
    again = await approval.advance_by_clock(client, now=proposal.expires_at + timedelta(seconds=31))

    assert before == [] and [r.state for r in moved] == ["approved"] and again == []
    record = await approval.get_record(client, proposal.id)
    assert (record.state, record.decided_by) == ("approved", "clock")
    assert [(e.to_state, e.by, e.reason) for e in record.history] == [("approved", "clock", approval.AUTO_APPROVED)]
    decisions = await models_on(client, bus.DECISIONS.subject, FacilitatorDecision)
    assert [(d.proposal.id, d.decision, d.decided_by) for d in decisions] == [(proposal.id, "approved", "clock")]


async def test_auto_approve_does_not_double_book_the_host(client: NatsBroker) -> None:
    booked = await approval.save_new(client, a_proposal(3))
    await approval.decide(client, booked.id, "approved", by="ben")
    clashing = await approval.save_new(client, a_proposal(4, on_timeout="auto_approve", in_hours=2.5))

    await approval.advance_by_clock(client, now=clashing.expires_at + timedelta(seconds=1))

    record = await approval.get_record(client, clashing.id)
    assert record.state == "expired"
    assert "not approved automatically: ana is booked then (Live: Session 3" in record.history[-1].reason


def test_the_notices_say_what_happens_at_the_deadline() -> None:
    auto = a_proposal(5, on_timeout="auto_approve")
    slack = str(slack_payload(auto, "https://x/p"))
    mail = email_message(auto, "https://x/p", "impromptu@example.org", ["ana@example.org"])

    assert "approved automatically" in slack
    assert "approved automatically" in mail.get_body(("plain",)).get_content()
    assert "lapses" in str(slack_payload(a_proposal(6), "https://x/p"))


def test_a_bad_on_timeout_names_file_line_and_field(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text("topics: {}\nrules:\n  - name: r\n    session:\n      on_timeout: approve\n", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_rules(path)
    assert str(caught.value).startswith(f"{path}:5:19: rules.0.session.on_timeout: Input should be 'expire' or")

    path.write_text("topics: {}\nrules:\n  - name: r\n    session:\n      on_timeout: auto_approve\n", encoding="utf-8")
    rules = load_rules(path)
    assert rules.plan(rules.rules[0]).on_timeout == "auto_approve"
