"""The learning library's pages: /library (search, facets, cards, paging), /library/{entry_id} (player, transcript
with clickable timestamps, summary, resources, provenance), /library/articles/{article_id} (a reading-list item),
the media each page plays (/library/{entry_id}/media/{kind}, transcript.vtt), posters, feeds, and the facilitators'
edit / unpublish / publish / delete forms.

Reads the KV bucket impromptu-library (pipeline/domain/catalog.py) for one entry, the process's search index
(pipeline/archive/search.py) for lists, the media store (pipeline/archive/media.py) for bytes; writes only through
the catalog's functions (edit, set_published, forget) and the store's delete, then waits for the index to have the
change so the next page shows it.

Who sees what (the same rules in the JSON API, pipeline/web/library_api.py, and the feeds):
- IMPROMPTU_LIBRARY_PUBLIC=false: every library route needs a login (pages redirect to /login, the rest 401).
- An entry or article with visibility "internal" exists only for a login (404 otherwise, media included).
- An unpublished entry, or an article taken off the list, exists only for a facilitator.
- Feeds carry public, published entries only, whoever asks.
Public pages never show the rule's name, file keys or internal ids other than the entry's; who approved and hosted
only with IMPROMPTU_LIBRARY_SHOW_FACILITATORS.
"""

import asyncio  # no `from __future__ import annotations`: FastAPI must resolve the routes' local Annotated types
import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlencode
from xml.sax.saxutils import escape as xml_escape

import structlog
from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import Response
from faststream.nats import NatsBroker
from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue

from pipeline.archive import feeds, takedown
from pipeline.archive.media import MediaStore, media_store
from pipeline.archive.media_http import media_response
from pipeline.archive.search import FACETS, LibraryIndex, SearchPage, SearchQuery, Sort
from pipeline.domain import catalog
from pipeline.domain.catalog import ArticleItem, Cue, EntryMissing, LibraryRecord
from pipeline.messages import KeptFile, LibraryEntry
from pipeline.settings import Settings
from pipeline.web.auth import RoleMissing, facilitator_for_token, has_role, login_url, session_facilitator
from pipeline.web.templating import SECURITY_HEADERS, flash, register, see_other, templates

log = structlog.get_logger("pipeline.archive")

MEDIA_KINDS = ("video", "audio", "transcript", "chat")
YOUTUBE_EMBED = "https://www.youtube-nocookie.com"
THUMBNAIL_ORIGINS = ("https://i.ytimg.com/", "https://img.youtube.com/")
YOUTUBE_ID = re.compile(r"[A-Za-z0-9_-]{11}")
FEED_SIZE = 50
TAGLINE_MAX = 300
DESCRIPTION_MAX = 10_000
TAG_MAX = 80
TAGS_MAX = 30
REASON_MAX = 500
QUERY_MAX = 500
FILTER_VALUES_MAX = 10
PAGE_MAX = 1000
INDEX_WAIT_SECONDS = 5.0
FACET_LABELS = {
    "tag": "Tags",
    "topic": "Topics",
    "author": "Authors",
    "sharer": "Shared by",
    "facilitator": "Facilitators",
    "year": "Year",
    "kind": "Kind",
}
# The library's pages run one same-origin script (the player's seek) and play same-origin media; YouTube
# thumbnails are the only images from elsewhere. The YouTube embed opens frame-src for its one origin, on its page.
LIBRARY_CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self' https://i.ytimg.com https://img.youtube.com; "
    "media-src 'self'; script-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)


