"""Enrich stage: consumes TriggerFired on `impromptu.triggers.fired`; emits EnrichedContent on
`impromptu.content.enriched`, or EnrichmentFailed on `impromptu.content.failed` when the page is refused,
unreadable, or still failing on the last delivery. A failure is a message for the rules to weigh, never a
silent drop: the actions stage proposes from the post's text alone when the rule says `without_article`. The link's
episode in impromptu-triggers is marked `unread` too, so that a new share (after a transient failure) or
`impromptu pages retry URL` can try the page again (pipeline/domain/trigger_state.py)."""

from __future__ import annotations

import asyncio
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial

import structlog
from faststream.nats.annotations import NatsBroker, NatsMessage

from pipeline import bus, stores
from pipeline.domain.article_cache import PageRecord, cached, remember
from pipeline.domain.canonical import link_key
from pipeline.domain.live_rules import LiveRules
from pipeline.domain.scoring import Known, respected_author
from pipeline.domain.trigger_state import TriggerState, UnreadPage, superseded
from pipeline.enrich.extract import extract
from pipeline.enrich.pool import ExtractorPool
from pipeline.errors import PermanentError, RetryableError
from pipeline.messages import Article, EnrichedContent, EnrichmentFailed, TriggerFired, utc_now
from pipeline.net.fetch import FetchPolicy, fetch_page
from pipeline.settings import Settings
from pipeline.stage import STAGE, Emits, Outputs, Route, StageRouter, stage_router

log = structlog.get_logger("pipeline.enrich")

TOPIC_TEXT_LIMIT = 50_000  # characters of main text kept for topic matching (and in the cache)
# Extraction is CPU-bound Python: one thread per process keeps it off the event loop without the GIL hand-offs of
# several extractions at once (measured: 10 concurrent extractions made each page ~10x slower, none faster).
# More throughput comes from extraction processes (pool.py, `impromptu run`) or more workers of the stage.
EXTRACTOR = ThreadPoolExecutor(max_workers=1, thread_name_prefix="extract")
# With an extraction pool, pages in flight per worker process: while some are read, the others are being fetched.
PAGES_IN_FLIGHT_PER_PROCESS = 2


def fetch_policy(settings: Settings) -> FetchPolicy:
    return FetchPolicy(
        allow=tuple(settings.fetch_allow),
        timeout_seconds=settings.fetch_timeout_seconds,
        max_bytes=settings.fetch_max_bytes,
    )


def topic_scores(known: Known, article: Article, text: str) -> dict[str, float]:
    """How strongly the article is about each topic: 1 - e^(-mentions/3), mentions in title, summary, key phrases
    and text; one mention scores 0.28, three 0.63, six 0.86."""
    parts = [article.title, article.description or "", " ".join(article.key_phrases), text]
    return {t: round(1 - math.exp(-n / 3), 2) for t, n in known.topic_mentions(" ".join(parts)).items()}


def enriched(trigger: TriggerFired, record: PageRecord, known: Known) -> EnrichedContent:
    assert record.article is not None
    article = record.article
    scores = topic_scores(known, article, record.topic_text)
    author = respected_author(known, article.final_url, " ".join([*article.authors, article.author or ""]))
    return EnrichedContent.caused_by(
        trigger,
        id=f"enriched:{trigger.id}",
        trigger=trigger,
        article=article,
        topics=list(scores),
        topic_scores=scores,
        respected_author=author.name if author else None,
    )


def failed(trigger: TriggerFired, reason: str, detail: str, *, retryable: bool) -> EnrichmentFailed:
    return EnrichmentFailed.caused_by(
        trigger,
        id=f"enrich-failed:{trigger.id}",
        trigger=trigger,
        url=trigger.share.url,
        reason=reason,
        detail=detail,
        retryable=retryable,
    )


@dataclass(frozen=True)
class Reader:
    """Fetch and extract one page, through the cache; in the extraction pool's processes when there is one."""

    policy: FetchPolicy
    pool: ExtractorPool | None = None

    async def read(self, url: str, canonical_url: str) -> PageRecord:
        page = await fetch_page(url, self.policy)
        if self.pool is not None:
            extraction = await self.pool.extract(page.html, url=url, final_url=page.final_url)
        else:
            extraction = await asyncio.get_running_loop().run_in_executor(
                EXTRACTOR, partial(extract, page.html, url=url, final_url=page.final_url)
            )
        return PageRecord.read(canonical_url, extraction.article, extraction.text[:TOPIC_TEXT_LIMIT])


def extractor_pool(settings: Settings) -> ExtractorPool | None:
    """The extraction processes `impromptu run` gives the stage (IMPROMPTU_EXTRACT_PROCESSES), or None for 0."""
    processes = settings.extract_pool_size
    if processes == 0:
        return None
    return ExtractorPool(
        processes,
        settings.extract_timeout_seconds,
        TOPIC_TEXT_LIMIT,
        log_json=settings.log_json,
        log_level=settings.log_level,
    )


