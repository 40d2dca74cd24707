"""The bus topology a running pipeline leaves on the server: one file-backed stream, one durable per stage."""

from __future__ import annotations

import nats
import pytest
from faststream.nats import NatsBroker
from nats.js.api import AckPolicy, KeyValueConfig, StorageType

from pipeline import bus, stores
from pipeline.app import connected
from pipeline.demo import seed_share
from pipeline.ops.status import gather_status
from pipeline.settings import Settings
from tests.integration.bus_helpers import jetstream

pytestmark = pytest.mark.nats

DURABLES = {
    "trigger": bus.SHARES.subject,
    "enrich": bus.TRIGGERS_FIRED.subject,
    "actions-propose": bus.CONTENT_ENRICHED.subject,
    "actions-schedule": bus.DECISIONS.subject,
    "outreach": bus.SESSIONS_SCHEDULED.subject,
    "archive": bus.RECORDINGS.subject,
}


async def test_one_file_stream_over_every_subject(pipeline: NatsBroker, settings: Settings) -> None:
    config = (await jetstream(pipeline).stream_info(bus.STREAM)).config
    assert config.subjects == ["impromptu.>"]
    assert config.storage == StorageType.FILE
    assert config.duplicate_window == settings.duplicate_window_seconds
    assert (config.max_age, config.max_bytes) == (0, -1)  # by default nothing leaves the stream


async def test_retention_settings_reach_an_existing_stream(client: NatsBroker, settings: Settings) -> None:
    await bus.ensure_stream(client, settings)
    await bus.publish(client, bus.SHARES, seed_share("https://example.com/kept"))
    limited = settings.model_copy(update={"stream_max_age_days": 30, "stream_max_bytes": 2 * 1024**3})
    await bus.ensure_stream(client, limited)  # as `impromptu run` does after the setting changed
    info = await jetstream(client).stream_info(bus.STREAM)
    assert (info.config.max_age, info.config.max_bytes) == (30 * 86400, 2 * 1024**3)
    assert info.state.messages == 1  # updated in place: nothing stored is lost
    report = await gather_status(client)  # `impromptu status` shows the limits
    assert (report.stream.max_age, report.stream.max_bytes) == (30 * 86400, 2 * 1024**3)

    async with connected(settings):  # a CLI command run without the settings leaves the limits alone
        pass
    config = (await jetstream(client).stream_info(bus.STREAM)).config
    assert (config.max_age, config.max_bytes) == (30 * 86400, 2 * 1024**3)


async def test_each_stage_has_a_durable_pull_consumer_with_explicit_acks(
    pipeline: NatsBroker, settings: Settings
) -> None:
    for durable, subject in DURABLES.items():
        config = (await jetstream(pipeline).consumer_info(bus.STREAM, durable)).config
        assert config.filter_subject == subject, durable
        assert config.ack_policy == AckPolicy.EXPLICIT, durable
        assert config.deliver_subject is None, durable  # pull, so workers can share it
        assert config.ack_wait == settings.ack_wait_seconds, durable
        # JetStream must never give up silently; our middleware dead-letters instead.
        assert config.max_deliver in (None, -1), durable


async def test_a_bucket_created_by_ops_is_used_as_it_is(settings: Settings) -> None:
    """On a cluster, ops create the KV buckets with replicas; the pipeline binds to them instead of failing."""
    nc = await nats.connect(settings.nats_url or "")
    config = KeyValueConfig(bucket=stores.PROPOSALS, storage=StorageType.FILE, history=5, description="made by ops")
    await nc.jetstream().create_key_value(config)
    await nc.close()
    async with connected(settings) as broker:
        kv = await stores.bucket(broker, stores.PROPOSALS)
        assert (await kv.status()).history == 5
