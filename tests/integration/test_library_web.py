"""The learning library over HTTP (httpx on the ASGI app) against the real nats-server, its KV catalog, the real
search index and the real media store: pages, media, feeds and /api/library, and who may see what."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

import feedparser
import httpx
import pytest
from faststream.nats import NatsBroker

from pipeline.actions.service import Approvals
from pipeline.archive.media import MediaStore, media_store
from pipeline.archive.search import LibraryIndex
from pipeline.domain import catalog
from pipeline.domain.catalog import ArticleItem, Cue, SearchText
from pipeline.domain.live_rules import LiveRules
from pipeline.messages import KeptFile, LibraryEntry, Provenance, Resource, Visibility
from pipeline.settings import FacilitatorLogin, LoginRole, Settings
from pipeline.web.auth import hash_password, new_api_token
from pipeline.web.library import LibraryServices
from pipeline.web.server import create_web_app

pytestmark = pytest.mark.nats

PASSWORDS = {"ana": "ana's long password", "olga": "olga's long password"}
ROLES: dict[str, list[LoginRole]] = {"ana": ["facilitator"], "olga": ["ops"]}
TOKENS = {name: new_api_token() for name in PASSWORDS}
LOGINS = {
    name: FacilitatorLogin(password_hash=hash_password(pw), token_sha256=TOKENS[name][1], roles=ROLES[name])
    for name, pw in PASSWORDS.items()
}
CSRF = re.compile(r'name="csrftoken" value="([^"]+)"')
AUDIO = b"RIFF" + bytes(range(256)) * 40  # bytes enough for ranges; the browser test plays a real WAV


def bearer(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[name][0]}"}


@dataclass
class Library:
    settings: Settings
    services: LibraryServices
    index: LibraryIndex
    store: MediaStore
    http: httpx.AsyncClient
    app: object

    def person(self) -> httpx.AsyncClient:
        """Another person: a cookie jar of their own."""
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app), base_url="https://testserver", timeout=20)

    async def kv(self) -> catalog.KeyValue:
        return await self.services.kv()

    async def settled(self, key: str) -> None:
        kv = await self.kv()
        found = await kv.get(key)
        assert await self.index.wait_for(key, found.revision or 0, 10), f"the index never applied {key}"


@pytest.fixture
async def library(settings: Settings, client: NatsBroker) -> AsyncIterator[Library]:
    async with opened(settings, client) as lib:
        yield lib


@asynccontextmanager
async def opened(settings: Settings, client: NatsBroker, **changes: object) -> AsyncIterator[Library]:
    web = settings.model_copy(
        update={"facilitator_logins": LOGINS, "public_url": "https://library.example.org", **changes}
    )
    kv = await catalog.library_bucket(client)
    index = LibraryIndex()
    await index.start(kv)
    store = await media_store(web, client)
    services = LibraryServices(web, client, index=index, store=store)
    app = create_web_app(web, client, Approvals(client, web, LiveRules.load(web.rules_file)), services)
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="https://testserver", timeout=20
        ) as http:
            yield Library(web, services, index, store, http, app)
    finally:
        await services.close()
        await index.stop()
        await store.close()


async def log_in(http: httpx.AsyncClient, name: str) -> None:
    form = await http.get("/login")
    token = CSRF.search(form.text)
    assert token, form.text
    done = await http.post("/login", data={"csrftoken": token.group(1), "name": name, "password": PASSWORDS[name]})
    assert done.status_code == 303, done.text


def csrf_of(html: str) -> str:
    found = CSRF.search(html)
    assert found, html
    return found.group(1)


async def keep_media(store: MediaStore, entry_id: str, kind: str, data: bytes, content_type: str) -> KeptFile:
    async def chunks() -> AsyncIterator[bytes]:
        yield data

    key = f"{entry_id}/test/{kind}"
    stored = await store.put(key, chunks(), content_type=content_type, max_bytes=10_000_000)
    return KeptFile(
        kind=kind,  # type: ignore[arg-type]
        store=store.name,  # type: ignore[arg-type]
        key=stored.key,
        content_type=stored.content_type,
        size=stored.size,
        sha256=stored.sha256,
        filename=f"{entry_id}-{kind}",
    )


async def add_entry(
    lib: Library,
    entry_id: str,
    *,
    title: str,
    tagline: str = "A session worth watching",
    tags: list[str] | None = None,
    started_at: datetime = datetime(2025, 3, 14, 17, 30, tzinfo=UTC),
    duration_seconds: int = 2820,
    visibility: Visibility = "public",
    audio: bool = True,
    youtube: str | None = None,
    cues: list[Cue] | None = None,
    article_id: str | None = None,
) -> LibraryEntry:
    files = [await keep_media(lib.store, entry_id, "audio", AUDIO, "audio/wav")] if audio else []
    entry = LibraryEntry(
        id=f"kept-{entry_id}",
        correlation_id=f"corr-{entry_id}-secret",
        causation_id=None,
        entry_id=entry_id,
        title=title,
        tagline=tagline,
        description="What we talked about.\n\nAnd what we learned.",
        tags=tags if tags is not None else ["Café Zürich", "Learning"],
        started_at=started_at,
        duration_seconds=duration_seconds,
        files=files,
        youtube_video_id=youtube,
        summary=["People learn by doing."],
        resources=[
            Resource(url="https://example.org/handbook", shared_by="Kim", at_seconds=65),
            Resource(url="javascript:alert(1)", shared_by="Mallory"),
        ],
        article_id=article_id,
        visibility=visibility,
        provenance=Provenance(
            shared_by="Mark Britz",
            sharer_handle="@britz",
            share_url="https://social.example/@britz/1",
            share_text="Worth a read",
            article_title="Scaffolding at work",
            article_url="https://blog.example/scaffolding",
            article_author="Jane Doe",
            approved_by="ana-approver",
            host="hugo-host",
            rule="secret-rule-name",
            session_id="session-internal-42",
        ),
    )
    kv = await lib.kv()
    await catalog.keep(kv, entry, by="test")
    await catalog.put_text(kv, entry_id, SearchText(cues=cues or []))
    await lib.settled(catalog.text_key(entry_id))
    await lib.settled(catalog.entry_key(entry_id))
    return entry


CUES = [
    Cue(start=0, text="Welcome, everyone.", speaker="Hugo"),
    Cue(start=83, text="Scaffolding is how a team learns on the job.", speaker="Jane"),
    Cue(start=150, text="Thanks for coming."),
]


async def test_the_library_lists_searches_and_shows_an_entry_with_its_player_and_transcript(library: Library) -> None:
    await add_entry(library, "rec-cafe", title="Learning in the flow of work", cues=CUES)
    older = datetime(2024, 1, 9, tzinfo=UTC)
    await add_entry(library, "rec-older", title="Communities of practice", tags=["Communities"], started_at=older)

    home = await library.http.get("/library")
    assert home.status_code == 200
    html = home.text
    assert html.index("Learning in the flow of work") < html.index("Communities of practice")  # newest first
    assert 'href="/library?tag=Caf%C3%A9%20Z%C3%BCrich">Café Zürich</a>' in html  # tags stay readable
    assert "14 Mar 2025" in html and "47 min" in html  # when the session took place, how long
    assert 'src="/library/rec-cafe/poster.svg"' in html
    assert "frame-src" not in home.headers["content-security-policy"]

    tagged = await library.http.get("/library", params={"tag": "Café Zürich"})
    assert "Learning in the flow of work" in tagged.text and "Communities of practice" not in tagged.text

    spoken = await library.http.get("/library", params={"q": "scaffolding team"})
    assert 'href="/library/rec-cafe#t=01:23"' in spoken.text  # a transcript hit plays from that moment

    nothing = await library.http.get("/library", params={"q": "zzzunheardof"})
    assert nothing.status_code == 200
    assert "No match" in nothing.text and "zzzunheardof" in nothing.text and 'href="/library"' in nothing.text

    page = await library.http.get("/library/rec-cafe")
    assert page.status_code == 200
    body = page.text
    assert '<audio id="player" data-player' in body and 'src="/library/rec-cafe/media/audio"' in body
    assert '<track kind="captions" src="/library/rec-cafe/transcript.vtt"' in body
    assert 'href="#t=01:23" data-t="83.00"' in body and "Scaffolding is how a team learns" in body
    assert "Recorded <time" in body and "14 March 2025, 17:30 UTC" in body
    assert 'href="https://example.org/handbook" rel="nofollow noopener noreferrer"' in body
    assert 'href="javascript' not in body
    assert 'href="#" rel="nofollow noopener noreferrer" target="_blank">javascript:alert(1)</a>' in body
    assert "Mark Britz" in body and "Scaffolding at work" in body and "Jane Doe" in body
    for internal in ("secret-rule-name", "session-internal-42", "ana-approver", "hugo-host", "rec-cafe/test/", "corr-"):
        assert internal not in body, internal
    assert "script-src 'self'" in page.headers["content-security-policy"]

    vtt = await library.http.get("/library/rec-cafe/transcript.vtt")
    assert vtt.status_code == 200 and vtt.text.startswith("WEBVTT")
    assert "00:01:23.000 --> 00:02:30.000" in vtt.text

    ranged = await library.http.get("/library/rec-cafe/media/audio", headers={"Range": "bytes=4-9"})
    assert ranged.status_code == 206 and ranged.content == AUDIO[4:10]
    assert ranged.headers["content-type"].startswith("audio/wav")

    poster = await library.http.get("/library/rec-cafe/poster.svg")
    assert poster.headers["content-type"].startswith("image/svg+xml") and "Learning in the flow" in poster.text

    missing = await library.http.get("/library/no-such-entry")
    assert missing.status_code == 404 and 'href="/library"' in missing.text


async def test_facilitator_names_only_with_the_setting(settings: Settings, client: NatsBroker) -> None:
    async with opened(settings, client, library_show_facilitators=True) as lib:
        await add_entry(lib, "rec-shown", title="Shown with names")
        page = await lib.http.get("/library/rec-shown")
    assert "ana-approver" in page.text and "hugo-host" in page.text
    assert "secret-rule-name" not in page.text and "session-internal-42" not in page.text


async def test_a_youtube_entry_is_embedded_with_the_csp_opened_for_youtube_on_its_page_only(library: Library) -> None:
    await add_entry(library, "rec-yt", title="On YouTube", audio=False, youtube="dQw4w9WgXcQ")
    page = await library.http.get("/library/rec-yt")
    listing = await library.http.get("/library")

    assert 'src="https://www.youtube-nocookie.com/embed/dQw4w9WgXcQ"' in page.text
    csp = page.headers["content-security-policy"]
    assert "frame-src https://www.youtube-nocookie.com" in csp and csp.count("frame-src") == 1
    assert "frame-src" not in listing.headers["content-security-policy"]
    assert 'src="https://i.ytimg.com/vi/dQw4w9WgXcQ/hqdefault.jpg"' in listing.text


async def test_a_closed_library_needs_a_login_everywhere(settings: Settings, client: NatsBroker) -> None:
    async with opened(settings, client, library_public=False) as lib:
        await add_entry(lib, "rec-closed", title="Closed library")
        anonymous = {
            path: await lib.http.get(path)
            for path in (
                "/library",
                "/library/rec-closed",
                "/library/rec-closed/media/audio",
                "/library/feed.xml",
                "/library/podcast.xml",
                "/api/library",
                "/api/library/rec-closed",
            )
        }
        by_token = await lib.http.get("/api/library", headers=bearer("olga"))
        by_token_feed = await lib.http.get("/library/feed.xml", headers=bearer("olga"))
        async with lib.person() as olga:
            await log_in(olga, "olga")
            logged_in = await olga.get("/library")
            media = await olga.get("/library/rec-closed/media/audio")

    for path in ("/library", "/library/rec-closed"):
        assert anonymous[path].status_code == 303
        assert anonymous[path].headers["location"].startswith("/login?next=/library")
    for path in ("/library/rec-closed/media/audio", "/library/feed.xml", "/library/podcast.xml", "/api/library"):
        assert anonymous[path].status_code == 401, path
    assert anonymous["/api/library/rec-closed"].status_code == 401
    assert by_token.status_code == 200 and [i["id"] for i in by_token.json()["items"]] == ["rec-closed"]
    assert by_token_feed.status_code == 200
    assert logged_in.status_code == 200 and "Closed library" in logged_in.text
    assert media.status_code == 200 and media.content == AUDIO
    assert media.headers["cache-control"].startswith("private")


async def test_an_internal_entry_is_never_shown_searched_served_or_fed_without_a_login(library: Library) -> None:
    await add_entry(library, "rec-public", title="Public talk")
    await add_entry(library, "rec-inside", title="Inside talk", visibility="internal", cues=CUES)
    http = library.http

    listing = await http.get("/library")
    searched = await http.get("/library", params={"q": "inside"})
    page = await http.get("/library/rec-inside")
    media = await http.get("/library/rec-inside/media/audio")
    captions = await http.get("/library/rec-inside/transcript.vtt")
    poster = await http.get("/library/rec-inside/poster.svg")
    api_list = await http.get("/api/library", params={"q": "inside"})
    api_one = await http.get("/api/library/rec-inside")
    feed = feedparser.parse((await http.get("/library/feed.xml")).content)

    assert "Public talk" in listing.text and "Inside talk" not in listing.text
    assert "Inside talk" not in searched.text
    for refused in (page, media, captions, poster, api_one):
        assert refused.status_code == 404, refused.request.url
    assert api_list.json()["items"] == []
    assert [e.title for e in feed.entries] == ["Public talk"]

    async with library.person() as olga:  # any login (here ops only) sees internal entries
        await log_in(olga, "olga")
        inside = await olga.get("/library/rec-inside")
        inside_media = await olga.get("/library/rec-inside/media/audio")
        inside_listed = await olga.get("/library")
        inside_feed = feedparser.parse((await olga.get("/library/feed.xml")).content)
    assert inside.status_code == 200 and "Internal" in inside.text
    assert inside_media.status_code == 200 and inside_media.content == AUDIO
    assert "Inside talk" in inside_listed.text
    assert [e.title for e in inside_feed.entries] == ["Public talk"]  # feeds never carry internal entries
    by_token = await http.get("/api/library/rec-inside", headers=bearer("olga"))
    assert by_token.status_code == 200 and by_token.json()["visibility"] == "internal"


async def test_a_facilitator_unpublishes_and_publishes_again_and_only_facilitators_see_it_meanwhile(
    library: Library,
) -> None:
    await add_entry(library, "rec-takedown", title="Please take me down", cues=CUES)
    async with library.person() as ana, library.person() as olga:
        await log_in(ana, "ana")
        await log_in(olga, "olga")
        page = await ana.get("/library/rec-takedown")
        assert "Manage (facilitators)" in page.text
        without_token = await ana.post("/library/rec-takedown/unpublish", data={"reason": "no token"})
        assert without_token.status_code == 403  # CSRF-checked like the approval forms
        done = await ana.post(
            "/library/rec-takedown/unpublish", data={"csrftoken": csrf_of(page.text), "reason": "the speaker asked"}
        )
        assert (done.status_code, done.headers["location"]) == (303, "/library/rec-takedown")

        seen = {
            "anonymous": await library.http.get("/library/rec-takedown"),
            "login": await olga.get("/library/rec-takedown"),
            "media": await library.http.get("/library/rec-takedown/media/audio"),
            "api": await library.http.get("/api/library/rec-takedown"),
        }
        listing = await library.http.get("/library", params={"q": "take me down"})
        api_search = await library.http.get("/api/library", params={"q": "take me down"})
        feed = feedparser.parse((await library.http.get("/library/feed.xml")).content)
        for_ana = await ana.get("/library/rec-takedown")
        ana_listing = await ana.get("/library", params={"q": "take me down"})

        assert all(r.status_code == 404 for r in seen.values()), {k: r.status_code for k, r in seen.items()}
        assert "Please take me down" not in listing.text and api_search.json()["items"] == []
        assert feed.entries == []
        assert for_ana.status_code == 200 and "Unpublished" in for_ana.text and "the speaker asked" in for_ana.text
        assert "Please take me down" in ana_listing.text and "unpublished" in ana_listing.text

        again = await ana.post("/library/rec-takedown/publish", data={"csrftoken": csrf_of(for_ana.text)})
        assert again.status_code == 303
    back = await library.http.get("/library/rec-takedown")
    assert back.status_code == 200
    assert "Please take me down" in (await library.http.get("/library", params={"q": "take me down"})).text


async def test_a_facilitators_edit_shows_at_once_with_its_history_and_search_finds_the_new_words(
    library: Library,
) -> None:
    await add_entry(library, "rec-edit", title="Editable session", tagline="Old tagline")
    async with library.person() as ana, library.person() as olga:
        await log_in(ana, "ana")
        await log_in(olga, "olga")
        page = await ana.get("/library/rec-edit")
        form = {
            "csrftoken": csrf_of(page.text),
            "tagline": "Quokkas teach onboarding",
            "description": "Rewritten.",
            "tags": "Café Zürich, Onboarding , onboarding",
        }
        done = await ana.post("/library/rec-edit/edit", data=form)
        assert done.status_code == 303
        found = await library.http.get("/library", params={"q": "quokkas"})  # right after: the index has it
        shown = await ana.get("/library/rec-edit")
        not_for_ops = await olga.post("/library/rec-edit/edit", data={**form, "csrftoken": csrf_of(shown.text)})

    assert "Editable session" in found.text
    assert "Saved: tagline, description, tags." in shown.text
    assert "<del>Old tagline</del> → <ins>Quokkas teach onboarding</ins>" in shown.text
    assert "edited by ana" in shown.text
    record = await catalog.get_record(await library.kv(), "rec-edit")
    assert record is not None and record.entry.tags == ["Café Zürich", "Onboarding"]
    assert not_for_ops.status_code == 403
    public = await library.http.get("/library/rec-edit")
    assert "Manage (facilitators)" not in public.text and "edited by" not in public.text


async def test_deleting_asks_first_then_removes_the_media_from_the_store_and_the_entry_everywhere(
    library: Library,
) -> None:
    entry = await add_entry(library, "rec-gone", title="Delete me for good")
    (kept,) = entry.files
    assert await library.store.stat(kept.key) is not None
    async with library.person() as ana:
        await log_in(ana, "ana")
        confirm = await ana.get("/library/rec-gone/delete")
        assert confirm.status_code == 200 and "Delete for good" in confirm.text
        unconfirmed = await ana.post("/library/rec-gone/delete", data={"csrftoken": csrf_of(confirm.text)})
        assert unconfirmed.status_code == 303 and await library.store.stat(kept.key) is not None
        done = await ana.post(
            "/library/rec-gone/delete", data={"csrftoken": csrf_of(confirm.text), "confirm": "rec-gone"}
        )
        assert (done.status_code, done.headers["location"]) == (303, "/library")
        listing = await ana.get("/library")

    assert await library.store.stat(kept.key) is None
    assert await catalog.get_record(await library.kv(), "rec-gone") is None
    assert (await library.http.get("/library/rec-gone")).status_code == 404
    assert "Deleted “Delete me for good”" in listing.text and 'href="/library/rec-gone"' not in listing.text
    assert (await library.http.get("/api/library", params={"q": "delete"})).json()["items"] == []


async def test_the_feeds_carry_public_entries_newest_first_with_absolute_links_and_podcast_enclosures(
    library: Library,
) -> None:
    await add_entry(library, "rec-one", title="First talk", started_at=datetime(2025, 1, 5, 18, tzinfo=UTC))
    await add_entry(library, "rec-two", title="Second talk", started_at=datetime(2025, 2, 5, 18, tzinfo=UTC))
    await add_entry(library, "rec-tube", title="Tube talk", audio=False, youtube="dQw4w9WgXcQ")
    await add_entry(library, "rec-hidden", title="Hidden talk", visibility="internal")

    atom = await library.http.get("/library/feed.xml")
    podcast = await library.http.get("/library/podcast.xml")
    parsed_atom = feedparser.parse(atom.content)
    parsed_podcast = feedparser.parse(podcast.content)

    assert atom.headers["content-type"].startswith("application/atom+xml")
    assert podcast.headers["content-type"].startswith("application/rss+xml")
    assert not parsed_atom.bozo and parsed_atom.version == "atom10"
    assert [e.title for e in parsed_atom.entries] == ["Tube talk", "Second talk", "First talk"]
    links = {link.rel: link.href for link in parsed_atom.entries[1].links}
    assert links["alternate"] == "https://library.example.org/library/rec-two"
    assert links["enclosure"] == "https://library.example.org/library/rec-two/media/audio"
    assert not parsed_podcast.bozo and parsed_podcast.version == "rss20"
    assert [e.title for e in parsed_podcast.entries] == ["Second talk", "First talk"]  # YouTube-only left out
    (enclosure,) = parsed_podcast.entries[0].enclosures
    assert enclosure.href == "https://library.example.org/library/rec-two/media/audio"
    assert (enclosure.type, int(enclosure.length)) == ("audio/wav", len(AUDIO))


async def test_the_json_api_searches_with_facets_and_returns_one_entry_without_internals(library: Library) -> None:
    article = ArticleItem(
        article_id="art-scaffold",
        url="https://blog.example/scaffolding",
        title="Scaffolding at work",
        author="Jane Doe",
        summary="How teams learn.",
        first_shared_at=datetime(2025, 3, 1, tzinfo=UTC),
        recordings=["rec-api"],
    )
    kv = await library.kv()
    await kv.put(catalog.article_key(article.article_id), article.model_dump_json().encode())
    await library.settled(catalog.article_key(article.article_id))
    await add_entry(library, "rec-api", title="API talk", cues=CUES, article_id="art-scaffold")

    found = await library.http.get("/api/library", params={"q": "scaffolding", "tag": "Café Zürich"})
    assert found.status_code == 200
    body = found.json()
    recording = next(i for i in body["items"] if i["kind"] == "recording")
    assert recording["id"] == "rec-api" and recording["url"] == "https://library.example.org/library/rec-api"
    assert recording["tags"] == ["Café Zürich", "Learning"]
    assert {"value": "Café Zürich", "count": 1} in body["facets"]["tag"]

    articles = await library.http.get("/api/library", params={"q": "scaffolding", "kind": "article"})
    assert [i["id"] for i in articles.json()["items"]] == ["art-scaffold"]
    assert articles.json()["items"][0]["recordings"] == ["https://library.example.org/library/rec-api"]

    one = await library.http.get("/api/library/rec-api")
    detail = one.json()
    assert detail["media"] == [
        {
            "kind": "audio",
            "url": "https://library.example.org/library/rec-api/media/audio",
            "content_type": "audio/wav",
            "size": len(AUDIO),
        }
    ]
    assert detail["transcript"][1]["start"] == 83
    assert detail["origin"]["reading_list_url"] == "https://library.example.org/library/articles/art-scaffold"
    assert detail["origin"]["approved_by"] is None and detail["origin"]["host"] is None
    for internal in ("secret-rule-name", "session-internal-42", "rec-api/test/", "corr-rec-api", "kept-rec-api"):
        assert internal not in one.text, internal
    assert (await library.http.get("/api/library/nope")).status_code == 404

    article_page = await library.http.get("/library/articles/art-scaffold")
    assert article_page.status_code == 200 and 'href="/library/rec-api"' in article_page.text

    # served with a public URL, the API's documentation is for logins (IMPROMPTU_OPS_ENDPOINTS)
    assert (await library.http.get("/openapi.json")).status_code == 401
    schema = (await library.http.get("/openapi.json", headers=bearer("ana"))).json()
    assert "/api/library" in schema["paths"] and "/api/library/{entry_id}" in schema["paths"]
