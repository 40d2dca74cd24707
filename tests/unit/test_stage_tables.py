"""The ops tools' tables of consumers and subjects must match what the stages really subscribe to."""

from __future__ import annotations

from pathlib import Path

from pipeline.app import create_broker
from pipeline.ops.status import STAGE_CONSUMERS
from pipeline.ops.tail import STAGE_SUBJECTS
from pipeline.settings import Settings


def subscriptions(tmp_path: Path) -> set[tuple[str, str]]:
    broker = create_broker(Settings(nats_url="nats://127.0.0.1:1", data_dir=tmp_path))  # never connected
    return {(s.config.durable_name, s.subject.broker_address) for s in broker.subscribers if s.config.durable_name}


def test_status_lists_every_durable_consumer_of_every_stage(tmp_path: Path) -> None:
    assert {(c.durable, c.subject) for c in STAGE_CONSUMERS} == subscriptions(tmp_path)


def test_tail_shows_each_stage_what_it_consumes(tmp_path: Path) -> None:
    for consumer in STAGE_CONSUMERS:
        assert consumer.subject in STAGE_SUBJECTS[consumer.stage], consumer
