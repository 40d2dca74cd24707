"""The X source against the HTTP API as X documents it: `responses` intercepts tweepy's requests to api.twitter.com.

Payloads follow the X API v2 reference (GET /2/users/by, /2/users/:id/tweets, /2/lists/:id/tweets), so these tests
exercise tweepy's real parsing and the query strings it really sends.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import requests
import responses
from structlog.testing import capture_logs

from pipeline.domain.rules import Person
from pipeline.messages import Share
from pipeline.settings import Settings
from pipeline.triggers.sources.base import MemoryCheckpoints, RateLimited, SourceUnavailable, run_source
from pipeline.triggers.sources.x import XSource, make_x_client, x_source

API = "https://api.twitter.com/2"
TOKEN = "AAAAAAAAAAAAAAAAAAAAAMLheAAAAAAA0%2BuSeid-secret-test-token"
NOW = 1741083030.0  # 2025-03-04T10:10:30Z

BRITZ = Person(name="Britz", x=["@Britz"])
BRITZ_ID = "2244994945"
ANA = Person(name="Ana", x="ana_l")
ANA_ID = "783214"
TIMELINE = {BRITZ_ID: f"{API}/users/{BRITZ_ID}/tweets", ANA_ID: f"{API}/users/{ANA_ID}/tweets"}
LIST_ID = "1234567890123456789"

ARTICLE = "https://www.linkedin.com/pulse/why-elearning-isnt-working-josh-bersin"
SECOND_ARTICLE = "https://joshbersin.com/2025/03/the-learning-paradox/"


def tweet_id(n: int) -> str:
    """Snowflake-sized ids that grow with n, like X's."""
    return str(1897262531205046272 + n * 4096)


# --- payloads, shaped as the X API v2 reference documents them ---


def user(id: str, username: str, name: str) -> dict[str, Any]:
    return {"id": id, "name": name, "username": username}


def link(tco: str, expanded: str, *, unwound: str | None = None, start: int = 0) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "start": start,
        "end": start + 23,
        "url": tco,
        "expanded_url": expanded,
        "display_url": expanded.split("://", 1)[-1][:26] + "…",
    }
    if unwound is not None:  # with these four fields when X has followed the redirects
        entry |= {"unwound_url": unwound, "status": 200, "title": "Why eLearning Isn't Working", "description": "…"}
    return entry


def tweet(
    n: int,
    text: str,
    *,
    author_id: str = BRITZ_ID,
    urls: list[dict[str, Any]] | None = None,
    lang: str = "en",
    created_at: str = "2025-03-04T10:00:00.000Z",
    referenced: list[tuple[str, str]] | None = None,
) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": tweet_id(n),
        "text": text,
        "edit_history_tweet_ids": [tweet_id(n)],
        "author_id": author_id,
        "created_at": created_at,
        "lang": lang,
    }
    if urls:
        data["entities"] = {"urls": urls}
    if referenced:
        data["referenced_tweets"] = [{"type": kind, "id": ref_id} for kind, ref_id in referenced]
    return data


