"""Enrich stage: consumes TriggerFired on `impromptu.triggers.fired`, emits EnrichedContent on
`impromptu.content.enriched`. Fetch refusals are permanent (dead letter); timeouts and 5xx are retried."""

from __future__ import annotations

import asyncio

import structlog

from pipeline import bus
from pipeline.enrich.extract import extract_article
from pipeline.enrich.fetch import FetchPolicy, fetch_page
from pipeline.messages import Article, EnrichedContent, TriggerFired
from pipeline.settings import Settings
from pipeline.stage import StageRouter, emit
from pipeline.triggers.reload import LiveRules

log = structlog.get_logger("pipeline.enrich")


def fetch_policy(settings: Settings) -> FetchPolicy:
    return FetchPolicy(
        allow=tuple(settings.fetch_allow),
        timeout_seconds=settings.fetch_timeout_seconds,
        max_bytes=settings.fetch_max_bytes,
    )


def enriched(trigger: TriggerFired, article: Article, live: LiveRules) -> EnrichedContent:
    return EnrichedContent.caused_by(
        trigger,
        id=f"enriched:{trigger.share.id}",
        trigger=trigger,
        article=article,
        topics=live.known.topics_in(f"{article.title} {article.description or ''} {article.summary}"),
    )


def enrich_router(settings: Settings, live: LiveRules) -> StageRouter:
    router = StageRouter("enrich", settings)
    output = router.output(bus.CONTENT_ENRICHED, EnrichedContent, "The shared page, fetched and understood.")
    policy = fetch_policy(settings)

    @router.consume(bus.TRIGGERS_FIRED)
    async def handle_trigger(trigger: TriggerFired) -> None:
        page = await fetch_page(trigger.share.url, policy)
        article = await asyncio.to_thread(extract_article, page.html, url=page.url, final_url=page.final_url)
        await emit(output, enriched(trigger, article, live))
        log.info("content.enriched", title=article.title, author=article.author, words=article.word_count)

    return router
