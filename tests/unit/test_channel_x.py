"""The X channel against X API v2 mocked at the transport level (`responses` under tweepy's requests session).

Bodies follow X's documented shapes: `201 {"data": {"id", "text", "edit_history_tweet_ids"}}` for a post,
`200 {"data": {"deleted": true}}` for a delete, problem JSON `{"title", "type", "status", "detail"}` for 401/403 and
`{"errors": [{"code", "message"}]}` for 429, with the x-rate-limit-* and x-*-limit-24hour-* headers.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from http.client import RemoteDisconnected

import pytest
import requests
import responses
from urllib3.exceptions import MaxRetryError, NewConnectionError, ProtocolError

from pipeline.channels.base import ChannelBroken, NotSent, Post, Posted, PostRefused, RateLimited
from pipeline.channels.x import DEFAULT_WAIT, XChannel, from_settings, rate_limit_wait
from pipeline.errors import RetryableError
from pipeline.messages import ScheduledSession
from pipeline.settings import Settings
from tests.channel_fakes import make_post

TWEETS = "https://api.twitter.com/2/tweets"
TWEET_ID = "1445880548472328192"
API_KEY = "x-api-key-PUBLICISH"
API_SECRET = "x-api-secret-VERY-SECRET"
ACCESS_TOKEN = "1234-x-access-token-SECRET"
ACCESS_SECRET = "x-access-token-secret-VERY-SECRET"
SECRETS = (API_SECRET, ACCESS_TOKEN, ACCESS_SECRET)
TEXT = "Live now: Why eLearning isn't working for leadership https://meet.jit.si/Impromptu-Live-1"
LINK = "https://meet.jit.si/Impromptu-Live-1"
TITLE = "Why eLearning Isn't Working"


@pytest.fixture
def mock() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=True) as rs:
        yield rs


@pytest.fixture
def channel() -> XChannel:
    return XChannel(
        api_key=API_KEY, api_secret=API_SECRET, access_token=ACCESS_TOKEN, access_token_secret=ACCESS_SECRET
    )


@pytest.fixture
def post(build_session: Callable[..., ScheduledSession]) -> Post:
    session = build_session()
    return make_post(session, "x", TEXT, kind="starting", link=LINK, title=TITLE, description="A live session")


def problem(status: int, title: str, detail: str, type_: str = "about:blank") -> dict[str, object]:
    return {"title": title, "type": type_, "status": status, "detail": detail}


def assert_no_secret(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text


async def test_post_sends_the_text_signed_with_oauth1(
    mock: responses.RequestsMock, channel: XChannel, post: Post
) -> None:
    mock.add(
        responses.POST,
        TWEETS,
        status=201,
        json={"data": {"id": TWEET_ID, "text": TEXT, "edit_history_tweet_ids": [TWEET_ID]}},
    )

    posted = await channel.post(post)

    assert posted == Posted(remote_id=TWEET_ID, url=f"https://x.com/i/web/status/{TWEET_ID}")
    request = mock.calls[0].request
    assert json.loads(request.body) == {"text": TEXT}
    authorization = request.headers["Authorization"]
    assert authorization.startswith("OAuth ")
    assert "oauth_signature=" in authorization
    assert f'oauth_consumer_key="{API_KEY}"' in authorization
    assert API_SECRET not in authorization and ACCESS_SECRET not in authorization
    assert_no_secret(request.url)


async def test_rate_limit_waits_for_the_latest_exhausted_limit(
    mock: responses.RequestsMock, channel: XChannel, post: Post
) -> None:
    now = time.time()
    mock.add(
        responses.POST,
        TWEETS,
        status=429,
        json={"errors": [{"code": 88, "message": "Rate limit exceeded"}]},
        headers={
            "x-rate-limit-limit": "100",
            "x-rate-limit-remaining": "97",  # not the limit that was hit
            "x-rate-limit-reset": str(int(now + 60)),
            "x-user-limit-24hour-limit": "17",
            "x-user-limit-24hour-remaining": "0",  # the daily posting cap
            "x-user-limit-24hour-reset": str(int(now + 300)),
            "x-app-limit-24hour-limit": "1500",
            "x-app-limit-24hour-remaining": "1200",
            "x-app-limit-24hour-reset": str(int(now + 7200)),
        },
    )

    with pytest.raises(RateLimited) as caught:
        await channel.post(post)

    assert caught.value.retry_after is not None
    assert 290 <= caught.value.retry_after <= 301
    assert "Rate limit exceeded" in str(caught.value)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"x-rate-limit-reset": 240}, 240),  # no remaining header: the window reset
        ({"x-rate-limit-reset": 60, "x-rate-limit-remaining": "0", "x-app-limit-24hour-reset": 600}, 600),
        ({"x-rate-limit-reset": 120, "x-rate-limit-remaining": "3", "x-user-limit-24hour-remaining": "2"}, 120),
        ({}, DEFAULT_WAIT),
    ],
)
def test_rate_limit_wait_reads_the_reset_headers(headers: dict[str, object], expected: float) -> None:
    now = time.time()
    values = {k: str(int(now + v)) if k.endswith("reset") else str(v) for k, v in headers.items()}

    assert rate_limit_wait(requests.structures.CaseInsensitiveDict(values)) == pytest.approx(expected, abs=2)


async def test_revoked_token_breaks_the_channel(mock: responses.RequestsMock, channel: XChannel, post: Post) -> None:
    mock.add(responses.POST, TWEETS, status=401, json=problem(401, "Unauthorized", "Unauthorized"))

    with pytest.raises(ChannelBroken) as caught:
        await channel.post(post)

    message = str(caught.value)
    assert "401" in message and "IMPROMPTU_X_ACCESS_TOKEN" in message and "IMPROMPTU_X_ACCESS_TOKEN_SECRET" in message
    assert_no_secret(message)


async def test_duplicate_content_refuses_only_this_post(
    mock: responses.RequestsMock, channel: XChannel, post: Post
) -> None:
    detail = "You are not allowed to create a Tweet with duplicate content."
    mock.add(responses.POST, TWEETS, status=403, json=problem(403, "Forbidden", detail))

    with pytest.raises(PostRefused) as caught:
        await channel.post(post)

    assert "duplicate" in str(caught.value)


async def test_read_only_app_breaks_the_channel(mock: responses.RequestsMock, channel: XChannel, post: Post) -> None:
    detail = "Your client app is not configured with the appropriate oauth1 app permissions for this endpoint."
    body = problem(403, "Unsupported Authentication", detail, "https://api.twitter.com/2/problems/oauth1-permissions")
    mock.add(responses.POST, TWEETS, status=403, json=body)

    with pytest.raises(ChannelBroken) as caught:
        await channel.post(post)

    assert "Read and write" in str(caught.value) and "403" in str(caught.value)


async def test_other_forbidden_breaks_the_channel(mock: responses.RequestsMock, channel: XChannel, post: Post) -> None:
    detail = (
        "When authenticating requests to the Twitter API v2 endpoints, you must use keys and tokens from a Project."
    )
    mock.add(
        responses.POST, TWEETS, status=403, json={"client_id": "1", "reason": "client-not-enrolled", "detail": detail}
    )

    with pytest.raises(ChannelBroken) as caught:
        await channel.post(post)

    assert "Project" in str(caught.value)


async def test_bad_request_refuses_the_post(mock: responses.RequestsMock, channel: XChannel, post: Post) -> None:
    body = {"errors": [{"message": "The text is too long"}], "title": "Invalid Request", "detail": "One or more"}
    mock.add(responses.POST, TWEETS, status=400, json=body)

    with pytest.raises(PostRefused) as caught:
        await channel.post(post)

    assert "too long" in str(caught.value)


async def test_server_error_was_not_sent(mock: responses.RequestsMock, channel: XChannel, post: Post) -> None:
    mock.add(responses.POST, TWEETS, status=503, json=problem(503, "Service Unavailable", "Service Unavailable"))

    with pytest.raises(NotSent) as caught:
        await channel.post(post)

    assert not isinstance(caught.value, RateLimited)
    assert "503" in str(caught.value)


@pytest.mark.parametrize("body", [json.dumps({"data": {}}), json.dumps({"data": {"id": ""}}), "<html>ok</html>"])
async def test_malformed_success_leaves_the_outcome_unknown(
    mock: responses.RequestsMock, channel: XChannel, post: Post, body: str
) -> None:
    mock.add(responses.POST, TWEETS, status=201, body=body, content_type="application/json")

    with pytest.raises(RetryableError) as caught:
        await channel.post(post)

    assert not isinstance(caught.value, NotSent)  # the post may exist: it must not be re-posted blindly
    assert "unknown" in str(caught.value)


async def test_read_timeout_leaves_the_outcome_unknown(
    mock: responses.RequestsMock, channel: XChannel, post: Post
) -> None:
    mock.add(responses.POST, TWEETS, body=requests.ReadTimeout("Read timed out. (read timeout=15)"))

    with pytest.raises(RetryableError) as caught:
        await channel.post(post)

    assert not isinstance(caught.value, NotSent)
    assert "unknown" in str(caught.value)


async def test_unreachable_x_was_not_sent(mock: responses.RequestsMock, channel: XChannel, post: Post) -> None:
    # as requests reports a refused connection: ConnectionError(MaxRetryError(reason=NewConnectionError))
    refused = NewConnectionError(None, "Failed to establish a new connection: [Errno 111] Connection refused")  # type: ignore[arg-type]
    mock.add(responses.POST, TWEETS, body=requests.ConnectionError(MaxRetryError(None, TWEETS, refused)))  # type: ignore[arg-type]

    with pytest.raises(NotSent) as caught:
        await channel.post(post)

    assert "could not be reached" in str(caught.value)


async def test_connection_dropped_after_sending_leaves_the_outcome_unknown(
    mock: responses.RequestsMock, channel: XChannel, post: Post
) -> None:
    dropped = ProtocolError("Connection aborted.", RemoteDisconnected("Remote end closed connection without response"))
    mock.add(responses.POST, TWEETS, body=requests.ConnectionError(dropped))

    with pytest.raises(RetryableError) as caught:
        await channel.post(post)

    assert not isinstance(caught.value, NotSent)


async def test_delete_removes_the_tweet(mock: responses.RequestsMock, channel: XChannel) -> None:
    mock.add(responses.DELETE, f"{TWEETS}/{TWEET_ID}", status=200, json={"data": {"deleted": True}})

    await channel.delete(Posted(remote_id=TWEET_ID))

    assert mock.calls[0].request.headers["Authorization"].startswith("OAuth ")


async def test_delete_of_a_missing_tweet_counts_as_deleted(mock: responses.RequestsMock, channel: XChannel) -> None:
    body = {"errors": [{"message": "Not Found"}], "title": "Not Found Error", "detail": "Not Found"}
    mock.add(responses.DELETE, f"{TWEETS}/{TWEET_ID}", status=404, json=body)

    await channel.delete(Posted(remote_id=TWEET_ID))

    assert len(mock.calls) == 1


async def test_delete_with_a_revoked_token_breaks_the_channel(mock: responses.RequestsMock, channel: XChannel) -> None:
    mock.add(responses.DELETE, f"{TWEETS}/{TWEET_ID}", status=401, json=problem(401, "Unauthorized", "Unauthorized"))

    with pytest.raises(ChannelBroken):
        await channel.delete(Posted(remote_id=TWEET_ID))


def test_missing_lists_the_unset_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("API_KEY", "API_SECRET", "ACCESS_TOKEN", "ACCESS_TOKEN_SECRET"):
        monkeypatch.delenv(f"IMPROMPTU_X_{name}", raising=False)
    channel = from_settings(Settings(x_api_key="key", x_access_token="token"))  # type: ignore[arg-type]

    assert channel.missing() == ["IMPROMPTU_X_API_SECRET", "IMPROMPTU_X_ACCESS_TOKEN_SECRET"]
    assert from_settings(Settings()).missing() == [
        "IMPROMPTU_X_API_KEY",
        "IMPROMPTU_X_API_SECRET",
        "IMPROMPTU_X_ACCESS_TOKEN",
        "IMPROMPTU_X_ACCESS_TOKEN_SECRET",
    ]


def test_ready_channel_misses_nothing() -> None:
    settings = Settings(
        x_api_key=API_KEY,
        x_api_secret=API_SECRET,  # type: ignore[arg-type]
        x_access_token=ACCESS_TOKEN,  # type: ignore[arg-type]
        x_access_token_secret=ACCESS_SECRET,  # type: ignore[arg-type]
        outreach_timeout_seconds=7,
    )

    channel = from_settings(settings)

    assert channel.missing() == [] and channel.timeout == 7


async def test_unconfigured_channel_sends_nothing(mock: responses.RequestsMock, post: Post) -> None:
    channel = XChannel(api_key=API_KEY, api_secret=None, access_token=ACCESS_TOKEN, access_token_secret=None)

    with pytest.raises(ChannelBroken) as caught:
        await channel.post(post)

    assert "IMPROMPTU_X_API_SECRET" in str(caught.value)
    assert not mock.calls
