"""Fixtures for browser tests: Debian's chromium driven by Playwright (never a downloaded browser), and the pipeline's
HTTP server with the approval pages on a free loopback port, in the test's own event loop next to the stages."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from faststream.nats import NatsBroker
from playwright.async_api import Browser, async_playwright

from pipeline.actions.service import Approvals
from pipeline.domain.live_rules import LiveRules
from pipeline.embedded import free_port
from pipeline.settings import FacilitatorLogin, Settings
from pipeline.web.auth import hash_password
from pipeline.web.server import create_web_app, serve_http

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PASSWORDS = {"ana": "ana's long password", "ben": "ben's long password"}


@dataclass(frozen=True)
class Site:
    url: str
    settings: Settings


@pytest.fixture
async def chromium() -> AsyncIterator[Browser]:
    if not CHROMIUM.exists():
        pytest.skip(f"Debian's chromium is not installed at {CHROMIUM} (`make install-dev` installs it)")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            await browser.close()


@asynccontextmanager
async def serving(settings: Settings, client: NatsBroker, logins: dict[str, FacilitatorLogin]) -> AsyncIterator[Site]:
    """The HTTP server (webhook, ops, approval pages and API) as `impromptu run` serves it, with these logins."""
    web = settings.model_copy(update={"facilitator_logins": logins, "http_port": free_port()})
    approvals = Approvals(client, web, LiveRules.load(web.rules_file))
    ready = asyncio.Event()
    server = asyncio.create_task(serve_http(web, create_web_app(web, client, approvals), ready), name="test-http")
    await asyncio.wait_for(ready.wait(), 10)
    try:
        yield Site(url=web.base_url, settings=web)
    finally:
        server.cancel()
        await asyncio.gather(server, return_exceptions=True)


@pytest.fixture
async def site(settings: Settings, client: NatsBroker) -> AsyncIterator[Site]:
    """The site with two facilitators."""
    logins = {name: FacilitatorLogin(password_hash=hash_password(pw)) for name, pw in PASSWORDS.items()}
    async with serving(settings, client, logins) as served:
        yield served
