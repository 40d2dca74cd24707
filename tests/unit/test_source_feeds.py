"""The RSS/Atom source against a real local HTTP server serving real-world-shaped feeds (no mocks)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from structlog.testing import capture_logs

from pipeline.demo import loopback_http_server
from pipeline.domain.rules import Person
from pipeline.messages import Share
from pipeline.settings import Settings
from pipeline.triggers.sources.base import MemoryCheckpoints, RateLimited, SourceUnavailable
from pipeline.triggers.sources.feeds import FeedSource, checkpoint_key, entry_native_id, feed_source, remember
from pipeline.triggers.sources.http import html_to_text, retry_after_seconds, shorten

FEEDS = Path(__file__).parent.parent / "fixtures" / "feeds"
WORDPRESS = (FEEDS / "wordpress-rss2.xml").read_bytes()
JEKYLL = (FEEDS / "jekyll-atom.xml").read_bytes()
RDF = (FEEDS / "slashcode-rdf.xml").read_bytes()
HUGO = (FEEDS / "hugo-no-guid-rss2.xml").read_bytes()

NOW = datetime(2025, 3, 4, 12, 0, tzinfo=UTC)
RSS = "application/rss+xml; charset=UTF-8"
ETAG = '"5f3c-62f1a9e0b4c80"'
LAST_MODIFIED = "Tue, 04 Mar 2025 09:31:12 GMT"

NEW_ITEM = b"""<item>
		<title>Learning in the Flow of Work, Two Years On</title>
		<link>https://joshbersin.example/2025/03/learning-in-the-flow-of-work-two-years-on/</link>
		<pubDate>Tue, 04 Mar 2025 11:45:00 +0000</pubDate>
		<guid isPermaLink="false">https://joshbersin.example/?p=43150</guid>
		<description><![CDATA[<p>What changed since we first wrote about it.</p>]]></description>
	</item>
	"""


def with_new_item(feed: bytes, item: bytes = NEW_ITEM) -> bytes:
    """The feed with `item` published before its first entry."""
    first = feed.index(b"<item>")
    return feed[:first] + item + feed[first:]


# --- A local feed server ---------------------------------------------------------------------------------------


@dataclass
class Reply:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    declare_length: bool = True  # False: no Content-Length, the body ends when the connection closes


@dataclass
class Request:
    path: str
    headers: dict[str, str]


@dataclass
class FeedServer:
    """Answers each path as the test says (a Reply, or a function of the request) and records every request."""

    base_url: str
    routes: dict[str, Reply | Callable[[Request], Reply]]
    requests: list[Request]

    def url(self, path: str) -> str:
        return f"{self.base_url}{path}"

    def serve(self, path: str, reply: Reply | Callable[[Request], Reply]) -> str:
        self.routes[path] = reply
        return self.url(path)

    def requests_for(self, path: str) -> list[Request]:
        return [request for request in self.requests if urlsplit(request.path).path == path]


@pytest.fixture(scope="module")
def running_server() -> Iterator[FeedServer]:
    routes: dict[str, Reply | Callable[[Request], Reply]] = {}
    requests: list[Request] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:  # keep test output quiet
            pass

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            request = Request(self.path, {name.lower(): value for name, value in self.headers.items()})
            requests.append(request)
            route = routes.get(urlsplit(self.path).path, Reply(404, b"not found"))
            reply = route(request) if callable(route) else route
            self.send_response(reply.status)
            for name, value in reply.headers.items():
                self.send_header(name, value)
            if reply.declare_length:
                self.send_header("Content-Length", str(len(reply.body)))
            self.end_headers()
            if reply.status != 304:
                self.wfile.write(reply.body)

    with loopback_http_server(Handler) as base_url:
        yield FeedServer(base_url, routes, requests)


@pytest.fixture
def server(running_server: FeedServer) -> FeedServer:
    """The module's server, with no routes and no requests yet (one server: each shutdown takes half a second)."""
    running_server.routes.clear()
    running_server.requests.clear()
    return running_server


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


class Clock:
    def __init__(self, now: datetime = NOW) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@dataclass
