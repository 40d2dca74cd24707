"""The approval page's rough edges (issue 17), in Debian's Chromium against the whole pipeline on a real nats-server.

A refused edit is said where the page opens and at the field, keeps what was typed, and offers no approve button
until fixed or discarded; a form's URL opened again (reload, Enter in the address bar) gives the page, never JSON;
approving a version edited by someone else since is refused; a channel's text written by hand is re-checked against
that channel's limit and kept in the audit trail; after approval the previews carry the real join link.
"""

from __future__ import annotations

import re
from datetime import UTC

import pytest
from faststream.nats import NatsBroker
from playwright.async_api import Browser, expect

from pipeline.actions.service import Approvals, ProposalEdit
from pipeline.domain.approval import get_record
from pipeline.domain.live_rules import LiveRules
from tests.browser.conftest import Site
from tests.browser.test_approval_browser import SCHEDULING_SECONDS, log_in
from tests.integration.bus_helpers import seed_proposal

pytestmark = [pytest.mark.nats, pytest.mark.browser]

VIEWPORT = {"width": 1280, "height": 800}


async def test_a_refused_edit_is_said_at_the_top_keeps_what_was_typed_and_a_reload_gives_the_page(
    pipeline: NatsBroker, client: NatsBroker, site: Site, chromium: Browser
) -> None:
    proposal = await seed_proposal(client)
    context = await chromium.new_context(viewport=VIEWPORT)
    page = await context.new_page()
    try:
        await log_in(page, site, "ana", path=f"/proposals/{proposal.id}")
        # the start reads as everywhere else: 24 h, the zone beside it (not "12/04/2026, 08:27 PM")
        start = page.locator("#starts_at")
        assert await start.get_attribute("type") == "text"
        assert await start.input_value() == f"{proposal.starts_at.astimezone(UTC):%Y-%m-%d %H:%M}"
        await expect(page.locator("#starts_at-zone-label")).to_have_text("UTC")
        # the edit form comes before the previews
        edit_box, previews_box = (
            await page.locator("#edit").bounding_box(),
            await page.locator("#announcements").bounding_box(),
        )
        assert edit_box and previews_box and edit_box["y"] < previews_box["y"]

        await page.locator("input[name=title]").fill("Live: a title I typed")
        await start.fill("2020-01-01 10:00")
        await page.locator("#save").click()

        top_error = page.locator("main > .flash.error").first
        await expect(top_error).to_contain_text("Not saved")
        await expect(top_error).to_contain_text("is in the past")
        box = await top_error.bounding_box()
        assert box is not None and box["y"] + box["height"] <= VIEWPORT["height"], box  # seen without scrolling
        await expect(page.locator("#starts_at-problem")).to_contain_text("is in the past")
        assert await page.locator("#starts_at").input_value() == "2020-01-01 10:00"
        assert await page.locator("input[name=title]").input_value() == "Live: a title I typed"
        await expect(page.locator("#approve")).to_have_count(0)  # nothing to approve by mistake: fix or discard
        await expect(page.locator("#unsaved")).to_be_visible()

        for path in ("edit", "approve", "reject", "cancel", "texts/mastodon"):
            response = await page.goto(f"{site.url}/proposals/{proposal.id}/{path}")
            assert response is not None and response.ok, path
            await expect(page).to_have_url(f"{site.url}/proposals/{proposal.id}")
            await expect(page.locator("h1.title")).to_have_text(proposal.title)
            assert "Method Not Allowed" not in await page.content()
        await expect(page.locator("#approve")).to_be_visible()
    finally:
        await context.close()
    record = await get_record(client, proposal.id)
    assert record.state == "proposed" and record.proposal.starts_at == proposal.starts_at and not record.history


async def test_approving_a_proposal_edited_since_it_was_shown_is_refused(
    pipeline: NatsBroker, client: NatsBroker, site: Site, chromium: Browser
) -> None:
    proposal = await seed_proposal(client)
    context = await chromium.new_context(viewport=VIEWPORT)
    page = await context.new_page()
    try:
        await log_in(page, site, "ana", path=f"/proposals/{proposal.id}")
        approvals = Approvals(client, site.settings, LiveRules.load(site.settings.rules_file))
        await approvals.edit(proposal.id, ProposalEdit(duration_minutes=30), by="ben")  # while ana reads

        await page.locator("#approve").click()
        top_error = page.locator("main > .flash.error").first
        await expect(top_error).to_contain_text("changed since you saw it")
        await expect(top_error).to_contain_text("duration_minutes edited by ben")
        assert (await get_record(client, proposal.id)).state == "proposed"
        await page.locator("#approve").click()  # the page shown now is the new version: that one is approved
        await expect(page.locator(".flash").first).to_contain_text("Approved.")
    finally:
        await context.close()
    record = await get_record(client, proposal.id)
    assert record.decided_by == "ana" and record.proposal.duration_minutes == 30


