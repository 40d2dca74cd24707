"""An e-mail notice goes to each recipient once, on the real bus and a real SMTP server: a recipient refused for now
(4xx) is sent to on the stage's retry without sending again to those who already have theirs; one refused for good
(5xx) is recorded and logged with the server's reason while the others get theirs, once."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from faststream.nats import NatsBroker
from pydantic import SecretStr
from structlog.testing import capture_logs

from pipeline import bus, stores
from pipeline.actions import NoticeRecord, email_notice_key
from pipeline.settings import FacilitatorLogin, Settings
from tests.integration.bus_helpers import consumer, running_stages, wait_until
from tests.integration.test_decide_from_notices import a_proposal
from tests.smtp_server import SmtpServer, smtp_server

pytestmark = pytest.mark.nats

ANA, BEN, TEAM = "Ana <ana@example.org>", "ben@example.org", "team@example.org"


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    with smtp_server({}) as server:
        yield server


def _mailing(settings: Settings, smtp: SmtpServer) -> Settings:
    """Ana and Ben are facilitator logins (a notice each, with their links); the team address shares one."""
    return settings.model_copy(
        update={
            "facilitator_logins": {
                "ana": FacilitatorLogin(email="ana@example.org"),
                "ben": FacilitatorLogin(email="ben@example.org"),
            },
            "public_url": "https://impromptu.example.org",
            "web_secret": SecretStr("a web secret of at least thirty-two characters"),
            "smtp_host": "127.0.0.1",
            "smtp_port": smtp.port,
            "smtp_starttls": False,
            "notify_email_to": [ANA, BEN, TEAM],
        }
    )


async def _records(client: NatsBroker, proposal_id: str) -> dict[str, NoticeRecord]:
    kv = await stores.bucket(client, stores.OUTREACH)
    found = await stores.scan(kv, f"notify.{proposal_id}.>")
    return {entry.key: NoticeRecord.model_validate_json(entry.value or b"") for entry in found}


async def _settled(client: NatsBroker, proposal_id: str, keys: set[str]) -> bool:
    records = await _records(client, proposal_id)
    info = await consumer(client, "actions-notify")
    done = set(records) >= keys and all(records[key].state != "sending" for key in keys)
    return done and info.num_pending == 0 and info.num_ack_pending == 0


async def test_a_recipient_refused_for_now_gets_it_on_the_retry_and_nobody_gets_it_twice(
    settings: Settings, client: NatsBroker, smtp: SmtpServer
) -> None:
    smtp.mailbox.rcpt_replies[BEN] = ["451 4.7.1 Greylisted, try again later"]  # Ben's first attempt only
    proposal = a_proposal(1)
    keys = {email_notice_key(proposal.id, address) for address in (ANA, BEN, TEAM)}
    async with running_stages(_mailing(settings, smtp)):
        with capture_logs() as logs:
            await bus.publish(client, bus.PROPOSALS_CREATED, proposal)
            await wait_until(lambda: _settled(client, proposal.id, keys), what="every recipient's notice recorded")

    assert smtp.mailbox.rcpt_replies[BEN] == []  # the 451 was given: Ben was sent to twice, the first refused
    assert smtp.mailbox.received_by() == {"ana@example.org": 1, "ben@example.org": 1, "team@example.org": 1}
    assert any(e["event"] == "notify.retrying" and e.get("recipient") == BEN for e in logs)
    records = await _records(client, proposal.id)
    assert set(records) == keys and {r.state for r in records.values()} == {"sent"}
    assert not any("example.org" in key for key in records)  # keys hold a digest, never the address


async def test_a_recipient_refused_for_good_is_reported_and_the_others_get_theirs_once(
    settings: Settings, client: NatsBroker, smtp: SmtpServer
) -> None:
    smtp.mailbox.rcpt_replies[BEN] = ["550 5.1.1 No such user here"]
    proposal = a_proposal(2)
    keys = {email_notice_key(proposal.id, address) for address in (ANA, BEN, TEAM)}
    async with running_stages(_mailing(settings, smtp)):
        with capture_logs() as logs:
            await bus.publish(client, bus.PROPOSALS_CREATED, proposal)
            await wait_until(lambda: _settled(client, proposal.id, keys), what="every recipient's notice recorded")

    assert smtp.mailbox.received_by() == {"ana@example.org": 1, "team@example.org": 1}
    records = await _records(client, proposal.id)
    refused = records[email_notice_key(proposal.id, BEN)]
    assert refused.state == "failed" and "550" in refused.detail and "No such user here" in refused.detail
    assert "ben@example.org" in refused.detail  # the reason names whom it concerns
    assert records[email_notice_key(proposal.id, ANA)].state == records[email_notice_key(proposal.id, TEAM)].state
    assert records[email_notice_key(proposal.id, TEAM)].state == "sent"
    failed = [e for e in logs if e["event"] == "notify.failed"]
    assert len(failed) == 1 and failed[0]["recipient"] == BEN and "No such user here" in failed[0]["reason"]
    info = await bus.jetstream(client).stream_info(bus.STREAM, subjects_filter=">")
    assert not any(s.startswith(bus.DEAD_LETTERS) for s in info.state.subjects or {})  # the proposal goes on


async def test_a_proposal_told_by_e_mail_before_records_per_recipient_is_not_told_again(
    settings: Settings, client: NatsBroker, smtp: SmtpServer
) -> None:
    proposal = a_proposal(3)
    kv = await stores.bucket(client, stores.OUTREACH)
    told = NoticeRecord(state="sent", detail="sent to 3 recipient(s)")
    await kv.put(f"notify.{proposal.id}.email", told.model_dump_json().encode())  # the record per channel
    async with running_stages(_mailing(settings, smtp)):
        await bus.publish(client, bus.PROPOSALS_CREATED, proposal)
        await wait_until(lambda: _handled(client), what="the proposal to be handled")

    assert smtp.mailbox.received_by() == {}
    assert await _records(client, proposal.id) == {f"notify.{proposal.id}.email": told}


async def _handled(client: NatsBroker) -> bool:
    info = await consumer(client, "actions-notify")
    return info.delivered.consumer_seq >= 1 and info.num_pending == 0 and info.num_ack_pending == 0
