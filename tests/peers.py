"""Local HTTP peers for tests: a small ASGI app (FastAPI) served by uvicorn on 127.0.0.1 on a free port.

Providers' documented payloads are served from these, so adapters are tested over real HTTP, not mocked calls.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn
from fastapi import FastAPI


class _QuietServer(uvicorn.Server):
    def install_signal_handlers(self) -> None:  # runs in a thread: signals stay with pytest
        pass


@contextmanager
def serve(app: FastAPI) -> Iterator[str]:
    """Serve `app` until the block ends; yields its base URL (http://127.0.0.1:PORT)."""
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_config=None, access_log=False, lifespan="off")
    server = _QuietServer(config)
    thread = threading.Thread(target=server.run, name="local-peer", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("local peer did not start")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