class Harness:
    """A FeedSource with what it emitted, its checkpoints and its clock at hand."""

    http: httpx.AsyncClient
    people: list[Person]
    checkpoints: MemoryCheckpoints = field(default_factory=MemoryCheckpoints)
    clock: Clock = field(default_factory=Clock)
    emitted: list[Share] = field(default_factory=list)

    async def emit(self, share: Share) -> None:
        self.emitted.append(share)

    def source(self, **options: object) -> FeedSource:
        """A new source instance each call: a second call is a restart with the same checkpoints."""
        return FeedSource(
            lambda: self.people,
            self.checkpoints,
            self.emit,
            self.http,
            clock=self.clock,
            **options,  # type: ignore[arg-type]
        )

    def take(self) -> list[Share]:
        emitted, self.emitted = self.emitted, []
        return emitted


def person(*feeds: str) -> Person:
    return Person(name="Ada", rss=list(feeds))


def harness(http: httpx.AsyncClient, *feeds: str) -> Harness:
    return Harness(http, [person(*feeds)])


# --- Feed formats ----------------------------------------------------------------------------------------------


async def test_rss2_entries_become_shares_of_their_links(server: FeedServer, http: httpx.AsyncClient) -> None:
    feed = server.serve("/feed/", Reply(body=WORDPRESS, headers={"Content-Type": RSS}))
    h = harness(http, feed)

    assert await h.source(poll_seconds=300).poll() == 300

    first, second = h.take()  # the two entries of the last 24 hours, oldest first
    assert second.url == "https://joshbersin.example/2025/03/why-elearning-isnt-working-for-leadership-and-soft-skills/"
    assert first.url == "https://joshbersin.example/2025/03/the-dynamic-organization-five-lessons/"
    assert second.id == f"rss:{entry_native_id(feed, 'https://joshbersin.example/?p=43121')}"
    assert (second.source, second.sharer, second.network, second.language) == ("rss", feed, "rss", "en-US")
    assert second.shared_at == datetime(2025, 3, 4, 9, 30, tzinfo=UTC)
    assert second.text.startswith(
        "Why eLearning Isn’t Working for Leadership and Soft Skills — Companies spend billions on leadership "
        "development, yet most of it is delivered as self-paced eLearning."
    )
    assert "<" not in second.text and len(second.text) <= 500
    assert not second.is_reply and not second.is_repost
    assert "application/rss+xml" in server.requests[0].headers["accept"]


async def test_atom_entries_use_their_id_and_published_or_updated_time(
    server: FeedServer, http: httpx.AsyncClient
) -> None:
    feed = server.serve("/feed.xml", Reply(body=JEKYLL, headers={"Content-Type": "application/atom+xml"}))
    h = harness(http, feed)

    await h.source().poll()

    notes, cohorts = h.take()
    assert cohorts.id == f"rss:{entry_native_id(feed, 'https://learning.example.dev/2025/03/04/cohort-based-courses')}"
    assert cohorts.url == "https://learning.example.dev/2025/03/04/cohort-based-courses/"
    assert cohorts.shared_at == datetime(2025, 3, 4, 8, 45, tzinfo=UTC)  # published, not updated
    assert cohorts.text == (
        "Cohort-based courses beat self-paced ones for soft skills — Why learning together works: completion rates "
        "of self-paced courses hover around 10%, cohorts reach 85%."
    )
    assert cohorts.language == "en"  # the feed's xml:lang
    assert notes.shared_at == datetime(2025, 3, 3, 21, 10, tzinfo=UTC)  # only <updated>


async def test_rss1_rdf_entries_in_latin1(server: FeedServer, http: httpx.AsyncClient) -> None:
    feed = server.serve("/index.rdf", Reply(body=RDF, headers={"Content-Type": "application/rdf+xml"}))
    h = harness(http, feed)

    await h.source().poll()

    [share] = h.take()  # the other entry is a week old
    assert share.url.startswith("https://weiterbildung.example.de/artikel/2025/03/04/fuehrung-lernt-man-nicht")
    assert share.text.startswith(
        "Führung lernt man nicht am Bildschirm — Eine Studie zeigt: E-Learning allein verändert"
    )
    assert share.text.endswith("Kommentare")
    assert share.language == "de"
    assert share.shared_at == datetime(2025, 3, 4, 8, 12, tzinfo=UTC)


