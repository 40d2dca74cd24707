"""An operator in a real browser: Debian's chromium (headless, via Playwright) on the ops page, against the pipeline.

Every stage runs on the real nats-server, with a probe stage that refuses its messages (a poison message). The
operator logs in, sees the five stages as a flow and the dead letter, replays it and sees it recorded as replayed.
A second test checks the page on a phone-sized screen: a column, nothing wider than the screen.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from faststream.nats import NatsBroker
from playwright.async_api import Browser, Page, expect

from pipeline.ops.dlq import get_dead_letter, list_dead_letters
from pipeline.settings import FacilitatorLogin, Settings
from pipeline.web.auth import hash_password
from tests.browser.conftest import Site, serving
from tests.integration.bus_helpers import wait_until
from tests.integration.test_ops_web import PROBE, Probe, poison, probe_stage

pytestmark = [pytest.mark.nats, pytest.mark.browser]

STAGES = ["trigger", "enrich", "actions", "outreach", "archive"]
PASSWORD = "olga's long password"
# every stage's box measured in one go, so a re-render between measurements cannot mix two layouts
BOXES = "boxes => boxes.map(b => { const r = b.getBoundingClientRect(); return {x: r.x, y: r.y, width: r.width}; })"


@pytest.fixture
async def ops_site(settings: Settings, client: NatsBroker) -> AsyncIterator[Site]:
    """The site with one ops-only login."""
    logins = {"olga": FacilitatorLogin(password_hash=hash_password(PASSWORD), roles=["ops"])}
    async with serving(settings, client, logins) as served:
        yield served


@pytest.fixture
async def probe(settings: Settings) -> AsyncIterator[Probe]:
    async with probe_stage(settings) as stage:
        yield stage


async def log_in(page: Page, site: Site) -> None:
    await page.goto(site.url + "/ops")
    await expect(page).to_have_url(f"{site.url}/login?next=/ops")
    await page.get_by_label("Name").fill("olga")
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Log in").click()
    await expect(page).to_have_url(site.url + "/ops")
    await page.wait_for_load_state("load")  # the stylesheets applied: layout is measured next


async def test_an_operator_sees_the_flow_and_replays_a_dead_letter_in_chromium(
    pipeline: NatsBroker,
    probe: Probe,
    client: NatsBroker,
    ops_site: Site,
    chromium: Browser,
) -> None:
    await poison(client, 1)
    (entry,) = await list_dead_letters(client)
    context = await chromium.new_context(viewport={"width": 1280, "height": 900})
    page = await context.new_page()
    try:
        await log_in(page, ops_site)

        stages = page.locator(".flow .stage")
        await expect(stages).to_have_count(5)
        assert await stages.evaluate_all("boxes => boxes.map(b => b.dataset.stage)") == STAGES
        await expect(page.locator(".flow")).to_have_css("flex-direction", "row")
        boxes = await stages.evaluate_all(BOXES)
        xs = [box["x"] for box in boxes]
        ys = {round(box["y"]) for box in boxes}
        assert xs == sorted(xs) and len(ys) == 1, boxes  # a row, in the order messages flow
        await expect(page.locator('[data-stage="trigger"] .worker')).to_have_text("yes")
        await expect(page.locator("#verdict h1")).to_contain_text("Unhealthy")
        await expect(page.locator("#verdict")).to_contain_text("probe: 1 dead letter(s) waiting on impromptu.dlq.probe")
        await expect(page.locator(".generated time")).to_contain_text("UTC")

        waiting = page.locator(f'.waiting [data-seq="{entry.seq}"]')
        await expect(waiting).to_contain_text("cannot handle example.com links yet")
        await expect(waiting.locator(".subject")).to_have_text(PROBE.subject)
        await expect(waiting.locator(".deliveries")).to_have_text("1 delivery")

        probe.fixed = True
        await waiting.get_by_role("button", name="Replay").click()
        await expect(page).to_have_url(ops_site.url + "/ops")
        await expect(page.locator(".flash").first).to_contain_text(f"Dead letter {entry.seq} replayed by olga")
        replayed = page.locator(f'.recent [data-seq="{entry.seq}"]')
        await expect(replayed.locator(".badge")).to_have_text("replayed")
        await expect(replayed.locator(".record")).to_contain_text("Replayed by olga")
        await expect(page.locator(".waiting")).to_have_count(0)
        await expect(page.locator("#verdict h1")).to_have_text("Healthy", timeout=15_000)  # as the page refreshes
    finally:
        await context.close()

    await wait_until(lambda: probe.handled == ["cli:1"], what="the replayed message to be handled")
    record = (await get_dead_letter(client, entry.seq)).record
    assert (record.state, record.by) == ("replayed", "olga")


async def test_on_a_phone_the_stages_are_a_column_and_nothing_scrolls_sideways(
    pipeline: NatsBroker,
    probe: Probe,
    client: NatsBroker,
    ops_site: Site,
    chromium: Browser,
) -> None:
    await poison(client, 1)
    width, height = 390, 844
    context = await chromium.new_context(
        viewport={"width": width, "height": height}, device_scale_factor=3, is_mobile=True, has_touch=True
    )
    page = await context.new_page()
    try:
        await log_in(page, ops_site)
        stages = page.locator(".flow .stage")
        await expect(stages).to_have_count(5)
        await expect(page.locator(".flow")).to_have_css("flex-direction", "column")
        boxes = await stages.evaluate_all(BOXES)
        for box in boxes:
            assert box["x"] >= 0 and box["x"] + box["width"] <= width, box
            assert box["width"] >= width * 0.8, box  # the column's full width
        tops = [box["y"] for box in boxes]
        assert tops == sorted(tops) and len(set(tops)) == 5, tops  # one under the other

        for details in await page.locator(".stage details").all():  # opened, the longest subject names still fit
            await details.locator("summary").tap()
        replay = page.locator(".waiting").get_by_role("button", name="Replay")
        await replay.scroll_into_view_if_needed()
        box = await replay.bounding_box()
        assert box is not None and box["height"] >= 44 and box["x"] + box["width"] <= width, box
        scroll_width, inner_width = await page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
        assert scroll_width <= inner_width == width
    finally:
        await context.close()
