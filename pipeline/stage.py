"""What every stage router shares: its delivery middleware, its dead-letter publisher, its consumers."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from faststream import AckPolicy
from faststream.nats import NatsRouter
from faststream.nats.message import NatsMessage
from faststream.nats.publisher.usecase import LogicPublisher

from pipeline import bus
from pipeline.delivery import stage_middleware
from pipeline.messages import DeadLetter, Message
from pipeline.settings import Settings


@asynccontextmanager
async def still_working(message: NatsMessage, every: float) -> AsyncIterator[None]:
    """Tell JetStream every `every` seconds that `message` is still being worked on (a long download), so it is
    not redelivered to another worker meanwhile; a killed worker stops telling, and it comes back after ack_wait."""

    async def beat() -> None:
        while True:
            await asyncio.sleep(every)
            with contextlib.suppress(Exception):  # NATS away for a moment: the next beat, or a redelivery, follows
                await message.in_progress()

    beating = asyncio.create_task(beat(), name="in-progress")
    try:
        yield
    finally:
        beating.cancel()
        await asyncio.gather(beating, return_exceptions=True)


async def emit(publisher: LogicPublisher, message: Message) -> None:
    """Publish with the message's own id as Nats-Msg-Id, so a retried publish is a no-op."""
    await publisher.publish(message, headers=bus.msg_headers(message), correlation_id=message.correlation_id)


class StageRouter(NatsRouter):
    """A NatsRouter whose subscribers are durable pull consumers with Impromptu's delivery semantics."""

    def __init__(self, name: str, settings: Settings) -> None:
        super().__init__(middlewares=(stage_middleware(name, settings.delivery, self._publish_dead_letter),))
        self.stage_name = name
        self.settings = settings
        self._dead_letters = self.publisher(
            bus.dead_letter_subject(name),
            stream=bus.STREAM_REF,
            schema=DeadLetter,
            title=f"{bus.dead_letter_subject(name)}:publish",
            description=f"Messages the {name} stage gave up on, with the reason.",
        )

    def output(self, subject: str, schema: type[Message], description: str = "") -> LogicPublisher:
        return self.publisher(subject, stream=bus.STREAM_REF, schema=schema, description=description)

    def consume(
        self, subject: str, durable: str | None = None, concurrency: int = 1
    ) -> Callable[[Callable[..., Any]], Any]:
        """Subscribe as a durable pull consumer; `concurrency` > 1 handles that many messages at once (only for
        handlers whose effects are safe in any order, e.g. guarded by compare-and-set)."""
        consumer = bus.stage_consumer(self.settings, durable or self.stage_name)
        # NACK_ON_ERROR only backs up the middleware: an error it did not settle is retried, never dropped.
        return self.subscriber(
            subject,
            ack_policy=AckPolicy.NACK_ON_ERROR,
            max_workers=concurrency if concurrency > 1 else None,  # None: FastStream's default, one at a time
            **consumer,
        )

    async def _publish_dead_letter(self, dead_letter: DeadLetter) -> None:
        msg_id = f"dlq:{self.stage_name}:{dead_letter.stream_sequence or dead_letter.failed_at.isoformat()}"
        await self._dead_letters.publish(
            dead_letter, headers={"Nats-Msg-Id": msg_id}, correlation_id=dead_letter.correlation_id
        )