async def test_entries_without_guid_are_told_apart_by_link(server: FeedServer, http: httpx.AsyncClient) -> None:
    feed = server.serve("/posts/index.xml", Reply(body=HUGO, headers={"Content-Type": "application/rss+xml"}))
    h = harness(http, feed)

    await h.source().poll()

    # the entry without any link is skipped; the relative link is resolved against the feed's URL
    assert [share.url for share in h.take()] == [
        server.url("/posts/mentoring-without-a-program/"),
        "https://notes.example.net/posts/peer-coaching-circles/",
    ]

    retitled = HUGO.replace(b"Peer coaching circles, six months in", b"Peer coaching circles (updated)")
    server.serve("/posts/index.xml", Reply(body=retitled, headers={"Content-Type": "application/rss+xml"}))
    await h.source().poll()
    assert h.take() == []

    added = retitled.replace(
        b"<item>",
        b"<item><title>Office hours</title><link>https://notes.example.net/posts/office-hours/</link>"
        b"<pubDate>Tue, 04 Mar 2025 12:30:00 +0100</pubDate></item><item>",
        1,
    )
    server.serve("/posts/index.xml", Reply(body=added, headers={"Content-Type": "application/rss+xml"}))
    await h.source().poll()
    assert [share.url for share in h.take()] == ["https://notes.example.net/posts/office-hours/"]


IDS_RSS = b"""<?xml version="1.0"?><rss version="2.0"><channel><title>Ids</title><link>https://blog.example/</link>
<item><title>Numbered</title><guid>1</guid><pubDate>Tue, 04 Mar 2025 10:00:00 +0000</pubDate></item>
<item><title>Explicit permalink</title><guid isPermaLink="true">https://blog.example/b</guid>
  <pubDate>Tue, 04 Mar 2025 10:01:00 +0000</pubDate></item>
<item><title>Default permalink</title><guid>https://blog.example/c</guid>
  <pubDate>Tue, 04 Mar 2025 10:02:00 +0000</pubDate></item>
<item><title>Not a permalink</title><guid isPermaLink="false">https://blog.example/d</guid>
  <pubDate>Tue, 04 Mar 2025 10:03:00 +0000</pubDate></item>
<item><title>Relative path as guid</title><guid>posts/e</guid><pubDate>Tue, 04 Mar 2025 10:04:00 +0000</pubDate></item>
<item><title>Link and id</title><link>https://blog.example/f</link><guid>f-id</guid>
  <pubDate>Tue, 04 Mar 2025 10:05:00 +0000</pubDate></item>
</channel></rss>"""

IDS_ATOM = b"""<?xml version="1.0" encoding="utf-8"?><feed xmlns="http://www.w3.org/2005/Atom"><title>Ids</title>
<id>urn:feed</id><updated>2025-03-04T10:00:00Z</updated>
<entry><title>Numbered</title><id>1</id><updated>2025-03-04T10:00:00Z</updated></entry>
<entry><title>URL as id</title><id>https://blog.example/x</id><updated>2025-03-04T10:01:00Z</updated></entry>
<entry><title>Relative link</title><id>tag:blog.example,2025:c</id><link href="/posts/c"/>
  <updated>2025-03-04T10:02:00Z</updated></entry>
<entry><title>Only an enclosure</title><id>tag:blog.example,2025:d</id>
  <link rel="enclosure" href="/d.mp3" type="audio/mpeg"/><updated>2025-03-04T10:03:00Z</updated></entry>
</feed>"""