class LibraryServices:
    """What the library's routes read: the KV bucket, this process's search index and the media store.

    An index or store handed in is the caller's (started, stopped by it); otherwise each is started on first use
    (the index rebuilt from KV and following it) and stopped by `close()`, which web.server.serve_http calls."""

    def __init__(
        self,
        settings: Settings,
        broker: NatsBroker,
        *,
        index: LibraryIndex | None = None,
        store: MediaStore | None = None,
    ) -> None:
        self.settings = settings
        self.broker = broker
        self._index = index
        self._store = store
        self._owned: list[LibraryIndex | MediaStore] = []
        self._kv: KeyValue | None = None
        self._lock = asyncio.Lock()

    async def kv(self) -> KeyValue:
        if self._kv is None:
            self._kv = await catalog.library_bucket(self.broker)
        return self._kv

    async def index(self) -> LibraryIndex:
        if self._index is None:
            async with self._lock:
                if self._index is None:
                    index = LibraryIndex(storage=self.settings.library_index_storage)
                    await index.start(await self.kv())
                    self._owned.append(index)
                    self._index = index
        return self._index

    async def store(self) -> MediaStore:
        if self._store is None:
            async with self._lock:
                if self._store is None:
                    store = await media_store(self.settings, self.broker)
                    self._owned.append(store)
                    self._store = store
        return self._store

    async def close(self) -> None:
        owned, self._owned = self._owned, []
        for part in owned:
            if isinstance(part, LibraryIndex):
                await part.stop()
                self._index = None
            else:
                await part.close()
                self._store = None


@dataclass(frozen=True)
class Reader:
    """Who is asking: nobody, a login (sees internal entries), or a facilitator (sees unpublished ones too)."""

    name: str | None = None
    facilitator: bool = False
    by_cookie: bool = False

    @property
    def logged_in(self) -> bool:
        return self.name is not None


def reader_of(request: Request, settings: Settings) -> Reader:
    """The login of this request: the approval pages' session cookie, or a login's API token (Bearer)."""
    name = session_facilitator(request, settings) if "session" in request.scope else None
    by_cookie = name is not None
    if name is None:
        header = request.headers.get("authorization", "")
        if header[:7].lower() == "bearer " and header[7:].strip():
            name = facilitator_for_token(settings.current_logins(), header[7:].strip())
    if name is None:
        return Reader()
    return Reader(name=name, facilitator=has_role(settings, name, "facilitator"), by_cookie=by_cookie)


def may_read_library(reader: Reader, settings: Settings) -> bool:
    return settings.library_public or reader.logged_in


def may_see_entry(record: LibraryRecord, reader: Reader) -> bool:
    if record.entry.visibility == "internal" and not reader.logged_in:
        return False
    return record.published or reader.facilitator


def may_see_article(article: ArticleItem, reader: Reader) -> bool:
    if article.visibility == "internal" and not reader.logged_in:
        return False
    return article.listed or reader.facilitator


def in_feeds(record: LibraryRecord) -> bool:
    return record.published and record.entry.visibility == "public"


def search_query(
    reader: Reader,
    settings: Settings,
    *,
    q: str = "",
    filters: dict[str, list[str]] | None = None,
    sort: Sort = "relevance",
    page: int = 1,
) -> SearchQuery:
    """The index query for this reader: internal entries only with a login, unpublished only for a facilitator."""
    allowed = {name for name in FACETS if name != "facilitator" or settings.library_show_facilitators}
    kept = {
        name: [v[: TAG_MAX * 2] for v in values if v.strip()][:FILTER_VALUES_MAX]
        for name, values in (filters or {}).items()
        if name in allowed
    }
    return SearchQuery(
        q=q[:QUERY_MAX],
        filters={name: values for name, values in kept.items() if values},
        sort=sort,
        page=min(max(page, 1), PAGE_MAX),
        per_page=settings.library_page_size,
        include_internal=reader.logged_in,
        include_unlisted=reader.facilitator,
    )


def clock(seconds: float | int | None) -> str:
    """83 -> 01:23, 3723 -> 1:02:03: a transcript timestamp and the #t= of its link."""
    total = int(seconds or 0)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


def length(seconds: int | None) -> str:
    """How long a recording is, for people: 47 min, 1 h 05 min, 40 s."""
    if not seconds:
        return ""
    if seconds < 60:
        return f"{seconds} s"
    minutes = round(seconds / 60)
    return f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"{minutes} min"


