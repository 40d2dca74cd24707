"""The Mastodon source against a local stand-in for an instance's public REST API, serving documented Status JSON."""

from __future__ import annotations

import copy
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from pipeline.demo import loopback_http_server
from pipeline.domain.rules import Person
from pipeline.messages import Share
from pipeline.settings import Settings
from pipeline.triggers.sources.base import MemoryCheckpoints, RateLimited, SourceUnavailable
from pipeline.triggers.sources.mastodon import (
    MastodonSource,
    article_link,
    checkpoint_key,
    mastodon_source,
    parse_account,
    status_order,
    status_to_share,
)

FIXTURES = Path(__file__).parent.parent / "fixtures" / "mastodon"
ACCOUNT: dict[str, Any] = json.loads((FIXTURES / "account.json").read_text())
STATUSES: list[dict[str, Any]] = json.loads((FIXTURES / "statuses.json").read_text())  # newest first
CARD_POST, MENTIONS_POST, BOOST, REPLY, NO_LINK_POST, OLD_POST = STATUSES

NOW = datetime(2025, 3, 4, 12, 0, tzinfo=UTC)
INSTANCE = "mastodon.example"
BRITZ = "britz@mastodon.example"
ARTICLE = "https://joshbersin.example/2025/03/why-elearning-isnt-working-for-leadership-and-soft-skills/"


def new_status(status_id: int, minutes_after_now: int, url: str) -> dict[str, Any]:
    """A new status of @britz linking to `url`, shaped like the fixture's."""
    status = copy.deepcopy(MENTIONS_POST)
    created = (NOW + timedelta(minutes=minutes_after_now)).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    status.update(
        id=str(status_id),
        created_at=created,
        url=f"https://mastodon.example/@britz/{status_id}",
        uri=f"https://mastodon.example/users/britz/statuses/{status_id}",
        content=f'<p>Worth reading: <a href="{url}" rel="nofollow noopener noreferrer" target="_blank">{url}</a></p>',
        mentions=[],
        tags=[],
    )
    return status


NEXT_ID = int(CARD_POST["id"]) + 65536  # ids grow with time, like Mastodon's snowflakes


# --- A local Mastodon instance ---------------------------------------------------------------------------------


@dataclass
class Reply:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Instance:
    """Accounts and their statuses, answered the way Mastodon's API does; `replies` overrides paths for errors."""

    base_url: str
    accounts: dict[str, dict[str, Any]] = field(default_factory=dict)  # by username
    statuses: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # by account id
    replies: dict[str, Reply] = field(default_factory=dict)
    requests: list[tuple[str, dict[str, list[str]]]] = field(default_factory=list)  # path, query

    def reset(self) -> None:
        self.accounts = {"britz": ACCOUNT}
        self.statuses = {ACCOUNT["id"]: copy.deepcopy(STATUSES)}
        self.replies.clear()
        self.requests.clear()

    def post(self, *statuses: dict[str, Any]) -> None:
        self.statuses[ACCOUNT["id"]].extend(statuses)

    def answer(self, path: str, query: dict[str, list[str]]) -> Reply:
        if path in self.replies:
            return self.replies[path]
        if path == "/api/v1/accounts/lookup":
            account = self.accounts.get(query["acct"][0])
            return json_reply(account) if account else json_reply({"error": "Record not found"}, 404)
        parts = path.strip("/").split("/")
        if parts[:3] == ["api", "v1", "accounts"] and parts[4:] == ["statuses"] and parts[3] in self.statuses:
            return json_reply(self.page(self.statuses[parts[3]], query))
        return json_reply({"error": "Record not found"}, 404)

    @staticmethod
    def page(statuses: list[dict[str, Any]], query: dict[str, list[str]]) -> list[dict[str, Any]]:
        """Newest first, newer than since_id, older than max_id, at most limit: Mastodon's paging."""
        since_id, max_id = query.get("since_id", [None])[0], query.get("max_id", [None])[0]
        chosen = [
            status
            for status in statuses
            if (since_id is None or status_order(status["id"]) > status_order(since_id))
            and (max_id is None or status_order(status["id"]) < status_order(max_id))
        ]
        chosen.sort(key=lambda status: status_order(status["id"]), reverse=True)
        return chosen[: int(query.get("limit", ["20"])[0])]

    def paths(self, suffix: str = "") -> list[str]:
        return [path for path, _ in self.requests if path.endswith(suffix)]

    def queries(self, suffix: str) -> list[dict[str, list[str]]]:
        return [query for path, query in self.requests if path.endswith(suffix)]