async def test_an_rss_guid_is_a_link_only_as_an_absolute_permalink(server: FeedServer, http: httpx.AsyncClient) -> None:
    feed = server.serve("/ids.rss", Reply(body=IDS_RSS, headers={"Content-Type": RSS}))
    h = harness(http, feed)

    with capture_logs() as logs:
        await h.source().poll()

    assert [share.url for share in h.take()] == [
        "https://blog.example/b",
        "https://blog.example/c",
        "https://blog.example/f",
    ]
    skipped = {log["reason"] for log in logs if log["event"] == "feed.entry_skipped"}
    assert skipped == {
        "no link: the entry has no <link>, and its id '1' is not a link",
        "no link: the entry has no <link>, and its id 'https://blog.example/d' is not a link",
        "no link: the entry has no <link>, and its id 'posts/e' is not a link",
    }
    assert all(log["feed"] == feed for log in logs if log["event"] == "feed.entry_skipped")

    with capture_logs() as logs:  # the next poll: remembered as seen, so neither shared nor logged again
        await h.source().poll()
    assert h.take() == [] and not [log for log in logs if log["event"] == "feed.entry_skipped"]


async def test_an_atom_id_is_never_a_link(server: FeedServer, http: httpx.AsyncClient) -> None:
    feed = server.serve("/ids.atom", Reply(body=IDS_ATOM, headers={"Content-Type": "application/atom+xml"}))
    h = harness(http, feed)

    with capture_logs() as logs:
        await h.source().poll()

    assert [share.url for share in h.take()] == [server.url("/posts/c")]
    skipped = sorted(log["reason"] for log in logs if log["event"] == "feed.entry_skipped")
    assert skipped == [
        "no link: the entry has no <link>, and its id '1' is not a link",
        "no link: the entry has no <link>, and its id 'https://blog.example/x' is not a link",
        "no link: the entry has no <link>, and its id 'tag:blog.example,2025:d' is not a link",
    ]


# --- Polling, checkpoints, restarts ----------------------------------------------------------------------------


async def test_first_poll_emits_only_the_last_day_but_remembers_every_entry(
    server: FeedServer, http: httpx.AsyncClient
) -> None:
    feed = server.serve("/feed/", Reply(body=WORDPRESS, headers={"Content-Type": RSS}))
    h = harness(http, feed)

    await h.source().poll()
    assert len(h.take()) == 2
    assert len(h.checkpoints.data[checkpoint_key(feed)]["seen"]) == 4

    h.clock.advance(days=30)  # the older entries are not new just because they were not emitted
    await h.source().poll()
    assert h.take() == []


async def test_etag_and_last_modified_are_sent_back_and_304_means_nothing_new(
    server: FeedServer, http: httpx.AsyncClient
) -> None:
    current = {"body": WORDPRESS, "etag": ETAG}

    def conditional(request: Request) -> Reply:
        if request.headers.get("if-none-match") == current["etag"]:
            return Reply(304, headers={"ETag": current["etag"]})
        headers = {"Content-Type": RSS, "ETag": current["etag"], "Last-Modified": LAST_MODIFIED}
        return Reply(body=current["body"], headers=headers)

    feed = server.serve("/feed/", conditional)
    h = harness(http, feed)
    source = h.source()

    await source.poll()
    assert len(h.take()) == 2
    assert "if-none-match" not in server.requests[0].headers

    await source.poll()
    second = server.requests[1].headers
    assert (second.get("if-none-match"), second.get("if-modified-since")) == (ETAG, LAST_MODIFIED)
    assert h.take() == []

    current.update(body=with_new_item(WORDPRESS), etag='"6a01-62f1b2c3d4e50"')
    await source.poll()
    assert [share.url for share in h.take()] == [
        "https://joshbersin.example/2025/03/learning-in-the-flow-of-work-two-years-on/"
    ]
    assert h.checkpoints.data[checkpoint_key(feed)]["etag"] == '"6a01-62f1b2c3d4e50"'


async def test_a_restart_neither_repeats_nor_misses(server: FeedServer, http: httpx.AsyncClient) -> None:
    feed = server.serve("/feed/", Reply(body=WORDPRESS, headers={"Content-Type": RSS}))
    h = harness(http, feed)
    await h.source().poll()
    before = h.take()

    server.serve("/feed/", Reply(body=with_new_item(WORDPRESS), headers={"Content-Type": RSS}))
    h.clock.advance(hours=3)
    await h.source().poll()  # a new instance: only the checkpoints carry over

    after = h.take()
    assert [share.url for share in after] == [
        "https://joshbersin.example/2025/03/learning-in-the-flow-of-work-two-years-on/"
    ]
    assert not {share.id for share in before} & {share.id for share in after}


