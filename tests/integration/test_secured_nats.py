"""The pipeline against a secured external nats-server: TLS, mutual TLS, and a `.creds` file (operator mode).

The server is the nats-server binary the embedded mode uses, started here with a config file; certificates come
from a throwaway CA made with the openssl CLI, the operator/account/user JWTs are minted with nkeys."""

from __future__ import annotations

import gc
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipeline import stores
from pipeline.app import connected
from pipeline.delivery import DeliveryPolicy
from pipeline.demo import ASSETS, article_server, run_story
from pipeline.domain.approval import list_records
from pipeline.embedded import free_port
from pipeline.errors import ConfigError
from pipeline.settings import Settings
from tests.integration.bus_helpers import STORY_STEPS
from tests.secured_nats import ConfiguredNats, Operator, Pki, tls_block

pytestmark = pytest.mark.nats


def secured_settings(tmp_path: Path, url: str, **security: Any) -> Settings:
    return Settings(
        nats_url=url,
        data_dir=tmp_path / "data",
        fetch_allow=["127.0.0.1/32"],
        fetch_timeout_seconds=5,
        delivery=DeliveryPolicy(max_deliveries=3, backoff_base_seconds=0.05, backoff_max_seconds=0.2),
        ack_wait_seconds=5,
        http_port=free_port(),  # the story serves its library page there
        **security,
    )


async def run_seed_story(settings: Settings) -> None:
    """The whole seed story through every stage, then its proposal read back from the KV bucket."""
    lines: list[str] = []
    with article_server((ASSETS / "bersin-article.html").read_bytes()) as url:
        await run_story(settings, url, lines.append)
    assert [line.split("]")[0].strip("[ ") for line in lines] == STORY_STEPS
    async with connected(settings) as client:
        (record,) = await list_records(client)
        assert record.state == "archived"
        assert [e.to_state for e in record.history] == ["approved", "scheduled", "live", "ended", "archived"]


async def kv_round_trip(settings: Settings) -> None:
    async with connected(settings) as client:
        kv = await stores.bucket(client, stores.SOURCES)
        await kv.put("probe", b"over-tls")
        assert (await kv.get("probe")).value == b"over-tls"


async def refused(settings: Settings, *, leaks_a_socket: bool = False) -> str:
    """Connecting fails fast (not after minutes of reconnect attempts) with the CLI's ConfigError; its message.

    `leaks_a_socket`: FastStream stops the connect on an authorization violation by raising out of nats-py's
    error callback, which leaves that attempt's socket open (a library leak, one socket per failed CLI call).
    It is collected here, its ResourceWarning ignored, so it cannot surface in whichever test runs next."""
    started = time.monotonic()
    with pytest.raises(ConfigError) as raised:
        async with connected(settings):
            pass
    assert time.monotonic() - started < 15
    message = str(raised.value)
    del raised  # its traceback holds the nats-py client and so the socket
    if leaks_a_socket:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            gc.collect()
    assert message.startswith(f"cannot connect to NATS at {settings.nats_url}: ")
    return message


# --- TLS and mutual TLS -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki.create(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def mtls_server(pki: Pki, tmp_path: Path) -> Iterator[ConfiguredNats]:
    with ConfiguredNats(tmp_path / "nats", tls_block(pki, verify=True), scheme="tls") as server:
        yield server


@pytest.fixture
def tls_server(pki: Pki, tmp_path: Path) -> Iterator[ConfiguredNats]:
    with ConfiguredNats(tmp_path / "nats", tls_block(pki, verify=False), scheme="tls") as server:
        yield server


async def test_seed_story_runs_over_mutual_tls(mtls_server: ConfiguredNats, pki: Pki, tmp_path: Path) -> None:
    settings = secured_settings(
        tmp_path,
        mtls_server.url,
        nats_tls_ca_file=pki.ca,
        nats_tls_cert_file=pki.client_cert,
        nats_tls_key_file=pki.client_key,
    )
    await run_seed_story(settings)
    await kv_round_trip(settings)


async def test_server_only_tls_needs_just_the_ca(tls_server: ConfiguredNats, pki: Pki, tmp_path: Path) -> None:
    await kv_round_trip(secured_settings(tmp_path, tls_server.url, nats_tls_ca_file=pki.ca))


async def test_mutual_tls_without_a_client_certificate_is_refused(
    mtls_server: ConfiguredNats, pki: Pki, tmp_path: Path
) -> None:
    message = await refused(secured_settings(tmp_path, mtls_server.url, nats_tls_ca_file=pki.ca))
    assert "certificate required" in message


async def test_a_server_signed_by_another_ca_is_refused(mtls_server: ConfiguredNats, pki: Pki, tmp_path: Path) -> None:
    settings = secured_settings(
        tmp_path,
        mtls_server.url,
        nats_tls_ca_file=pki.other_ca,
        nats_tls_cert_file=pki.client_cert,
        nats_tls_key_file=pki.client_key,
    )
    assert "certificate verify failed" in await refused(settings)


# --- a credentials file (decentralized auth: operator, account, user JWTs) ----------------------------------------


@pytest.fixture
def operator() -> Operator:
    pytest.importorskip("nkeys", reason="nats-py needs the nkeys package to sign with a .creds file")
    return Operator.create()


@pytest.fixture
def creds_server(operator: Operator, pki: Pki, tmp_path: Path) -> Iterator[ConfiguredNats]:
    """Operator mode over TLS, as a hosted NATS account is reached: the CA verifies the server, the JWT the user."""
    directory = tmp_path / "nats"
    directory.mkdir()
    config = operator.server_config(directory) + tls_block(pki, verify=False)
    with ConfiguredNats(directory, config, scheme="tls") as server:
        yield server


def creds_settings(tmp_path: Path, server: ConfiguredNats, pki: Pki, creds: Path | None) -> Settings:
    return secured_settings(tmp_path, server.url, nats_tls_ca_file=pki.ca, nats_credentials=creds)


async def test_seed_story_runs_with_a_credentials_file(
    creds_server: ConfiguredNats, operator: Operator, pki: Pki, tmp_path: Path
) -> None:
    creds = operator.user_creds(tmp_path / "worker.creds")
    await run_seed_story(creds_settings(tmp_path, creds_server, pki, creds))


async def test_a_user_of_an_account_the_server_does_not_know_is_refused(
    creds_server: ConfiguredNats, operator: Operator, pki: Pki, tmp_path: Path
) -> None:
    stranger = operator.user_creds(tmp_path / "stranger.creds", signer=Operator.create().account_key)
    message = await refused(creds_settings(tmp_path, creds_server, pki, stranger), leaks_a_socket=True)
    assert "authorization violation" in message.lower()


async def test_an_expired_credentials_file_is_refused(
    creds_server: ConfiguredNats, operator: Operator, pki: Pki, tmp_path: Path
) -> None:
    expired = operator.user_creds(tmp_path / "expired.creds", expires=int(time.time()) - 60)
    message = await refused(creds_settings(tmp_path, creds_server, pki, expired), leaks_a_socket=True)
    assert "authorization violation" in message.lower()


async def test_without_credentials_the_server_refuses(creds_server: ConfiguredNats, pki: Pki, tmp_path: Path) -> None:
    message = await refused(creds_settings(tmp_path, creds_server, pki, None), leaks_a_socket=True)
    assert "authorization violation" in message.lower()
