"""The pipeline's HTTP server: `impromptu run` answers POST /shares next to the stages; `serve_http` on its own."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from faststream.nats import NatsBroker
from pydantic import SecretStr
from structlog.testing import capture_logs

from pipeline import bus
from pipeline.app import serve
from pipeline.embedded import EmbeddedNats
from pipeline.errors import ConfigError
from pipeline.messages import Share
from pipeline.settings import Settings
from pipeline.signing import sign
from pipeline.web.server import create_web_app, serve_http
from tests.integration.bus_helpers import models_on, wait_for_count

pytestmark = pytest.mark.nats

IMPROMPTU = str(Path(sys.executable).parent / "impromptu")
SECRET = "integration-secret-never-logged"
BODY = json.dumps({"url": "https://example.com/leadership", "by": "@britz", "id": "hook-1"}).encode()


def signed() -> dict[str, str]:
    """Headers signing BODY now (a signature carries its time: one made at import could be stale by the test)."""
    return {**sign(SECRET.encode(), str(int(time.time())), BODY), "content-type": "application/json"}


def _events(log_file: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in log_file.read_text().splitlines() if line.startswith("{")]


def _wait_for_event(log_file: Path, name: str, timeout: float = 30.0) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := [e for e in _events(log_file) if e["event"] == name]:
            return found[0]
        time.sleep(0.05)
    raise AssertionError(f"no {name} event within {timeout}s:\n{log_file.read_text()}")


async def test_impromptu_run_answers_post_shares_and_stops_the_server_on_ctrl_c(
    tmp_path: Path, nats_server: EmbeddedNats, client: NatsBroker
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMPROMPTU_")}
    env.update(
        NATS_URL=nats_server.url,
        IMPROMPTU_DATA_DIR=str(tmp_path / "data"),
        IMPROMPTU_HTTP_PORT="0",
        IMPROMPTU_WEBHOOK_SECRET=SECRET,
        IMPROMPTU_SOURCES_ENABLED="false",
        IMPROMPTU_LOG_JSON="true",
    )
    log_file = tmp_path / "run.log"
    with log_file.open("wb") as log:
        process = subprocess.Popen([IMPROMPTU, "run"], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        url = str(_wait_for_event(log_file, "http.listening")["url"])
        _wait_for_event(log_file, "pipeline.ready")
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:
            accepted = await http.post("/shares", content=BODY, headers=signed())
            unsigned = await http.post("/shares", content=BODY)
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=20) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    assert url.startswith("http://127.0.0.1:") and not url.endswith(":0")
    assert accepted.status_code == 202, accepted.text
    assert accepted.json() == {"id": "webhook:hook-1", "duplicate": False, "seq": accepted.json()["seq"]}
    assert unsigned.status_code == 401
    await wait_for_count(client, bus.SHARES.subject, 1)
    (share,) = await models_on(client, bus.SHARES.subject, Share)
    assert (share.id, share.source) == ("webhook:hook-1", "webhook")
    with pytest.raises(httpx.ConnectError):
        httpx.post(f"{url}/shares", content=BODY, headers=signed())
    assert [e["event"] for e in _events(log_file)][-1] == "pipeline.stopped"
    assert SECRET not in log_file.read_text()


async def test_serve_http_reports_the_real_port_and_stops_when_cancelled(
    settings: Settings, client: NatsBroker
) -> None:
    live = settings.model_copy(update={"http_port": 0, "webhook_secret": SecretStr(SECRET)})
    ready = asyncio.Event()
    with capture_logs() as logs:
        server = asyncio.create_task(serve_http(live, create_web_app(live, client), ready))
        await asyncio.wait_for(ready.wait(), 10)
    (listening,) = [e for e in logs if e["event"] == "http.listening"]
    url = str(listening["url"])
    try:
        async with httpx.AsyncClient(base_url=url) as http:
            response = await http.post("/shares", content=BODY, headers=signed())
    finally:
        server.cancel()
        with pytest.raises(asyncio.CancelledError):
            await server

    assert response.status_code == 202
    port = int(url.rsplit(":", 1)[1])
    assert port != 0
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        pass


async def test_a_taken_port_is_a_config_error_before_any_stage_starts(settings: Settings) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        busy = settings.model_copy(update={"http_port": taken.getsockname()[1]})
        with pytest.raises(ConfigError, match="IMPROMPTU_HTTP_PORT"):
            await serve_http(busy, create_web_app(busy, NatsBroker()))
        with capture_logs() as logs, pytest.raises(ConfigError, match="cannot listen for HTTP"):
            await serve(busy)
    assert "pipeline.ready" not in [e["event"] for e in logs]
