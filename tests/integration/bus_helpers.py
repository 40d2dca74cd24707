"""Reading the stream back, to assert on what really went over the bus."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any, TypeVar

from faststream.nats import NatsBroker
from nats.js.api import ConsumerInfo
from pydantic import BaseModel

from pipeline import bus
from pipeline.app import create_broker, start_stages
from pipeline.bus import jetstream
from pipeline.demo import ASSETS, article_server, seed_share
from pipeline.messages import LibraryEntry, ScheduledSession, SessionProposal
from pipeline.settings import Settings

M = TypeVar("M", bound=BaseModel)

# What `run_story` reports, one line per step, in order.
STORY_STEPS = [
    "trigger",
    "enrich",
    "propose",
    "approve",
    "schedule",
    *["outreach"] * 3,  # the session announced on X, LinkedIn and Facebook
    "clock",  # the demo fast-forwards to the start ...
    *["outreach"] * 3,  # ... "starting now"
    "clock",  # ... and to the end
    "archive",
    *["outreach"] * 3,  # the recording, announced with its library link
    "trace",
    "library",  # its page, opened as a reader would
    "library",  # its feeds
]


async def subject_counts(broker: NatsBroker) -> dict[str, int]:
    info = await jetstream(broker).stream_info(bus.STREAM, subjects_filter=">")
    return dict(info.state.subjects or {})


def _subject_of(subject: str | bus.Topic[Any]) -> str:
    if not isinstance(subject, str | bus.Topic):  # a Topic's repr would quietly match nothing
        raise TypeError(f"a subject or a bus.Topic, not {subject!r}")
    return subject.subject if isinstance(subject, bus.Topic) else subject


async def messages_on(broker: NatsBroker, subject: str | bus.Topic[Any]) -> list[bytes]:
    """Every message stored on `subject`, oldest first, read by an ephemeral consumer (no stage is disturbed)."""
    subject = _subject_of(subject)
    count = (await subject_counts(broker)).get(subject, 0)
    if count == 0:
        return []
    sub = await jetstream(broker).subscribe(subject, ordered_consumer=True)
    try:
        return [(await sub.next_msg(timeout=5)).data for _ in range(count)]
    finally:
        await sub.unsubscribe()


async def models_on(broker: NatsBroker, subject: str | bus.Topic[Any], model: type[M]) -> list[M]:
    return [model.model_validate_json(data) for data in await messages_on(broker, subject)]


async def wait_until(check: Callable[[], object], timeout: float = 15.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.05)


async def wait_for_count(broker: NatsBroker, subject: str | bus.Topic[Any], count: int, timeout: float = 15.0) -> None:
    subject = _subject_of(subject)

    async def enough() -> bool:
        return (await subject_counts(broker)).get(subject, 0) >= count

    await wait_until(enough, timeout, f"{count} message(s) on {subject}")


async def consumer(broker: NatsBroker, durable: str) -> ConsumerInfo:
    return await jetstream(broker).consumer_info(bus.STREAM, durable)


async def wait_drained(broker: NatsBroker, durable: str, timeout: float = 15.0) -> None:
    """Until the stage's consumer has nothing pending and nothing unacknowledged: it has handled all it got."""

    async def drained() -> bool:
        info = await consumer(broker, durable)
        return info.num_pending == 0 and info.num_ack_pending == 0

    await wait_until(drained, timeout, f"consumer {durable} drained")


async def seed_proposal(client: NatsBroker) -> SessionProposal:
    """The seed share on the real bus (its article served on loopback); the running stages propose a session."""
    with article_server((ASSETS / "bersin-article.html").read_bytes()) as url:
        await bus.publish(client, bus.SHARES, seed_share(url))
        await wait_for_count(client, bus.PROPOSALS_CREATED.subject, 1)
    (proposal,) = await models_on(client, bus.PROPOSALS_CREATED.subject, SessionProposal)
    return proposal


async def keep_at_start(client: NatsBroker, settings: Settings, session: ScheduledSession) -> LibraryEntry:
    """The demo's recording of `session` kept as of a minute after its start, before the clock has moved it (the
    archive walks it live -> ended -> archived, as "archive", so no "starting now" is said), and its entry put on
    the bus as the archive stage does: for tests of what follows a kept recording, without waiting half an hour."""
    from pipeline.archive.keep import keep_recording
    from pipeline.archive.media import media_store
    from pipeline.demo import sample_recording

    store = await media_store(settings, client)
    try:
        recording = sample_recording(session, settings.import_dir)
        entry = await keep_recording(client, settings, store, recording, now=session.starts_at + timedelta(minutes=1))
    finally:
        await store.close()
    await bus.publish(client, bus.LIBRARY_ENTRIES, entry)
    return entry


@asynccontextmanager
async def running_stages(settings: Settings) -> AsyncIterator[NatsBroker]:
    """The stages `settings.stages` names, in this process, on their own broker; stopped (drained) on the way out."""
    broker = create_broker(settings)
    await start_stages(broker, settings)
    try:
        yield broker
    finally:
        await broker.stop()