async def warm_up() -> None:
    """Load the extraction's models (yake, py3langid: about 0.5 s) before the first shared page waits for them."""
    page = "<html><head><title>Warm-up</title></head><body><p>" + "Learning in public, live and together. " * 20
    await asyncio.get_running_loop().run_in_executor(
        EXTRACTOR, partial(extract, page, url="https://warm-up.invalid/", final_url="https://warm-up.invalid/")
    )


def reason_of(error: Exception) -> str:
    return getattr(error, "reason", None) or str(error).split(":", 1)[0] or type(error).__name__


class EnrichStage:
    """What the enrich handler shares, given to it as `stage` (pipeline/stage.py): the settings, the live rules,
    the page reader (with the extraction pool, when there is one) and the stage's publishers."""

    def __init__(self, settings: Settings, live: LiveRules, outputs: Outputs, pool: ExtractorPool | None) -> None:
        self.settings = settings
        self.live = live
        self.outputs = outputs
        self.reader = Reader(fetch_policy(settings), pool)


async def give_up(stage: EnrichStage, broker: NatsBroker, trigger: TriggerFired, failure: EnrichmentFailed) -> None:
    """Publish the failure, then mark the link's episode unread (a redelivery does both again, harmlessly)."""
    await stage.outputs.emit(bus.CONTENT_FAILED, failure)
    unread = UnreadPage(
        trigger_id=trigger.id,
        reason=failure.reason,
        detail=failure.detail,
        retryable=failure.retryable,
        at=utc_now(),
    )
    state = TriggerState(await stores.bucket(broker, stores.TRIGGERS))
    await state.mark_unread(link_key(trigger.canonical_url), unread)


async def handle_trigger(
    trigger: TriggerFired, broker: NatsBroker, message: NatsMessage, stage: EnrichStage = STAGE
) -> None:
    kv = await stores.bucket(broker, stores.PAGES)
    key = link_key(trigger.canonical_url)
    episode, _ = await TriggerState(await stores.bucket(broker, stores.TRIGGERS)).episode(key)
    if superseded(episode, key, trigger.id):
        assert episode is not None
        newer = episode.trigger.id if episode.trigger else f"episode {episode.episode}"
        log.info("content.superseded", trigger_id=trigger.id, by=newer, reason="the link was re-opened since")
        return
    record = await cached(kv, key)
    if record is None:
        try:
            record = await stage.reader.read(trigger.share.url, trigger.canonical_url)
        except PermanentError as error:  # refused or unreadable: retrying cannot help
            record = PageRecord.refusal(trigger.canonical_url, reason_of(error), str(error))
        except RetryableError as error:
            if delivery_count(message) < stage.settings.delivery.max_deliveries:
                raise  # nak with backoff: the stage retries
            await give_up(stage, broker, trigger, failed(trigger, reason_of(error), str(error), retryable=True))
            log.warning("content.failed", url=trigger.share.url, reason=reason_of(error), retries="exhausted")
            return
        await remember(kv, key, record)
    if record.refused is not None:
        await give_up(stage, broker, trigger, failed(trigger, record.refused, record.detail, retryable=False))
        log.warning("content.failed", url=trigger.share.url, reason=record.refused, detail=record.detail)
        return
    content = enriched(trigger, record, stage.live.known)
    await stage.outputs.emit(bus.CONTENT_ENRICHED, content)
    article = content.article
    log.info("content.enriched", title=article.title, author=article.author, words=article.word_count)


ENRICHED = Emits(bus.CONTENT_ENRICHED, "The shared page, fetched and understood.")
FAILED = Emits(bus.CONTENT_FAILED, "The shared page could not be fetched or read.")

# What the enrich stage reads and emits; with an extraction pool, several pages at once (their effects are
# idempotent in any order: a cache write per link, outputs with their own Nats-Msg-Id).
ROUTES = (Route(handle_trigger, bus.TRIGGERS_FIRED, emits=(ENRICHED, FAILED), concurrent=True),)


def enrich_router(settings: Settings, live: LiveRules, pool: ExtractorPool | None = None) -> StageRouter:
    """The stage; with `pool` (started and stopped by its owner), pages are read in its processes."""
    concurrency = PAGES_IN_FLIGHT_PER_PROCESS * pool.processes if pool is not None else 1
    return stage_router(
        "enrich", settings, ROUTES, lambda outputs: EnrichStage(settings, live, outputs, pool), concurrency
    )


def delivery_count(message: NatsMessage) -> int:
    metadata = message.raw_message.metadata
    return metadata.num_delivered if metadata else 1
