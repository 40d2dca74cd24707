"""The library's JSON API: `GET /api/library` (search, facets, paging) and `GET /api/library/{entry_id}` (one
recording: its text, media links, transcript, resources, where it came from).

The same rules as the pages (pipeline/web/library.py): with IMPROMPTU_LIBRARY_PUBLIC=false a login is needed (401
otherwise); internal entries only for a login, unpublished ones only for a facilitator (404 for anyone else). A
login is the pages' session cookie or a login's API token (`Authorization: Bearer`, `impromptu facilitators add`).
Nothing internal is returned: no rule name, no store keys, no ids but the entry's and the article's.
"""

from datetime import datetime  # no `from __future__ import annotations`: FastAPI resolves the route signatures
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Query, Request
from pydantic import BaseModel, Field

from pipeline.archive.feeds import entry_url, media_url
from pipeline.archive.search import ItemKind
from pipeline.domain import catalog
from pipeline.domain.catalog import Cue
from pipeline.messages import LibraryEntry
from pipeline.settings import Settings
from pipeline.web.library import (
    QUERY_MAX,
    LibraryServices,
    Reader,
    article_path,
    clock,
    may_read_library,
    may_see_article,
    may_see_entry,
    reader_of,
    search_query,
    thumbnail,
    youtube_id,
)


class Facet(BaseModel):
    value: str
    count: int


class LibraryItem(BaseModel):
    """One search hit: a recording or a reading-list article."""

    kind: ItemKind
    id: str = Field(description="The entry id (recording) or article id (reading list).")
    url: str = Field(description="Its page.")
    title: str
    tagline: str = ""
    snippet: str = Field(default="", description="Where it matched; matched words between \\u0002 and \\u0003.")
    started_at: datetime | None = Field(default=None, description="Recordings: when the session took place.")
    duration_seconds: int | None = None
    tags: list[str] = Field(default_factory=list, description="Readable tags (Café Zürich).")
    thumbnail_url: str | None = None
    moment_seconds: float | None = Field(default=None, description="A transcript match: where in the recording.")
    moment_url: str | None = Field(default=None, description="The page at that moment (#t=MM:SS).")
    author: str | None = Field(default=None, description="Articles: who wrote it.")
    article_url: str | None = Field(default=None, description="Articles: the article itself.")
    recordings: list[str] = Field(default_factory=list, description="Articles: pages of the recordings it led to.")
    published: bool = Field(default=True, description="False only for facilitators' view of an unpublished entry.")


class LibraryResults(BaseModel):
    q: str
    total: int = Field(description="Items matching, over every page.")
    page: int
    pages: int
    items: list[LibraryItem]
    facets: dict[str, list[Facet]] = Field(description="tag, topic, author, sharer, year (facilitator by setting).")


class MediaLink(BaseModel):
    kind: Literal["video", "audio", "transcript", "chat"]
    url: str
    content_type: str
    size: int


class ResourceLink(BaseModel):
    url: str
    shared_by: str | None = None
    at_seconds: float | None = None


class Origin(BaseModel):
    """Where a recording came from (who approved and hosted only with IMPROMPTU_LIBRARY_SHOW_FACILITATORS)."""

    shared_by: str
    sharer_handle: str = ""
    share_url: str
    article_title: str = ""
    article_url: str
    article_author: str | None = None
    site_name: str | None = None
    reading_list_url: str | None = None
    approved_by: str | None = None
    host: str | None = None


class LibraryEntryDetail(BaseModel):
    entry_id: str
    url: str
    title: str
    tagline: str
    description: str
    tags: list[str]
    topics: list[str]
    language: str | None
    started_at: datetime = Field(description="When the session took place.")
    duration_seconds: int
    media: list[MediaLink] = Field(description="The kept files, each served with Range requests.")
    youtube_url: str | None = Field(default=None, description="The recording on YouTube, when it stays there.")
    thumbnail_url: str
    captions_url: str | None = Field(default=None, description="The transcript as WebVTT.")
    summary: list[str]
    transcript: list[Cue]
    resources: list[ResourceLink]
    origin: Origin
    visibility: Literal["public", "internal"]
    published: bool


REFUSALS: dict[int | str, dict[str, object]] = {
    401: {"description": 'The library needs a login here: `{"detail"}`; send Authorization: Bearer <token>.'},
    404: {"description": 'No such recording (or not for this login): `{"detail"}`.'},
}


def absolute(base_url: str, path: str) -> str:
    return path if path.startswith("https://") else base_url + path


