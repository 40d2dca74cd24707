"""What a library entry says about a recording: title, tagline, description, readable tags, summary, resources.

Plain functions of the recording, what was kept and what its transcript and chat say; no bus code. Everything here
may be shown on a public page, so nothing internal goes into the text: not the rule's name, not who approved it
(kept in the provenance, shown only by setting), not a path or a host.
"""

from __future__ import annotations

from datetime import datetime

from slugify import slugify

from pipeline.domain.catalog import ArticleItem, Cue
from pipeline.domain.summary import detect_language, key_phrases, summarize
from pipeline.domain.transcripts import transcript_text
from pipeline.messages import (
    CHANNEL_NAMES,
    KeptFile,
    LibraryEntry,
    Provenance,
    Recording,
    Resource,
    ScheduledSession,
    Visibility,
    stable_id,
)

INTERNAL_CHANNELS = frozenset({"slack", "teams", "email"})  # seen by the organisation's own people only
PUBLIC_CHANNELS = frozenset(CHANNEL_NAMES) - INTERNAL_CHANNELS
MAX_TAGS = 20
MAX_TAG_LENGTH = 60
SUMMARY_TEXT_LIMIT = 200_000  # characters of transcript the summariser reads


def entry_id_for(session_id: str) -> str:
    """One entry per session: a corrected recording replaces the media of the same entry."""
    return stable_id("entry", session_id)


def article_id_for(canonical_url: str) -> str:
    return stable_id("article", canonical_url)


def tag_slug(tag: str) -> str:
    """The URL form of a readable tag: `Café Zürich` -> `cafe-zurich` (the tag itself stays as written)."""
    return slugify(tag) or "tag"


def readable_tags(values: list[str]) -> list[str]:
    """Tags as people wrote them, trimmed, each once whatever its case or accents, in their first spelling."""
    tags: dict[str, str] = {}
    for value in values:
        tag = " ".join(value.split())[:MAX_TAG_LENGTH]
        if tag and tag_slug(tag) not in tags:
            tags[tag_slug(tag)] = tag
    return list(tags.values())[:MAX_TAGS]


def visibility_of(session: ScheduledSession) -> Visibility:
    """A session announced on internal channels only (Slack, Teams, e-mail) stays internal in the library."""
    return "public" if set(session.proposal.channels) & PUBLIC_CHANNELS else "internal"


def when(started_at: datetime) -> str:
    return f"{started_at:%d %B %Y}".lstrip("0")


def length_text(seconds: int) -> str:
    if seconds < 60:
        return f"{seconds} s"
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60:02d} min" if minutes % 60 else f"{minutes // 60} h"


def transcript_summary(cues: list[Cue], language: str | None) -> list[str]:
    """3-5 key sentences of what was said (the enrich stage's extractive summariser), in the order they were said."""
    text = transcript_text(cues)[:SUMMARY_TEXT_LIMIT]
    if not text.strip():
        return []
    return summarize(text, key_phrases(text, language), language)


def transcript_language(cues: list[Cue], fallback: str | None) -> str | None:
    if not cues:
        return fallback
    detected, confidence = detect_language(" ".join(cue.text for cue in cues[:200]))
    return detected if detected and confidence >= 0.5 else fallback


def describe(
    recording: Recording,
    files: list[KeptFile],
    *,
    revision: int,
    cues: list[Cue],
    resources: list[Resource],
) -> LibraryEntry:
    session = recording.session
    proposal = session.proposal
    content = proposal.content
    article, share, trigger = content.article, content.trigger.share, content.trigger
    sharer = trigger.shared_by[0] if trigger.shared_by else None
    by_author = f" by {article.author}" if article.author else ""
    started_at = recording.started_at or session.starts_at
    duration = recording.duration_seconds
    if duration is None:
        duration = int((session.ends_at - session.starts_at).total_seconds())
    language = transcript_language(cues, article.language)
    summary = transcript_summary(cues, language)
    shared_by = sharer.name if sharer else share.sharer
    said = f" {summary[0]}" if summary else ""
    description = (
        f'A live session of {length_text(duration)} on {when(started_at)} about "{article.title}"{by_author}, '
        f"shared by {shared_by}.{said} {article.summary}".strip()
    )
    tags = readable_tags(
        [*trigger.topics, *content.topics, *([article.author] if article.author else []), *article.tags]
    )
    return LibraryEntry.caused_by(
        recording,
        id=f"{entry_id_for(session.id)}.r{revision}",
        entry_id=entry_id_for(session.id),
        revision=revision,
        title=proposal.title,
        tagline=f'A live conversation on "{article.title}"{by_author}',
        description=description,
        tags=tags,
        topics=sorted({*trigger.topics, *content.topics}),
        language=language,
        started_at=started_at,
        duration_seconds=duration,
        files=files,
        youtube_video_id=recording.youtube_video_id,
        thumbnail_url=recording.thumbnail_url or article.image,
        summary=summary,
        resources=resources,
        article_id=article_id_for(content.trigger.canonical_url),
        visibility=visibility_of(session),
        provenance=Provenance(
            shared_by=shared_by,
            sharer_handle=share.sharer,
            share_url=share.url,
            share_text=share.text,
            article_title=article.title,
            article_url=article.final_url,
            article_author=article.author,
            site_name=article.site_name,
            approved_by=session.approved_by,
            host=proposal.facilitator,
            rule=trigger.rule,
            session_id=session.id,
            provider=session.provider,
            channels=list(proposal.channels),
        ),
    )


def reading_item(session: ScheduledSession) -> ArticleItem:
    """The article that led to `session`, as a reading-list item."""
    content = session.proposal.content
    article, share, trigger = content.article, content.trigger.share, content.trigger
    sharer = trigger.shared_by[0] if trigger.shared_by else None
    by_author = f" by {article.author}" if article.author else ""
    return ArticleItem(
        article_id=article_id_for(trigger.canonical_url),
        url=article.final_url,
        title=article.title,
        author=article.author,
        site_name=article.site_name,
        published=article.published,
        summary=article.summary,
        tagline=f'"{article.title}"{by_author}, shared by {sharer.name if sharer else share.sharer}',
        key_phrases=article.key_phrases,
        topics=sorted({*trigger.topics, *content.topics}),
        language=article.language,
        image=article.image,
        shared_by=sharer.name if sharer else share.sharer,
        sharer_handle=share.sharer,
        first_shared_at=share.shared_at,
        visibility=visibility_of(session),
    )
