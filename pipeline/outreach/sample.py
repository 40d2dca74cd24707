"""A session built from the seed story, for `impromptu render --sample`: previews templates with no bus at all."""

from __future__ import annotations

from pipeline.domain.sessions import preview_session, propose
from pipeline.messages import (
    Article,
    ChannelName,
    EnrichedContent,
    ScheduledSession,
    SessionPlan,
    Share,
    TriggerFired,
    stable_id,
    utc_now,
)
from pipeline.settings import Settings

ARTICLE_URL = "https://www.linkedin.com/pulse/why-elearning-isnt-working-leadership-soft-skills-josh-bersin"


def sample_session(settings: Settings, channels: list[ChannelName] | None = None) -> ScheduledSession:
    share = Share.from_source(
        source="x", native_id="sample", sharer="@britz", text="Josh Bersin on why eLearning fails", url=ARTICLE_URL
    )
    trigger = TriggerFired.caused_by(
        share,
        id=stable_id("trigger", share.id),
        share=share,
        canonical_url=ARTICLE_URL,
        rule="trusted-share-on-leadership-or-learning",
        score=0.9,
        topics=["leadership", "learning"],
        plan=SessionPlan(channels=channels or ["x", "linkedin", "facebook"]),
    )
    article = Article(
        url=ARTICLE_URL,
        final_url=ARTICLE_URL,
        title="Why eLearning Isn't Working for Leadership and Soft Skills",
        author="Josh Bersin",
        site_name="LinkedIn",
        summary="Companies spend billions on leadership programmes that people click through and forget. "
        "Soft skills are learned by practising them with others, in the flow of work.",
        word_count=900,
        reading_minutes=4,
    )
    content = EnrichedContent.caused_by(
        trigger, id=stable_id("content", share.id), trigger=trigger, article=article, topics=["leadership"]
    )
    return preview_session(propose(content, utc_now()), settings)