def json_reply(body: Any, status: int = 200) -> Reply:
    return Reply(status, json.dumps(body).encode(), {"Content-Type": "application/json; charset=utf-8"})


@pytest.fixture(scope="module")
def running_instance() -> Iterator[Instance]:
    instance = Instance("")

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:  # keep test output quiet
            pass

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            url = urlsplit(self.path)
            query = parse_qs(url.query)
            instance.requests.append((url.path, query))
            reply = instance.answer(url.path, query)
            self.send_response(reply.status)
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(reply.body)))
            self.end_headers()
            self.wfile.write(reply.body)

    with loopback_http_server(Handler) as base_url:
        instance.base_url = base_url
        yield instance


@pytest.fixture
def instance(running_instance: Instance) -> Instance:
    """The module's instance, back to the fixture's account and statuses (one server: shutdowns are slow)."""
    running_instance.reset()
    return running_instance


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@dataclass
class Harness:
    """MastodonSources over one set of checkpoints, with what they emitted; every instance name -> the local one."""

    http: httpx.AsyncClient
    instance: Instance
    people: list[Person]
    checkpoints: MemoryCheckpoints = field(default_factory=MemoryCheckpoints)
    clock: Clock = field(default_factory=Clock)
    emitted: list[Share] = field(default_factory=list)

    async def emit(self, share: Share) -> None:
        self.emitted.append(share)

    def source(self, **options: Any) -> MastodonSource:
        """A new source instance each call: a second call is a restart with the same checkpoints."""
        return MastodonSource(
            lambda: self.people,
            self.checkpoints,
            self.emit,
            self.http,
            instance_url=lambda name: self.instance.base_url,
            clock=self.clock,
            **options,
        )

    def take(self) -> list[Share]:
        emitted, self.emitted = self.emitted, []
        return emitted


def harness(http: httpx.AsyncClient, instance: Instance, *accounts: str) -> Harness:
    return Harness(http, instance, [Person(name="Britz", mastodon=list(accounts or [BRITZ]))])


# --- Statuses -> shares ----------------------------------------------------------------------------------------


async def test_statuses_that_link_somewhere_become_shares(instance: Instance, http: httpx.AsyncClient) -> None:
    h = harness(http, instance)

    assert await h.source(poll_seconds=120).poll() == 120

    reply, boost, mentions, card = h.take()  # oldest first; no link: nothing; a month old: not on the first poll
    assert card.id == f"mastodon:{INSTANCE}:{CARD_POST['id']}"
    assert (card.source, card.sharer, card.network) == ("mastodon", "@britz@mastodon.example", "mastodon")
    assert card.language == "en"
    assert card.url == ARTICLE  # the card's (resolved) URL, not the bit.ly link in the text
    assert card.text == (
        "Josh Bersin with data on why eLearning isn't working for leadership and soft skills training "
        "https://bit.ly/3FkQz9e"
    )
    assert card.shared_at == datetime(2025, 3, 4, 11, 40, 12, tzinfo=UTC)
    assert not card.is_reply and not card.is_repost

    assert mentions.url == "https://learning.example.dev/2025/03/04/cohort-based-courses/"  # not @JoshBersin, #learning
    assert mentions.text == (
        "@JoshBersin this matches what we see #learning #leadership\n\n"
        "Cohorts beat self-paced courses:\nhttps://learning.example.dev/2025/03/04/cohort-based-courses/"
    )

    assert boost.is_repost and not boost.is_reply
    assert boost.url == "https://joshbersin.example/2025/03/the-dynamic-organization-five-lessons/"
    assert boost.text.startswith("Five lessons on how dynamic organizations grow talent")  # the boosted post's words
    assert boost.id == f"mastodon:{INSTANCE}:{BOOST['id']}"  # the boost is britz's share, not Josh's post
    assert boost.shared_at == datetime(2025, 3, 4, 10, 5, 31, tzinfo=UTC)  # when britz boosted it
    assert boost.language == "en"

    assert reply.is_reply and not reply.is_repost
    assert reply.url == "https://hbr.example.org/2025/02/the-coaching-habit-revisited"


async def test_the_api_is_asked_the_documented_way(instance: Instance, http: httpx.AsyncClient) -> None:
    h = harness(http, instance)

    await h.source().poll()

    assert instance.requests == [
        ("/api/v1/accounts/lookup", {"acct": ["britz"]}),
        (f"/api/v1/accounts/{ACCOUNT['id']}/statuses", {"limit": ["40"]}),  # replies are not excluded
    ]


