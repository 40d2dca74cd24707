"""`impromptu library`: list, search, show, edit, unpublish, publish and delete library entries.

Each command joins the running pipeline's bus (NATS_URL, or the server `impromptu run` embeds). `list` and `search`
build the same search index the pages use, from KV, for the command's life; edits go through the same functions
as the pages, with history.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Annotated

import typer

from pipeline.cli_support import checked_by, command_settings, run_async
from pipeline.errors import ImpromptuError

if TYPE_CHECKING:  # imported where used: `impromptu library --help` loads no bus, no search index
    from pipeline.archive.search import Hit, LibraryIndex, SearchQuery
    from pipeline.settings import Settings

library_cli = typer.Typer(
    no_args_is_help=True, help="The learning library: list, search, show, edit, unpublish, publish, delete."
)

By = Annotated[str, typer.Option("--by", help="Your login's name (`impromptu facilitators list`), for the history.")]


class NothingFound(ImpromptuError):
    """A list or search with no match: said, and exit 1."""


@asynccontextmanager
async def _index(settings: Settings) -> AsyncIterator[LibraryIndex]:
    from pipeline.archive.search import LibraryIndex
    from pipeline.connect import connected
    from pipeline.domain import catalog

    async with connected(settings) as broker:
        index = LibraryIndex()
        await index.start(await catalog.library_bucket(broker))
        try:
            yield index
        finally:
            await index.stop()


def _line(hit: Hit) -> str:
    from pipeline.domain.describe import length_text

    if hit.record is not None:
        entry = hit.record.entry
        flags = "".join(
            [
                " [unpublished]" if not hit.record.published else "",
                " [internal]" if entry.visibility == "internal" else "",
            ]
        )
        at = f" at {int(hit.moment // 60)}:{int(hit.moment % 60):02d}" if hit.moment is not None else ""
        return (
            f"{entry.entry_id}  {entry.started_at:%Y-%m-%d}  {length_text(entry.duration_seconds):>8}  {entry.title}"
            f"{flags}\n    {entry.tagline}  [{', '.join(entry.tags)}]{at}"
        )
    assert hit.article is not None
    article = hit.article
    led = f", {len(article.recordings)} recording(s)" if article.recordings else ""
    return f"{article.article_id}  article  {article.title}{led}\n    {article.url}"


def _print_page(query: SearchQuery, settings: Settings) -> None:
    async def run() -> None:
        async with _index(settings) as index:
            page = await index.search(query)
        if not page.hits:
            said = f"matches {query.q!r}" if query.q else "is in the library"
            filters = "; ".join(f"{name}: {', '.join(values)}" for name, values in query.filters.items())
            raise NothingFound(f"nothing {said}{f' ({filters})' if filters else ''}")
        for hit in page.hits:
            print(_line(hit))
        print(f"-- page {page.page} of {page.pages}, {page.total} in all")

    run_async(run())


def _filters(tag: list[str] | None, topic: list[str] | None) -> dict[str, list[str]]:
    return {name: values for name, values in (("tag", tag or []), ("topic", topic or [])) if values}


@library_cli.command("list")
def library_list(
    page: Annotated[int, typer.Option(help="Which page (newest first).")] = 1,
    everything: Annotated[
        bool, typer.Option("--all", help="Unpublished and internal entries too, and the reading list.")
    ] = False,
) -> None:
    """Recordings in the library, newest first."""
    from pipeline.archive.search import SearchQuery

    settings = command_settings(quiet=True)
    kinds = ("recording", "article") if everything else ("recording",)
    query = SearchQuery(
        sort="newest",
        page=page,
        per_page=settings.library_page_size,
        include_internal=everything,
        include_unlisted=everything,
        kinds=kinds,  # type: ignore[arg-type]
    )
    _print_page(query, settings)


@library_cli.command("search")
def library_search(
    query: Annotated[str, typer.Argument(help='Words, "a phrase", -excluded.')],
    tag: Annotated[list[str] | None, typer.Option(help="Only entries with this tag (repeatable).")] = None,
    topic: Annotated[list[str] | None, typer.Option(help="Only entries on this topic (repeatable).")] = None,
    page: Annotated[int, typer.Option(help="Which page of results.")] = 1,
    newest: Annotated[bool, typer.Option("--newest", help="Newest first instead of best match first.")] = False,
) -> None:
    """Recordings and articles matching QUERY (title, tagline, tags, description, transcript, article); exit 1 when
    nothing matches."""
    from pipeline.archive.search import SearchQuery

    settings = command_settings(quiet=True)
    search = SearchQuery(
        q=query,
        filters=_filters(tag, topic),
        sort="newest" if newest else "relevance",
        page=page,
        per_page=settings.library_page_size,
        include_internal=True,
    )
    _print_page(search, settings)


async def _with_kv(settings: Settings, work):  # type: ignore[no-untyped-def]
    from pipeline.connect import connected
    from pipeline.domain import catalog

    async with connected(settings) as broker:
        return await work(broker, await catalog.library_bucket(broker))


@library_cli.command("show")
def library_show(
    entry_id: str, as_json: Annotated[bool, typer.Option("--json", help="The whole record as JSON.")] = False
) -> None:
    """One entry: what people read, its files, where it came from, its history."""
    from pipeline.domain import catalog
    from pipeline.domain.describe import length_text

    settings = command_settings(quiet=True)

    async def work(broker, kv):  # type: ignore[no-untyped-def]
        record = await catalog.get_record(kv, entry_id)
        if record is None:
            raise catalog.EntryMissing(f"no library entry {entry_id!r}: see `impromptu library list`")
        return record

    record = run_async(_with_kv(settings, work))
    if as_json:
        print(record.model_dump_json(indent=2))
        return
    entry = record.entry
    state = "published" if record.published else "unpublished"
    print(f"{entry.entry_id}  {entry.title}  ({state}, {entry.visibility}, revision {entry.revision})")
    print(f"  page:        {settings.base_url}/library/{entry.entry_id}")
    print(f"  tagline:     {entry.tagline}")
    print(f"  tags:        {', '.join(entry.tags)}")
    print(f"  held:        {entry.started_at:%Y-%m-%d %H:%M} UTC, {length_text(entry.duration_seconds)}")
    for file in entry.files:
        print(f"  {file.kind + ':':<12} {file.size:,} bytes {file.content_type} ({file.store} {file.key})")
    if entry.youtube_video_id:
        print(f"  youtube:     https://www.youtube.com/watch?v={entry.youtube_video_id}")
    p = entry.provenance
    print(f"  shared by:   {p.shared_by} ({p.sharer_handle}) {p.share_url}")
    print(f"  article:     {p.article_title} by {p.article_author or 'unknown'} {p.article_url}")
    print(f"  approved by: {p.approved_by or '-'}; hosted by {p.host or '-'}; rule {p.rule}; session {p.session_id}")
    for resource in entry.resources:
        print(f"  resource:    {resource.url} ({resource.shared_by or 'someone'})")
    print(f"  description: {entry.description}")
    for change in record.history:
        fields = "; ".join(f"{name}: {c.before!r} -> {c.after!r}" for name, c in change.changes.items())
        print(f"  {change.at:%Y-%m-%d %H:%M} {change.by}: {change.what} {fields or change.detail}".rstrip())


@library_cli.command("edit")
def library_edit(
    entry_id: str,
    by: By,
    tagline: Annotated[str | None, typer.Option(help="The one line under the title.")] = None,
    description: Annotated[str | None, typer.Option(help="What the session was about.")] = None,
    tags: Annotated[str | None, typer.Option(help="Comma-separated, as people should read them.")] = None,
) -> None:
    """Change what people read about an entry; kept in its history."""
    from pipeline.domain import catalog
    from pipeline.domain.describe import readable_tags

    settings = command_settings(quiet=True)
    by = checked_by(by)
    if tagline is None and description is None and tags is None:
        raise ImpromptuError("nothing to change: give --tagline, --description and/or --tags")
    new_tags = readable_tags(tags.split(",")) if tags is not None else None

    async def work(broker, kv):  # type: ignore[no-untyped-def]
        return await catalog.edit(kv, entry_id, by=by, tagline=tagline, description=description, tags=new_tags)

    record = run_async(_with_kv(settings, work))
    last = record.history[-1]
    changed = ", ".join(last.changes) if last.by == by and last.what == "edited" else "nothing (already so)"
    print(f"{entry_id}: {changed} changed by {by}")


def _publish(entry_id: str, by: str, published: bool, reason: str) -> None:
    from pipeline.domain import catalog

    settings = command_settings(quiet=True)
    by = checked_by(by)

    async def work(broker, kv):  # type: ignore[no-untyped-def]
        return await catalog.set_published(kv, entry_id, published, by=by, reason=reason)

    run_async(_with_kv(settings, work))
    print(f"{entry_id}: {'published' if published else 'unpublished'} by {by}")


@library_cli.command("unpublish")
def library_unpublish(
    entry_id: str, by: By, reason: Annotated[str, typer.Option(help="Why, for the history.")] = ""
) -> None:
    """Take an entry off every page, feed and search (its media are kept; `publish` brings it back)."""
    _publish(entry_id, by, False, reason)


@library_cli.command("publish")
def library_publish(entry_id: str, by: By) -> None:
    """Put an unpublished entry back."""
    _publish(entry_id, by, True, "")


@library_cli.command("delete")
def library_delete(
    entry_id: str,
    by: By,
    yes: Annotated[bool, typer.Option("--yes", help="Yes, delete its media and the entry for good.")] = False,
) -> None:
    """Delete an entry and its media for good (unpublish keeps them)."""
    from pipeline.archive import takedown
    from pipeline.archive.media import media_store

    settings = command_settings(quiet=True)
    by = checked_by(by)
    if not yes:
        raise ImpromptuError(f"this deletes {entry_id} and its media for good: add --yes (or `unpublish` instead)")

    async def work(broker, kv):  # type: ignore[no-untyped-def]
        store = await media_store(settings, broker)
        try:
            return await takedown.remove(kv, store, entry_id, by=by)
        finally:
            await store.close()

    record = run_async(_with_kv(settings, work))
    print(f"{entry_id}: deleted by {by} with {len(record.entry.files)} file(s)")


def record(
    session_id: str,
    media: Annotated[str, typer.Option(help="The recording: a URL, or a file inside the import folder.")],
    transcript: Annotated[str | None, typer.Option(help="Its WebVTT transcript: a URL or an imported file.")] = None,
    chat: Annotated[str | None, typer.Option(help="Its chat, as text: a URL or an imported file.")] = None,
    by: Annotated[
        str, typer.Option("--by", help="Your login's name, kept in the entry's history (default: your user name).")
    ] = "",
) -> None:
    """Hand a held session's recording to the archive stage (a correction replaces the media, with history).

    A local file is read only from the import folder (IMPROMPTU_RECORDINGS_IMPORT_DIR, default DATA_DIR/import),
    given relative to it or by a path inside it; a URL is fetched by the archive stage's guarded fetcher."""
    import getpass
    import mimetypes

    from pipeline import bus
    from pipeline.archive.keep import check_held
    from pipeline.archive.sources import recording_location
    from pipeline.connect import connected
    from pipeline.messages import Recording, RecordingFile, utc_now
    from pipeline.stores import stored_session

    settings = command_settings(quiet=True)
    if by:  # a name given for the entry's history is a login's; without --by, the system user hands it in
        by = checked_by(by)
    # sound only (an .m4a, a .wav) is kept as audio: the library plays it and the podcast feed offers it
    media_kind = "audio" if (mimetypes.guess_type(media)[0] or "").startswith("audio/") else "video"
    files = [
        RecordingFile(kind=kind, location=recording_location(value, settings))  # type: ignore[arg-type]
        for kind, value in ((media_kind, media), ("transcript", transcript), ("chat", chat))
        if value is not None
    ]

    async def publish() -> Recording:
        async with connected(settings) as broker:
            session = await stored_session(broker, session_id)
            if session is None:
                raise ImpromptuError(f"no scheduled session {session_id!r}: see `impromptu proposals list`")
            await check_held(broker, session, utc_now())  # the archive stage would refuse it: say so now
            recording = Recording.arrived(
                session, source="cli", files=files, submitted_by=by or getpass.getuser() or "cli"
            )
            ack = await bus.publish(broker, bus.RECORDINGS, recording)
        print(f"{recording.id} {'already handed in' if ack.duplicate else 'handed in'}")
        return recording

    run_async(publish())
    from pipeline.domain.describe import entry_id_for

    entry_id = entry_id_for(session_id)
    print(f"the archive stage keeps it as {entry_id}: see `impromptu library show {entry_id}`")
