"""Bus topology: one JetStream stream over every subject, one durable pull consumer per stage."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any, Generic, TypedDict, TypeVar, cast

import nats.errors
from faststream.exceptions import IncorrectState
from faststream.nats import JStream, NatsBroker, PubAck, PullSub, StorageType, StreamConfig
from faststream.nats.subscriber.usecases.basic import LogicSubscriber
from nats.js import JetStreamContext
from nats.js.api import AckPolicy as JsAckPolicy
from nats.js.api import ConsumerConfig, DeliverPolicy
from nats.js.errors import APIError, BadRequestError, NoStreamResponseError, NotFoundError, ServiceUnavailableError

from pipeline.messages import (
    AnnouncementDue,
    EnrichedContent,
    EnrichmentFailed,
    FacilitatorDecision,
    LibraryEntry,
    Message,
    OutreachResult,
    ProposalTransition,
    Recording,
    ScheduledSession,
    SessionProposal,
    Share,
    SharerJoined,
    TriggerFired,
)
from pipeline.settings import Settings

STREAM = "IMPROMPTU"

M = TypeVar("M", bound=Message)  # invariant on purpose: a Topic[Share] is no Topic[Message] that takes any message


@dataclass(frozen=True)
class Topic(Generic[M]):
    """A subject and the one message model it carries, declared once below: publishers and subscribers take the
    topic, never the subject and the model apart, so a message cannot go on a subject that does not carry it."""

    subject: str
    model: type[M]

    def checked(self, message: object) -> M:
        """`message` if this topic carries it; a TypeError (a programming error, never retried) otherwise."""
        if not isinstance(message, self.model):
            raise TypeError(
                f"{self.subject} carries {self.model.__name__}, not {type(message).__name__} (pipeline/bus.py)"
            )
        return message


SHARES = Topic("impromptu.shares", Share)
TRIGGERS_FIRED = Topic("impromptu.triggers.fired", TriggerFired)
TRIGGERS_JOINED = Topic("impromptu.triggers.joined", SharerJoined)
CONTENT_ENRICHED = Topic("impromptu.content.enriched", EnrichedContent)
CONTENT_FAILED = Topic("impromptu.content.failed", EnrichmentFailed)
PROPOSALS_CREATED = Topic("impromptu.proposals.created", SessionProposal)
DECISIONS = Topic("impromptu.decisions", FacilitatorDecision)
PROPOSALS_TRANSITIONS = Topic("impromptu.proposals.transitions", ProposalTransition)  # the approval audit trail
SESSIONS_SCHEDULED = Topic("impromptu.sessions.scheduled", ScheduledSession)
OUTREACH_DUE = Topic("impromptu.outreach.due", AnnouncementDue)  # one message per (session, channel, kind) to announce
OUTREACH_RESULTS = Topic("impromptu.outreach.results", OutreachResult)
RECORDINGS = Topic("impromptu.recordings", Recording)
LIBRARY_ENTRIES = Topic("impromptu.library.entries", LibraryEntry)

TOPICS: tuple[Topic[Any], ...] = (
    SHARES,
    TRIGGERS_FIRED,
    TRIGGERS_JOINED,
    CONTENT_ENRICHED,
    CONTENT_FAILED,
    PROPOSALS_CREATED,
    DECISIONS,
    PROPOSALS_TRANSITIONS,
    SESSIONS_SCHEDULED,
    OUTREACH_DUE,
    OUTREACH_RESULTS,
    RECORDINGS,
    LIBRARY_ENTRIES,
)

# Subjects without one model of their own: the dead letters (a DeadLetter on `impromptu.dlq.<stage>`, carrying any
# subject's message as text) and the whole stream.
DEAD_LETTERS = "impromptu.dlq"  # + ".<stage>"
ALL_SUBJECTS = "impromptu.>"


def dead_letter_subject(stage: str) -> str:
    return f"{DEAD_LETTERS}.{stage}"


# Subscribers and publishers name the stream but never declare it: FastStream would declare it with only the
# subjects its routers happen to use. `ensure_stream` declares it whole, before any stage starts.
STREAM_REF = JStream(STREAM, declare=False)


def stream_config(settings: Settings) -> StreamConfig:
    return StreamConfig(
        name=STREAM,
        subjects=[ALL_SUBJECTS],
        storage=StorageType.FILE,
        duplicate_window=settings.duplicate_window_seconds,
        num_replicas=settings.stream_replicas,
        max_age=settings.stream_max_age_days * 86400,  # 0: unlimited
        max_bytes=settings.stream_max_bytes or -1,
    )


class StageConsumer(TypedDict):
    """`NatsBroker.subscriber` arguments for a stage's consumer (typed: mypy then knows which overload is meant)."""

    stream: JStream
    durable: str
    pull_sub: PullSub
    config: ConsumerConfig