async def test_a_channel_text_written_by_hand_is_checked_kept_in_the_audit_and_previewed_with_the_real_link(
    pipeline: NatsBroker, client: NatsBroker, site: Site, chromium: Browser
) -> None:
    proposal = await seed_proposal(client)
    approvals = Approvals(client, site.settings, LiveRules.load(site.settings.rules_file))
    await approvals.edit(proposal.id, ProposalEdit(channels=["mastodon", "x"]), by="ana")
    context = await chromium.new_context(viewport=VIEWPORT)
    page = await context.new_page()
    try:
        await log_in(page, site, "ana", path=f"/proposals/{proposal.id}")
        mastodon = page.locator('.preview[data-channel="mastodon"]')
        await expect(mastodon.locator(".account-name")).to_have_text("Impromptu")
        await expect(mastodon.locator(".link-card .card-title")).to_have_text(proposal.content.article.title)
        family = await mastodon.locator(".post-text").evaluate("e => getComputedStyle(e).fontFamily")
        assert "monospace" not in family

        await mastodon.locator("summary").click()
        textarea = mastodon.locator("textarea[name=text]")
        assert "{join_url}" in await textarea.input_value()  # starts from the template's text, the link marked
        too_long = "Come along! " * 45 + "{join_url}"
        await textarea.fill(too_long)
        await mastodon.get_by_role("button", name="Save the Mastodon text").click()
        await expect(page.locator("main > .flash.error").first).to_contain_text("Not saved: mastodon text")
        mastodon = page.locator('.preview[data-channel="mastodon"]')
        await expect(mastodon.locator(".text-problem")).to_contain_text("mastodon allows 500")
        assert await mastodon.locator("textarea[name=text]").input_value() == too_long
        assert (await get_record(client, proposal.id)).proposal.texts == {}

        mine = "Tonight: the Bersin piece, live.\n\nJoin: {join_url}"
        await mastodon.locator("textarea[name=text]").fill(mine)
        await mastodon.get_by_role("button", name="Save the Mastodon text").click()
        await expect(page.locator(".flash").first).to_have_text("Saved: the mastodon text.")
        mastodon = page.locator('.preview[data-channel="mastodon"]')
        await expect(mastodon.locator(".written-tag")).to_have_text("written by hand")
        await expect(mastodon.locator(".post-text")).to_contain_text("Tonight: the Bersin piece, live.")
        change = page.locator('.audit .text-change[data-field="text.mastodon"]')
        await expect(change).to_contain_text("mastodon text")
        await expect(change.locator("ins")).to_contain_text("Tonight: the Bersin piece")

        await page.locator("#approve").click()
        await expect(page.locator("p.top .badge")).to_have_text("scheduled", timeout=SCHEDULING_SECONDS * 1000)
        join = await page.locator("a.join").get_attribute("href")
        assert join
        for channel in ("mastodon", "x"):  # the previews are fresh: the session's link, not the stand-in
            text = await page.locator(f'.preview[data-channel="{channel}"] .post-text').inner_text()
            assert join in text and "xxxxxxxxxx" not in text, text
        assert "the link is made on approval" not in await page.content()
    finally:
        await context.close()
    record = await get_record(client, proposal.id)
    assert record.proposal.texts == {"mastodon": mine}
    assert [set(e.changes) for e in record.history if e.changes][-1] == {"text.mastodon"}


async def test_the_start_field_shows_the_hosts_zone_in_24_hours(
    pipeline: NatsBroker, client: NatsBroker, site: Site, chromium: Browser
) -> None:
    """On a phone-sized screen too, the field reads YYYY-MM-DD HH:MM: no AM/PM picker in the browser's locale."""
    proposal = await seed_proposal(client)
    context = await chromium.new_context(viewport={"width": 390, "height": 844}, locale="en-US", is_mobile=True)
    page = await context.new_page()
    try:
        await log_in(page, site, "ben", path=f"/proposals/{proposal.id}")
        shown = await page.locator("#starts_at").input_value()
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}", shown), shown
        assert "PM" not in shown and "AM" not in shown
        label = await page.locator("#starts_at-zone-label").bounding_box()
        field = await page.locator("#starts_at").bounding_box()
        assert label and field and abs(label["y"] - field["y"]) < field["height"]  # beside it, not somewhere else
    finally:
        await context.close()
