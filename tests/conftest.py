"""Fixtures shared by every test folder: a real nats-server (JetStream, file storage) on a free loopback port."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import structlog
from faststream.nats import NatsBroker
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings

from pipeline.app import connected, create_broker, start_stages
from pipeline.delivery import DeliveryPolicy
from pipeline.embedded import EmbeddedNats, free_port
from pipeline.settings import Settings

# Property tests run the same examples on every machine: CI on a noisy 2-core box must not turn red because one
# generated input was slow to draw or a new seed found something elsewhere. `--hypothesis-seed` still explores.
hypothesis_settings.register_profile(
    "impromptu", derandomize=True, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
hypothesis_settings.load_profile("impromptu")


@pytest.fixture(autouse=True)
def fresh_logging() -> Iterator[None]:
    """Commands under test configure structlog globally (level, output); no test may inherit another's."""
    yield
    structlog.reset_defaults()


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[EmbeddedNats]:
    with EmbeddedNats(tmp_path / "nats", port=free_port()) as server:
        yield server


@pytest.fixture
def settings(nats_server: EmbeddedNats, tmp_path: Path) -> Settings:
    return Settings(
        nats_url=nats_server.url,
        data_dir=tmp_path / "data",
        fetch_allow=["127.0.0.1/32"],
        fetch_timeout_seconds=5,
        delivery=DeliveryPolicy(max_deliveries=3, backoff_base_seconds=0.05, backoff_max_seconds=0.2),
        ack_wait_seconds=5,
        http_port=free_port(),  # what serves HTTP in a test (the demo's story serves its library) never takes 8000
    )


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[NatsBroker]:
    """A broker with no subscribers, as the CLI uses: publish, read KV."""
    async with connected(settings) as broker:
        yield broker


@pytest.fixture
async def pipeline(settings: Settings) -> AsyncIterator[NatsBroker]:
    """Every stage, running against the real server."""
    broker = create_broker(settings)
    await start_stages(broker, settings)
    yield broker
    await broker.stop()
