"""The Mastodon channel against a local instance (tests.channel_fakes.FakeMastodon) that answers as Mastodon
documents: Status JSON, `{"error": "..."}` for 401/403/422/429, X-RateLimit-Reset in ISO 8601, and
Idempotency-Key honoured (same key, same status, no second one).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest

from pipeline.channels.base import ChannelBroken, NotSent, Post, Posted, PostRefused, RateLimited
from pipeline.channels.mastodon import MastodonChannel, from_settings
from pipeline.embedded import free_port
from pipeline.messages import ScheduledSession
from pipeline.settings import Settings
from tests.channel_fakes import FakeMastodon, assert_hidden, hanging, make_post, outcome_unknown, running, unreachable

TEXT = "Live at 10:45 UTC: Why eLearning Isn't Working for Leadership.\n\nJoin: https://meet.jit.si/Impromptu-Live-1"


@pytest.fixture
def mastodon() -> Iterator[tuple[FakeMastodon, str]]:
    yield from running(FakeMastodon())


@pytest.fixture
def session(build_session: Callable[..., ScheduledSession]) -> ScheduledSession:
    return build_session()


@pytest.fixture
def post(session: ScheduledSession) -> Post:
    return make_post(session, "mastodon", TEXT)


def channel(fake: FakeMastodon, base: str, *, token: str | None = None, timeout: float = 2) -> MastodonChannel:
    return MastodonChannel(base, fake.token if token is None else token, timeout=timeout)


async def test_post_makes_a_status_with_token_and_idempotency_key(
    mastodon: tuple[FakeMastodon, str], post: Post
) -> None:
    fake, base = mastodon

    posted = await channel(fake, base).post(post)

    [seen] = fake.received
    assert (seen.method, seen.path, seen.query) == ("POST", "/api/v1/statuses", "")
    assert seen.headers["authorization"] == f"Bearer {fake.token}"
    assert seen.headers["idempotency-key"] == post.key
    assert seen.headers["content-type"] == "application/x-www-form-urlencoded"
    assert seen.form() == {"status": TEXT, "visibility": "public"}
    [status] = fake.statuses.values()
    assert posted == Posted(remote_id=status["id"], url=f"{base}/@impromptu/{status['id']}")


async def test_the_same_key_twice_gives_one_status_and_the_same_posted(
    mastodon: tuple[FakeMastodon, str], post: Post
) -> None:
    fake, base = mastodon
    adapter = channel(fake, base)

    first = await adapter.post(post)
    again = await adapter.post(post)
    found = await adapter.find(post)

    assert first == again == found
    assert len(fake.statuses) == 1
    assert [seen.headers["idempotency-key"] for seen in fake.received] == [post.key] * 3


async def test_find_returns_the_status_an_interrupted_post_made(mastodon: tuple[FakeMastodon, str], post: Post) -> None:
    fake, base = mastodon
    fake.delay = 1.0  # the status is made, the answer comes too late

    await outcome_unknown(channel(fake, base, timeout=0.3).post(post))
    [status] = fake.statuses.values()

    fake.delay = 0
    found = await channel(fake, base).find(post)

    assert found == Posted(remote_id=status["id"], url=status["url"])
    assert len(fake.statuses) == 1


async def test_another_key_makes_another_status(mastodon: tuple[FakeMastodon, str], session: ScheduledSession) -> None:
    fake, base = mastodon
    adapter = channel(fake, base)

    scheduled = await adapter.post(make_post(session, "mastodon", TEXT, kind="scheduled"))
    starting = await adapter.post(make_post(session, "mastodon", "Starting now: " + TEXT, kind="starting"))

    assert scheduled.remote_id != starting.remote_id
    assert len(fake.statuses) == 2


async def test_visibility_comes_from_settings(mastodon: tuple[FakeMastodon, str], post: Post) -> None:
    fake, base = mastodon
    settings = Settings(mastodon_url=base, mastodon_access_token=fake.token, mastodon_visibility="unlisted")

    await from_settings(settings).post(post)

    assert fake.received[0].form()["visibility"] == "unlisted"
    assert [status["visibility"] for status in fake.statuses.values()] == ["unlisted"]


async def test_an_invalid_token_breaks_the_channel(mastodon: tuple[FakeMastodon, str], post: Post) -> None:
    fake, base = mastodon
    wrong = "revoked-token-SECRET-000"

    with pytest.raises(ChannelBroken, match="The access token is invalid") as raised:
        await channel(fake, base, token=wrong).post(post)

    assert "HTTP 401" in str(raised.value)
    assert "IMPROMPTU_MASTODON_ACCESS_TOKEN" in str(raised.value)
    assert_hidden(raised.value, wrong)
    assert fake.statuses == {}


async def test_forbidden_breaks_the_channel(mastodon: tuple[FakeMastodon, str], post: Post) -> None:
    fake, base = mastodon
    fake.fail(403, {"error": "This action is outside the authorized scopes"})

    with pytest.raises(ChannelBroken, match="HTTP 403, This action is outside the authorized scopes") as raised:
        await channel(fake, base).post(post)

    assert_hidden(raised.value, fake.token)


async def test_an_over_long_status_is_refused(mastodon: tuple[FakeMastodon, str], session: ScheduledSession) -> None:
    fake, base = mastodon
    fake.max_characters = 100

    with pytest.raises(PostRefused, match="HTTP 422, Validation failed: Text character limit of 100 exceeded"):
        await channel(fake, base).post(make_post(session, "mastodon", "word " * 40))

    assert fake.statuses == {}


async def test_a_url_counts_23_characters(mastodon: tuple[FakeMastodon, str], session: ScheduledSession) -> None:
    fake, base = mastodon
    fake.max_characters = 40
    long_link = "https://meet.jit.si/" + "Impromptu-Live-" * 10

    posted = await channel(fake, base).post(make_post(session, "mastodon", f"Join: {long_link}"))

    assert posted.remote_id in fake.statuses


async def test_rate_limit_waits_until_the_reset(mastodon: tuple[FakeMastodon, str], post: Post) -> None:
    fake, base = mastodon
    fake.fail_rate_limited(datetime.now(UTC) + timedelta(minutes=5))

    with pytest.raises(RateLimited, match="HTTP 429, Too many requests") as raised:
        await channel(fake, base).post(post)

    assert fake.received[-1].path == "/api/v1/statuses"
    assert raised.value.retry_after is not None
    assert 290 <= raised.value.retry_after <= 300


async def test_the_posting_limit_answers_429_with_rate_headers(
    mastodon: tuple[FakeMastodon, str], session: ScheduledSession
) -> None:
    fake, base = mastodon
    fake.post_limit = 1
    fake.reset_at = datetime.now(UTC) + timedelta(hours=3)
    adapter = channel(fake, base)
    await adapter.post(make_post(session, "mastodon", TEXT, kind="scheduled"))

    with pytest.raises(RateLimited) as raised:
        await adapter.post(make_post(session, "mastodon", TEXT, kind="starting"))

    assert raised.value.retry_after is not None
    assert 3 * 3600 - 10 <= raised.value.retry_after <= 3 * 3600
    assert len(fake.statuses) == 1


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_server_errors_are_not_sent(mastodon: tuple[FakeMastodon, str], post: Post, status: int) -> None:
    fake, base = mastodon
    fake.fail(status, {"error": "Service Unavailable"} if status == 503 else "<html>oops</html>")

    with pytest.raises(NotSent, match=f"HTTP {status}") as raised:
        await channel(fake, base).post(post)

    assert not isinstance(raised.value, RateLimited)


async def test_a_200_without_a_status_leaves_the_outcome_unknown(
    mastodon: tuple[FakeMastodon, str], post: Post
) -> None:
    fake, base = mastodon
    fake.fail(200, "<html>maintenance</html>", content_type="text/html")

    await outcome_unknown(channel(fake, base).post(post), "without a status")


async def test_a_wrong_instance_url_breaks_the_channel(mastodon: tuple[FakeMastodon, str], post: Post) -> None:
    fake, base = mastodon

    with pytest.raises(ChannelBroken, match="check IMPROMPTU_MASTODON_URL"):
        await channel(fake, base + "/not-mastodon").post(post)


async def test_delete_removes_the_status_and_tolerates_it_gone(mastodon: tuple[FakeMastodon, str], post: Post) -> None:
    fake, base = mastodon
    adapter = channel(fake, base)
    posted = await adapter.post(post)

    await adapter.delete(posted)
    await adapter.delete(posted)  # 404: already gone

    assert fake.statuses == {}
    deletes = [seen for seen in fake.received if seen.method == "DELETE"]
    assert [seen.path for seen in deletes] == [f"/api/v1/statuses/{posted.remote_id}"] * 2
    assert all(seen.headers["authorization"] == f"Bearer {fake.token}" for seen in deletes)


async def test_delete_with_a_revoked_token_breaks_the_channel(mastodon: tuple[FakeMastodon, str], post: Post) -> None:
    fake, base = mastodon
    posted = await channel(fake, base).post(post)

    with pytest.raises(ChannelBroken, match="HTTP 401"):
        await channel(fake, base, token="revoked-token-SECRET").delete(posted)

    assert posted.remote_id in fake.statuses


async def test_delete_without_an_id_is_refused(mastodon: tuple[FakeMastodon, str]) -> None:
    fake, base = mastodon
    with pytest.raises(PostRefused, match="no status id"):
        await channel(fake, base).delete(Posted())
    assert fake.received == []


async def test_a_read_timeout_never_shows_the_token(post: Post) -> None:
    adapter = MastodonChannel("https://mastodon.example", "tImEoUtToKeN", transport=hanging())

    # not NotSent: the status may exist, and find() asks again with the same key
    error = await outcome_unknown(adapter.post(post))

    assert_hidden(error, "tImEoUtToKeN")
    assert "mastodon.example" in str(error)


async def test_a_refused_connection_is_not_sent(post: Post) -> None:
    adapter = MastodonChannel(f"http://127.0.0.1:{free_port()}", "cLoSeDtOkEn", timeout=2)

    assert_hidden(await unreachable(adapter.post(post)), "cLoSeDtOkEn")


def test_missing_names_what_to_set() -> None:
    assert from_settings(Settings(mastodon_url=None, mastodon_access_token=None)).missing() == [
        "IMPROMPTU_MASTODON_URL",
        "IMPROMPTU_MASTODON_ACCESS_TOKEN",
    ]
    ready = from_settings(Settings(mastodon_url="https://mastodon.social", mastodon_access_token="t"))
    assert ready.missing() == []
    assert (ready.name, ready.can_find, ready.can_delete) == ("mastodon", True, True)


async def test_post_without_settings_breaks_the_channel(post: Post) -> None:
    with pytest.raises(ChannelBroken, match="set IMPROMPTU_MASTODON_ACCESS_TOKEN"):
        await MastodonChannel("https://mastodon.social", None).post(post)
