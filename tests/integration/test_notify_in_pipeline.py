"""Facilitators are told of each new proposal by the running pipeline: a Slack post and an e-mail, each with the
proposal's link, once each however often the proposal is redelivered; a revoked webhook is a logged reason."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse
from faststream.nats import NatsBroker
from pydantic import SecretStr

from pipeline import bus, stores
from pipeline.actions import NoticeRecord, email_notice_key
from pipeline.demo import ASSETS, article_server, seed_share
from pipeline.messages import SessionProposal
from pipeline.settings import Settings
from tests.integration.bus_helpers import models_on, running_stages, wait_for_count, wait_until
from tests.peers import serve
from tests.smtp_server import Mailbox, smtp_server

pytestmark = pytest.mark.nats

HOOK_PATH = "/services/T0001/B0002/XoXoS3cr3tT0kenZZ"


@pytest.fixture
def slack_posts() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    app = FastAPI()
    received: list[dict[str, Any]] = []

    @app.post(HOOK_PATH)
    async def hook(request: Request) -> PlainTextResponse:
        received.append(await request.json())
        return PlainTextResponse("ok")

    @app.post("/services/T0001/B0002/revoked")
    async def revoked() -> PlainTextResponse:
        return PlainTextResponse("no_service", status_code=404)

    with serve(app) as url:
        yield url, received


@pytest.fixture
def mailbox() -> Iterator[tuple[int, Mailbox]]:
    with smtp_server({}) as server:
        yield server.port, server.mailbox


async def _notice(client: NatsBroker, proposal_id: str, channel: str) -> NoticeRecord | None:
    """Slack's record (one per proposal), or e-mail's for its one recipient here (one per recipient)."""
    kv = await stores.bucket(client, stores.OUTREACH)
    key = email_notice_key(proposal_id, "ana@example.org") if channel == "email" else f"notify.{proposal_id}.{channel}"
    try:
        entry = await kv.get(key)
    except Exception:
        return None
    return NoticeRecord.model_validate_json(entry.value or b"")


async def test_each_new_proposal_is_sent_to_slack_and_by_email_once(
    settings: Settings,
    client: NatsBroker,
    slack_posts: tuple[str, list[dict[str, Any]]],
    mailbox: tuple[int, Mailbox],
) -> None:
    (slack_url, posts), (smtp_port, box) = slack_posts, mailbox
    told = settings.model_copy(
        update={
            "public_url": "https://impromptu.example.org",
            "notify_slack_webhook": SecretStr(slack_url + HOOK_PATH),
            "smtp_host": "127.0.0.1",
            "smtp_port": smtp_port,
            "smtp_starttls": False,
            "notify_email_to": ["ana@example.org"],
        }
    )
    async with running_stages(told):
        with article_server((ASSETS / "bersin-article.html").read_bytes()) as url:
            await bus.publish(client, bus.SHARES, seed_share(url))
            await wait_for_count(client, bus.PROPOSALS_CREATED.subject, 1)
        (proposal,) = await models_on(client, bus.PROPOSALS_CREATED.subject, SessionProposal)
        link = f"https://impromptu.example.org/proposals/{proposal.id}"
        proposal_id = proposal.id
        await wait_until(lambda: _sent(client, proposal_id), what="both notices to be sent")
        # The proposal again under another message id, as after a crash beyond the duplicate window.
        again = {"Nats-Msg-Id": f"{proposal.id}-again"}
        await client.publish(
            proposal.model_dump_json().encode(), bus.PROPOSALS_CREATED.subject, stream=bus.STREAM, headers=again
        )
        await wait_for_count(client, bus.PROPOSALS_CREATED.subject, 2)
        await wait_until(lambda: _consumed(client), what="the redelivered proposal to be handled")

    assert len(posts) == 1 and link in str(posts[0]["blocks"])
    (message,) = box.messages()
    assert message["To"] == "ana@example.org" and link in message.get_body(("plain",)).get_content()


async def test_a_revoked_webhook_is_recorded_with_slacks_reason_and_the_proposal_stands(
    settings: Settings, client: NatsBroker, slack_posts: tuple[str, list[dict[str, Any]]]
) -> None:
    slack_url, _ = slack_posts
    told = settings.model_copy(update={"notify_slack_webhook": SecretStr(slack_url + "/services/T0001/B0002/revoked")})
    async with running_stages(told):
        with article_server((ASSETS / "bersin-article.html").read_bytes()) as url:
            await bus.publish(client, bus.SHARES, seed_share(url))
            await wait_for_count(client, bus.PROPOSALS_CREATED.subject, 1)
        (proposal,) = await models_on(client, bus.PROPOSALS_CREATED.subject, SessionProposal)
        proposal_id = proposal.id
        await wait_until(lambda: _failed(client, proposal_id), what="the failed notice to be recorded")
    record = await _notice(client, proposal_id, "slack")
    assert record is not None and "no_service" in record.detail and "revoked" in record.detail
    assert "XoXo" not in record.detail
    assert not any(s.startswith(bus.DEAD_LETTERS) for s in await _subjects(client))  # not a poison message


async def _sent(client: NatsBroker, proposal_id: str) -> bool:
    records = [await _notice(client, proposal_id, channel) for channel in ("slack", "email")]
    return all(r is not None and r.state == "sent" for r in records)


async def _failed(client: NatsBroker, proposal_id: str) -> bool:
    record = await _notice(client, proposal_id, "slack")
    return record is not None and record.state == "failed"


async def _consumed(client: NatsBroker) -> bool:
    info = await bus.jetstream(client).consumer_info(bus.STREAM, "actions-notify")
    return info.num_pending == 0 and info.num_ack_pending == 0 and info.delivered.consumer_seq >= 2


async def _subjects(client: NatsBroker) -> list[str]:
    info = await bus.jetstream(client).stream_info(bus.STREAM, subjects_filter=">")
    return list(info.state.subjects or {})
