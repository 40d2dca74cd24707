"""Each subject is declared once with the one model it carries (pipeline/bus.py): a message published, emitted or
handled on a topic that does not carry its model is a programming error, refused before anything reaches NATS."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from faststream.nats import NatsBroker

from pipeline import bus, messages
from pipeline.messages import BUS_MESSAGES, DeadLetter, Message, Share, SharerJoined, TriggerFired
from pipeline.settings import Settings
from pipeline.stage import Output, StageRouter, emit


class RecordingBroker:
    """Stands in for a connected NatsBroker: keeps what it was asked to publish."""

    def __init__(self) -> None:
        self.published: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    async def publish(self, *args: Any, **kwargs: Any) -> str:
        self.published.append((args, kwargs))
        return "ack"


def a_share() -> Share:
    return Share.from_source(source="cli", native_id="1", sharer="@britz", url="https://example.com/1")


def as_broker(fake: RecordingBroker) -> NatsBroker:
    return fake  # type: ignore[return-value]  # only `publish` is used


async def test_a_message_is_published_on_its_topic_as_before() -> None:
    broker = RecordingBroker()
    share = a_share()
    assert await bus.publish(as_broker(broker), bus.SHARES, share) == "ack"
    assert broker.published == [
        (
            (share, "impromptu.shares"),
            {"headers": {"Nats-Msg-Id": share.id}, "correlation_id": share.correlation_id, "stream": bus.STREAM},
        )
    ]


async def test_publishing_a_wrong_model_on_a_topic_raises_and_publishes_nothing() -> None:
    broker = RecordingBroker()
    with pytest.raises(TypeError, match=r"impromptu\.triggers\.fired carries TriggerFired, not Share"):
        await bus.publish(as_broker(broker), bus.TRIGGERS_FIRED, a_share())  # type: ignore[arg-type]
    assert broker.published == []


async def test_a_stage_output_emits_only_its_topics_model() -> None:
    publisher = RecordingBroker()
    output = Output(bus.TRIGGERS_JOINED, publisher)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"impromptu\.triggers\.joined carries SharerJoined, not Share"):
        await emit(output, a_share())  # type: ignore[arg-type]
    assert publisher.published == []


def test_a_handler_must_take_the_model_its_topic_carries(tmp_path: Path) -> None:
    router = StageRouter("probe", Settings(nats_url="nats://127.0.0.1:1", data_dir=tmp_path))

    async def handle_joined(joined: SharerJoined) -> None:
        return None

    with pytest.raises(TypeError, match=r"handle_joined handles SharerJoined, but impromptu\.shares carries Share"):
        router.consume(bus.SHARES)(handle_joined)  # type: ignore[arg-type]
    assert router.subscribers == []  # refused before subscribing

    async def handle_share(share: Share) -> None:
        return None

    router.consume(bus.SHARES)(handle_share)
    assert [s.subject.broker_address for s in router.subscribers] == ["impromptu.shares"]


def test_every_topic_is_listed_once_with_its_own_subject() -> None:
    declared = [value for value in vars(bus).values() if isinstance(value, bus.Topic)]
    assert sorted(t.subject for t in declared) == sorted(t.subject for t in bus.TOPICS)
    subjects = [topic.subject for topic in bus.TOPICS]
    assert len(subjects) == len(set(subjects))
    assert all(s.startswith("impromptu.") and not s.startswith(f"{bus.DEAD_LETTERS}.") for s in subjects)


def test_every_topic_carries_a_bus_message_of_its_own() -> None:
    models = [topic.model for topic in bus.TOPICS]
    for model in models:
        assert issubclass(model, Message) and model.__module__ == messages.__name__, model
        assert getattr(messages, model.__name__) is model
    assert len(models) == len(set(models))  # one subject per model: a reader knows what is where
    assert set(models) | {DeadLetter} == set(BUS_MESSAGES)  # the dead letters carry any subject's message, as text


def test_topic_checked_accepts_its_model_only() -> None:
    share = a_share()
    assert bus.SHARES.checked(share) is share
    with pytest.raises(TypeError, match="carries Share, not TriggerFired"):
        bus.SHARES.checked(TriggerFired.model_construct())
