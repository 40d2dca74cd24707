"""Joining the bus: `new_broker` (a NatsBroker with the settings' credentials and TLS), `discover` (the running
pipeline's server: NATS_URL, else the one `impromptu run` embeds) and `connected` (a broker with no subscribers, for
the CLI). Apart from pipeline/app.py, which re-exports them, so that a bus command (`impromptu share`, `proposals
list`, `status`, …) loads nats-py and faststream but none of the stages.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from faststream.nats import NatsBroker, NatsCredentials, NatsNKey, NatsSecurity
from nats.aio.client import ErrorCallback

from pipeline import bus, pull_timeouts, tracing
from pipeline.embedded import BusUser, BusUsers
from pipeline.errors import ConfigError
from pipeline.settings import Settings


def new_broker(
    url: str, settings: Settings | None = None, error_cb: ErrorCallback | None = None, **connect_options: Any
) -> NatsBroker:
    """A broker for `url`; with `settings`, also their NATS credentials (a .creds file or an nkey seed) and TLS."""
    context: ssl.SSLContext | None = None
    if settings is not None and (settings.nats_tls_ca_file or settings.nats_tls_cert_file):
        context = ssl.create_default_context(cafile=settings.nats_tls_ca_file)
        if settings.nats_tls_cert_file:
            context.load_cert_chain(settings.nats_tls_cert_file, settings.nats_tls_key_file)
    security: NatsSecurity | None = None
    if settings is not None and settings.nats_credentials is not None and settings.nats_nkey_seed is not None:
        raise ConfigError("set IMPROMPTU_NATS_CREDENTIALS or IMPROMPTU_NATS_NKEY_SEED, not both")
    try:
        if settings is not None and settings.nats_credentials is not None:
            security = NatsCredentials.from_file(settings.nats_credentials, ssl_context=context)
        elif settings is not None and settings.nats_nkey_seed is not None:
            if not os.access(settings.nats_nkey_seed, os.R_OK):
                raise ConfigError(f"IMPROMPTU_NATS_NKEY_SEED: cannot read {settings.nats_nkey_seed}")
            # a path, read by nats-py at each (re)connect to sign the server's nonce: the seed stays in its file
            security = NatsNKey.from_file(settings.nats_nkey_seed, ssl_context=context)
        elif context is not None:
            security = NatsSecurity(ssl_context=context)
    except ImportError as error:
        raise ConfigError('NATS credentials need the nkeys package: pip install "nats-py[nkeys]"') from error
    # "nats://a:4222,nats://b:4222" (as the nats CLI takes it): every seed server, so a start with one node down works
    servers = [server.strip() for server in url.split(",") if server.strip()]
    pull_timeouts.install()  # an idle consumer's empty fetches must not pile up dead tasks (see pull_timeouts.py)
    # FastStream's own access log is off: our stages log structlog events with the correlation id.
    return NatsBroker(
        servers,
        logger=None,
        middlewares=tracing.broker_middlewares(),  # spans per message when tracing is on (pipeline/tracing.py)
        connect_timeout=5,
        name="impromptu",
        security=security,
        error_cb=error_cb,
        **connect_options,  # e.g. `impromptu tail`'s reconnect-forever options and callbacks
    )


def _as_user(settings: Settings, url: str, user: BusUser) -> Settings:
    """`settings` joining the embedded server at `url` as `user` (no seed yet: its server predates them)."""
    seed = BusUsers(settings.nats_auth_dir).seed_file(user)
    update: dict[str, object] = {"nats_url": url}
    if seed.exists():
        update.update(nats_nkey_seed=seed, nats_credentials=None)
    return settings.model_copy(update=update)


def discover_url(settings: Settings) -> str:
    """For commands that join a running pipeline: NATS_URL, else the embedded server `impromptu run` started."""
    if settings.nats_url is not None:
        return settings.nats_url
    if settings.embedded_url_file.exists():
        return settings.embedded_url_file.read_text().strip()
    raise ConfigError("no NATS server to talk to: start the pipeline with `make run`, or set NATS_URL")


def discover(settings: Settings, user: BusUser = "admin") -> Settings:
    """`settings` joining a running pipeline: NATS_URL with its own credentials as given, else the embedded server
    `impromptu run` started, as its `user` (the CLI and ops: admin; a worker started with --stages: pipeline)."""
    if settings.nats_url is not None:
        return settings
    return _as_user(settings, discover_url(settings), user)


CONNECT_SECONDS = 10.0
CLOSE_SECONDS = 1.0


@asynccontextmanager
async def connected(settings: Settings, **connect_options: Any) -> AsyncIterator[NatsBroker]:
    """A broker with no subscribers, for the CLI: publish, read KV; on the embedded server as its admin user. A TLS
    failure is reported at once (retrying cannot fix a certificate), an unreachable server after CONNECT_SECONDS,
    each with the cause nats-py met. `connect_options` go to nats-py (`impromptu tail` reconnects forever)."""
    settings = discover(settings, "admin")
    url = settings.nats_url or ""
    failures: list[Exception] = []

    async def fail_fast_on_tls(error: Exception) -> None:
        failures[:] = [error]  # the last is the cause; a client reconnecting for days must not keep them all
        if isinstance(error, ssl.SSLError):
            raise error

    broker = new_broker(url, settings, error_cb=fail_fast_on_tls, **connect_options)
    try:
        await asyncio.wait_for(broker.connect(), CONNECT_SECONDS)
    except Exception as error:
        await broker.stop()
        cause = error if not isinstance(error, TimeoutError) or not failures else failures[-1]
        hint = ""
        anonymous = settings.nats_nkey_seed is None and settings.nats_credentials is None
        if anonymous and "authorization violation" in str(cause).lower():
            hint = (
                f"; if it is `impromptu run`'s own server, it takes only its users: leave NATS_URL unset to find it "
                f"through {settings.embedded_url_file}, or set "
                f"IMPROMPTU_NATS_NKEY_SEED={settings.nats_auth_dir / 'admin.nk'}"
            )
        raise ConfigError(f"cannot connect to NATS at {url}: {cause or type(cause).__name__}{hint}") from error
    try:
        await bus.ensure_stream(broker, settings, update=False)
        yield broker
    finally:
        connection = broker._connection  # FastStream's; stop() drains it, which a reconnecting client cannot do
        try:
            await broker.stop()
        except bus.NOT_ANSWERING:  # the server is away (Ctrl-C on a tail waiting for it): nothing to drain, close
            if connection is not None:
                with contextlib.suppress(TimeoutError):  # nats-py may wait on the lost socket: the process is ending
                    await asyncio.wait_for(connection.close(), CLOSE_SECONDS)
            broker.config.disconnect()