def entry_detail(
    entry: LibraryEntry, published: bool, cues: list[Cue], settings: Settings, reading_list_url: str | None
) -> LibraryEntryDetail:
    base = settings.base_url
    p = entry.provenance
    show = settings.library_show_facilitators
    video = youtube_id(entry)
    return LibraryEntryDetail(
        entry_id=entry.entry_id,
        url=entry_url(base, entry.entry_id),
        title=entry.title,
        tagline=entry.tagline,
        description=entry.description,
        tags=entry.tags,
        topics=entry.topics,
        language=entry.language,
        started_at=entry.started_at,
        duration_seconds=entry.duration_seconds,
        media=[
            MediaLink(
                kind=f.kind, url=media_url(base, entry.entry_id, f.kind), content_type=f.content_type, size=f.size
            )
            for f in entry.files
        ],
        youtube_url=f"https://www.youtube.com/watch?v={video}" if video else None,
        thumbnail_url=absolute(base, thumbnail(entry)),
        captions_url=f"{entry_url(base, entry.entry_id)}/transcript.vtt" if cues or entry.file("transcript") else None,
        summary=entry.summary,
        transcript=cues,
        resources=[ResourceLink(url=r.url, shared_by=r.shared_by, at_seconds=r.at_seconds) for r in entry.resources],
        origin=Origin(
            shared_by=p.shared_by,
            sharer_handle=p.sharer_handle,
            share_url=p.share_url,
            article_title=p.article_title,
            article_url=p.article_url,
            article_author=p.article_author,
            site_name=p.site_name,
            reading_list_url=reading_list_url,
            approved_by=p.approved_by if show else None,
            host=p.host if show else None,
        ),
        visibility=entry.visibility,
        published=published,
    )


def library_api_router(settings: Settings, library: LibraryServices) -> APIRouter:
    router = APIRouter(prefix="/api/library", tags=["library"], responses=REFUSALS)

    def reader_for(request: Request) -> Reader:
        reader = reader_of(request, settings)
        if not may_read_library(reader, settings):
            raise HTTPException(401, "the library needs a login", headers={"WWW-Authenticate": "Bearer"})
        return reader

    @router.get("", response_model=LibraryResults, summary="Search the library (no words: newest first).")
    async def search_library(
        request: Request,
        q: Annotated[str, Query(max_length=QUERY_MAX, description='Words, "a phrase", -excluded.')] = "",
        tag: Annotated[list[str], Query(description="Only items with this tag (repeat: any of them).")] = [],  # noqa: B006
        topic: Annotated[list[str], Query()] = [],  # noqa: B006
        author: Annotated[list[str], Query()] = [],  # noqa: B006
        sharer: Annotated[list[str], Query()] = [],  # noqa: B006
        year: Annotated[list[str], Query()] = [],  # noqa: B006
        kind: Annotated[list[ItemKind], Query(description="recording or article")] = [],  # noqa: B006
        sort: Literal["relevance", "newest"] = "relevance",
        page: Annotated[int, Query(ge=1, le=1000)] = 1,
    ) -> LibraryResults:
        reader = reader_for(request)
        filters: dict[str, list[str]] = {
            "tag": tag,
            "topic": topic,
            "author": author,
            "sharer": sharer,
            "year": year,
            "kind": list(kind),
        }
        if settings.library_show_facilitators:
            filters["facilitator"] = request.query_params.getlist("facilitator")
        query = search_query(reader, settings, q=q, filters=filters, sort=sort, page=page)
        found = await (await library.index()).search(query)
        base = settings.base_url
        items: list[LibraryItem] = []
        for hit in found.hits:
            if hit.record is not None:
                entry = hit.record.entry
                url = entry_url(base, entry.entry_id)
                items.append(
                    LibraryItem(
                        kind="recording",
                        id=entry.entry_id,
                        url=url,
                        title=entry.title,
                        tagline=entry.tagline,
                        snippet=hit.snippet,
                        started_at=entry.started_at,
                        duration_seconds=entry.duration_seconds,
                        tags=entry.tags,
                        thumbnail_url=absolute(base, thumbnail(entry)),
                        moment_seconds=hit.moment,
                        moment_url=f"{url}#t={clock(hit.moment)}" if hit.moment is not None else None,
                        published=hit.record.published,
                    )
                )
            elif hit.article is not None:
                article = hit.article
                items.append(
                    LibraryItem(
                        kind="article",
                        id=article.article_id,
                        url=base + article_path(article.article_id),
                        title=article.title,
                        tagline=article.tagline,
                        snippet=hit.snippet,
                        author=article.author,
                        article_url=article.url,
                        recordings=[entry_url(base, r) for r in article.recordings],
                        published=article.listed,
                    )
                )
        facets = {
            name: [Facet(value=value, count=count) for value, count in values]
            for name, values in found.facets.items()
            if name != "facilitator" or settings.library_show_facilitators
        }
        return LibraryResults(
            q=query.q, total=found.total, page=found.page, pages=found.pages, items=items, facets=facets
        )

    @router.get("/{entry_id}", response_model=LibraryEntryDetail, summary="One recording, as its page shows it.")
    async def get_entry(request: Request, entry_id: str) -> LibraryEntryDetail:
        reader = reader_for(request)
        kv = await library.kv()
        record = await catalog.get_record(kv, entry_id)
        if record is None or not may_see_entry(record, reader):
            raise HTTPException(404, f"no recording {entry_id!r} in the library")
        cues = (await catalog.get_text(kv, entry_id)).cues
        reading_list = None
        if record.entry.article_id:
            article = await catalog.get_article(kv, record.entry.article_id)
            if article is not None and may_see_article(article, reader):
                reading_list = settings.base_url + article_path(article.article_id)
        return entry_detail(record.entry, record.published, cues, settings, reading_list)

    return router
