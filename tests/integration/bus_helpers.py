"""Reading the stream back, to assert on what really went over the bus."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TypeVar

from faststream.nats import NatsBroker
from nats.js.api import ConsumerInfo
from pydantic import BaseModel

from pipeline import bus
from pipeline.bus import jetstream
from pipeline.demo import ASSETS, article_server, seed_share
from pipeline.messages import SessionProposal

M = TypeVar("M", bound=BaseModel)

# What `run_story` reports, one line per step, in order.
STORY_STEPS = [
    "trigger",
    "enrich",
    "propose",
    "approve",
    "schedule",
    "outreach",
    "outreach",
    "outreach",
    "archive",
    "outreach",  # the recording, announced with its library link
    "outreach",
    "outreach",
    "trace",
]


async def subject_counts(broker: NatsBroker) -> dict[str, int]:
    info = await jetstream(broker).stream_info(bus.STREAM, subjects_filter=">")
    return dict(info.state.subjects or {})


async def messages_on(broker: NatsBroker, subject: str) -> list[bytes]:
    """Every message stored on `subject`, oldest first, read by an ephemeral consumer (no stage is disturbed)."""
    count = (await subject_counts(broker)).get(subject, 0)
    if count == 0:
        return []
    sub = await jetstream(broker).subscribe(subject, ordered_consumer=True)
    try:
        return [(await sub.next_msg(timeout=5)).data for _ in range(count)]
    finally:
        await sub.unsubscribe()


async def models_on(broker: NatsBroker, subject: str, model: type[M]) -> list[M]:
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


async def wait_for_count(broker: NatsBroker, subject: str, count: int, timeout: float = 15.0) -> None:
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
        await wait_for_count(client, bus.PROPOSALS_CREATED, 1)
    (proposal,) = await models_on(client, bus.PROPOSALS_CREATED, SessionProposal)
    return proposal