def stage_consumer(settings: Settings, durable: str) -> StageConsumer:
    """Subscriber arguments for one stage's durable pull consumer.

    JetStream's own max_deliver stays unlimited on purpose: when it gives up it drops the message silently.
    Our delivery middleware counts deliveries and moves a message to the dead-letter subject instead.
    """
    return {
        "stream": STREAM_REF,
        "durable": durable,
        "pull_sub": PullSub(batch_size=10, timeout=1.0),
        "config": ConsumerConfig(
            durable_name=durable,
            ack_policy=JsAckPolicy.EXPLICIT,
            ack_wait=settings.ack_wait_seconds,
            deliver_policy=DeliverPolicy.ALL,
            max_deliver=-1,
        ),
    }


def msg_headers(message: Message) -> dict[str, str]:
    return {"Nats-Msg-Id": message.id}


# NATS not answering or refusing (down, reconnecting, timing out, no responders, a closed connection, a JetStream
# API error such as err_code=10026 "maximum consumers limit reached", the broker not connected): every HTTP answer is
# then 503 with the reason and Retry-After (pipeline/web/server.py), never a traceback or a stale page. The one list.
NOT_ANSWERING = (nats.errors.Error, TimeoutError, ConnectionError, IncorrectState)
RETRY_AFTER_SECONDS = 5  # about how long a cluster takes to elect a new leader, or a client to reconnect


def not_answering_reason(error: BaseException) -> str:
    """What NATS said, for people: `NATS did not answer (TimeoutError: timeout)`, `NATS refused (BadRequestError:
    code=400 err_code=10026 description='maximum consumers limit reached')`."""
    name = type(error).__name__
    text = str(error).strip().removeprefix("nats: ")
    text = text if text.startswith(name) else f"{name}: {text}" if text else name
    verb = "refused" if isinstance(error, APIError) else "did not answer"
    return f"NATS {verb} ({text})"


# What a publish sees for a few seconds while a cluster elects a new stream leader (a node was lost)
UNAVAILABLE = (nats.errors.TimeoutError, nats.errors.NoRespondersError, NoStreamResponseError, ServiceUnavailableError)
PUBLISH_PATIENCE_SECONDS = 15.0


async def publish(broker: NatsBroker, topic: Topic[M], message: M) -> PubAck:
    """Publish on `topic` (which must carry `message`'s model) with the message's id as Nats-Msg-Id (a re-publish
    is dropped), trying again for up to PUBLISH_PATIENCE_SECONDS while the stream does not answer: the same id makes
    a retry safe."""
    subject = topic.subject
    message = topic.checked(message)
    deadline = time.monotonic() + PUBLISH_PATIENCE_SECONDS
    pause = 0.1
    while True:
        try:
            return await broker.publish(
                message, subject, headers=msg_headers(message), correlation_id=message.correlation_id, stream=STREAM
            )
        except UNAVAILABLE:
            if time.monotonic() + pause > deadline:
                raise
            await asyncio.sleep(pause)
            pause = min(pause * 2, 2.0)


def subscribers(broker: NatsBroker) -> list[LogicSubscriber[Any]]:
    """The broker's subscribers as the NATS subscribers they are (FastStream types the list by their base class)."""
    return cast("list[LogicSubscriber[Any]]", broker.subscribers)


def jetstream(broker: NatsBroker) -> JetStreamContext:
    """The connected broker's nats-py JetStream context, for what FastStream does not wrap (stream, consumer info)."""
    return broker.config.broker_config.connection_state.stream


async def close_reader(js: JetStreamContext, subscription: JetStreamContext.PushSubscription) -> None:
    """Unsubscribe an ordered reader and delete its consumer now: unsubscribing alone leaves it on the server
    until its inactivity threshold (nats-py keeps the current consumer's name on the subscription, privately)."""
    await subscription.unsubscribe()
    try:
        await js.delete_consumer(subscription._stream, subscription._consumer)
    except (NotFoundError, nats.errors.TimeoutError, nats.errors.ConnectionClosedError):
        pass  # gone already, or the server is away: the server removes it when it sees no interest


async def ensure_stream(broker: NatsBroker, settings: Settings, *, update: bool = True) -> None:
    """Create the stream, or bring an existing one to our configuration (adding the same config is a no-op).

    Only the pipeline updates (`update=True`): a CLI command run with other settings (no retention set, say)
    must not undo what the running workers configured."""
    js = jetstream(broker)
    try:
        await js.add_stream(config=stream_config(settings))
    except BadRequestError:  # exists with another configuration
        if update:
            await js.update_stream(config=stream_config(settings))
