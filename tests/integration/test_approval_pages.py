"""The approval pages' navigation and what they show once a proposal is decided (issue 17), on a real nats-server.

"Undecided" and "Upcoming" tabs (approved sessions no longer vanish), decided cards with their reason instead of a
countdown, the Posted table in the order the posts were made with when and where, and an archived proposal's link
to its library entry.
"""

from __future__ import annotations

import re
from datetime import datetime

import pytest
from fastapi import FastAPI
from faststream.nats import NatsBroker

from pipeline import bus
from pipeline.actions.service import Approvals, ProposalEdit
from pipeline.domain.approval import get_record
from pipeline.domain.live_rules import LiveRules
from pipeline.messages import ScheduledSession
from pipeline.settings import Settings
from tests.integration.bus_helpers import keep_at_start, models_on, seed_proposal, wait_for_count, wait_until
from tests.integration.test_approval_web import (  # noqa: F401  (fixtures)
    PASSWORDS,
    browser,
    log_in,
    web_app,
    web_settings,
)

pytestmark = pytest.mark.nats

POSTED_AT = re.compile(r'<td class="at"><time datetime="([^"]+)">')


async def test_upcoming_shows_approved_sessions_by_day_posts_in_order_and_the_library_entry_once_kept(
    pipeline: NatsBroker,
    client: NatsBroker,
    web_settings: Settings,  # noqa: F811
    web_app: FastAPI,  # noqa: F811
) -> None:
    proposal = await seed_proposal(client)
    approvals = Approvals(client, web_settings, LiveRules.load(web_settings.rules_file))
    await approvals.edit(proposal.id, ProposalEdit(channels=["x", "slack", "email"]), by="ana")
    await approvals.approve(proposal.id, by="ana")
    await wait_for_count(client, bus.OUTREACH_RESULTS.subject, 3)
    (session,) = await models_on(client, bus.SESSIONS_SCHEDULED.subject, ScheduledSession)

    async with browser(web_app) as ana:
        assert (await log_in(ana, "ana", PASSWORDS["ana"])).status_code == 303
        undecided = await ana.get("/proposals")
        assert undecided.status_code == 200
        assert "Undecided (0)" in undecided.text and "Upcoming (1)" in undecided.text and "Open (" not in undecided.text
        assert 'href="/library"' in undecided.text

        upcoming = await ana.get("/proposals", params={"show": "upcoming"})
        assert upcoming.status_code == 200, upcoming.text
        day = f'data-day="{session.starts_at.date().isoformat()}"'
        assert day in upcoming.text and f'data-proposal-id="{proposal.id}"' in upcoming.text
        for channel in ("x", "slack", "email"):
            assert f'<li class="post-state posted" data-channel="{channel}">' in upcoming.text

        page = await ana.get(f"/proposals/{proposal.id}")
        times = [datetime.fromisoformat(t) for t in POSTED_AT.findall(page.text)]
        assert len(times) == 3 and times == sorted(times)  # in the order posted, each with its time
        assert "the link is made on approval" not in page.text and session.join_url in page.text

        entry = await keep_at_start(client, web_settings, session)

        async def archived() -> bool:
            return (await get_record(client, proposal.id)).state == "archived"

        await wait_until(archived, what="the proposal to be archived")
        page = await ana.get(f"/proposals/{proposal.id}")
        assert f'href="/library/{entry.entry_id}"' in page.text


async def test_a_rejected_card_shows_its_reason_not_a_countdown(
    pipeline: NatsBroker,
    client: NatsBroker,
    web_settings: Settings,  # noqa: F811
    web_app: FastAPI,  # noqa: F811
) -> None:
    proposal = await seed_proposal(client)
    approvals = Approvals(client, web_settings, LiveRules.load(web_settings.rules_file))
    await approvals.reject(proposal.id, by="ben", reason="not this week, the team is away")
    async with browser(web_app) as ana:
        assert (await log_in(ana, "ana", PASSWORDS["ana"])).status_code == 303
        everything = await ana.get("/proposals", params={"show": "all"})
        card = everything.text.split(f'data-proposal-id="{proposal.id}"', 1)[1].split("</li>", 1)[0]
        assert "not this week, the team is away" in card and "by ben" in card
        assert "(in " not in card and "View</a>" in card