def page(
    *tweets: dict[str, Any], next_token: str | None = None, includes: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A timeline page, newest tweet first; no `data` and no ids in `meta` when there are no tweets."""
    if not tweets:
        return {"meta": {"result_count": 0}}
    ordered = sorted(tweets, key=lambda t: int(t["id"]), reverse=True)
    meta: dict[str, Any] = {"result_count": len(ordered), "newest_id": ordered[0]["id"], "oldest_id": ordered[-1]["id"]}
    if next_token:
        meta["next_token"] = next_token
    body: dict[str, Any] = {"data": ordered, "meta": meta}
    if includes:
        body["includes"] = includes
    return body


def list_page(*tweets: dict[str, Any], users: list[dict[str, Any]], next_token: str | None = None) -> dict[str, Any]:
    """A list page: the list endpoint's `meta` has no newest_id/oldest_id."""
    body = page(*tweets, next_token=next_token, includes={"users": users})
    body["meta"] = {key: value for key, value in body["meta"].items() if key in ("result_count", "next_token")}
    return body


def link_tweet(n: int, url: str = ARTICLE, **fields: Any) -> dict[str, Any]:
    return tweet(n, f"Worth a read https://t.co/a{n}", urls=[link(f"https://t.co/a{n}", url, start=15)], **fields)


# --- harness ---


class Collected(list[Share]):
    """An `emit` that keeps what it is given."""

    async def __call__(self, share: Share) -> None:
        self.append(share)


@pytest.fixture
def api() -> Iterator[responses.RequestsMock]:
    # Unregistered requests fail with ConnectionError: nothing reaches the real X.
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


def lookup(api: responses.RequestsMock, *users: dict[str, Any], errors: list[dict[str, Any]] | None = None) -> None:
    body: dict[str, Any] = {"data": list(users)} if users else {}
    if errors:
        body["errors"] = errors
    api.get(f"{API}/users/by", json=body)


def not_found(username: str) -> dict[str, Any]:
    return {
        "value": username,
        "detail": f"Could not find user with usernames: [{username}].",
        "title": "Not Found Error",
        "resource_type": "user",
        "parameter": "usernames",
        "resource_id": username,
        "type": "https://api.twitter.com/2/problems/resource-not-found",
    }


def make_source(
    people: list[Person] | None = None,
    checkpoints: MemoryCheckpoints | None = None,
    **options: Any,
) -> tuple[XSource, Collected, MemoryCheckpoints]:
    shared = Collected()
    checkpoints = checkpoints or MemoryCheckpoints()
    roster = [BRITZ] if people is None else people
    source = XSource(make_x_client(TOKEN, timeout=5), lambda: roster, checkpoints, shared, clock=lambda: NOW, **options)
    return source, shared, checkpoints


def requests_to(api: responses.RequestsMock, url: str) -> list[Any]:
    return [call.request for call in api.calls if call.request.url.split("?")[0] == url]


# --- tweets -> shares ---


async def test_each_article_link_is_a_share_never_a_tco_link_and_the_unwound_url_wins(
    api: responses.RequestsMock,
) -> None:
    lookup(api, user(BRITZ_ID, "Britz", "Britz"))
    two_articles = tweet(
        3,
        "Two good ones https://t.co/one https://t.co/two and a photo https://t.co/pic",
        urls=[
            link("https://t.co/one", "https://lnkd.in/eXyZ", unwound=ARTICLE, start=14),
            link("https://t.co/two", SECOND_ARTICLE, start=38),
            link("https://t.co/pic", f"https://x.com/Britz/status/{tweet_id(3)}/photo/1", start=70),
            link("https://t.co/same", SECOND_ARTICLE, start=94),  # the same article twice: one share
        ],
    )
    only_tco = tweet(2, "Hm https://t.co/x", urls=[link("https://t.co/x", "https://t.co/x", start=3)])
    a_quote_link = tweet(
        1,
        "Yes! https://t.co/q",
        urls=[link("https://t.co/q", "https://twitter.com/someone/status/1897000000000000000", start=5)],
    )
    no_link = tweet(0, "Good morning, learning people", lang="und")
    api.get(TIMELINE[BRITZ_ID], json=page(two_articles, only_tco, a_quote_link, no_link))
    source, shared, _ = make_source()

    assert await source.poll() == 60

    assert [(share.id, share.url) for share in shared] == [
        (f"x:{tweet_id(3)}.1", ARTICLE),
        (f"x:{tweet_id(3)}.2", SECOND_ARTICLE),
    ]
    first = shared[0]
    assert first.source == "x" and first.network == "x" and first.sharer == "@Britz"
    assert first.text == two_articles["text"]
    assert first.shared_at == datetime(2025, 3, 4, 10, 0, tzinfo=UTC)
    assert first.language == "en"
    assert not first.is_reply and not first.is_repost
    assert all("t.co" not in share.url for share in shared)


async def test_one_link_keeps_the_bare_tweet_id_and_undetermined_language_is_none(
    api: responses.RequestsMock,
) -> None:
    lookup(api, user(BRITZ_ID, "Britz", "Britz"))
    api.get(TIMELINE[BRITZ_ID], json=page(link_tweet(1, lang="und"), link_tweet(2, SECOND_ARTICLE, lang="zxx")))
    source, shared, _ = make_source()

    await source.poll()

    assert [share.id for share in shared] == [f"x:{tweet_id(1)}", f"x:{tweet_id(2)}"]  # oldest first
    assert [share.language for share in shared] == [None, None]


async def test_replies_and_retweets_are_flagged_and_a_quote_is_neither(api: responses.RequestsMock) -> None:
    lookup(api, user(BRITZ_ID, "Britz", "Britz"))
    original = tweet(1, "New piece: https://t.co/orig", author_id="99", urls=[link("https://t.co/orig", ARTICLE)])
    reply = link_tweet(2, SECOND_ARTICLE, referenced=[("replied_to", tweet_id(0))])
    # A retweet's own text is cut ("RT @jbersin: ..."), its link with it: the original tweet has the article.
    retweet = tweet(3, "RT @jbersin: New piece: …", referenced=[("retweeted", tweet_id(1))])
    quote = link_tweet(4, referenced=[("quoted", tweet_id(1))])
    api.get(TIMELINE[BRITZ_ID], json=page(reply, retweet, quote, includes={"tweets": [original]}))
    source, shared, _ = make_source()

    await source.poll()

    flags = {share.id: (share.url, share.is_reply, share.is_repost) for share in shared}
    assert flags == {
        f"x:{tweet_id(2)}": (SECOND_ARTICLE, True, False),
        f"x:{tweet_id(3)}": (ARTICLE, False, True),
        f"x:{tweet_id(4)}": (ARTICLE, False, False),
    }
    assert shared[1].sharer == "@Britz"  # the retweeter shared it, not the original author
    sent = requests_to(api, TIMELINE[BRITZ_ID])[0].params
    assert sent["tweet.fields"] == "created_at,entities,lang,referenced_tweets,author_id"
    assert sent["expansions"] == "referenced_tweets.id"
    assert sent["max_results"] == "100"


async def test_an_odd_tweet_is_skipped_and_does_not_stall_the_timeline(api: responses.RequestsMock) -> None:
    lookup(api, user(BRITZ_ID, "Britz", "Britz"))
    odd = {**link_tweet(2), "text": 42}
    odd_entities = {**tweet(3, "x"), "entities": {"urls": ["https://t.co/not-an-object"]}}
    api.get(TIMELINE[BRITZ_ID], json=page(odd_entities, odd, link_tweet(1)))
    source, shared, checkpoints = make_source()

    with capture_logs() as logs:
        await source.poll()

    assert [share.id for share in shared] == [f"x:{tweet_id(1)}"]
    assert [entry["tweet_id"] for entry in logs if entry["event"] == "x.tweet_skipped"] == [tweet_id(2)]
    assert checkpoints.data[f"x.since.{BRITZ_ID}"] == {"since_id": tweet_id(3)}


# --- checkpoints, pagination, restarts ---


async def test_first_poll_reads_only_the_newest_page(api: responses.RequestsMock) -> None:
    lookup(api, user(BRITZ_ID, "Britz", "Britz"))
    api.get(TIMELINE[BRITZ_ID], json=page(link_tweet(9), link_tweet(8), next_token="7140dibdnow9c7btw4"))
    source, shared, checkpoints = make_source()

    await source.poll()

    assert len(requests_to(api, TIMELINE[BRITZ_ID])) == 1  # history behind next_token is not backfilled
    assert [share.id for share in shared] == [f"x:{tweet_id(8)}", f"x:{tweet_id(9)}"]
    assert checkpoints.data[f"x.since.{BRITZ_ID}"] == {"since_id": tweet_id(9)}


async def test_later_polls_send_since_id_and_follow_next_token(api: responses.RequestsMock) -> None:
    checkpoints = MemoryCheckpoints()
    await checkpoints.save("x.users", {"users": {"britz": {"id": BRITZ_ID, "username": "Britz"}}})
    await checkpoints.save(f"x.since.{BRITZ_ID}", {"since_id": tweet_id(10)})
    api.get(TIMELINE[BRITZ_ID], json=page(link_tweet(14), link_tweet(13), next_token="7140dibdnow9c7btw4a"))
    api.get(TIMELINE[BRITZ_ID], json=page(link_tweet(12), link_tweet(11)))
    source, shared, _ = make_source(checkpoints=checkpoints)

    await source.poll()

    first, second = requests_to(api, TIMELINE[BRITZ_ID])
    assert first.params["since_id"] == tweet_id(10) and "pagination_token" not in first.params
    assert second.params["since_id"] == tweet_id(10)
    assert second.params["pagination_token"] == "7140dibdnow9c7btw4a"
    assert [share.id for share in shared] == [f"x:{tweet_id(n)}" for n in (11, 12, 13, 14)]
    assert checkpoints.data[f"x.since.{BRITZ_ID}"] == {"since_id": tweet_id(14)}  # from the first page's meta


async def test_pages_are_capped_per_poll(api: responses.RequestsMock) -> None:
    checkpoints = MemoryCheckpoints()
    await checkpoints.save("x.users", {"users": {"britz": {"id": BRITZ_ID, "username": "Britz"}}})
    await checkpoints.save(f"x.since.{BRITZ_ID}", {"since_id": tweet_id(0)})
    for n in (30, 20, 10):
        api.get(TIMELINE[BRITZ_ID], json=page(link_tweet(n), next_token=f"token{n}"))
    source, shared, _ = make_source(checkpoints=checkpoints, max_pages=2)

    with capture_logs() as logs:
        await source.poll()

    assert len(requests_to(api, TIMELINE[BRITZ_ID])) == 2
    assert [share.id for share in shared] == [f"x:{tweet_id(20)}", f"x:{tweet_id(30)}"]
    assert [entry["event"] for entry in logs if entry["log_level"] == "warning"] == ["x.pages_capped"]


async def test_second_poll_sends_since_id_and_a_restart_neither_misses_nor_repeats(
    api: responses.RequestsMock,
) -> None:
    lookup(api, user(BRITZ_ID, "Britz", "Britz"))
    api.get(TIMELINE[BRITZ_ID], json=page(link_tweet(2), link_tweet(1)))
    api.get(TIMELINE[BRITZ_ID], json=page(link_tweet(3)))
    api.get(TIMELINE[BRITZ_ID], json=page(link_tweet(5, SECOND_ARTICLE), link_tweet(4)))
    source, shared, checkpoints = make_source()

    await source.poll()
    await source.poll()
    restarted, shared_after_restart, _ = make_source(checkpoints=checkpoints)  # same KV, new process
    await restarted.poll()

    timeline = requests_to(api, TIMELINE[BRITZ_ID])
    assert "since_id" not in timeline[0].params
    assert timeline[1].params["since_id"] == tweet_id(2)
    assert timeline[2].params["since_id"] == tweet_id(3)
    assert len(requests_to(api, f"{API}/users/by")) == 1  # the restart found the user id in the checkpoints
    everything = [share.id for share in [*shared, *shared_after_restart]]
    assert everything == [f"x:{tweet_id(n)}" for n in (1, 2, 3, 4, 5)]


async def test_an_empty_timeline_is_fine_and_keeps_the_checkpoint(api: responses.RequestsMock) -> None:
    checkpoints = MemoryCheckpoints()
    await checkpoints.save(f"x.since.{BRITZ_ID}", {"since_id": tweet_id(7)})
    lookup(api, user(BRITZ_ID, "Britz", "Britz"))
    api.get(TIMELINE[BRITZ_ID], json={"meta": {"result_count": 0}})
    source, shared, _ = make_source(checkpoints=checkpoints)

    await source.poll()

    assert shared == []
    assert checkpoints.data[f"x.since.{BRITZ_ID}"] == {"since_id": tweet_id(7)}


async def test_a_failed_emit_leaves_the_checkpoint_so_the_shares_come_again(api: responses.RequestsMock) -> None:
    lookup(api, user(BRITZ_ID, "Britz", "Britz"))
    api.get(TIMELINE[BRITZ_ID], json=page(link_tweet(2), link_tweet(1)))
    checkpoints = MemoryCheckpoints()
    published: list[str] = []

    async def emit_then_crash(share: Share) -> None:
        if published:
            raise ConnectionError("NATS went away")
        published.append(share.id)

    source = XSource(make_x_client(TOKEN), lambda: [BRITZ], checkpoints, emit_then_crash)
    with pytest.raises(ConnectionError):
        await source.poll()
    assert f"x.since.{BRITZ_ID}" not in checkpoints.data

    again, shared, _ = make_source(checkpoints=checkpoints)
    await again.poll()
    assert [share.id for share in shared] == [f"x:{tweet_id(1)}", f"x:{tweet_id(2)}"]  # same ids: JetStream dedupes


# --- user ids ---


async def test_user_ids_are_looked_up_in_batches_once_and_unknown_handles_warn_once(
    api: responses.RequestsMock,
) -> None:
    many = [Person(name=f"Person {i}", x=f"person_{i}") for i in range(150)]
    people = [BRITZ, Person(name="Nobody", x="@nobody_here"), *many]
    lookup(
        api,
        user(BRITZ_ID, "Britz", "Britz"),
        *(user(str(1000 + i), f"person_{i}", f"Person {i}") for i in range(98)),
        errors=[not_found("nobody_here")],
    )
    lookup(api, *(user(str(1000 + i), f"person_{i}", f"Person {i}") for i in range(98, 150)))
    lookup(api, errors=[not_found("nobody_here")])
    for i in range(150):
        api.get(f"{API}/users/{1000 + i}/tweets", json=page())
    api.get(TIMELINE[BRITZ_ID], json=page())
    source, _, checkpoints = make_source(people)

    with capture_logs() as logs:
        await source.poll()
        await source.poll()

    lookups = requests_to(api, f"{API}/users/by")
    assert [len(request.params["usernames"].split(",")) for request in lookups] == [100, 52, 1]
    assert lookups[2].params["usernames"] == "nobody_here"  # only the unknown handle is asked again
    cached = checkpoints.data["x.users"]["users"]
    assert cached["britz"] == {"id": BRITZ_ID, "username": "Britz"} and len(cached) == 151
    assert [entry["handle"] for entry in logs if entry["event"] == "x.user_not_found"] == ["@nobody_here"]


async def test_people_are_read_on_every_poll(api: responses.RequestsMock) -> None:
    roster = [BRITZ]
    lookup(api, user(BRITZ_ID, "Britz", "Britz"))
    lookup(api, user(ANA_ID, "ana_l", "Ana"))
    api.get(TIMELINE[BRITZ_ID], json=page())
    api.get(TIMELINE[ANA_ID], json=page(link_tweet(1, author_id=ANA_ID)))
    shared = Collected()
    source = XSource(make_x_client(TOKEN), lambda: roster, MemoryCheckpoints(), shared)

    await source.poll()
    roster.append(ANA)  # the rules file was edited
    await source.poll()

    assert requests_to(api, f"{API}/users/by")[1].params["usernames"] == "ana_l"
    assert [share.sharer for share in shared] == ["@ana_l"]


async def test_a_handle_x_would_refuse_is_skipped_so_the_others_are_still_looked_up(
    api: responses.RequestsMock,
) -> None:
    lookup(api, user(BRITZ_ID, "Britz", "Britz"))
    api.get(TIMELINE[BRITZ_ID], json=page())
    source, _, _ = make_source([BRITZ, Person(name="Typo", x="@brit z")])

    with capture_logs() as logs:
        await source.poll()
        await source.poll()

    assert requests_to(api, f"{API}/users/by")[0].params["usernames"] == "britz"
    assert [entry["handle"] for entry in logs if entry["event"] == "x.handle_invalid"] == ["@brit z"]


async def test_a_protected_account_is_reported_once_not_every_poll(api: responses.RequestsMock) -> None:
    lookup(api, user(BRITZ_ID, "Britz", "Britz"))
    detail = f"Sorry, you are not authorized to see the user with id: [{BRITZ_ID}]."
    protected = {
        "errors": [
            {
                "detail": detail,
                "title": "Authorization Error",
                "resource_type": "user",
                "parameter": "id",
                "resource_id": BRITZ_ID,
                "type": "https://api.twitter.com/2/problems/not-authorized-for-resource",
            }
        ]
    }
    api.get(TIMELINE[BRITZ_ID], json=protected)
    source, shared, _ = make_source()

    with capture_logs() as logs:
        await source.poll()
        await source.poll()

    assert shared == []
    assert [entry["errors"] for entry in logs if entry["event"] == "x.api_errors"] == [[detail]]


# --- failures ---


async def test_rate_limit_waits_for_the_reset_and_keeps_the_people_already_read(
    api: responses.RequestsMock,
) -> None:
    lookup(api, user(BRITZ_ID, "Britz", "Britz"), user(ANA_ID, "ana_l", "Ana"))
    api.get(TIMELINE[BRITZ_ID], json=page(link_tweet(1)))
    api.get(
        TIMELINE[ANA_ID],
        status=429,
        json={"title": "Too Many Requests", "detail": "Too Many Requests", "type": "about:blank", "status": 429},
        headers={
            "x-rate-limit-limit": "1500",
            "x-rate-limit-remaining": "0",
            "x-rate-limit-reset": str(int(NOW) + 300),
        },
    )
    source, shared, checkpoints = make_source([BRITZ, ANA])

    with pytest.raises(RateLimited) as limited:
        await source.poll()

    assert limited.value.retry_after == 300
    assert "1 of 2 people" in str(limited.value)
    assert [share.id for share in shared] == [f"x:{tweet_id(1)}"]
    assert checkpoints.data[f"x.since.{BRITZ_ID}"] == {"since_id": tweet_id(1)}
    assert f"x.since.{ANA_ID}" not in checkpoints.data


async def test_rate_limit_without_a_reset_header_waits_a_whole_window(api: responses.RequestsMock) -> None:
    api.get(f"{API}/users/by", status=429, json={"title": "Too Many Requests", "status": 429})
    source, _, _ = make_source()

    with pytest.raises(RateLimited) as limited:
        await source.poll()

    assert limited.value.retry_after == 900


async def test_a_rejected_token_says_which_setting_to_check_and_never_shows_the_token(
    api: responses.RequestsMock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="tweepy.client")  # tweepy logs request headers at DEBUG
    api.get(
        f"{API}/users/by",
        status=401,
        json={"title": "Unauthorized", "type": "about:blank", "status": 401, "detail": "Unauthorized"},
    )
    source, _, _ = make_source()

    with capture_logs() as logs, pytest.raises(SourceUnavailable) as unavailable:
        await source.poll()

    reason = str(unavailable.value)
    assert reason == "X rejected the bearer token (401): check IMPROMPTU_X_BEARER_TOKEN"
    assert api.calls[0].request.headers["Authorization"] == f"Bearer {TOKEN}"  # it was sent...
    assert "Making API request" in caplog.text and "Bearer [redacted]" in caplog.text
    assert TOKEN not in caplog.text and TOKEN not in repr(logs)  # ...and never logged


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"<html><body>Over capacity</body></html>", "not JSON"),
        (b'{"data": "oops", "meta": {}}', "unexpected shape"),
        (b'{"data": {"id": "1", "text": "one tweet, not a list", "edit_history_tweet_ids": ["1"]}}', "not a list"),
        (b'{"data": [{"text": "no id", "edit_history_tweet_ids": []}], "meta": {}}', "unexpected shape"),
        (b'{"meta": {"result_count": 1, "newest_id": 12}}', "newest_id"),
        (b'{"meta": {"result_count": 1, "next_token": ["a"]}}', "next_token"),
        (b"[1, 2, 3]", "unexpected shape"),
    ],
)
async def test_malformed_responses_make_the_source_unavailable(
    api: responses.RequestsMock, body: bytes, reason: str
) -> None:
    lookup(api, user(BRITZ_ID, "Britz", "Britz"))
    api.get(TIMELINE[BRITZ_ID], body=body, content_type="application/json")
    source, shared, checkpoints = make_source()

    with pytest.raises(SourceUnavailable, match=reason) as unavailable:
        await source.poll()

    assert "GET /2/users/:id/tweets" in str(unavailable.value)
    assert shared == [] and f"x.since.{BRITZ_ID}" not in checkpoints.data


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        ({"body": requests.ConnectionError("connection refused")}, "cannot reach X"),
        ({"body": requests.ReadTimeout("read timed out")}, "did not answer"),
        ({"status": 503, "json": {"title": "Service Unavailable", "status": 503}}, r"failed on .* \(503\)"),
        ({"status": 403, "json": {"title": "Forbidden", "detail": "client-not-enrolled"}}, "access level"),
    ],
)
async def test_network_and_server_errors_make_the_source_unavailable(
    api: responses.RequestsMock, reply: dict[str, Any], reason: str
) -> None:
    api.get(f"{API}/users/by", **reply)
    source, _, _ = make_source()

    with pytest.raises(SourceUnavailable, match=reason):
        await source.poll()


