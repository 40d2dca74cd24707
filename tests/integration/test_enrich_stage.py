"""The enrich stage on a real nats-server: a page read once for many triggers, and every failure a message that
the rule (not the stage) turns into a proposal from the post's text, or into none."""

from __future__ import annotations

import http.server
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from faststream.nats import NatsBroker

from pipeline import bus
from pipeline.app import create_broker, start_stages
from pipeline.demo import ASSETS, loopback_http_server
from pipeline.domain.approval import list_records
from pipeline.domain.canonical import canonical_url
from pipeline.messages import EnrichedContent, EnrichmentFailed, SessionPlan, Share, TriggerFired
from pipeline.settings import Settings
from tests.integration.bus_helpers import models_on, subject_counts, wait_drained, wait_for_count

pytestmark = pytest.mark.nats

ARTICLE = (ASSETS / "bersin-article.html").read_bytes()
# windows-1252 bytes whose only declaration is <meta charset>: the header names no charset
GERMAN_LINES = (Path(__file__).parent.parent / "fixtures" / "encodings" / "de-hoehere-leistung.txt").read_text()
GERMAN = (
    '<!DOCTYPE html><html lang="de"><head><meta charset="windows-1252"><title>'
    + GERMAN_LINES.splitlines()[0]
    + "</title></head><body><article>"
    + "".join(f"<p>{line}</p>" for line in GERMAN_LINES.splitlines())
    + "</article></body></html>"
).encode("cp1252")


class Site:
    """A local site: /article (the seed page), /missing (404), /busy (503); counts requests per path."""

    def __init__(self) -> None:
        self.hits: dict[str, int] = {}

    def handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        site = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                path = self.path.split("?")[0]
                site.hits[path] = site.hits.get(path, 0) + 1
                status, body = {"/article": (200, ARTICLE), "/busy": (503, b"busy")}.get(path, (404, b"no"))
                content_type = "text/html; charset=utf-8"
                if path == "/german":
                    status, body, content_type = 200, GERMAN, "text/html"
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        return Handler


@pytest.fixture
def site() -> Iterator[tuple[Site, str]]:
    served = Site()
    with loopback_http_server(served.handler()) as base:
        yield served, base


@pytest.fixture
async def stages(settings: Settings) -> AsyncIterator[Callable[..., Any]]:
    brokers: list[NatsBroker] = []

    async def start(**changes: Any) -> Settings:
        live = settings.model_copy(update=changes)
        broker = create_broker(live)
        await start_stages(broker, live)
        brokers.append(broker)
        return live

    yield start
    for broker in brokers:
        await broker.stop()


def trigger(url: str, n: int = 1, **plan: Any) -> TriggerFired:
    share = Share.from_source(
        source="x", native_id=str(n), sharer="@britz", text="Josh Bersin on leadership and soft skills", url=url
    )
    return TriggerFired.caused_by(
        share,
        id=f"fired:test-{n}",
        share=share,
        canonical_url=canonical_url(url),
        rule="lead",
        score=0.82,
        topics=["leadership"],
        plan=SessionPlan(**plan),
    )


async def test_a_page_is_read_once_for_every_trigger_of_it(
    stages: Callable[..., Any], client: NatsBroker, site: tuple[Site, str]
) -> None:
    served, base = site
    await stages()
    for n, query in enumerate(["", "?utm_source=x", "#comments"], start=1):
        await bus.publish(client, bus.TRIGGERS_FIRED, trigger(f"{base}/article{query}", n))
    await wait_for_count(client, bus.CONTENT_ENRICHED.subject, 3)
    contents = await models_on(client, bus.CONTENT_ENRICHED.subject, EnrichedContent)
    assert served.hits["/article"] == 1  # the KV cache answered the other two
    first = contents[0]
    assert first.article.title == "Why eLearning Isn't Working for Leadership and Soft Skills"
    assert first.respected_author == "Josh Bersin"
    assert set(first.topics) >= {"leadership", "learning"}
    assert all(0 < score <= 1 for score in first.topic_scores.values())
    assert {c.topic_scores["leadership"] for c in contents} == {first.topic_scores["leadership"]}
    await wait_for_count(client, bus.PROPOSALS_CREATED.subject, 3)


