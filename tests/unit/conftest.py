"""Shared builders for unit tests: a share carried all the way to a ScheduledSession, by hand, no bus."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from pipeline.actions import schedule
from pipeline.domain.sessions import propose
from pipeline.messages import (
    Article,
    EnrichedContent,
    FacilitatorDecision,
    ScheduledSession,
    SessionPlan,
    Share,
    TriggerFired,
    stable_id,
)
from pipeline.providers import CreatedSession

NOW = datetime(2025, 3, 4, 10, 15, 30, tzinfo=UTC)
ARTICLE_URL = "https://www.linkedin.com/pulse/why-elearning-isnt-working"
JITSI = "https://meet.jit.si"


def make_content(
    *,
    title: str = "Why eLearning Isn't Working for Leadership and Soft Skills",
    author: str | None = "Josh Bersin",
    summary: str = "Companies spend billions on leadership development.",
    site_name: str | None = "LinkedIn",
    topics: tuple[str, ...] = ("leadership", "learning"),
    native_id: str = "1",
) -> EnrichedContent:
    share = Share.from_source(
        source="x", native_id=native_id, sharer="@britz", text="Worth a read on leadership", url=ARTICLE_URL
    )
    trigger = TriggerFired.caused_by(
        share,
        id=stable_id("trigger", share.id),
        share=share,
        canonical_url=ARTICLE_URL,
        rule="trusted-share-on-leadership-or-learning",
        score=0.9,
        topics=list(topics),
        plan=SessionPlan(lead_minutes=30, duration_minutes=60),
    )
    article = Article(
        url=ARTICLE_URL,
        final_url=ARTICLE_URL,
        title=title,
        author=author,
        site_name=site_name,
        summary=summary,
        word_count=300,
        reading_minutes=1,
    )
    return EnrichedContent.caused_by(
        trigger,
        id=stable_id("content", share.id),
        trigger=trigger,
        article=article,
    )


def make_session(now: datetime = NOW, **content: object) -> ScheduledSession:
    proposal = propose(make_content(**content), now)  # type: ignore[arg-type]
    decision = FacilitatorDecision.caused_by(
        proposal,
        id=stable_id("decision", proposal.id),
        proposal=proposal,
        decision="approved",
        decided_by="facilitator@example.com",
    )
    room = f"Impromptu-Live-{proposal.id}"
    return schedule(decision, CreatedSession(provider="jitsi", provider_id=room, join_url=f"{JITSI}/{room}"))


@pytest.fixture
def build_content() -> Callable[..., EnrichedContent]:
    return make_content


@pytest.fixture
def build_session() -> Callable[..., ScheduledSession]:
    return make_session