# --- list mode ---


async def test_list_mode_reads_one_list_and_skips_what_it_has_seen(api: responses.RequestsMock) -> None:
    url = f"{API}/lists/{LIST_ID}/tweets"
    members = [user(BRITZ_ID, "Britz", "Britz"), user(ANA_ID, "ana_l", "Ana")]
    api.get(url, json=list_page(link_tweet(2, author_id=ANA_ID), link_tweet(1), users=members, next_token="old"))
    api.get(
        url,
        json=list_page(
            link_tweet(4, SECOND_ARTICLE),
            link_tweet(3, author_id=ANA_ID),
            link_tweet(2, author_id=ANA_ID),  # seen last poll: the list endpoint has no since_id
            users=members,
            next_token="older",
        ),
    )
    source, shared, checkpoints = make_source([], list_id=LIST_ID)

    await source.poll()
    await source.poll()

    calls = requests_to(api, url)
    assert len(calls) == 2  # first poll: newest page only; second: stopped at the seen tweet
    assert "since_id" not in calls[1].params and "pagination_token" not in calls[1].params
    assert calls[0].params["expansions"] == "author_id,referenced_tweets.id"
    assert calls[0].params["user.fields"] == "username"
    assert [(share.id, share.sharer) for share in shared] == [
        (f"x:{tweet_id(1)}", "@Britz"),
        (f"x:{tweet_id(2)}", "@ana_l"),
        (f"x:{tweet_id(3)}", "@ana_l"),
        (f"x:{tweet_id(4)}", "@Britz"),
    ]
    assert checkpoints.data[f"x.list.{LIST_ID}"] == {"newest_id": tweet_id(4)}
    assert not requests_to(api, f"{API}/users/by")  # authors come with the tweets


