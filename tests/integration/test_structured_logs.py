"""Every line a process writes is one structured log event, once: a real `impromptu run` (and the web server alone,
with a route that fails) under IMPROMPTU_LOG_JSON=true, fed malformed requests, an ASGI error, a lost NATS server,
an asyncio task whose exception nobody retrieves and a warning. Every stdout and stderr line must parse as JSON."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest

from pipeline.embedded import EmbeddedNats, free_port

pytestmark = pytest.mark.nats

IMPROMPTU = str(Path(sys.executable).parent / "impromptu")


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMPROMPTU_")}
    env.update(
        IMPROMPTU_DATA_DIR=str(tmp_path / "data"),
        IMPROMPTU_HTTP_PORT="0",
        IMPROMPTU_LOG_JSON="true",
        IMPROMPTU_SOURCES_ENABLED="false",
        IMPROMPTU_EMBEDDED_NATS_PORT=str(free_port()),
    )
    env.update(extra)
    return env


def _events(path: Path) -> list[dict[str, object]]:
    """Every line as JSON; a line that is not fails the test with the line."""
    events = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        try:
            event = json.loads(line)
        except ValueError:
            raise AssertionError(f"{path.name}:{number} is not a JSON line: {line!r}") from None
        assert isinstance(event, dict) and "event" in event and "level" in event, line
        events.append(event)
    return events


def _wait_for_url(stderr: Path, process: subprocess.Popen[bytes], timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in stderr.read_text().splitlines():
            if '"http.listening"' in line:
                return str(json.loads(line)["url"])
        assert process.poll() is None, stderr.read_text()
        time.sleep(0.1)
    raise AssertionError(f"no http.listening in {stderr.read_text()}")


def _raw(url: str, request: bytes) -> bytes:
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as conn:
        conn.sendall(request)
        return conn.recv(200)


MALFORMED = [
    b"GARBAGE\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
    b"GET /\x00 HTTP/1.1\r\n\r\n",
]


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_impromptu_run_writes_only_json_lines_through_bad_requests_and_a_lost_nats_server(
    tmp_path: Path, nats_server: EmbeddedNats
) -> None:
    out, err = tmp_path / "stdout.log", tmp_path / "stderr.log"
    env = _env(tmp_path, NATS_URL=nats_server.url)
    with out.open("wb") as stdout, err.open("wb") as stderr:
        process = subprocess.Popen([IMPROMPTU, "run"], env=env, stdout=stdout, stderr=stderr)
    try:
        url = _wait_for_url(err, process)
        for request in MALFORMED:
            assert _raw(url, request).startswith(b"HTTP/1.1 400")
        # forms the CSRF check cannot parse (or a multipart one without the token), a path that is not UTF-8
        multipart = {"Content-Type": "multipart/form-data; boundary=zz"}
        part = b'--zz\r\nContent-Disposition: form-data; name="a"\r\n\r\nb'
        broken = b"--zz\r\nnot a header line\r\n\r\nb\r\n--zz--"
        form = {"Content-Type": "application/x-www-form-urlencoded"}
        assert httpx.post(f"{url}/login", content=part, headers=multipart).status_code == 403
        assert httpx.post(f"{url}/login", content=broken, headers=multipart).status_code == 400
        no_boundary = {"Content-Type": "multipart/form-data"}
        assert httpx.post(f"{url}/login", content=b"xx", headers=no_boundary).status_code == 400
        assert httpx.post(f"{url}/login", content=b"name=\xff\xfe&password=x", headers=form).status_code == 400
        httpx.get(f"{url}/proposals/%ff%fe")
        nats_server.stop()  # nats-py and the stages see the server go, then come back
        time.sleep(2)
        assert httpx.get(f"{url}/api/proposals", headers={"Authorization": "Bearer nope"}).status_code == 401
        nats_server.start()
        deadline = time.monotonic() + 30
        while httpx.get(f"{url}/readyz").status_code != 200:
            assert time.monotonic() < deadline, "never ready again"
            time.sleep(0.2)
    finally:
        _stop(process)
    events = _events(err) + _events(out)
    names = [event["event"] for event in events]
    assert names.count("Invalid HTTP request received.") == len(MALFORMED)
    assert "pipeline.stopped" in names
    for event in events:
        assert not any(isinstance(v, str) and "Traceback (most recent call last)" in v for v in event.values())


WEB_SERVER = textwrap.dedent(
    """
    import asyncio, gc, logging, warnings
    from faststream.nats import NatsBroker
    from pipeline.logs import configure_logging
    from pipeline.settings import load_settings
    from pipeline.web.server import create_web_app, serve_http

    async def main():
        settings = load_settings()
        configure_logging(json=settings.log_json, level=settings.log_level)
        app = create_web_app(settings, NatsBroker())

        @app.get("/boom")
        async def boom():
            raise RuntimeError("a route that fails")

        @app.get("/orphan")
        async def orphan():
            async def fails():
                raise ValueError("nobody awaits me")
            asyncio.get_running_loop().create_task(fails())  # dropped: its exception is never retrieved
            await asyncio.sleep(0.05)
            gc.collect()  # the finished task is freed: asyncio logs its exception then
            warnings.warn("something is deprecated", DeprecationWarning)
            logging.getLogger("some.library").error("a library's error", exc_info=ValueError("inside"))
            return {"ok": True}

        await serve_http(settings, app)

    asyncio.run(main())
    """
)


def test_the_web_servers_asgi_errors_and_foreign_log_records_are_one_json_line_each(tmp_path: Path) -> None:
    out, err = tmp_path / "stdout.log", tmp_path / "stderr.log"
    env = _env(tmp_path, PYTHONWARNINGS="always")
    with out.open("wb") as stdout, err.open("wb") as stderr:
        process = subprocess.Popen([sys.executable, "-c", WEB_SERVER], env=env, stdout=stdout, stderr=stderr)
    try:
        url = _wait_for_url(err, process)
        assert httpx.get(f"{url}/boom").status_code == 500
        assert httpx.get(f"{url}/orphan").status_code == 200
        assert _raw(url, b"GARBAGE\r\n\r\n").startswith(b"HTTP/1.1 400")
        time.sleep(0.5)
    finally:
        _stop(process)
    events = _events(err) + _events(out)
    by_name = {str(event["event"]): event for event in events}
    asgi = [event for event in events if event["event"] == "Exception in ASGI application"]
    assert len(asgi) == 1 and asgi[0]["logger"] == "uvicorn.error" and asgi[0]["level"] == "error"
    (raised,) = asgi[0]["exception"]  # type: ignore[misc]
    assert raised["exc_type"] == "RuntimeError" and raised["exc_value"] == "a route that fails"
    assert raised["frames"][-1]["name"] == "boom" and "locals" not in raised["frames"][-1]
    library = by_name["a library's error"]
    assert library["logger"] == "some.library" and library["exception"][0]["exc_value"] == "inside"  # type: ignore[index]
    assert "Invalid HTTP request received." in by_name
    assert any("something is deprecated" in str(event["event"]) for event in events)
    orphans = [event for event in events if str(event["event"]).startswith("Task exception was never retrieved")]
    assert len(orphans) == 1 and orphans[0]["exception"][0]["exc_value"] == "nobody awaits me"  # type: ignore[index]


def test_impromptu_run_that_cannot_start_says_why_in_one_json_line(tmp_path: Path, nats_server: EmbeddedNats) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        env = _env(tmp_path, NATS_URL=nats_server.url, IMPROMPTU_HTTP_PORT=str(port))
        done = subprocess.run([IMPROMPTU, "run"], env=env, capture_output=True, timeout=60)
    assert done.returncode == 1
    (tmp_path / "stderr.log").write_bytes(done.stderr)
    (tmp_path / "stdout.log").write_bytes(done.stdout)
    events = _events(tmp_path / "stderr.log") + _events(tmp_path / "stdout.log")
    (failed,) = [event for event in events if event["event"] == "pipeline.failed"]
    assert failed["level"] == "error" and f"cannot listen for HTTP on 127.0.0.1:{port}" in str(failed["reason"])
