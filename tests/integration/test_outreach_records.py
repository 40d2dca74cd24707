"""The post record in real NATS KV: claimed before a post, confirmed after, and an interrupted post reconciled with
the channel (or flagged for a person) rather than repeated."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from faststream.nats import NatsBroker
from nats.js.kv import KeyValue

from pipeline import stores
from pipeline.channels import records
from pipeline.channels.base import NotSent, Post, Posted, PostRefused
from pipeline.channels.records import PostRecord, post_once
from pipeline.errors import RetryableError
from pipeline.messages import AnnouncementDue
from tests.unit.conftest import make_session

pytestmark = pytest.mark.nats


class Channel:
    """A channel that posts what it is told to and counts every attempt."""

    name = "mastodon"

    def __init__(self, *, can_find: bool = True, failures: list[Exception] | None = None) -> None:
        self.can_find = can_find
        self.can_delete = True
        self.failures = list(failures or [])
        self.posts: list[str] = []
        self.found: Posted | None = None

    async def post(self, post: Post) -> Posted:
        await asyncio.sleep(0.05)  # long enough for a second worker to arrive meanwhile
        if self.failures:
            raise self.failures.pop(0)
        self.posts.append(post.text)
        return Posted(remote_id=f"id-{len(self.posts)}", url=f"https://social.example/@us/{len(self.posts)}")

    async def find(self, post: Post) -> Posted | None:
        return self.found

    async def delete(self, posted: Posted) -> None:
        pass

    def missing(self) -> list[str]:
        return []


def due_and_post() -> tuple[AnnouncementDue, Post]:
    session = make_session()
    due = AnnouncementDue.caused_by(session, id="due:1", session=session, channel="mastodon", kind="scheduled")
    post = Post(
        key=due.key,
        channel="mastodon",
        kind="scheduled",
        text="Live at 10:45",
        session=session,
        link=session.join_url,
        title="t",
        description="d",
    )
    return due, post


@pytest.fixture
async def kv(client: NatsBroker) -> KeyValue:
    return await stores.bucket(client, stores.OUTREACH)


async def test_posted_once_then_already_posted(kv: KeyValue) -> None:
    channel, (due, post) = Channel(), due_and_post()
    first = await post_once(kv, channel, post, due)  # type: ignore[arg-type]
    second = await post_once(kv, channel, post, due)  # type: ignore[arg-type]
    assert (first.status, second.status) == ("posted", "already_posted")
    assert channel.posts == ["Live at 10:45"] and second.record.location == "https://social.example/@us/1"


async def test_two_workers_with_the_same_message_post_once(kv: KeyValue) -> None:
    channel, (due, post) = Channel(), due_and_post()
    outcomes = await asyncio.gather(
        post_once(kv, channel, post, due),  # type: ignore[arg-type]
        post_once(kv, channel, post, due),  # type: ignore[arg-type]
        return_exceptions=True,
    )
    assert len(channel.posts) == 1
    assert sum(isinstance(o, RetryableError) for o in outcomes) == 1  # the loser retries later, finds it posted


async def test_surely_not_sent_is_posted_on_the_next_delivery(kv: KeyValue) -> None:
    channel, (due, post) = Channel(failures=[NotSent("503")]), due_and_post()
    with pytest.raises(NotSent):
        await post_once(kv, channel, post, due)  # type: ignore[arg-type]
    record, _ = await records.read(kv, post.key)
    assert record is not None and (record.state, record.reason) == ("retry", "503")
    assert (await post_once(kv, channel, post, due)).status == "posted"  # type: ignore[arg-type]
    assert len(channel.posts) == 1


async def test_a_refused_post_is_failed_and_a_replay_tries_again(kv: KeyValue) -> None:
    channel, (due, post) = Channel(failures=[PostRefused("422 Validation failed")]), due_and_post()
    with pytest.raises(PostRefused):
        await post_once(kv, channel, post, due)  # type: ignore[arg-type]
    assert (await records.read(kv, post.key))[0].state == "failed"  # type: ignore[union-attr]
    outcome = await post_once(kv, channel, post, due)  # type: ignore[arg-type]
    assert (outcome.status, outcome.record.attempts) == ("posted", 2)


async def test_an_interrupted_post_is_found_or_made_where_the_channel_can_tell(kv: KeyValue) -> None:
    due, post = due_and_post()
    channel = Channel(failures=[RetryableError("read timeout; the post may have been made")])
    with pytest.raises(RetryableError):
        await post_once(kv, channel, post, due)  # type: ignore[arg-type]
    assert (await records.read(kv, post.key))[0].state == "sending"  # type: ignore[union-attr]
    channel.found = Posted(remote_id="109", url="https://social.example/@us/109")
    outcome = await post_once(kv, channel, post, due)  # type: ignore[arg-type]
    assert (outcome.status, outcome.record.location, channel.posts) == ("already_posted", channel.found.url, [])


async def test_an_interrupted_post_on_a_channel_that_cannot_tell_waits_for_a_person(kv: KeyValue) -> None:
    due, post = due_and_post()
    channel = Channel(can_find=False, failures=[RetryableError("read timeout")])
    with pytest.raises(RetryableError):
        await post_once(kv, channel, post, due)  # type: ignore[arg-type]
    outcome = await post_once(kv, channel, post, due)  # type: ignore[arg-type]
    again = await post_once(kv, channel, post, due)  # type: ignore[arg-type]
    assert (outcome.status, again.status, channel.posts) == ("unknown", "unknown", [])
    assert f"impromptu outreach resolve {post.key}" in (outcome.record.reason or "")
    assert await records.unknown_keys(kv) == [post.key]  # what `impromptu status` reports

    resolved = await records.resolve(kv, post.key, posted_at=None)  # a person checked: it did not go out
    assert await records.unknown_keys(kv) == []
    assert resolved.state == "retry" and resolved.due == due
    assert (await post_once(kv, channel, post, due)).status == "posted"  # type: ignore[arg-type]
    with pytest.raises(Exception, match="is posted, not unknown"):
        await records.resolve(kv, post.key, posted_at="https://x.example/1")


async def test_a_finder_whose_memory_has_expired_does_not_guess(kv: KeyValue) -> None:
    due, post = due_and_post()
    channel = Channel()
    channel.find_within = 3300.0  # type: ignore[attr-defined]
    stale = PostRecord(state="sending", attempts=1, updated_at=datetime.now(UTC) - timedelta(hours=2))
    await kv.put(post.key, stale.model_dump_json().encode())  # written by a worker that died two hours ago
    outcome = await post_once(kv, channel, post, due)  # type: ignore[arg-type]
    assert outcome.status == "unknown" and "too long for mastodon to tell" in (outcome.record.reason or "")
    assert channel.posts == []


async def test_a_worker_killed_between_unknown_and_its_index_leaves_it_for_the_next_delivery(kv: KeyValue) -> None:
    """Seen in CI: the worker that marked a post unknown was killed before writing the index entry status reads."""
    due, post = due_and_post()
    channel = Channel(can_find=False, failures=[RetryableError("read timeout")])
    with pytest.raises(RetryableError):
        await post_once(kv, channel, post, due)  # type: ignore[arg-type]
    assert (await post_once(kv, channel, post, due)).status == "unknown"  # type: ignore[arg-type]
    await kv.purge(records.UNKNOWN + post.key)  # as if killed between the record's write and the index's
    assert await records.unknown_keys(kv) == []
    assert (await post_once(kv, channel, post, due)).status == "unknown"  # type: ignore[arg-type]  # the redelivery
    assert await records.unknown_keys(kv) == [post.key]