async def test_list_mode_compares_ids_as_numbers_and_pages_until_it_meets_them(api: responses.RequestsMock) -> None:
    url = f"{API}/lists/{LIST_ID}/tweets"
    checkpoints = MemoryCheckpoints()
    await checkpoints.save(f"x.list.{LIST_ID}", {"newest_id": "999999999"})  # shorter id, smaller number
    members = [user(BRITZ_ID, "Britz", "Britz")]
    api.get(url, json=list_page(link_tweet(2), users=members, next_token="p2"))
    api.get(url, json=list_page(link_tweet(1), {**link_tweet(0), "id": "999999999"}, users=members))
    source, shared, _ = make_source([], checkpoints=checkpoints, list_id=LIST_ID)

    await source.poll()

    assert requests_to(api, url)[1].params["pagination_token"] == "p2"
    assert [share.id for share in shared] == [f"x:{tweet_id(1)}", f"x:{tweet_id(2)}"]


async def test_an_unknown_list_names_the_setting(api: responses.RequestsMock) -> None:
    api.get(
        f"{API}/lists/{LIST_ID}/tweets",
        status=404,
        json={"errors": [{"message": "Not Found"}], "title": "Not Found Error", "status": 404},
    )
    source, _, _ = make_source([], list_id=LIST_ID)

    with pytest.raises(SourceUnavailable, match="IMPROMPTU_X_LIST_ID"):
        await source.poll()