def recorded(moment: datetime | None) -> str:
    return "" if moment is None else moment.astimezone(UTC).strftime("%-d %B %Y, %H:%M UTC")


def day(moment: datetime | None) -> str:
    return "" if moment is None else moment.astimezone(UTC).strftime("%-d %b %Y")


def entry_path(entry_id: str, moment: float | None = None) -> str:
    path = f"/library/{quote(entry_id, safe='')}"
    return path if moment is None else f"{path}#t={clock(moment)}"


def article_path(article_id: str) -> str:
    return f"/library/articles/{quote(article_id, safe='')}"


def tag_path(tag: str) -> str:
    return "/library?" + urlencode({"tag": tag}, quote_via=quote)


def youtube_id(entry: LibraryEntry) -> str | None:
    return entry.youtube_video_id if entry.youtube_video_id and YOUTUBE_ID.fullmatch(entry.youtube_video_id) else None


def thumbnail(entry: LibraryEntry) -> str:
    """YouTube's thumbnail (its https URL; the only outside images the pages' CSP allows), else our SVG poster."""
    if entry.thumbnail_url and entry.thumbnail_url.startswith(THUMBNAIL_ORIGINS):
        return entry.thumbnail_url
    video = youtube_id(entry)
    if video:
        return f"https://i.ytimg.com/vi/{video}/hqdefault.jpg"
    return entry_path(entry.entry_id) + "/poster.svg"


def playable(entry: LibraryEntry) -> KeptFile | None:
    """What the player plays: the video, else the audio (a YouTube-only entry has neither)."""
    return entry.file("video") or entry.file("audio")


def poster_svg(title: str, seed: str, label: str) -> str:
    """A 16:9 poster with the title on it, for items without a thumbnail (no image tools needed)."""
    hue = int(hashlib.sha256(seed.encode()).hexdigest()[:4], 16) % 360
    lines: list[str] = []
    for word in title.split():
        if lines and len(lines[-1]) + 1 + len(word) <= 24:
            lines[-1] += " " + word
        else:
            lines.append(word[:24])
    if len(lines) > 4:
        lines = [*lines[:3], lines[3][:21] + "…"]
    top = 180 - 24 * len(lines)
    text = "".join(
        f'<text x="40" y="{top + 52 * i}" font-size="40" font-weight="700">{xml_escape(line)}</text>'
        for i, line in enumerate(lines)
    )
    return (
        '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 640 360" width="640" height="360" role="img">'
        f"<title>{xml_escape(title)}</title>"
        f'<rect width="640" height="360" fill="hsl({hue} 45% 30%)"/>'
        f'<g fill="#fff" font-family="system-ui, sans-serif">{text}'
        f'<text x="40" y="330" font-size="22" opacity=".8">{xml_escape(label)}</text></g></svg>'
    )


def transcript_vtt(cues: list[Cue], total_seconds: int) -> str:
    """WebVTT of the transcript's cues (each shown until the next one starts)."""

    def stamp(seconds: float) -> str:
        millis = round(seconds * 1000)
        hours, rest = divmod(millis, 3_600_000)
        minutes, rest = divmod(rest, 60_000)
        return f"{hours:02d}:{minutes:02d}:{rest // 1000:02d}.{rest % 1000:03d}"

    blocks = ["WEBVTT", ""]
    for i, cue in enumerate(cues):
        end = cues[i + 1].start if i + 1 < len(cues) else max(cue.start + 5, float(total_seconds))
        text = " ".join(cue.text.replace("-->", "→").split())
        if cue.speaker:
            text = f"<v {' '.join(cue.speaker.replace('>', ' ').split())}>{text}"
        blocks += [f"{stamp(cue.start)} --> {stamp(max(end, cue.start + 0.5))}", text, ""]
    return "\n".join(blocks)


