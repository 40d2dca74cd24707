"""Request bodies are bounded before anyone reads them: a 150 MB body to a real server on loopback is refused
after its first bytes with the process's memory flat, a chunked one as soon as it passes the limit, and the JSON
API checks its Bearer token before FastAPI parses the body."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from fastapi import FastAPI
from faststream.nats import NatsBroker
from structlog.testing import capture_logs

from pipeline.actions.service import Approvals
from pipeline.domain.live_rules import LiveRules
from pipeline.settings import Settings
from pipeline.web.limits import DEFAULT_MAX_BODY_BYTES, ROUTE_MAX_BODY_BYTES
from pipeline.web.server import create_web_app, serve_http
from tests.integration.test_approval_web import bearer, browser, web_app, web_settings

pytestmark = pytest.mark.nats
__all__ = ["web_app", "web_settings"]  # fixtures shared with test_approval_web

HUGE = 150 * 1024 * 1024
CHUNK = b"x" * (1024 * 1024)


def rss_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@asynccontextmanager
async def serving(settings: Settings, client: NatsBroker) -> AsyncIterator[tuple[str, int]]:
    app = create_web_app(settings, client, Approvals(client, settings, LiveRules.load(settings.rules_file)))
    ready = asyncio.Event()
    server = asyncio.create_task(serve_http(settings, app, ready))
    await asyncio.wait_for(ready.wait(), 10)
    try:
        yield settings.http_host, settings.http_port
    finally:
        server.cancel()
        with pytest.raises(asyncio.CancelledError):
            await server


async def post_huge(address: tuple[str, int], head: bytes, body_chunk: bytes, total: int) -> tuple[bytes, int]:
    """Send `head`, then `body_chunk` over and over up to `total` bytes while waiting for the answer, as a client
    that does not wait for 100-continue would; the answer's first bytes, and how much was sent before it came."""
    reader, writer = await asyncio.open_connection(*address)
    sent = 0

    async def send_body() -> None:
        nonlocal sent
        writer.write(head)
        while sent < total:
            writer.write(body_chunk)
            sent += len(body_chunk)
            await writer.drain()

    sending = asyncio.create_task(send_body())
    try:
        answer = await asyncio.wait_for(reader.read(4096), 60)
    finally:
        sending.cancel()
        await asyncio.gather(sending, return_exceptions=True)
        writer.close()
    return answer, sent


def chunked(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


async def test_a_150_mb_login_is_refused_early_and_memory_stays_flat(
    web_settings: Settings, client: NatsBroker
) -> None:
    async with serving(web_settings, client) as address:
        before = rss_bytes()
        head = (
            f"POST /login HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
            f"Content-Length: {HUGE}\r\n\r\n"
        ).encode()
        with capture_logs() as logs:
            declared, sent_declared = await post_huge(address, head, CHUNK, HUGE)
        stream_head = b"PATCH /api/proposals/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        streamed, sent_streamed = await post_huge(address, stream_head, chunked(CHUNK), HUGE)
        grown = rss_bytes() - before

    assert declared.startswith(b"HTTP/1.1 413"), declared
    body = json.loads(declared.split(b"\r\n\r\n", 1)[1])
    assert body == {"error": "body_too_large", "detail": f"the body of POST /login must be at most {262144} bytes"}
    assert [e["event"] for e in logs if e["event"] == "web.body_too_large"] == ["web.body_too_large"]
    # no token on the API: refused before a byte of the body is read, whatever its size
    assert streamed.startswith(b"HTTP/1.1 401"), streamed
    # the answer came while the client was still sending: far from the 150 MB
    assert sent_declared < 40 * 1024 * 1024 and sent_streamed < 40 * 1024 * 1024, (sent_declared, sent_streamed)
    assert grown < 30 * 1024 * 1024, f"RSS grew by {grown / 2**20:.0f} MiB"


async def test_a_chunked_body_is_cut_off_once_it_passes_the_limit(web_settings: Settings, client: NatsBroker) -> None:
    async with serving(web_settings, client) as address:
        head = b"POST /login HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=zz\r\n"
        head += b"Transfer-Encoding: chunked\r\n\r\n"
        answer, sent = await post_huge(address, head, chunked(b"y" * 16384), HUGE)
    assert answer.startswith(b"HTTP/1.1 413"), answer
    assert b"must be at most 262144 bytes" in answer
    assert sent < 40 * 1024 * 1024


async def test_each_route_has_its_limit_and_a_body_under_it_passes(web_app: FastAPI) -> None:
    assert DEFAULT_MAX_BODY_BYTES == 256 * 1024 and ROUTE_MAX_BODY_BYTES == {"/webhooks/zoom": 512 * 1024}
    body = b"z" * (300 * 1024)
    async with browser(web_app) as http:
        login = await http.post("/login", content=body, headers={"Content-Type": "application/x-www-form-urlencoded"})
        zoom = await http.post("/webhooks/zoom", content=body, headers={"Content-Type": "application/json"})
        small = await http.post(
            "/login", content=b"name=ana", headers={"Content-Type": "application/x-www-form-urlencoded"}
        )
    assert login.status_code == 413 and login.json()["error"] == "body_too_large"
    assert zoom.status_code == 503  # past the app-wide limit but within Zoom's: the route's own answer (no secret set)
    assert small.status_code == 403  # read, and refused for want of its CSRF token


async def test_the_api_checks_its_token_before_it_reads_the_body(web_app: FastAPI) -> None:
    """Called as uvicorn calls the app, with a body the route never gets to ask for."""
    reads = 0

    async def receive() -> dict[str, object]:
        nonlocal reads
        reads += 1
        return {"type": "http.request", "body": b'{"title": "' + b"t" * 100_000 + b'"}', "more_body": False}

    answers: list[dict[str, object]] = []

    async def send(message: dict[str, object]) -> None:
        answers.append(message)

    for authorization in (None, b"Bearer imp_not-a-token"):
        answers.clear()
        headers = [(b"content-type", b"application/json"), (b"content-length", b"100013")]
        if authorization:
            headers.append((b"authorization", authorization))
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "PATCH",
            "scheme": "http",
            "path": "/api/proposals/x",
            "raw_path": b"/api/proposals/x",
            "root_path": "",
            "query_string": b"",
            "headers": headers,
            "client": ("127.0.0.1", 5000),
            "server": ("127.0.0.1", 8000),
        }
        await web_app(scope, receive, send)
        assert answers[0]["status"] == 401
    assert reads == 0
    async with browser(web_app) as http:  # and with the token the same call goes through to the route
        known = await http.patch("/api/proposals/x", json={"title": "New"}, headers=bearer("ana"))
    assert known.status_code == 404 and known.json()["error"] == "not_found"