# --- building it, running it ---


def test_no_token_no_source_and_one_warning() -> None:
    with capture_logs() as logs:
        source = x_source(Settings(x_bearer_token=None), lambda: [BRITZ], MemoryCheckpoints(), Collected())

    assert source is None
    assert len(logs) == 1
    assert logs[0]["event"] == "source.disabled" and logs[0]["source"] == "x"
    assert "IMPROMPTU_X_BEARER_TOKEN" in logs[0]["reason"]


def test_a_token_builds_the_source_from_settings() -> None:
    settings = Settings(x_bearer_token=TOKEN, x_list_id=LIST_ID, x_poll_seconds=120)  # type: ignore[arg-type]

    source = x_source(settings, lambda: [BRITZ], MemoryCheckpoints(), Collected())

    assert isinstance(source, XSource)
    assert source.name == "x" and source.list_id == LIST_ID and source.poll_seconds == 120
    assert source.client.wait_on_rate_limit is False
    assert source.client.session.timeout == settings.source_timeout_seconds  # tweepy alone would wait forever


class Ticker:
    """Another source, polled every 10 ms."""

    name = "ticker"

    def __init__(self) -> None:
        self.polls = 0

    async def poll(self) -> float:
        self.polls += 1
        return 0.01


async def test_a_rate_limited_x_does_not_hold_up_another_source(api: responses.RequestsMock) -> None:
    api.get(f"{API}/users/by", status=429, json={"title": "Too Many Requests"}, headers={"x-rate-limit-reset": "0"})
    source, _, _ = make_source()
    source.clock = lambda: -60.0  # the window resets in 60 s
    ticker = Ticker()

    with capture_logs() as logs:
        tasks = [asyncio.create_task(run_source(source)), asyncio.create_task(run_source(ticker))]
        await asyncio.sleep(0.3)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    assert len(api.calls) == 1  # X waits for its reset...
    assert ticker.polls >= 5  # ...while the other source keeps polling
    limited = [entry for entry in logs if entry["event"] == "source.rate_limited"]
    assert [(entry["source"], entry["retry_in_seconds"]) for entry in limited] == [("x", 60)]
