"""The learning library, public: GET /library (search with ?q=) and GET /library/{entry_id}, the page a "recording
available" announcement links to. Read-only, server-rendered, autoescaped, no JavaScript."""

from __future__ import annotations

from pathlib import Path

import jinja2
from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from pipeline.actions.web.pages import SECURITY_HEADERS, safe_href
from pipeline.archive.library import entries, search
from pipeline.settings import Settings

ENTRY_ID_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789-_:")

_templates = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
_templates.filters["href"] = safe_href


def _page(name: str, status: int = 200, **context: object) -> HTMLResponse:
    response = HTMLResponse(_templates.get_template(name).render(context), status_code=status)
    response.headers.update(SECURITY_HEADERS)
    return response


def library_router(settings: Settings) -> APIRouter:
    router = APIRouter(include_in_schema=False)

    @router.get("/library")
    async def library(q: str = "") -> HTMLResponse:
        found = search(settings.library_dir, q) if q.strip() else entries(settings.library_dir)
        return _page("library.html", query=q, entries=found)

    @router.get("/library/{entry_id}")
    async def entry(entry_id: str) -> HTMLResponse:
        # ids are ours (lowercase, digits, -_:): anything else never names a file, so no path tricks reach the disk
        path = settings.library_dir / f"{entry_id}.json"
        if not entry_id or not set(entry_id) <= ENTRY_ID_CHARS or not path.is_file():
            return _page("entry_missing.html", 404, entry_id=entry_id)
        found = [e for e in entries(settings.library_dir) if e.id == entry_id]
        return _page("entry.html", entry=found[0])

    return router
