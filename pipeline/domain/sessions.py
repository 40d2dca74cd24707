"""Pure session logic: when it starts, what it is called, its Jitsi room and its calendar invite."""

from __future__ import annotations

import hashlib
import re
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import icalendar

from pipeline.messages import (
    Article,
    EnrichedContent,
    EnrichmentFailed,
    ProviderPreview,
    ScheduledSession,
    SessionProposal,
    stable_id,
    utc_now,
)
from pipeline.providers.registry import provider_class

if TYPE_CHECKING:
    from pipeline.domain.slots import Slot
    from pipeline.settings import Settings

SLOT_MINUTES = 1
DECISION_MARGIN = timedelta(minutes=5)


def first_slot(now: datetime, lead_minutes: int) -> datetime:
    """Lead time from now, rounded up to the next whole minute (the seed's "30 mins out")."""
    earliest = now + timedelta(minutes=lead_minutes)
    overshoot = (earliest.minute % SLOT_MINUTES) * 60 + earliest.second + earliest.microsecond / 1e6
    if overshoot == 0:
        return earliest
    return (earliest + timedelta(seconds=SLOT_MINUTES * 60 - overshoot)).replace(microsecond=0)


def content_from_post(failure: EnrichmentFailed) -> EnrichedContent:
    """When the page cannot be read and the rule allows it: the post's own text stands in for the article."""
    share = failure.trigger.share
    text = " ".join(share.text.split()) or failure.trigger.canonical_url
    title = text if len(text) <= 90 else text[:90].rsplit(" ", 1)[0] + "…"
    article = Article(
        url=share.url,
        final_url=share.url,
        title=title,
        summary=text,
        word_count=0,
        reading_minutes=0,
    )
    return EnrichedContent.caused_by(
        failure,
        id=f"enriched:{failure.trigger.id}",
        trigger=failure.trigger,
        article=article,
        topics=list(failure.trigger.topics),
        unread_reason=failure.reason,
    )


def vetoed(content: EnrichedContent) -> str | None:
    """Why a rule with `article_must_match` refuses this article, or None when it may be proposed."""
    trigger = content.trigger
    if not trigger.plan.article_must_match or content.unread_reason is not None:
        return None
    if any(topic in content.topics for topic in trigger.topics):
        return None
    found = ", ".join(content.topics) or "no topic"
    return f"the article matches {found}, none of the share's topics {', '.join(trigger.topics) or '(none)'}"


def proposal_id_for(trigger_id: str) -> str:
    """One proposal per trigger; a later sharer of the same link (SharerJoined) finds it by the trigger's id."""
    return stable_id("proposal", trigger_id)


def propose(
    content: EnrichedContent,
    now: datetime,
    *,
    slot: Slot | None = None,
    preview: ProviderPreview | None = None,
    margin: timedelta = DECISION_MARGIN,
    timezone: str = "UTC",
) -> SessionProposal:
    """The proposal for `content`: at `slot` (else the plan's lead time from now), lapsing `margin` before it;
    `timezone` (the rules file's) is the zone its announcements show the start in."""
    share, article, plan = content.trigger.share, content.article, content.trigger.plan
    starts_at = slot.starts_at if slot else first_slot(now, plan.lead_minutes)
    by_author = f" by {article.author}" if article.author else ""
    return SessionProposal.caused_by(
        content,
        id=proposal_id_for(content.trigger.id),
        content=content,
        title=f"Live: {article.title}",
        description=(
            f'{share.sharer} shared "{article.title}"{by_author}. Let\'s talk it through, live. {article.summary}'
        ).strip(),
        starts_at=starts_at,
        duration_minutes=plan.duration_minutes,
        provider=preview.provider if preview else "jitsi",
        preview=preview,
        facilitator=slot.facilitator if slot else None,
        slot_reason=slot.reason if slot else f"{plan.lead_minutes} min lead time",
        timezone=timezone,
        channels=list(plan.channels),
        expires_at=max(now, starts_at - margin),
    )


def calendar_invite(
    *, uid: str, title: str, description: str, starts_at: datetime, ends_at: datetime, join_url: str
) -> str:
    calendar = icalendar.Calendar()
    calendar.add("prodid", "-//Impromptu//Live learning sessions//EN")
    calendar.add("version", "2.0")
    calendar.add("method", "PUBLISH")
    event = icalendar.Event()
    event.add("uid", f"{uid}@impromptu")
    event.add("dtstamp", utc_now())
    event.add("dtstart", starts_at)
    event.add("dtend", ends_at)
    event.add("summary", title)
    event.add("description", f"{description}\n\nJoin: {join_url}")
    event.add("location", join_url)
    event.add("url", join_url)
    calendar.add_component(event)
    ics: bytes = calendar.to_ical()  # icalendar leaves to_ical() unannotated
    return ics.decode()


def session_id_for(proposal_id: str) -> str:
    return stable_id("session", proposal_id)


KV_KEY_SAFE = re.compile(r"[A-Za-z0-9_=-]{1,200}")


def provider_key(provider: str, provider_id: str) -> str:
    """The key, in the sessions bucket, of the session held at `provider` under `provider_id` (a Zoom meeting id, a
    Jitsi room, a YouTube broadcast): how a provider's recording event finds our session without reading the bucket.
    An id a NATS key cannot hold is keyed by its digest."""
    if not KV_KEY_SAFE.fullmatch(provider_id):
        provider_id = hashlib.sha256(provider_id.encode()).hexdigest()
    return f"{provider}.{provider_id}"


def preview_session(proposal: SessionProposal, settings: Settings, join_url: str | None = None) -> ScheduledSession:
    """The session as it will look once approved: with its real join link once made, before that its provider's
    stand-in of realistic length."""
    join_url = join_url or provider_class(proposal.provider).stand_in_join_url(settings, proposal.title)
    ends_at = proposal.starts_at + timedelta(minutes=proposal.duration_minutes)
    return ScheduledSession.caused_by(
        proposal,
        id=f"preview:{proposal.id}",
        proposal=proposal,
        approved_by="(preview)",
        provider=proposal.provider,
        join_url=join_url,
        starts_at=proposal.starts_at,
        ends_at=ends_at,
        ics="",
    )
