"""What every stage router shares: its delivery middleware, its dead-letter publisher, its consumers."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Concatenate, Generic, ParamSpec

from faststream import AckPolicy
from faststream.nats import NatsRouter
from faststream.nats.message import NatsMessage
from faststream.nats.publisher.usecase import LogicPublisher

from pipeline import bus
from pipeline.bus import M, Topic
from pipeline.delivery import stage_middleware
from pipeline.messages import DeadLetter
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


@dataclass(frozen=True)
class Output(Generic[M]):
    """A stage's publisher on one topic (`StageRouter.output`): `emit` takes only that topic's model."""

    topic: Topic[M]
    publisher: LogicPublisher


async def emit(output: Output[M], message: M) -> None:
    """Publish with the message's own id as Nats-Msg-Id, so a retried publish is a no-op."""
    message = output.topic.checked(message)
    await output.publisher.publish(message, headers=bus.msg_headers(message), correlation_id=message.correlation_id)


HandlerParams = ParamSpec("HandlerParams")
# A handler takes the topic's message first; FastStream fills in the rest (the broker, the raw message) by type.
Handler = Callable[Concatenate[M, HandlerParams], Awaitable[None]]


def _check_handler(topic: Topic[Any], handler: Callable[..., Any]) -> None:
    """FastStream decodes the body as the handler's first parameter says: it must name the topic's model."""
    first = next(iter(inspect.signature(handler, eval_str=True).parameters.values()), None)
    if first is None or first.annotation is not topic.model:
        got = getattr(first.annotation, "__name__", repr(first.annotation)) if first is not None else "nothing"
        raise TypeError(
            f"{getattr(handler, '__qualname__', handler)} handles {got}, but {topic.subject} carries "
            f"{topic.model.__name__}"
        )


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

    def output(self, topic: Topic[M], description: str = "") -> Output[M]:
        publisher = self.publisher(topic.subject, stream=bus.STREAM_REF, schema=topic.model, description=description)
        return Output(topic, publisher)

    def consume(
        self, topic: Topic[M], durable: str | None = None, concurrency: int = 1
    ) -> Callable[[Handler[M, HandlerParams]], Any]:
        """Subscribe as a durable pull consumer; `concurrency` > 1 handles that many messages at once (only for
        handlers whose effects are safe in any order, e.g. guarded by compare-and-set)."""
        consumer = bus.stage_consumer(self.settings, durable or self.stage_name)

        def register(handler: Handler[M, HandlerParams]) -> Any:
            _check_handler(topic, handler)
            # NACK_ON_ERROR only backs up the middleware: an error it did not settle is retried, never dropped.
            subscriber = self.subscriber(
                topic.subject,
                ack_policy=AckPolicy.NACK_ON_ERROR,
                max_workers=concurrency if concurrency > 1 else None,  # None: FastStream's default, one at a time
                **consumer,
            )
            return subscriber(handler)

        return register

    async def _publish_dead_letter(self, dead_letter: DeadLetter) -> None:
        msg_id = f"dlq:{self.stage_name}:{dead_letter.stream_sequence or dead_letter.failed_at.isoformat()}"
        await self._dead_letters.publish(
            dead_letter, headers={"Nats-Msg-Id": msg_id}, correlation_id=dead_letter.correlation_id
        )