def parse_tags(text: str) -> list[str]:
    """Tags as typed (comma-separated), readable as they are: trimmed, each once, bounded."""
    tags: list[str] = []
    for part in text.split(","):
        tag = " ".join(part.split())[:TAG_MAX]
        if tag and tag.casefold() not in {t.casefold() for t in tags}:
            tags.append(tag)
    return tags[:TAGS_MAX]


def query_url(base: dict[str, Any], **change: Any) -> str:
    """/library with the current search, some of it changed (None removes); page resets unless given."""
    params = {**base, "page": None, **change}
    pairs: list[tuple[str, str]] = []
    for name, value in params.items():
        if value is None or value == "" or value == []:
            continue
        for one in value if isinstance(value, list) else [value]:
            pairs.append((name, str(one)))
    return "/library" + ("?" + urlencode(pairs, quote_via=quote) if pairs else "")


register(
    filters={
        "clock": clock,
        "duration": length,
        "recorded": recorded,
        "day": day,
        "entry_path": entry_path,
        "article_path": article_path,
        "tag_path": tag_path,
        "thumbnail": thumbnail,
    },
    globals={"FACET_LABELS": FACET_LABELS},
)


def secured(response: Response, csp: str = LIBRARY_CSP, *, private: bool = False) -> Response:
    response.headers.update(SECURITY_HEADERS)
    response.headers["Content-Security-Policy"] = csp
    if private:
        response.headers["Cache-Control"] = "no-store"
    return response


def render(
    request: Request, reader: Reader, name: str, context: dict[str, Any], status: int = 200, csp: str = LIBRARY_CSP
) -> Response:
    token = request.scope.get("csrftoken")
    values = {
        "facilitator": reader.name if reader.by_cookie else None,
        "reader": reader,
        "can_log_in": "session" in request.scope,
        "login_href": login_url(request),
        "csrftoken": token() if token else "",
        "flashes": request.session.pop("flash", []) if "session" in request.scope else [],
        "errors": [],
        **context,
    }
    response = templates.TemplateResponse(request, name, values, status_code=status)
    # pages carry the login's name, flashes and a CSRF token: never cached for the next person
    return secured(response, csp, private=True)


async def revision_of(kv: KeyValue, key: str) -> int:
    """The key's last revision, a delete marker's too (what the index must have applied)."""
    try:
        found = await kv.get(key)
    except KeyNotFoundError as gone:
        entry = getattr(gone, "entry", None)
        return int(getattr(entry, "revision", 0) or 0)
    return int(found.revision or 0)


