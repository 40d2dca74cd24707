"""The pages' stylesheets and script at /static/ (StaticFiles): public, revalidated by ETag with a 304, never
sniffed, and every one a page links is there. Over httpx on the ASGI app with the approval pages installed."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from faststream.nats import NatsBroker

from pipeline.actions.service import Approvals
from pipeline.domain.live_rules import LiveRules
from pipeline.settings import FacilitatorLogin, Settings
from pipeline.web.auth import hash_password
from pipeline.web.server import create_web_app

pytestmark = pytest.mark.nats

STATIC = Path(__file__).parents[2] / "pipeline" / "web" / "static"
ASSETS = {
    "approval.css": "text/css",
    "ops.css": "text/css",
    "library.css": "text/css",
    "player.js": "javascript",
}
LINKED = re.compile(r'<(?:link rel="stylesheet" href|script src)="([^"]+)"')
CSRF = re.compile(r'name="csrftoken" value="([^"]+)"')
PASSWORD = "ana's long password"


@pytest.fixture
async def http(settings: Settings, client: NatsBroker) -> AsyncIterator[httpx.AsyncClient]:
    """The whole app as `impromptu run` serves it, with the library and the ops endpoints closed to strangers."""
    private = settings.model_copy(
        update={
            "facilitator_logins": {"ana": FacilitatorLogin(password_hash=hash_password(PASSWORD))},
            "library_public": False,
            "ops_endpoints": "login",
        }
    )
    app = create_web_app(private, client, Approvals(client, private, LiveRules.load(private.rules_file)))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as http:
        yield http


@pytest.mark.parametrize("name", sorted(ASSETS))
async def test_an_asset_answers_with_an_etag_and_a_304_when_unchanged(http: httpx.AsyncClient, name: str) -> None:
    first = await http.get(f"/static/{name}")

    assert first.status_code == 200, first.text
    assert first.content == (STATIC / name).read_bytes()
    assert ASSETS[name] in first.headers["content-type"]
    assert first.headers["etag"] and first.headers["last-modified"]
    assert first.headers["cache-control"] == "max-age=300"
    assert first.headers["x-content-type-options"] == "nosniff"

    again = await http.get(f"/static/{name}", headers={"If-None-Match": first.headers["etag"]})
    assert again.status_code == 304 and again.content == b""
    assert again.headers["etag"] == first.headers["etag"]
    changed = await http.get(f"/static/{name}", headers={"If-None-Match": '"another-version"'})
    assert changed.status_code == 200 and changed.content == first.content


async def test_the_assets_pages_link_are_served_to_strangers_and_to_logins_alike(http: httpx.AsyncClient) -> None:
    login = await http.get("/login")
    linked = LINKED.findall(login.text)
    assert linked == ["/static/approval.css"]

    anonymous = [await http.get(path) for path in linked]
    form = {"csrftoken": CSRF.findall(login.text)[0], "name": "ana", "password": PASSWORD, "next": "/library"}
    assert (await http.post("/login", data=form)).status_code == 303
    library = await http.get("/library")
    assert library.status_code == 200, library.text
    assert LINKED.findall(library.text) == ["/static/approval.css", "/static/library.css"]
    logged_in = [await http.get(path) for path in LINKED.findall(library.text)]

    assert [r.status_code for r in anonymous + logged_in] == [200, 200, 200]
    assert "set-cookie" not in anonymous[0].headers  # a stylesheet starts no session and no CSRF token


async def test_missing_and_outside_files_are_404(http: httpx.AsyncClient) -> None:
    for path in ("/static/nothing.css", "/static/%2e%2e/templating.py"):
        assert (await http.get(path)).status_code == 404, path