async def test_a_failed_emit_leaves_the_checkpoint_so_the_entries_come_again(
    server: FeedServer, http: httpx.AsyncClient
) -> None:
    feed = server.serve(
        "/feed/",
        Reply(
            body=WORDPRESS,
            headers={"Content-Type": RSS},
        ),
    )
    h = harness(http, feed)

    async def bus_down(share: Share) -> None:
        raise ConnectionError("nats: no servers available")

    broken = FeedSource(lambda: h.people, h.checkpoints, bus_down, http, clock=h.clock)
    with pytest.raises(ConnectionError):
        await broken.poll()
    assert checkpoint_key(feed) not in h.checkpoints.data

    await h.source().poll()
    assert len(h.take()) == 2


async def test_people_are_read_on_every_poll_and_a_shared_feed_is_read_once(
    server: FeedServer, http: httpx.AsyncClient
) -> None:
    wordpress = server.serve("/feed/", Reply(body=WORDPRESS, headers={"Content-Type": RSS}))
    atom = server.serve("/feed.xml", Reply(body=JEKYLL, headers={"Content-Type": "application/atom+xml"}))
    h = Harness(http, [person(wordpress)])
    source = h.source()
    await source.poll()
    assert {share.sharer for share in h.take()} == {wordpress}

    h.people = [person(wordpress, atom), Person(name="Grace", rss=[atom])]  # the rules file was edited
    await source.poll()

    assert {share.sharer for share in h.take()} == {atom}
    assert len(server.requests_for("/feed.xml")) == 1


# --- Failures --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "content_type", "reason"),
    [
        (b"<?xml version='1.0'?><rss version='2.0'><channel><title>Tom & Jerry</title>", RSS, "not well-formed"),
        (b"<!DOCTYPE html><html><head><title>Blog</title></head><body></body></html>", "text/html", "not an XML"),
        (b"<html><head><title>Blog</title></head><body><p>Hi</p></body></html>", "application/xml", "no RSS"),
        (b"", RSS, "no RSS, RDF or Atom"),
    ],
    ids=["malformed-xml", "html-page", "html-as-xml", "empty"],
)
async def test_what_is_not_a_feed_fails_with_the_reason(
    server: FeedServer, http: httpx.AsyncClient, body: bytes, content_type: str, reason: str
) -> None:
    feed = server.serve("/feed", Reply(body=body, headers={"Content-Type": content_type}))
    h = harness(http, feed)

    with pytest.raises(SourceUnavailable) as failure:
        await h.source().poll()

    assert f"{feed}: not a feed" in str(failure.value)
    assert reason in str(failure.value)
    assert h.take() == []


async def test_a_feed_with_entries_is_read_although_it_ends_early(server: FeedServer, http: httpx.AsyncClient) -> None:
    truncated = WORDPRESS[: WORDPRESS.index(b"<item>", WORDPRESS.index(b"?p=43098"))]  # cut off mid-channel
    feed = server.serve("/feed/", Reply(body=truncated, headers={"Content-Type": RSS}))
    h = harness(http, feed)

    await h.source().poll()

    assert len(h.take()) == 2


async def test_429_holds_the_feed_back_until_retry_after(server: FeedServer, http: httpx.AsyncClient) -> None:
    limited = server.serve("/limited", Reply(429, b"slow down", {"Retry-After": "120"}))
    fine = server.serve("/feed/", Reply(body=WORDPRESS, headers={"Content-Type": RSS}))
    h = harness(http, limited, fine)
    source = h.source(poll_seconds=300)

    with pytest.raises(RateLimited) as limit:
        await source.poll()
    assert limit.value.retry_after == 300  # the other feeds keep their interval
    assert f"{limited}: answered HTTP 429, retry after 120s" in str(limit.value)
    assert len(h.take()) == 2

    h.clock.advance(seconds=60)
    assert await source.poll() == 300  # held back: not asked again, nothing to report
    assert len(server.requests_for("/limited")) == 1
    assert len(server.requests_for("/feed/")) == 2

    h.clock.advance(seconds=61)
    with pytest.raises(RateLimited):
        await source.poll()
    assert len(server.requests_for("/limited")) == 2