def library_router(settings: Settings, library: LibraryServices) -> APIRouter:
    """Every /library route (pages, media, posters, feeds, facilitator forms); the JSON API is in api.py."""
    router = APIRouter(include_in_schema=False)

    def page(
        request: Request, reader: Reader, name: str, context: dict[str, Any], status: int = 200, csp: str = LIBRARY_CSP
    ) -> Response:
        return render(
            request, reader, name, {"show_facilitators": settings.library_show_facilitators, **context}, status, csp
        )

    def reader_for(request: Request) -> Reader:
        """The reader, when the library is open to them: else a redirect to the login page (pages) or 401."""
        reader = reader_of(request, settings)
        if may_read_library(reader, settings):
            return reader
        if request.url.path.endswith((".xml", ".vtt", ".svg")) or "/media/" in request.url.path:
            raise HTTPException(401, "the library needs a login", headers={"WWW-Authenticate": "Bearer"})
        raise HTTPException(303, "log in first", headers={"Location": login_url(request)})

    def facilitator_for(request: Request) -> Reader:
        """A facilitator logged in with the cookie (the forms are CSRF-checked): else the login page or 403."""
        reader = reader_of(request, settings)
        if not reader.by_cookie:
            raise HTTPException(303, "log in first", headers={"Location": login_url(request)})
        if not reader.facilitator:  # the approval pages' 403 page (a cookie means they are installed)
            log.warning("web.role_refused", name=reader.name, role="facilitator", path=request.url.path)
            raise RoleMissing(reader.name or "", "facilitator")
        return reader

    def missing(request: Request, reader: Reader, what: str = "recording") -> Response:
        context = {"title": "Not in the library", "what": what}
        return page(request, reader, "library/missing.html", context, 404)

    async def visible_record(entry_id: str, reader: Reader) -> LibraryRecord | None:
        record = await catalog.get_record(await library.kv(), entry_id)
        return record if record is not None and may_see_entry(record, reader) else None

    async def settled(key: str) -> None:
        """Wait until this process's index has the change, so the next page (a list, a search) shows it."""
        kv = await library.kv()
        revision = await revision_of(kv, key)
        index = await library.index()
        if revision and not await index.wait_for(key, revision, INDEX_WAIT_SECONDS):
            log.warning("library.index_behind", key=key, revision=revision)

    @router.get("/library")
    async def library_page(request: Request) -> Response:
        reader = reader_for(request)
        params = request.query_params
        filters = {name: params.getlist(name) for name in FACETS if params.getlist(name)}
        sort: Sort = "newest" if params.get("sort") == "newest" else "relevance"
        try:
            page_number = int(params.get("page", "1"))
        except ValueError:
            page_number = 1
        query = search_query(reader, settings, q=params.get("q", ""), filters=filters, sort=sort, page=page_number)
        found: SearchPage = await (await library.index()).search(query)
        current = {"q": query.q, "sort": None if sort == "relevance" else sort, **query.filters}
        shown_facets = [name for name in FACETS if name in found.facets and name != "kind"]
        if not settings.library_show_facilitators:
            shown_facets = [name for name in shown_facets if name != "facilitator"]

        def toggle(name: str, value: str) -> str:
            chosen = query.filters.get(name, [])
            values = [v for v in chosen if v != value] if value in chosen else [*chosen, value]
            return query_url(current, **{name: values})

        context = {
            "found": found,
            "query": query,
            "current": current,
            "toggle": toggle,
            "facet_names": shown_facets,
            "url": lambda **change: query_url(current, **change),
            "filtering": bool(query.q or query.filters),
        }
        return page(request, reader, "library/library.html", context)

    @router.get("/library/feed.xml")
    async def atom(request: Request) -> Response:
        reader_for(request)
        records = await feed_records()
        body = feeds.atom_feed(records, base_url=settings.base_url)
        return Response(
            body, media_type="application/atom+xml; charset=utf-8", headers={"Cache-Control": "max-age=300"}
        )

    @router.get("/library/podcast.xml")
    async def podcast(request: Request) -> Response:
        reader_for(request)
        records = [r for r in await feed_records() if playable(r.entry) is not None]
        body = feeds.podcast_feed(records, base_url=settings.base_url)
        return Response(body, media_type="application/rss+xml; charset=utf-8", headers={"Cache-Control": "max-age=300"})

    async def feed_records() -> list[LibraryRecord]:
        """The newest public, published recordings (what anyone may follow), a bounded number."""
        query = SearchQuery(sort="newest", per_page=FEED_SIZE, kinds=("recording",))
        found = await (await library.index()).search(query)
        return [hit.record for hit in found.hits if hit.record is not None and in_feeds(hit.record)]

    @router.get("/library/articles/{article_id}")
    async def article_page(request: Request, article_id: str) -> Response:
        reader = reader_for(request)
        kv = await library.kv()
        article = await catalog.get_article(kv, article_id)
        if article is None or not may_see_article(article, reader):
            return missing(request, reader, "article")
        recordings = []
        for entry_id in article.recordings[:50]:
            record = await catalog.get_record(kv, entry_id)
            if record is not None and may_see_entry(record, reader):
                recordings.append(record)
        return page(request, reader, "library/article.html", {"article": article, "recordings": recordings})

    @router.get("/library/articles/{article_id}/poster.svg")
    async def article_poster(request: Request, article_id: str) -> Response:
        reader = reader_for(request)
        article = await catalog.get_article(await library.kv(), article_id)
        if article is None or not may_see_article(article, reader):
            raise HTTPException(404, "no such article")
        return svg(poster_svg(article.title, article.article_id, "Reading list"), reader)

    def svg(body: str, reader: Reader) -> Response:
        response = Response(body, media_type="image/svg+xml")
        response.headers["Cache-Control"] = "private, max-age=300" if reader.logged_in else "max-age=300"
        return secured(response, "default-src 'none'; frame-ancestors 'none'")

    @router.get("/library/{entry_id}")
    async def entry_page(request: Request, entry_id: str) -> Response:
        reader = reader_for(request)
        record = await visible_record(entry_id, reader)
        if record is None:
            return missing(request, reader)
        text = await catalog.get_text(await library.kv(), entry_id)
        entry = record.entry
        media = playable(entry)
        video = youtube_id(entry) if media is None else None
        csp = LIBRARY_CSP + (f"; frame-src {YOUTUBE_EMBED}" if video else "")
        article = await catalog.get_article(await library.kv(), entry.article_id) if entry.article_id else None
        context = {
            "record": record,
            "entry": entry,
            "media": media,
            "youtube": video,
            "cues": text.cues,
            "has_captions": bool(text.cues) or entry.file("transcript") is not None,
            "article": article if article is not None and may_see_article(article, reader) else None,
            "tags_text": ", ".join(entry.tags),
        }
        return page(request, reader, "library/entry.html", context, csp=csp)

    @router.get("/library/{entry_id}/poster.svg")
    async def entry_poster(request: Request, entry_id: str) -> Response:
        reader = reader_for(request)
        record = await visible_record(entry_id, reader)
        if record is None:
            raise HTTPException(404, "no such recording")
        entry = record.entry
        label = " · ".join(part for part in (day(entry.started_at), length(entry.duration_seconds)) if part)
        return svg(poster_svg(entry.title, entry.entry_id, label), reader)

    @router.get("/library/{entry_id}/transcript.vtt")
    async def captions(request: Request, entry_id: str) -> Response:
        reader = reader_for(request)
        record = await visible_record(entry_id, reader)
        if record is None:
            raise HTTPException(404, "no such recording")
        kept = record.entry.file("transcript")
        if kept is not None and kept.content_type.startswith("text/vtt"):
            return await serve_media(request, kept, reader)
        cues = (await catalog.get_text(await library.kv(), entry_id)).cues
        if not cues:
            raise HTTPException(404, "this recording has no transcript")
        body = transcript_vtt(cues, record.entry.duration_seconds)
        response = Response(body, media_type="text/vtt; charset=utf-8")
        response.headers["Cache-Control"] = "private, no-cache" if reader.logged_in else "no-cache"
        return secured(response, "default-src 'none'; frame-ancestors 'none'")

    @router.api_route("/library/{entry_id}/media/{kind}", methods=["GET", "HEAD"])
    async def media(request: Request, entry_id: str, kind: str) -> Response:
        reader = reader_for(request)
        record = await visible_record(entry_id, reader)
        kept = record.entry.file(kind) if record is not None and kind in MEDIA_KINDS else None  # type: ignore[arg-type]
        if kept is None:
            raise HTTPException(404, "no such recording or file")
        return await serve_media(request, kept, reader)

    async def serve_media(request: Request, kept: KeptFile, reader: Reader) -> Response:
        response = await media_response(await library.store(), kept, request)
        if reader.logged_in:  # a shared cache must not hand an internal or unpublished file to the next person
            response.headers["Cache-Control"] = "private, no-cache"
        # the bytes are shown, never run (an HTML or SVG file kept by mistake cannot script this site)
        response.headers["Content-Security-Policy"] = "default-src 'none'; frame-ancestors 'none'; sandbox"
        return response

    # --- facilitators: edit, unpublish / publish again, delete (forms, CSRF-checked) ---

    async def editable(request: Request, entry_id: str) -> tuple[Reader, LibraryRecord | None]:
        reader = facilitator_for(request)
        return reader, await catalog.get_record(await library.kv(), entry_id)

    @router.post("/library/{entry_id}/edit")
    async def edit(request: Request, entry_id: str) -> Response:
        reader, record = await editable(request, entry_id)
        if record is None:
            return missing(request, reader)
        form = await request.form()
        tagline = " ".join(str(form.get("tagline", record.entry.tagline)).split())[:TAGLINE_MAX]
        description = str(form.get("description", record.entry.description)).replace("\r\n", "\n").strip()
        tags = parse_tags(str(form.get("tags", ", ".join(record.entry.tags))))
        if not tagline:
            flash(request, "The tagline cannot be empty: nothing was saved.", "error")
            return see_other(entry_path(entry_id) + "#manage")
        try:
            updated = await catalog.edit(
                await library.kv(),
                entry_id,
                by=reader.name or "",
                tagline=tagline,
                description=description[:DESCRIPTION_MAX],
                tags=tags,
            )
        except EntryMissing:
            return missing(request, reader)
        if len(updated.history) == len(record.history):
            flash(request, "Nothing changed.")
        else:
            flash(request, f"Saved: {', '.join(updated.history[-1].changes)}.")
            log.info("library.edited", entry_id=entry_id, by=reader.name, fields=list(updated.history[-1].changes))
            await settled(catalog.entry_key(entry_id))
        return see_other(entry_path(entry_id))

    async def publish(request: Request, entry_id: str, published: bool) -> Response:
        reader, record = await editable(request, entry_id)
        if record is None:
            return missing(request, reader)
        form = await request.form()
        reason = " ".join(str(form.get("reason", "")).split())[:REASON_MAX]
        try:
            await catalog.set_published(await library.kv(), entry_id, published, by=reader.name or "", reason=reason)
        except EntryMissing:
            return missing(request, reader)
        log.info("library.published" if published else "library.unpublished", entry_id=entry_id, by=reader.name)
        await settled(catalog.entry_key(entry_id))
        flash(
            request,
            "Published again: it is on the library, its search and feeds."
            if published
            else ("Unpublished: it is off the library, search and feeds; only facilitators see it here."),
        )
        return see_other(entry_path(entry_id))

    @router.post("/library/{entry_id}/unpublish")
    async def unpublish(request: Request, entry_id: str) -> Response:
        return await publish(request, entry_id, False)

    @router.post("/library/{entry_id}/publish")
    async def publish_again(request: Request, entry_id: str) -> Response:
        return await publish(request, entry_id, True)

    @router.get("/library/{entry_id}/delete")
    async def delete_confirm(request: Request, entry_id: str) -> Response:
        reader, record = await editable(request, entry_id)
        if record is None:
            return missing(request, reader)
        return page(request, reader, "library/delete.html", {"record": record, "entry": record.entry})

    @router.post("/library/{entry_id}/delete")
    async def delete(request: Request, entry_id: str) -> Response:
        reader, record = await editable(request, entry_id)
        if record is None:
            return missing(request, reader)
        form = await request.form()
        if form.get("confirm") != entry_id:
            flash(request, "Not deleted: tick the box to confirm.", "error")
            return see_other(entry_path(entry_id) + "/delete")
        try:  # the media leave the store first, then the entry (takedown.remove): a failure leaves it deletable
            await takedown.remove(await library.kv(), await library.store(), entry_id, by=reader.name or "")
        except EntryMissing:
            return missing(request, reader)
        await settled(catalog.entry_key(entry_id))
        flash(request, f"Deleted “{record.entry.title}”: its media are removed from the store.")
        return see_other("/library")

    return router
