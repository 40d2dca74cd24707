"""The learning library in a real browser: Debian's chromium (headless, via Playwright) against the pipeline's HTTP
server, the real nats-server, the KV catalog, the search index and the media store.

Someone searches for a word said in a session, opens the recording, and clicks a transcript timestamp: the player
(an <audio> element playing a real WAV from the media store, by Range requests) moves to that moment. The same page,
opened at #t=MM:SS as a search hit links it, starts there. A second test looks at the library on a phone.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from faststream.nats import NatsBroker
from playwright.async_api import Browser, expect

from pipeline.actions.service import Approvals
from pipeline.archive.media import MediaStore, media_store
from pipeline.archive.search import LibraryIndex
from pipeline.demo import write_sample_wav
from pipeline.domain import catalog
from pipeline.domain.catalog import Cue, SearchText
from pipeline.domain.live_rules import LiveRules
from pipeline.embedded import free_port
from pipeline.messages import KeptFile, LibraryEntry, Provenance
from pipeline.settings import Settings
from pipeline.web.library import LibraryServices
from pipeline.web.server import create_web_app, serve_http

pytestmark = [pytest.mark.nats, pytest.mark.browser]

WAV_SECONDS = 20
MARCH = datetime(2025, 3, 14, tzinfo=UTC)
FEBRUARY = datetime(2025, 2, 1, tzinfo=UTC)
CUES = [
    Cue(start=0, text="Welcome to the session.", speaker="Hugo"),
    Cue(start=6, text="Scaffolding is how a team learns on the job.", speaker="Jane"),
    Cue(start=12.5, text="Thanks for coming."),
]


@dataclass(frozen=True)
class Served:
    url: str
    index: LibraryIndex
    store: MediaStore
    kv: catalog.KeyValue


@asynccontextmanager
async def library_site(settings: Settings, client: NatsBroker) -> AsyncIterator[Served]:
    web = settings.model_copy(update={"http_port": free_port()})
    kv = await catalog.library_bucket(client)
    index = LibraryIndex()
    await index.start(kv)
    store = await media_store(web, client)
    app = create_web_app(
        web,
        client,
        Approvals(client, web, LiveRules.load(web.rules_file)),
        LibraryServices(web, client, index=index, store=store),
    )
    ready = asyncio.Event()
    server = asyncio.create_task(serve_http(web, app, ready), name="test-http")
    await asyncio.wait_for(ready.wait(), 10)
    try:
        yield Served(web.base_url, index, store, kv)
    finally:
        server.cancel()
        await asyncio.gather(server, return_exceptions=True)
        await index.stop()
        await store.close()


async def keep_wav_entry(served: Served, tmp_path: Path, entry_id: str, title: str, started_at: datetime) -> None:
    wav = tmp_path / f"{entry_id}.wav"
    write_sample_wav(wav, seconds=WAV_SECONDS)
    data = wav.read_bytes()

    async def chunks() -> AsyncIterator[bytes]:
        yield data

    stored = await served.store.put(f"{entry_id}/audio.wav", chunks(), content_type="audio/wav", max_bytes=10**7)
    kept = KeptFile(
        kind="audio",
        store=served.store.name,  # type: ignore[arg-type]
        key=stored.key,
        content_type="audio/wav",
        size=stored.size,
        sha256=stored.sha256,
        filename=f"{title}.wav",
    )
    entry = LibraryEntry(
        id=f"kept-{entry_id}",
        correlation_id="c",
        causation_id=None,
        entry_id=entry_id,
        title=title,
        tagline="How teams learn while they work",
        description="A conversation about learning in the flow of work.",
        tags=["Café Zürich", "Learning"],
        started_at=started_at,
        duration_seconds=WAV_SECONDS,
        files=[kept],
        summary=["Scaffolding is how a team learns on the job."],
        provenance=Provenance(
            shared_by="Mark Britz",
            share_url="https://social.example/@britz/1",
            share_text="",
            article_title="Scaffolding at work",
            article_url="https://blog.example/scaffolding",
            article_author="Jane Doe",
            rule="internal-rule",
            session_id="s-1",
        ),
    )
    await catalog.keep(served.kv, entry, by="test")
    await catalog.put_text(served.kv, entry_id, SearchText(cues=CUES))
    for key in (catalog.text_key(entry_id), catalog.entry_key(entry_id)):
        found = await served.kv.get(key)
        assert await served.index.wait_for(key, found.revision or 0, 10)


async def test_search_open_and_play_from_a_transcript_timestamp_in_chromium(
    settings: Settings, client: NatsBroker, chromium: Browser, tmp_path: Path
) -> None:
    async with library_site(settings, client) as served:
        await keep_wav_entry(
            served, tmp_path, "rec-flow", "Learning in the flow of work", datetime(2025, 3, 14, tzinfo=UTC)
        )
        context = await chromium.new_context(viewport={"width": 1280, "height": 900})
        page = await context.new_page()
        errors: list[str] = []
        page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
        try:
            await page.goto(served.url + "/library")
            await page.get_by_label("Search recordings and articles").fill("scaffolding team")
            await page.get_by_role("button", name="Search").click()
            await expect(page).to_have_url(f"{served.url}/library?q=scaffolding+team&sort=relevance")
            card = page.locator(".item.recording")
            await expect(card).to_have_count(1)
            await expect(card.locator("mark").first).to_be_visible()
            await card.get_by_role("link", name="Learning in the flow of work").click()

            await expect(page).to_have_url(f"{served.url}/library/rec-flow")
            player = page.locator("audio#player")
            await expect(player).to_have_attribute("src", "/library/rec-flow/media/audio")
            await page.wait_for_function("document.querySelector('#player').readyState >= 1", timeout=10_000)
            assert await player.evaluate("p => p.currentTime") == 0
            assert await player.evaluate("p => p.duration") == pytest.approx(WAV_SECONDS, abs=0.1)

            await page.locator(".cues a.t", has_text="00:12").click()
            await page.wait_for_function("document.querySelector('#player').currentTime >= 12", timeout=10_000)
            assert 12 <= await player.evaluate("p => p.currentTime") < 15
            await expect(page).to_have_url(f"{served.url}/library/rec-flow#t=00:12")

            # a search hit's link to a moment (#t=) opens the page with the player there
            await page.goto(served.url + "/library/rec-flow#t=00:06")
            await page.reload()
            await page.wait_for_function(
                "(() => { const p = document.querySelector('#player'); return p.currentTime >= 6 })()", timeout=10_000
            )
            assert 6 <= await page.locator("audio#player").evaluate("p => p.currentTime") < 9
            assert not [e for e in errors if "Content Security Policy" in e], errors
        finally:
            await context.close()


async def test_the_library_on_a_phone_is_one_column_without_sideways_scrolling(
    settings: Settings, client: NatsBroker, chromium: Browser, tmp_path: Path
) -> None:
    async with library_site(settings, client) as served:
        await keep_wav_entry(
            served, tmp_path, "rec-phone", "Learning in the flow of work", datetime(2025, 3, 14, tzinfo=UTC)
        )
        await keep_wav_entry(
            served, tmp_path, "rec-phone-2", "Communities of practice", datetime(2025, 2, 1, tzinfo=UTC)
        )
        context = await chromium.new_context(
            viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True, has_touch=True
        )
        page = await context.new_page()
        try:
            await page.goto(served.url + "/library")
            await page.wait_for_load_state("load")
            await page.screenshot(path=str(tmp_path / "library-phone.png"), full_page=True)  # looked at by a person
            width = await page.evaluate("document.documentElement.scrollWidth")
            assert width <= 390, f"the page is {width}px wide on a 390px screen"
            cards = page.locator(".item.recording")
            await expect(cards).to_have_count(2)
            first, second = [await cards.nth(i).bounding_box() for i in range(2)]
            assert first and second and second["y"] > first["y"] + first["height"] - 1  # stacked, not side by side
            image = await cards.first.locator("img").bounding_box()
            assert image and image["width"] > 300  # the poster spans the card

            await page.goto(served.url + "/library/rec-phone")
            await page.wait_for_load_state("load")
            await page.screenshot(path=str(tmp_path / "entry-phone.png"))
            assert await page.evaluate("document.documentElement.scrollWidth") <= 390
            player = await page.locator("audio#player").bounding_box()
            assert player and player["width"] > 300
        finally:
            await context.close()
