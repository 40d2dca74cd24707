"""The Facebook channel against a local Graph API (tests.channel_fakes.FakeFacebook): a Page feed that stores posts,
serves them back newest first, deletes them, and answers errors as `{"error": {"code", "error_subcode", ...}}`
with HTTP 400 whatever the code, so the adapter must read `error.code`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from pipeline.channels.base import ChannelBroken, NotSent, Post, Posted, PostRefused, RateLimited
from pipeline.channels.facebook import (
    BLOCKED_WAIT,
    THROTTLE_WAIT,
    FacebookChannel,
    from_settings,
)
from pipeline.embedded import free_port
from pipeline.errors import RetryableError
from pipeline.messages import ScheduledSession
from pipeline.settings import Settings
from tests.channel_fakes import FakeFacebook, assert_hidden, hanging, make_post, outcome_unknown, running, unreachable

TEXT = "Live at 10:45 UTC: Why eLearning Isn't Working for Leadership and Soft Skills. Join us."
NEW_TOKEN = "get a new Page token into IMPROMPTU_FACEBOOK_PAGE_TOKEN"


@pytest.fixture
def facebook() -> Iterator[tuple[FakeFacebook, str]]:
    yield from running(FakeFacebook())


@pytest.fixture
def post(build_session: Callable[..., ScheduledSession]) -> Post:
    return make_post(build_session(), "facebook", TEXT)


def channel(fake: FakeFacebook, base: str, *, token: str | None = None, timeout: float = 2) -> FacebookChannel:
    token = fake.token if token is None else token
    return FacebookChannel(fake.page_id, token, graph_url=base, api_version="v23.0", timeout=timeout)


async def test_post_sends_message_link_and_token_in_the_form(facebook: tuple[FakeFacebook, str], post: Post) -> None:
    fake, base = facebook

    posted = await channel(fake, base).post(post)

    [seen] = fake.received
    assert (seen.method, seen.path, seen.query) == ("POST", f"/v23.0/{fake.page_id}/feed", "")
    assert seen.headers["content-type"] == "application/x-www-form-urlencoded"
    assert seen.form() == {"message": TEXT, "link": post.link, "access_token": fake.token}
    assert "authorization" not in seen.headers
    [stored] = fake.posts.values()
    assert stored["message"] == TEXT
    assert posted == Posted(remote_id=stored["id"], url=f"https://www.facebook.com/{stored['id']}")


async def test_find_reads_the_feed_with_a_bearer_token(facebook: tuple[FakeFacebook, str], post: Post) -> None:
    fake, base = facebook
    adapter = channel(fake, base)
    posted = await adapter.post(post)

    found = await adapter.find(post)

    assert found == posted
    seen = fake.received[-1]
    assert (seen.method, seen.path) == ("GET", f"/v23.0/{fake.page_id}/feed")
    assert seen.params() == {"fields": "id,message,created_time", "limit": "100"}
    assert seen.headers["authorization"] == f"Bearer {fake.token}"
    assert fake.token not in seen.url


async def test_find_follows_the_feed_back_past_a_burst_of_newer_posts(
    facebook: tuple[FakeFacebook, str], post: Post
) -> None:
    """A worker killed mid-post is reconciled after others posted hundreds of announcements on the Page."""
    fake, base = facebook
    adapter = channel(fake, base)
    posted = await adapter.post(post)
    for n in range(250):
        fake.posts[f"{fake.page_id}_{n}"] = {"id": f"{fake.page_id}_{n}", "message": f"another session {n}"}

    assert await adapter.find(post) == posted
    feed_reads = [r for r in fake.received if r.method == "GET"]
    assert len(feed_reads) == 3  # 100 + 100 + the page that holds it
    assert "after" not in feed_reads[0].params() and feed_reads[1].params()["after"]


async def test_find_stops_at_the_end_of_the_feed(facebook: tuple[FakeFacebook, str], post: Post) -> None:
    fake, base = facebook
    for n in range(150):
        fake.posts[f"{fake.page_id}_{n}"] = {"id": f"{fake.page_id}_{n}", "message": f"another session {n}"}

    assert await channel(fake, base).find(post) is None
    assert len([r for r in fake.received if r.method == "GET"]) == 2  # no `next` after the second page


async def test_find_is_none_when_the_text_was_never_posted(facebook: tuple[FakeFacebook, str], post: Post) -> None:
    fake, base = facebook
    adapter = channel(fake, base)
    await adapter.post(make_post(post.session, "facebook", "An older announcement"))

    assert await adapter.find(post) is None


async def test_find_returns_what_an_interrupted_post_made(facebook: tuple[FakeFacebook, str], post: Post) -> None:
    fake, base = facebook
    fake.delay = 1.0  # Facebook posts, the answer comes too late

    await outcome_unknown(channel(fake, base, timeout=0.3).post(post))
    [stored] = fake.posts.values()

    fake.delay = 0
    assert await channel(fake, base).find(post) == Posted(
        remote_id=stored["id"], url=f"https://www.facebook.com/{stored['id']}"
    )


async def test_posting_the_same_text_again_is_a_refused_duplicate(
    facebook: tuple[FakeFacebook, str], post: Post
) -> None:
    fake, base = facebook
    adapter = channel(fake, base)
    await adapter.post(post)

    with pytest.raises(PostRefused, match=r"Duplicate status message \(code 506, HTTP 400\)"):
        await adapter.post(post)

    assert len(fake.posts) == 1


async def test_delete_removes_the_post_and_tolerates_it_gone(facebook: tuple[FakeFacebook, str], post: Post) -> None:
    fake, base = facebook
    adapter = channel(fake, base)
    posted = await adapter.post(post)

    await adapter.delete(posted)
    await adapter.delete(posted)  # Graph: 100/33 "does not exist"

    assert fake.posts == {}
    deletes = [seen for seen in fake.received if seen.method == "DELETE"]
    assert [seen.path for seen in deletes] == [f"/v23.0/{posted.remote_id}"] * 2
    assert all(seen.headers["authorization"] == f"Bearer {fake.token}" and not seen.query for seen in deletes)


async def test_delete_not_confirmed_is_unknown(facebook: tuple[FakeFacebook, str]) -> None:
    fake, base = facebook
    fake.fail(200, {"success": False})

    await outcome_unknown(
        channel(fake, base).delete(Posted(remote_id=f"{fake.page_id}_1")), "the delete was not confirmed"
    )


async def test_an_invalid_token_breaks_the_channel(facebook: tuple[FakeFacebook, str], post: Post) -> None:
    fake, base = facebook
    wrong = "EAAG-revoked-PAGE-TOKEN"

    with pytest.raises(ChannelBroken, match="Invalid OAuth access token") as raised:
        await channel(fake, base, token=wrong).post(post)

    assert "code 190" in str(raised.value)
    assert NEW_TOKEN in str(raised.value)
    assert_hidden(raised.value, wrong)
    assert fake.posts == {}


@pytest.mark.parametrize(
    ("subcode", "problem"),
    [(463, "has expired"), (467, "is invalid"), (460, "was invalidated by a password change"), (None, "is not valid")],
)
async def test_token_errors_say_which(
    facebook: tuple[FakeFacebook, str], post: Post, subcode: int | None, problem: str
) -> None:
    fake, base = facebook
    message = f"Error validating access token: Session has expired. Token: {fake.token}"
    fake.fail_graph(190, message, subcode=subcode)

    with pytest.raises(ChannelBroken) as raised:
        await channel(fake, base).post(post)

    assert f"the Page token {problem}" in str(raised.value)
    assert NEW_TOKEN in str(raised.value)
    assert_hidden(raised.value, fake.token)  # even when Facebook's message quotes it
    assert "[redacted]" in str(raised.value)


@pytest.mark.parametrize("code", [10, 200, 230, 299])
async def test_permission_errors_break_the_channel(facebook: tuple[FakeFacebook, str], post: Post, code: int) -> None:
    fake, base = facebook
    fake.fail_graph(code, f"(#{code}) Requires pages_manage_posts permission to manage the object")

    with pytest.raises(ChannelBroken, match="a permission is missing: the Page token needs pages_manage_posts"):
        await channel(fake, base).post(post)


@pytest.mark.parametrize("code", [4, 17, 32, 613, 80001])
async def test_throttling_waits(facebook: tuple[FakeFacebook, str], post: Post, code: int) -> None:
    fake, base = facebook
    fake.fail_graph(code, "There have been too many calls to this Page account. Wait a bit and try again.")

    with pytest.raises(RateLimited) as raised:
        await channel(fake, base).post(post)

    assert raised.value.retry_after == THROTTLE_WAIT
    assert f"code {code}" in str(raised.value)


async def test_throttling_waits_as_long_as_the_usage_header_says(
    facebook: tuple[FakeFacebook, str], post: Post
) -> None:
    fake, base = facebook
    fake.fail_graph(80001, "Too many calls", headers=FakeFacebook.usage(fake.page_id, regain_minutes=7))

    with pytest.raises(RateLimited) as raised:
        await channel(fake, base).post(post)

    assert raised.value.retry_after == 7 * 60


async def test_an_http_429_without_a_graph_error_is_rate_limited(
    facebook: tuple[FakeFacebook, str], post: Post
) -> None:
    fake, base = facebook
    fake.fail(429, "Too Many Requests", FakeFacebook.usage(fake.page_id, regain_minutes=2))

    with pytest.raises(RateLimited, match="HTTP 429") as raised:
        await channel(fake, base).post(post)

    assert raised.value.retry_after == 120


async def test_a_policy_block_waits_long(facebook: tuple[FakeFacebook, str], post: Post) -> None:
    fake, base = facebook
    fake.fail_graph(368, "It looks like you were misusing this feature by going too fast.")

    with pytest.raises(RateLimited) as raised:
        await channel(fake, base).post(post)

    assert raised.value.retry_after == BLOCKED_WAIT >= 3600


@pytest.mark.parametrize(("code", "status"), [(1, 500), (2, 503), (1, 400)])
async def test_transient_graph_errors_are_not_sent(
    facebook: tuple[FakeFacebook, str], post: Post, code: int, status: int
) -> None:
    fake, base = facebook
    fake.fail_graph(code, "An unknown error has occurred.", status=status)

    with pytest.raises(NotSent, match=f"code {code}, HTTP {status}") as raised:
        await channel(fake, base).post(post)

    assert not isinstance(raised.value, RateLimited)


async def test_other_graph_errors_refuse_the_post_with_facebooks_message(
    facebook: tuple[FakeFacebook, str], post: Post
) -> None:
    fake, base = facebook
    fake.fail_graph(1609005, "Error Posting Link: the link could not be fetched")

    with pytest.raises(PostRefused, match=r"Error Posting Link: the link could not be fetched \(code 1609005"):
        await channel(fake, base).post(post)


async def test_a_server_error_without_a_graph_error_is_not_sent(facebook: tuple[FakeFacebook, str], post: Post) -> None:
    fake, base = facebook
    fake.fail(502, "<html><body>Bad Gateway</body></html>", content_type="text/html")

    with pytest.raises(NotSent, match="HTTP 502, <html><body>Bad Gateway"):
        await channel(fake, base).post(post)


async def test_an_answer_without_an_id_leaves_the_outcome_unknown(
    facebook: tuple[FakeFacebook, str], post: Post
) -> None:
    fake, base = facebook
    fake.fail(200, "not json at all", content_type="text/plain")

    await outcome_unknown(channel(fake, base).post(post), "without a post id")


async def test_an_unreadable_feed_cannot_tell(facebook: tuple[FakeFacebook, str], post: Post) -> None:
    fake, base = facebook
    fake.fail(200, {"unexpected": True}, method="GET")

    with pytest.raises(RetryableError, match="the feed could not be read"):
        await channel(fake, base).find(post)


async def test_find_with_a_revoked_token_breaks_the_channel(facebook: tuple[FakeFacebook, str], post: Post) -> None:
    fake, base = facebook

    with pytest.raises(ChannelBroken, match="code 190"):
        await channel(fake, base, token="EAAG-revoked").find(post)


async def test_a_read_timeout_never_shows_the_token(post: Post) -> None:
    error = await outcome_unknown(FacebookChannel("1234", "EAAG-tImEoUt", transport=hanging()).post(post))

    assert_hidden(error, "EAAG-tImEoUt")


async def test_a_refused_connection_is_not_sent(post: Post) -> None:
    adapter = FacebookChannel("1234", "EAAG-cLoSeD", graph_url=f"http://127.0.0.1:{free_port()}", timeout=2)

    assert_hidden(await unreachable(adapter.post(post)), "EAAG-cLoSeD")


def test_missing_names_what_to_set() -> None:
    assert from_settings(Settings(facebook_page_id=None, facebook_page_token=None)).missing() == [
        "IMPROMPTU_FACEBOOK_PAGE_ID",
        "IMPROMPTU_FACEBOOK_PAGE_TOKEN",
    ]
    ready = from_settings(Settings(facebook_page_id="1234", facebook_page_token="EAAG"))
    assert ready.missing() == []
    assert (ready.name, ready.can_find, ready.can_delete) == ("facebook", True, True)


async def test_from_settings_uses_the_configured_graph_version(facebook: tuple[FakeFacebook, str], post: Post) -> None:
    fake, base = facebook
    settings = Settings(
        facebook_page_id=fake.page_id,
        facebook_page_token=fake.token,
        facebook_graph_url=base,
        facebook_api_version="v24.0",
    )

    await from_settings(settings).post(post)

    assert fake.received[0].path == f"/v24.0/{fake.page_id}/feed"


async def test_post_without_settings_breaks_the_channel(post: Post) -> None:
    with pytest.raises(ChannelBroken, match="set IMPROMPTU_FACEBOOK_PAGE_ID"):
        await FacebookChannel(None, "EAAG").post(post)
