"""The trigger stage inside the running pipeline: a trusted person's feed entry becomes a trigger without anyone
typing a command, and an edit of the rules file takes effect (or is refused) while it runs."""

from __future__ import annotations

import http.server
from collections.abc import AsyncIterator, Iterator
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from faststream import FastStream
from faststream.nats import NatsBroker
from structlog.testing import capture_logs

from pipeline import bus
from pipeline.app import create_app
from pipeline.demo import loopback_http_server
from pipeline.messages import Share, TriggerFired, utc_now
from pipeline.settings import Settings
from tests.integration.bus_helpers import models_on, wait_until

pytestmark = pytest.mark.nats


def feed(entry_link: str) -> bytes:
    now = format_datetime(utc_now(), usegmt=True)
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<rss version="2.0"><channel><title>Mark's links</title><link>https://markbritz.example/</link>
<description>What I read</description><language>en</language>
<item><title>Why eLearning isn't working for leadership</title><link>{entry_link}</link>
<guid isPermaLink="false">entry-1</guid><pubDate>{now}</pubDate>
<description>&lt;p&gt;Josh Bersin on soft skills.&lt;/p&gt;</description></item>
</channel></rss>""".encode()


@pytest.fixture
def feed_url() -> Iterator[str]:
    body = feed("https://joshbersin.com/2026/why-elearning-isnt-working?utm_source=rss")

    class Feed(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            self.send_response(200)
            self.send_header("Content-Type", "application/rss+xml")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    with loopback_http_server(Feed) as base:
        yield f"{base}/feed.xml"


def rules(feed_url: str, **changes: Any) -> str:
    document = {
        "people": [{"name": "Mark Britz", "x": "@britz", "rss": feed_url, "trust": 0.9}],
        "authors": [{"name": "Josh Bersin", "domains": ["joshbersin.com"], "respect": 0.9}],
        "topics": {"leadership": ["leadership", "soft skills"]},
        "rules": [{"name": "lead", "when": {"topics_any": ["leadership"]}}],
        **changes,
    }
    return yaml.safe_dump(document)


@pytest.fixture
async def running(settings: Settings, feed_url: str, tmp_path: Path) -> AsyncIterator[tuple[FastStream, Path]]:
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(rules(feed_url), encoding="utf-8")
    live = settings.model_copy(
        update={
            "rules_file": rules_file,
            "rss_poll_seconds": 0.2,
            "rules_reload_seconds": 0.05,
            "sources_enabled": True,
        }
    )
    app = create_app(live)
    await app.start()
    yield app, rules_file
    await app.stop()


async def fired(client: NatsBroker) -> list[TriggerFired]:
    return await models_on(client, bus.TRIGGERS_FIRED.subject, TriggerFired)


async def test_a_feed_entry_of_a_trusted_person_fires_on_its_own(
    running: tuple[FastStream, Path], client: NatsBroker, feed_url: str
) -> None:
    await wait_until(lambda: fired(client), what="a trigger from the feed")
    (trigger,) = await fired(client)
    assert trigger.share.source == "rss" and trigger.share.sharer == feed_url
    assert trigger.canonical_url == "https://joshbersin.com/2026/why-elearning-isnt-working"
    assert trigger.author == "Josh Bersin" and trigger.shared_by[0].name == "Mark Britz"
    assert trigger.terms is not None and trigger.terms.author == 0.9


async def test_rules_edits_apply_while_running_and_bad_edits_are_refused(
    running: tuple[FastStream, Path], client: NatsBroker, feed_url: str
) -> None:
    _, rules_file = running
    newcomer = Share.from_source(
        source="cli", native_id="n1", sharer="@newbie", text="leadership", url="https://example.com/new"
    )
    await bus.publish(client, bus.SHARES, newcomer)
    await wait_until(lambda: fired(client), what="the feed's trigger")  # the stage is past the newcomer's share
    assert not [t for t in await fired(client) if t.share.sharer == "@newbie"]

    with capture_logs() as logs:
        rules_file.write_text(rules(feed_url).replace("trust: 0.9", "trust: 9"), encoding="utf-8")
        await wait_until(lambda: any(e["event"] == "rules.refused" for e in logs), what="the refusal")
    refused = next(e for e in logs if e["event"] == "rules.refused")
    assert refused["errors"][0].startswith(f"{rules_file}:") and "people.0.trust" in refused["errors"][0]

    people = [{"name": "Mark Britz", "x": "@britz", "rss": feed_url}, {"name": "New Person", "x": "newbie"}]
    with capture_logs() as logs:
        rules_file.write_text(rules(feed_url, people=people), encoding="utf-8")
        await wait_until(lambda: any(e["event"] == "rules.reloaded" for e in logs), what="the reload")
    await bus.publish(client, bus.SHARES, newcomer.model_copy(update={"id": "cli:n2"}))

    async def newbie_fired() -> bool:
        return any(t.share.sharer == "@newbie" for t in await fired(client))

    await wait_until(newbie_fired, what="the new person's trigger")