async def test_a_failing_feed_does_not_stop_the_others(server: FeedServer, http: httpx.AsyncClient) -> None:
    down = server.serve("/down", Reply(500, b"Internal Server Error"))
    missing = server.url("/gone")
    fine = server.serve("/feed/", Reply(body=WORDPRESS, headers={"Content-Type": RSS}))
    h = harness(http, down, missing, fine)

    with pytest.raises(SourceUnavailable) as failure:
        await h.source().poll()

    assert str(failure.value) == f"{down}: answered HTTP 500; {missing}: answered HTTP 404"
    assert len(h.take()) == 2
    assert checkpoint_key(fine) in h.checkpoints.data
    assert checkpoint_key(down) not in h.checkpoints.data


@pytest.mark.parametrize("declare_length", [True, False], ids=["content-length", "streamed"])
async def test_an_oversize_feed_is_refused(server: FeedServer, http: httpx.AsyncClient, declare_length: bool) -> None:
    feed = server.serve("/feed/", Reply(body=WORDPRESS, headers={"Content-Type": RSS}, declare_length=declare_length))
    h = harness(http, feed)

    with pytest.raises(SourceUnavailable, match="larger than 1000 bytes"):
        await h.source(max_bytes=1000).poll()
    assert h.take() == []


async def test_an_unreachable_feed_is_a_failure(http: httpx.AsyncClient) -> None:
    with loopback_http_server(BaseHTTPRequestHandler) as base_url:
        pass  # the port is free again: nothing listens there
    h = harness(http, f"{base_url}/feed")

    with pytest.raises(SourceUnavailable, match="request failed: ConnectError"):
        await h.source().poll()


# --- Helpers ---------------------------------------------------------------------------------------------------


def test_retry_after_in_seconds_as_http_date_or_as_mastodon_reset() -> None:
    assert retry_after_seconds({"retry-after": "120"}, NOW) == 120
    assert retry_after_seconds({"retry-after": "Tue, 04 Mar 2025 12:02:30 GMT"}, NOW) == 150
    assert retry_after_seconds({"x-ratelimit-reset": "2025-03-04T12:05:00.000Z"}, NOW) == 300
    assert retry_after_seconds({"retry-after": "Tue, 04 Mar 2025 11:00:00 GMT"}, NOW) == 0  # already past
    assert retry_after_seconds({"retry-after": "soon"}, NOW) == 60  # unusable: a minute
    assert retry_after_seconds({}, NOW) == 60


def test_remembered_ids_keep_everything_still_in_the_feed_within_the_limit() -> None:
    assert remember(["c", "b", "a"], ["d", "c"], limit=3) == ["d", "c", "b"]
    assert remember(["b", "a"], ["e", "d", "c"], limit=2) == ["e", "d", "c"]  # never forget what is still listed


def test_html_becomes_plain_text() -> None:
    assert html_to_text("<p>One <b>bold</b> move.</p><p>Two<br>lines</p>") == "One bold move.\n\nTwo\nlines"
    assert html_to_text("a < b &amp; c") == "a < b & c"
    assert html_to_text("") == ""
    assert shorten("one two three", 9) == "one two…"


async def test_builder_takes_interval_and_limits_from_settings(http: httpx.AsyncClient) -> None:
    settings = Settings(rss_poll_seconds=42, source_timeout_seconds=3, source_max_bytes=1234)

    source = feed_source(settings, lambda: [], MemoryCheckpoints(), Harness(http, []).emit, http)

    assert (source.name, source.poll_seconds, source.timeout_seconds, source.max_bytes) == ("rss", 42, 3, 1234)
