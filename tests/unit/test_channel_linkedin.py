"""The LinkedIn channel against a local LinkedIn (tests/linkedin_fake.py) over real HTTP, and the login helpers.

The fake answers as LinkedIn's Posts API documents: 201 with the URN in `x-restli-id`, 204 on delete, error bodies
{"status", "serviceErrorCode", "code", "message"}; it checks the Bearer token and the versioning headers. The code
exchange goes through python-linkedin-v2 (requests), so it is tested both with `responses` and against the fake.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import requests
import responses

from pipeline.channels.base import ChannelBroken, NotSent, Post, Posted, PostRefused, RateLimited
from pipeline.channels.linkedin import (
    LinkedInChannel,
    LinkedInLoginFailed,
    author_urn,
    authorization_url,
    escape_little_text,
    exchange_code,
    from_settings,
)
from pipeline.embedded import free_port
from pipeline.errors import ConfigError, RetryableError
from pipeline.messages import ScheduledSession
from pipeline.settings import Settings
from tests.channel_fakes import make_post
from tests.linkedin_fake import CLIENT_ID, CLIENT_SECRET, REDIRECT_URI, TOKEN, VERSION, FakeLinkedIn
from tests.peers import serve

LINK = "https://meet.jit.si/Impromptu-Live-1"
TITLE = "Why eLearning Isn't Working for Leadership"
DESCRIPTION = "A live session on leadership and soft skills"
TEXT = "Live now (30 min): #leadership & learning, with @ada [free] https://meet.jit.si/Impromptu-Live-1"
ESCAPED = r"Live now \(30 min\): \#leadership & learning, with \@ada \[free\] https://meet.jit.si/Impromptu-Live-1"
CODE = "AQTcode-from-the-callback-SECRET"

ACCESS_TOKEN_URL = "https://www.linkedin.com/oauth/v2/accessToken"  # LinkedIn's documented token endpoint


@pytest.fixture
def fake() -> FakeLinkedIn:
    return FakeLinkedIn()


@pytest.fixture
def base(fake: FakeLinkedIn) -> Iterator[str]:
    with serve(fake.app) as url:
        yield url


@pytest.fixture
def channel(fake: FakeLinkedIn, base: str) -> LinkedInChannel:
    return LinkedInChannel(access_token=fake.token, author=fake.author, version=VERSION, api_url=base, timeout=5)


@pytest.fixture
def post(build_session: Callable[..., ScheduledSession]) -> Post:
    session = build_session()
    return make_post(session, "linkedin", TEXT, kind="starting", link=LINK, title=TITLE, description=DESCRIPTION)


def login_settings(**changes: object) -> Settings:
    values: dict[str, object] = {
        "linkedin_client_id": CLIENT_ID,
        "linkedin_client_secret": CLIENT_SECRET,
        "linkedin_redirect_uri": REDIRECT_URI,
        **changes,
    }
    return Settings(**values)  # type: ignore[arg-type]


# --- posting ------------------------------------------------------------------------------------------------------


async def test_post_makes_an_article_post(fake: FakeLinkedIn, channel: LinkedInChannel, post: Post) -> None:
    posted = await channel.post(post)

    urn = next(iter(fake.posts))
    assert urn.startswith("urn:li:share:")
    assert posted == Posted(remote_id=urn, url=f"https://www.linkedin.com/feed/update/{urn}/")
    [sent] = fake.rest()
    assert sent.method == "POST" and sent.path == "/rest/posts"
    assert sent.headers["authorization"] == f"Bearer {TOKEN}"
    assert sent.headers["linkedin-version"] == VERSION
    assert sent.headers["x-restli-protocol-version"] == "2.0.0"
    assert sent.json() == {
        "author": fake.author,
        "commentary": ESCAPED,
        "visibility": "PUBLIC",
        "distribution": {"feedDistribution": "MAIN_FEED", "targetEntities": [], "thirdPartyDistributionChannels": []},
        "content": {"article": {"source": LINK, "title": post.title, "description": post.description}},
        "lifecycleState": "PUBLISHED",
        "isReshareDisabledByAuthor": False,
    }
    assert TOKEN not in sent.url


@pytest.mark.parametrize(
    ("text", "escaped"),
    [
        ("a\\b", "a\\\\b"),  # the backslash first, so escapes added later are not doubled
        ("a|b {c} [d] (e) <f> #g *h* _i_ ~j~ @k", r"a\|b \{c\} \[d\] \(e\) \<f\> \#g \*h\* \_i\_ \~j\~ \@k"),
        ("see https://example.org/a_b(c)?q=1#top now", "see https://example.org/a_b(c)?q=1#top now"),
        ("(see https://example.org/x_y)", r"\(see https://example.org/x_y\)"),
        ("join https://meet.jit.si/Room_1.", "join https://meet.jit.si/Room_1."),
        ("plain text, nothing reserved", "plain text, nothing reserved"),
    ],
)
def test_little_text_escapes_reserved_characters_outside_urls(text: str, escaped: str) -> None:
    assert escape_little_text(text) == escaped


async def test_created_without_an_id_leaves_the_outcome_unknown(
    fake: FakeLinkedIn, channel: LinkedInChannel, post: Post
) -> None:
    fake.omit_created_id = True

    with pytest.raises(RetryableError) as caught:
        await channel.post(post)

    assert not isinstance(caught.value, NotSent)  # the post may exist: it must not be re-posted blindly
    assert "unknown" in str(caught.value) and "x-restli-id" in str(caught.value)


@pytest.mark.parametrize(
    ("answer", "error", "words"),
    [
        ("revoked", ChannelBroken, ["401 REVOKED_ACCESS_TOKEN", "impromptu linkedin login"]),
        ("expired", ChannelBroken, ["EXPIRED_ACCESS_TOKEN", "impromptu linkedin login"]),
        ("invalid_token", ChannelBroken, ["65600", "Invalid access token", "impromptu linkedin login"]),
        ("empty_401", ChannelBroken, ["401", "impromptu linkedin login"]),
        ("access_denied", ChannelBroken, ["ACCESS_DENIED", "w_member_social"]),
        ("version_inactive", ChannelBroken, [f"version {VERSION} is no longer active", "IMPROMPTU_LINKEDIN_VERSION"]),
        ("server_error", NotSent, ["500", "server error"]),
        ("unavailable", NotSent, ["503"]),
        ("bad_gateway_html", NotSent, ["502"]),
        ("bad_request", PostRefused, ["400", "/content/article/source"]),
        ("duplicate", PostRefused, ["422", "duplicate"]),
        ("not_json_400", PostRefused, ["400"]),
    ],
)
async def test_documented_errors_map_to_what_the_delivery_does(
    fake: FakeLinkedIn, channel: LinkedInChannel, post: Post, answer: str, error: type[Exception], words: list[str]
) -> None:
    fake.fail(answer)

    with pytest.raises(error) as caught:
        await channel.post(post)

    message = str(caught.value)
    assert not isinstance(caught.value, RateLimited)
    for word in words:
        assert word in message
    assert TOKEN not in message and "<html>" not in message


async def test_throttled_waits_an_hour(fake: FakeLinkedIn, channel: LinkedInChannel, post: Post) -> None:
    fake.fail("throttled")

    with pytest.raises(RateLimited) as caught:
        await channel.post(post)

    assert caught.value.retry_after == 3600


async def test_throttled_follows_retry_after(fake: FakeLinkedIn, channel: LinkedInChannel, post: Post) -> None:
    fake.fail("throttled_retry_after")

    with pytest.raises(RateLimited) as caught:
        await channel.post(post)

    assert caught.value.retry_after == 120


async def test_sunset_version_is_named(fake: FakeLinkedIn, base: str, post: Post) -> None:
    channel = LinkedInChannel(access_token=fake.token, author=fake.author, version="202401", api_url=base)

    with pytest.raises(ChannelBroken) as caught:
        await channel.post(post)

    assert "LinkedIn API version 202401 is no longer active" in str(caught.value)
    assert fake.rest()[0].headers["linkedin-version"] == "202401" and not fake.posts


async def test_wrong_token_breaks_the_channel_without_showing_it(fake: FakeLinkedIn, base: str, post: Post) -> None:
    wrong = "AQV-some-other-token-SECRET"
    channel = LinkedInChannel(access_token=wrong, author=fake.author, api_url=base)

    with pytest.raises(ChannelBroken) as caught:
        await channel.post(post)

    assert "impromptu linkedin login" in str(caught.value) and wrong not in str(caught.value)


async def test_organization_author_without_the_role_is_told_what_to_fix(
    fake: FakeLinkedIn, base: str, post: Post
) -> None:
    channel = LinkedInChannel(access_token=fake.token, author="urn:li:organization:2414183", api_url=base)

    with pytest.raises(ChannelBroken) as caught:
        await channel.post(post)

    assert "ADMINISTRATOR" in str(caught.value) and "urn:li:organization:2414183" in str(caught.value)


async def test_slow_answer_leaves_the_outcome_unknown(fake: FakeLinkedIn, base: str, post: Post) -> None:
    fake.delay = 0.5
    channel = LinkedInChannel(access_token=fake.token, author=fake.author, api_url=base, timeout=0.1)

    with pytest.raises(RetryableError) as caught:
        await channel.post(post)

    assert not isinstance(caught.value, NotSent)


async def test_unreachable_linkedin_was_not_sent(post: Post) -> None:
    channel = LinkedInChannel(access_token=TOKEN, author="urn:li:person:x", api_url=f"http://127.0.0.1:{free_port()}")

    with pytest.raises(NotSent) as caught:
        await channel.post(post)

    assert TOKEN not in str(caught.value)


async def test_given_transport_is_used_and_stays_open(post: Post) -> None:
    urns = iter(["urn:li:share:1", "urn:li:share:2"])
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(201, headers={"x-restli-id": next(urns)})

    transport = httpx.MockTransport(answer)
    channel = LinkedInChannel(access_token=TOKEN, author="urn:li:person:x", transport=transport)

    first, second = await channel.post(post), await channel.post(post)

    assert (first.remote_id, second.remote_id) == ("urn:li:share:1", "urn:li:share:2")
    assert [str(r.url) for r in seen] == ["https://api.linkedin.com/rest/posts"] * 2


async def test_delete_removes_the_post_and_repeats_harmlessly(
    fake: FakeLinkedIn, channel: LinkedInChannel, post: Post
) -> None:
    posted = await channel.post(post)
    assert posted.remote_id is not None

    await channel.delete(posted)
    await channel.delete(posted)  # a redelivered delete

    deletes = [s for s in fake.rest() if s.method == "DELETE"]
    assert len(deletes) == 2 and not fake.posts and posted.remote_id in fake.deleted
    assert deletes[0].raw_path == "/rest/posts/" + posted.remote_id.replace(":", "%3A")
    assert deletes[0].headers["linkedin-version"] == VERSION and deletes[0].headers["authorization"].startswith(
        "Bearer"
    )


async def test_delete_of_an_unknown_post_counts_as_deleted(fake: FakeLinkedIn, channel: LinkedInChannel) -> None:
    await channel.delete(Posted(remote_id="urn:li:share:404"))

    assert [s.method for s in fake.rest()] == ["DELETE"]


async def test_delete_with_a_revoked_token_breaks_the_channel(fake: FakeLinkedIn, channel: LinkedInChannel) -> None:
    fake.fail("revoked", method="DELETE")

    with pytest.raises(ChannelBroken):
        await channel.delete(Posted(remote_id="urn:li:share:1"))


def test_missing_lists_the_unset_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("ACCESS_TOKEN", "AUTHOR"):
        monkeypatch.delenv(f"IMPROMPTU_LINKEDIN_{name}", raising=False)

    assert from_settings(Settings()).missing() == ["IMPROMPTU_LINKEDIN_ACCESS_TOKEN", "IMPROMPTU_LINKEDIN_AUTHOR"]
    ready = from_settings(Settings(linkedin_access_token=TOKEN, linkedin_author="urn:li:person:x"))  # type: ignore[arg-type]
    assert ready.missing() == []


async def test_unconfigured_channel_sends_nothing(fake: FakeLinkedIn, base: str, post: Post) -> None:
    channel = LinkedInChannel(access_token=TOKEN, author=None, api_url=base)

    with pytest.raises(ChannelBroken) as caught:
        await channel.post(post)

    assert "IMPROMPTU_LINKEDIN_AUTHOR" in str(caught.value) and not fake.seen


# --- login ----------------------------------------------------------------------------------------------------------


def test_authorization_url_uses_the_current_endpoint_and_our_state() -> None:
    url = authorization_url(login_settings(), state="state-from-the-cli-123")

    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == "https://www.linkedin.com/oauth/v2/authorization"
    assert parse_qs(parts.query) == {
        "response_type": ["code"],
        "client_id": [CLIENT_ID],
        "scope": ["openid profile w_member_social"],
        "state": ["state-from-the-cli-123"],
        "redirect_uri": [REDIRECT_URI],
    }
    assert CLIENT_SECRET not in url


def test_login_without_an_app_names_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("IMPROMPTU_LINKEDIN_CLIENT_ID", raising=False)
    monkeypatch.delenv("IMPROMPTU_LINKEDIN_CLIENT_SECRET", raising=False)

    with pytest.raises(ConfigError) as caught:
        authorization_url(Settings(), state="s")

    assert "IMPROMPTU_LINKEDIN_CLIENT_ID and IMPROMPTU_LINKEDIN_CLIENT_SECRET" in str(caught.value)


def test_code_exchange_posts_the_code_in_the_body() -> None:
    with responses.RequestsMock() as rs:
        rs.add(
            responses.POST,
            ACCESS_TOKEN_URL,
            json={"access_token": TOKEN, "expires_in": 5184000, "scope": "openid,profile,w_member_social"},
        )

        assert exchange_code(login_settings(), CODE) == (TOKEN, 5184000)

        request = rs.calls[0].request
    assert request.url == ACCESS_TOKEN_URL  # nothing secret in the URL
    assert parse_qs(str(request.body)) == {
        "grant_type": ["authorization_code"],
        "code": [CODE],
        "redirect_uri": [REDIRECT_URI],
        "client_id": [CLIENT_ID],
        "client_secret": [CLIENT_SECRET],
    }


@pytest.mark.parametrize(
    ("status", "body", "words"),
    [
        (400, {"error": "invalid_request", "error_description": "authorization code expired"}, ["redirect", "again"]),
        (401, {"error": "invalid_client", "error_description": "Client authentication failed"}, ["CLIENT_SECRET"]),
        (500, {"status": 500, "serviceErrorCode": 0, "message": "Internal error"}, ["could not be read"]),  # lib bug
        (500, b"", ["empty or not JSON"]),  # the library returns silently, then the JSON read fails
        (200, {"expires_in": 5184000}, ["could not be read"]),
        (200, {"access_token": "", "expires_in": 5184000}, ["no access token"]),
        (200, b"<html>", ["empty or not JSON"]),
    ],
)
def test_code_exchange_failures_are_clear(status: int, body: dict[str, object] | bytes, words: list[str]) -> None:
    with responses.RequestsMock() as rs:
        if isinstance(body, bytes):
            rs.add(responses.POST, ACCESS_TOKEN_URL, status=status, body=body)
        else:
            rs.add(responses.POST, ACCESS_TOKEN_URL, status=status, json=body)

        with pytest.raises(LinkedInLoginFailed) as caught:
            exchange_code(login_settings(), CODE)

    message = str(caught.value)
    assert all(word in message for word in words), message
    assert CODE not in message and CLIENT_SECRET not in message


def test_code_exchange_when_linkedin_is_unreachable() -> None:
    with responses.RequestsMock() as rs:
        rs.add(responses.POST, ACCESS_TOKEN_URL, body=requests.ConnectionError(f"refused for {CODE}"))

        with pytest.raises(LinkedInLoginFailed) as caught:
            exchange_code(login_settings(), CODE)

    assert "could not reach LinkedIn" in str(caught.value) and CODE not in str(caught.value)


async def test_login_then_post_against_the_fake(fake: FakeLinkedIn, base: str, post: Post) -> None:
    settings = login_settings(linkedin_api_url=base)
    code = fake.grant()

    token, expires_in = await asyncio.to_thread(exchange_code, settings, code, token_url=f"{base}/oauth/v2/accessToken")
    author = await author_urn(token, base)
    posted = await LinkedInChannel(access_token=token, author=author, api_url=base).post(post)

    assert (token, expires_in, author) == (TOKEN, fake.expires_in, f"urn:li:person:{fake.member_id}")
    assert posted.remote_id in fake.posts
    userinfo = next(s for s in fake.seen if s.path == "/v2/userinfo")
    assert userinfo.headers["authorization"] == f"Bearer {TOKEN}"
    assert all(TOKEN not in s.url and code not in s.url for s in fake.seen)
    with pytest.raises(LinkedInLoginFailed):  # a code works once
        await asyncio.to_thread(exchange_code, settings, code, token_url=f"{base}/oauth/v2/accessToken")


async def test_author_urn_with_a_bad_token_does_not_show_it(fake: FakeLinkedIn, base: str) -> None:
    wrong = "AQV-not-the-token-SECRET"

    with pytest.raises(LinkedInLoginFailed) as caught:
        await author_urn(wrong, base)

    assert "401" in str(caught.value) and wrong not in str(caught.value)
    assert all(wrong not in s.url for s in fake.seen)


async def test_author_urn_needs_the_member_id() -> None:
    transport = httpx.MockTransport(lambda request: httpx.Response(200, json={"name": "Ada"}))

    with pytest.raises(LinkedInLoginFailed) as caught:
        await author_urn(TOKEN, transport=transport)

    assert "sub" in str(caught.value)