async def test_the_second_poll_asks_since_the_newest_status_and_the_lookup_is_cached(
    instance: Instance, http: httpx.AsyncClient
) -> None:
    h = harness(http, instance)
    source = h.source()
    await source.poll()
    h.take()

    instance.post(new_status(NEXT_ID, 1, "https://example.org/new-article"))
    h.clock.advance(minutes=2)
    await source.poll()

    assert [share.url for share in h.take()] == ["https://example.org/new-article"]
    assert instance.queries("/statuses")[1] == {"limit": ["40"], "since_id": [CARD_POST["id"]]}
    assert len(instance.paths("/lookup")) == 1

    await source.poll()
    assert h.take() == []
    assert instance.queries("/statuses")[2]["since_id"] == [str(NEXT_ID)]


async def test_a_restart_neither_misses_nor_repeats(instance: Instance, http: httpx.AsyncClient) -> None:
    h = harness(http, instance)
    await h.source().poll()
    before = h.take()

    instance.post(
        new_status(NEXT_ID, 5, "https://example.org/while-down-1"),
        new_status(NEXT_ID + 1, 6, "https://example.org/while-down-2"),
    )
    h.clock.advance(hours=1)
    await h.source().poll()  # a new instance: only the checkpoints carry over

    after = h.take()
    assert [share.url for share in after] == ["https://example.org/while-down-1", "https://example.org/while-down-2"]
    assert not {share.id for share in before} & {share.id for share in after}
    assert len(instance.paths("/lookup")) == 1


async def test_a_full_page_is_followed_down_to_since_id(instance: Instance, http: httpx.AsyncClient) -> None:
    h = harness(http, instance)
    source = h.source(page_size=2)
    await source.poll()
    assert len(instance.paths("/statuses")) == 1  # the first poll reads the newest page only
    assert [share.url for share in h.take()] == [
        "https://learning.example.dev/2025/03/04/cohort-based-courses/",
        ARTICLE,
    ]

    instance.post(*(new_status(NEXT_ID + n, n, f"https://example.org/{n}") for n in range(5)))
    await source.poll()

    assert [share.url for share in h.take()] == [f"https://example.org/{n}" for n in range(5)]
    assert [query.get("max_id") for query in instance.queries("/statuses")[1:]] == [
        None,
        [str(NEXT_ID + 3)],
        [str(NEXT_ID + 1)],
    ]


async def test_a_failed_emit_leaves_since_id_so_the_statuses_come_again(
    instance: Instance, http: httpx.AsyncClient
) -> None:
    h = harness(http, instance)

    async def bus_down(share: Share) -> None:
        raise ConnectionError("nats: no servers available")

    broken = MastodonSource(
        lambda: h.people, h.checkpoints, bus_down, http, instance_url=lambda name: instance.base_url, clock=h.clock
    )
    with pytest.raises(ConnectionError):
        await broken.poll()
    assert h.checkpoints.data[checkpoint_key(parse_account(BRITZ))]["since_id"] is None  # only the lookup is kept

    await h.source().poll()
    assert len(h.take()) == 4


# --- Failures --------------------------------------------------------------------------------------------------


