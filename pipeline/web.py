"""The pipeline's HTTP server: one FastAPI app composed of each feature's router, served by uvicorn.

`create_web_app` only includes routers; each feature (the share webhook now; approval pages, metrics later) keeps
its routes beside its own code. `serve_http` runs the app inside the pipeline's event loop, next to the stages.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator

import structlog
import uvicorn
from fastapi import FastAPI
from faststream.nats import NatsBroker

from pipeline.errors import ConfigError
from pipeline.settings import Settings
from pipeline.triggers.webhook import webhook_router

log = structlog.get_logger("pipeline.web")

GRACEFUL_SHUTDOWN_SECONDS = 5


def create_web_app(settings: Settings, broker: NatsBroker) -> FastAPI:
    """The HTTP app; `broker` is the pipeline's own, connected by whoever runs the stages."""
    app = FastAPI(title="Impromptu", summary="Shares in; later approvals and metrics.", version="0.1.0")
    app.include_router(webhook_router(settings, broker))
    return app


class _SignalFreeServer(uvicorn.Server):
    """uvicorn without its SIGINT/SIGTERM handlers: FastStream owns them and stops the HTTP server with the rest."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def listen(host: str, port: int) -> socket.socket:
    """A listening socket, bound here so that a taken port is a clear error rather than uvicorn's sys.exit."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family)
    except OSError as error:
        raise ConfigError(
            f"cannot listen for HTTP on {host}:{port}: {error.strerror}; set IMPROMPTU_HTTP_PORT (0: any free port)"
        ) from error


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


async def serve_http(settings: Settings, app: FastAPI, ready: asyncio.Event | None = None) -> None:
    """Serve `app` on settings.http_host:http_port until cancelled; then finish in-flight requests and return.

    Logs `http.listening` with the real URL (the real port when http_port is 0) and sets `ready` once accepting.
    Raises ConfigError at once when the address cannot be bound.
    """
    config = uvicorn.Config(
        app,
        host=settings.http_host,
        port=settings.http_port,
        log_config=None,
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
    )
    sock = listen(settings.http_host, settings.http_port)
    server = _SignalFreeServer(config)
    serving = asyncio.create_task(server.serve(sockets=[sock]), name="http-server")
    try:
        while not server.started:
            if serving.done():
                serving.result()  # startup failed: raise its error
                return
            await asyncio.sleep(0.01)
        log.info("http.listening", url=url_of(server.servers[0].sockets[0]))
        if ready is not None:
            ready.set()
        await asyncio.shield(serving)
    finally:
        server.should_exit = True
        await serving  # uvicorn stops accepting, lets in-flight requests finish, closes the socket
        sock.close()
        log.info("http.stopped")
