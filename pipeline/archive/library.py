"""The learning library: one JSON file per recording, described for later search."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

from pipeline.messages import LibraryEntry, Provenance, Recording, stable_id


def _tag(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def describe(recording: Recording) -> LibraryEntry:
    session = recording.session
    proposal = session.proposal
    content = proposal.content
    article, share, trigger = content.article, content.trigger.share, content.trigger
    by_author = f" by {article.author}" if article.author else ""
    tags = sorted(
        {_tag(t) for t in [*trigger.topics, *content.topics]}
        | ({_tag(article.author)} if article.author else set())
        | ({_tag(article.site_name)} if article.site_name else set())
    )
    return LibraryEntry.caused_by(
        recording,
        id=stable_id("entry", recording.id),
        tagline=f'A live conversation on "{article.title}"{by_author}',
        description=(
            f"Recorded {recording.recorded_at:%Y-%m-%d}, {recording.duration_minutes} min. "
            f"{share.sharer} shared the article; {session.approved_by} approved the session. {article.summary}"
        ),
        tags=[t for t in tags if t],
        media_url=recording.media_url,
        recorded_at=recording.recorded_at,
        duration_minutes=recording.duration_minutes,
        provenance=Provenance(
            shared_by=share.sharer,
            share_url=share.url,
            share_text=share.text,
            article_url=article.final_url,
            article_author=article.author,
            rule=trigger.rule,
            session_id=session.id,
        ),
    )


def keep_media(folder: Path, entry: LibraryEntry) -> LibraryEntry:
    """A recording that is a local file is copied into the library, so the entry outlives the original."""
    source = Path(entry.media_url.removeprefix("file://"))
    if "://" in entry.media_url.removeprefix("file://") or not source.is_file():
        return entry
    kept = folder / "media" / f"{entry.id}{source.suffix}"
    kept.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, kept)
    return entry.model_copy(update={"media_url": str(kept)})


def save(folder: Path, entry: LibraryEntry) -> Path:
    """Idempotent: the same recording always lands in the same file."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{entry.id}.json"
    partial = path.with_suffix(".partial")
    partial.write_text(entry.model_dump_json(indent=2), encoding="utf-8")
    os.replace(partial, path)
    return path


def entries(folder: Path) -> list[LibraryEntry]:
    if not folder.exists():
        return []
    found = [LibraryEntry.model_validate_json(p.read_text(encoding="utf-8")) for p in folder.glob("*.json")]
    return sorted(found, key=lambda e: e.recorded_at, reverse=True)


def search(folder: Path, query: str) -> list[LibraryEntry]:
    """Entries whose tagline, description, tags or provenance contain every word of the query."""
    words = query.lower().split()
    return [
        entry
        for entry in entries(folder)
        if all(word in json.dumps(entry.model_dump(mode="json")).lower() for word in words)
    ]