async def test_429_holds_the_instance_back_until_the_rate_limit_resets(
    instance: Instance, http: httpx.AsyncClient
) -> None:
    instance.accounts["ada"] = {**ACCOUNT, "id": "200", "username": "ada", "acct": "ada"}
    instance.statuses["200"] = [new_status(NEXT_ID, -10, "https://example.org/from-ada")]
    h = harness(http, instance, BRITZ, "ada@other.example")
    source = h.source(poll_seconds=120)
    await source.poll()
    h.take()

    instance.replies[f"/api/v1/accounts/{ACCOUNT['id']}/statuses"] = Reply(
        429,
        b'{"error":"Too many requests"}',
        {"X-RateLimit-Limit": "300", "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "2025-03-04T12:05:00.000Z"},
    )
    with pytest.raises(RateLimited) as limit:
        await source.poll()
    assert limit.value.retry_after == 120
    assert str(limit.value) == "@britz@mastodon.example: mastodon.example answered HTTP 429, retry after 300s"

    instance.requests.clear()
    h.clock.advance(minutes=2)
    await source.poll()  # mastodon.example is left alone; other.example is still read
    assert instance.paths("/statuses") == ["/api/v1/accounts/200/statuses"]

    del instance.replies[f"/api/v1/accounts/{ACCOUNT['id']}/statuses"]
    h.clock.advance(minutes=4)
    await source.poll()
    assert f"/api/v1/accounts/{ACCOUNT['id']}/statuses" in instance.paths("/statuses")


async def test_an_unknown_account_is_named_and_does_not_stop_the_others(
    instance: Instance, http: httpx.AsyncClient
) -> None:
    h = harness(http, instance, "nobody@mastodon.example", BRITZ)

    with pytest.raises(SourceUnavailable) as failure:
        await h.source().poll()

    assert str(failure.value) == (
        "@nobody@mastodon.example: no such account on mastodon.example (lookup answered HTTP 404)"
    )
    assert len(h.take()) == 4


async def test_an_account_that_disappears_is_looked_up_again(instance: Instance, http: httpx.AsyncClient) -> None:
    h = harness(http, instance)
    source = h.source()
    await source.poll()

    moved = instance.statuses.pop(ACCOUNT["id"])
    with pytest.raises(SourceUnavailable, match="statuses answered HTTP 404; the account will be looked up again"):
        await source.poll()

    instance.accounts["britz"] = {**ACCOUNT, "id": "300"}
    instance.statuses["300"] = moved
    await source.poll()
    assert instance.paths("/lookup") == ["/api/v1/accounts/lookup"] * 2
    assert instance.queries("/api/v1/accounts/300/statuses") == [{"limit": ["40"], "since_id": [CARD_POST["id"]]}]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b'[{"id": "1", "created_at": "2025-03-04T', "statuses answered malformed JSON"),
        (b"<html><body>Maintenance</body></html>", "statuses answered malformed JSON"),
        (b'{"error": "This method requires an authenticated user"}', "statuses answered no list of statuses"),
        (b'[{"created_at": "2025-03-04T11:00:00.000Z"}]', "statuses answered a status without an id"),
    ],
    ids=["truncated", "html", "object", "no-id"],
)
async def test_a_malformed_answer_is_a_failure_with_the_reason(
    instance: Instance, http: httpx.AsyncClient, body: bytes, reason: str
) -> None:
    instance.replies[f"/api/v1/accounts/{ACCOUNT['id']}/statuses"] = Reply(200, body, {"Content-Type": "text/html"})
    h = harness(http, instance)

    with pytest.raises(SourceUnavailable) as failure:
        await h.source().poll()

    assert str(failure.value).startswith(f"@britz@mastodon.example: {reason}")
    assert h.take() == []


async def test_an_oversize_answer_is_refused(instance: Instance, http: httpx.AsyncClient) -> None:
    h = harness(http, instance)

    with pytest.raises(SourceUnavailable, match="larger than 5000 bytes"):
        await h.source(max_bytes=5000).poll()


# --- Links -----------------------------------------------------------------------------------------------------


def test_a_card_without_a_web_url_falls_back_to_the_content() -> None:
    post = {**CARD_POST, "card": {**CARD_POST["card"], "url": "ftp://example.org/file"}}
    assert article_link(post) == "https://bit.ly/3FkQz9e"


def test_links_marked_as_tags_mentions_or_quotes_are_not_articles() -> None:
    content = (
        '<p><a href="https://pleroma.example/tag/learning" rel="tag">#learning</a> '
        '<a href="https://misskey.example/@ada">@ada</a> '
        '<p class="quote-inline">RE: <a href="https://mastodon.example/@josh/1">post</a></p>'
        '<a href="https://example.org/article">article</a></p>'
    )
    post = {"content": content, "card": None, "mentions": [{"url": "https://misskey.example/@ada"}], "tags": []}
    assert article_link(post) == "https://example.org/article"


def test_a_status_linking_nowhere_is_no_share() -> None:
    assert status_to_share(parse_account(BRITZ), NO_LINK_POST) is None
    assert OLD_POST["card"] is not None  # the month-old post does link: the first poll's window left it out


def test_accounts_are_spelled_one_way() -> None:
    account = parse_account("@britz@Mastodon.Example")
    assert (account.acct, account.handle) == ("britz@mastodon.example", "@britz@mastodon.example")


async def test_builder_takes_interval_and_limits_from_settings(http: httpx.AsyncClient) -> None:
    settings = Settings(mastodon_poll_seconds=42, source_timeout_seconds=3, source_max_bytes=1234)

    async def emit(share: Share) -> None:
        pass

    source = mastodon_source(settings, lambda: [], MemoryCheckpoints(), emit, http)

    assert (source.name, source.poll_seconds, source.timeout_seconds, source.max_bytes) == ("mastodon", 42, 3, 1234)
    assert source.instance_url("mastodon.social") == "https://mastodon.social"
