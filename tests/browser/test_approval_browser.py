"""A facilitator in a real browser: Debian's chromium (headless, via Playwright) against the whole pipeline.

Every stage runs on the real nats-server; a share goes on the bus, the pipeline proposes a session, and the facilitator
logs in, reads the proposal and its announcement previews, moves the start time, approves, and sees the scheduled
session's join link, as the page refreshes by itself. A second test checks the page on a phone-sized screen.
"""

from __future__ import annotations

from datetime import UTC, timedelta

import pytest
from faststream.nats import NatsBroker
from playwright.async_api import Browser, Page, expect

from pipeline.domain.approval import get_record
from tests.browser.conftest import PASSWORDS, Site
from tests.integration.bus_helpers import seed_proposal

pytestmark = [pytest.mark.nats, pytest.mark.browser]

SCHEDULING_SECONDS = 20


async def log_in(page: Page, site: Site, name: str, path: str = "/proposals") -> None:
    await page.goto(site.url + path)
    await expect(page).to_have_url(f"{site.url}/login?next={path}")
    await page.get_by_label("Name").fill(name)
    await page.get_by_label("Password").fill(PASSWORDS[name])
    await page.get_by_role("button", name="Log in").click()
    await expect(page).to_have_url(site.url + path)
    await page.wait_for_load_state("load")  # the stylesheets applied before anything is measured
    await expect(page.locator(".flash").first).to_have_text(f"Logged in as {name}.")


async def test_a_facilitator_edits_and_approves_a_proposal_in_chromium(
    pipeline: NatsBroker, client: NatsBroker, site: Site, chromium: Browser
) -> None:
    proposal = await seed_proposal(client)
    article = proposal.content.article
    context = await chromium.new_context(viewport={"width": 1280, "height": 900})
    page = await context.new_page()
    try:
        await log_in(page, site, "ana")

        card = page.locator(f'[data-proposal-id="{proposal.id}"]')
        await expect(card).to_be_visible()
        await expect(card.locator(".badge")).to_have_text("proposed")
        await expect(card.locator(".sharer")).to_have_text("Mark Britz")
        await expect(card).to_contain_text("trust 0.90")
        await expect(card).to_contain_text(article.title)
        await card.get_by_role("link", name=article.title).click()

        await expect(page).to_have_url(f"{site.url}/proposals/{proposal.id}")
        await expect(page.locator("h1.title")).to_have_text(proposal.title)
        previews = page.locator(".preview")
        await expect(previews).to_have_count(len(proposal.channels))
        x_preview = page.locator('.preview[data-channel="x"]')
        await expect(x_preview.locator(".post-text")).to_contain_text(article.title)
        await expect(x_preview.locator(".length")).to_contain_text("/ 280")
        await expect(page.get_by_text("Times are UTC, as everywhere on these pages.")).to_be_visible()

        moved = (proposal.starts_at + timedelta(minutes=20)).astimezone(UTC)
        await page.locator("#starts_at").fill(moved.strftime("%Y-%m-%d %H:%M"))
        await page.locator("#save").click()
        await expect(page.locator(".flash").first).to_have_text("Saved: start (utc).")
        await expect(page.locator("#starts-at")).to_have_text(moved.strftime("%a %d %b %H:%M UTC"))
        edit_entry = page.locator(".audit .entry").last
        await expect(edit_entry.locator(".by")).to_have_text("ana")
        await expect(edit_entry).to_contain_text("edited")
        await expect(edit_entry.locator(".changes")).to_contain_text("Start (UTC)")

        await page.locator("#approve").click()
        await expect(page.locator(".flash").first).to_contain_text("Approved.")
        # The page refreshes itself until the actions stage has created the session.
        await expect(page.locator("p.top .badge")).to_have_text("scheduled", timeout=SCHEDULING_SECONDS * 1000)
        join = page.locator("a.join")
        await expect(join).to_be_visible()
        href = await join.get_attribute("href")
        assert href is not None and href.startswith("https://meet.jit.si/Impromptu-")
        await expect(page.locator(".audit .entry .by")).to_have_text(["ana", "ana", "actions"], timeout=1)
        # each channel's announcement, once made, is listed on the session's page with its state
        posted = page.locator("table.posted tr.post")
        for _ in range(50):
            if await posted.count() == len(proposal.channels):
                break
            await page.wait_for_timeout(100)
            await page.reload()
        await expect(posted).to_have_count(len(proposal.channels))
        await expect(posted.locator("td.status")).to_have_text(["posted"] * len(proposal.channels))
        await expect(page.locator("table.posted tr.post[data-channel='x']")).to_contain_text("scheduled")
    finally:
        await context.close()

    record = await get_record(client, proposal.id)
    assert record.state == "scheduled" and record.session is not None and record.session.join_url == href
    assert record.proposal.starts_at == moved.replace(second=0, microsecond=0)
    assert record.decided_by == "ana"


async def test_on_a_phone_the_approve_button_is_there_without_scrolling_sideways(
    pipeline: NatsBroker, client: NatsBroker, site: Site, chromium: Browser
) -> None:
    proposal = await seed_proposal(client)
    width, height = 390, 844
    context = await chromium.new_context(
        viewport={"width": width, "height": height}, device_scale_factor=3, is_mobile=True, has_touch=True
    )
    page = await context.new_page()
    try:
        await log_in(page, site, "ben", path=f"/proposals/{proposal.id}")
        approve = page.locator("#approve")
        await expect(approve).to_be_visible()
        box = await approve.bounding_box()
        assert box is not None
        assert box["x"] >= 0 and box["x"] + box["width"] <= width, box
        assert box["height"] >= 44 and box["width"] >= width * 0.8, box  # a big button, the column's full width
        assert box["y"] + box["height"] <= height, box  # on the first screen: no scrolling at all
        scroll_width, inner_width = await page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
        assert scroll_width <= inner_width == width
        await approve.tap()
        await expect(page.locator(".flash").first).to_contain_text("Approved.")
    finally:
        await context.close()
    assert (await get_record(client, proposal.id)).decided_by == "ben"