async def test_a_page_declaring_its_encoding_only_in_a_meta_tag_is_read_in_it(
    stages: Callable[..., Any], client: NatsBroker, site: tuple[Site, str]
) -> None:
    _, base = site
    await stages()
    await bus.publish(client, bus.TRIGGERS_FIRED, trigger(f"{base}/german"))
    await wait_for_count(client, bus.CONTENT_ENRICHED.subject, 1)
    (content,) = await models_on(client, bus.CONTENT_ENRICHED.subject, EnrichedContent)
    article = content.article
    assert article.title == "Kurze Lernformate führen zu einer höheren Leistung"
    assert "höheren Leistung" in article.key_phrases
    assert "\ufffd" not in " ".join([article.title, article.summary, *article.key_phrases])


async def test_a_refused_page_is_a_message_and_no_proposal_by_default(
    stages: Callable[..., Any], client: NatsBroker, site: tuple[Site, str]
) -> None:
    served, base = site
    await stages(fetch_allow=[])  # 127.0.0.1 is not public: refused, as a stranger's link to it would be
    await bus.publish(client, bus.TRIGGERS_FIRED, trigger(f"{base}/article"))
    await wait_for_count(client, bus.CONTENT_FAILED.subject, 1)
    (failure,) = await models_on(client, bus.CONTENT_FAILED.subject, EnrichmentFailed)
    assert failure.reason in {"blocked_address", "literal_ip"} and not failure.retryable
    assert "IMPROMPTU_FETCH_ALLOW" in failure.detail
    assert served.hits == {}
    await wait_drained(client, "actions-unread")
    counts = await subject_counts(client)
    assert bus.PROPOSALS_CREATED.subject not in counts
    assert not any(subject.startswith(bus.DEAD_LETTERS) for subject in counts)


async def test_a_rule_may_propose_from_the_post_when_the_page_is_unreadable(
    stages: Callable[..., Any], client: NatsBroker, site: tuple[Site, str]
) -> None:
    _, base = site
    await stages()
    await bus.publish(client, bus.TRIGGERS_FIRED, trigger(f"{base}/missing", without_article=True))
    await wait_for_count(client, bus.PROPOSALS_CREATED.subject, 1)
    (failure,) = await models_on(client, bus.CONTENT_FAILED.subject, EnrichmentFailed)
    assert failure.reason == "http_404"
    (record,) = await list_records(client)
    content = record.proposal.content
    assert content.unread_reason == "http_404"
    assert content.article.title == "Josh Bersin on leadership and soft skills"


async def test_a_page_that_keeps_failing_becomes_a_message_after_the_last_retry(
    stages: Callable[..., Any], client: NatsBroker, site: tuple[Site, str], settings: Settings
) -> None:
    served, base = site
    await stages()
    await bus.publish(client, bus.TRIGGERS_FIRED, trigger(f"{base}/busy"))
    await wait_for_count(client, bus.CONTENT_FAILED.subject, 1)
    (failure,) = await models_on(client, bus.CONTENT_FAILED.subject, EnrichmentFailed)
    assert failure.reason == "http_503" and failure.retryable
    assert served.hits["/busy"] == settings.delivery.max_deliveries
    assert not any(s.startswith(bus.DEAD_LETTERS) for s in await subject_counts(client))


async def test_article_must_match_vetoes_an_article_off_the_shares_topics(
    stages: Callable[..., Any], client: NatsBroker, site: tuple[Site, str]
) -> None:
    _, base = site
    await stages()
    off_topic = trigger(f"{base}/article", article_must_match=True).model_copy(update={"topics": ["crypto"]})
    on_topic = trigger(f"{base}/article?n=2", 2, article_must_match=True)
    await bus.publish(client, bus.TRIGGERS_FIRED, off_topic)
    await bus.publish(client, bus.TRIGGERS_FIRED, on_topic)
    await wait_for_count(client, bus.CONTENT_ENRICHED.subject, 2)
    await wait_drained(client, "actions-propose")
    (record,) = await list_records(client)
    assert record.proposal.content.trigger.id == on_topic.id
