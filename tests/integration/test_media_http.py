"""media_response serving stored objects to a player, on both stores (real nats-server, real moto server)."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator

import httpx
import pytest
import uvicorn
from faststream.nats import NatsBroker
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from pipeline import bus
from pipeline.archive.media import MediaStore, StoredObject, media_store
from pipeline.archive.media_http import media_response
from pipeline.archive.objectstore import NatsMediaStore
from pipeline.embedded import free_port
from pipeline.messages import KeptFile
from pipeline.settings import Settings
from tests.integration.test_media_store import pieces, s3_endpoint, store_settings  # noqa: F401 - fixtures

pytestmark = pytest.mark.nats
SIZE = 700_001
DATA = os.urandom(SIZE)
ETAG = f'"{hashlib.sha256(DATA).hexdigest()}"'


def kept(key: str = "talk.mp4") -> KeptFile:
    return KeptFile(
        kind="video",
        store="nats",
        key=key,
        content_type="video/mp4",
        size=SIZE,
        sha256=ETAG.strip('"'),
        filename="Café Zürich – a talk.mp4",
    )


def player_app(store: MediaStore) -> Starlette:
    async def media(request: Request) -> Response:
        return await media_response(store, kept(request.path_params["key"]), request)

    return Starlette(routes=[Route("/media/{key}", media, methods=["GET", "HEAD"])])


@pytest.fixture
async def store(store_settings: Settings, client: NatsBroker) -> AsyncIterator[MediaStore]:  # noqa: F811
    media = await media_store(store_settings, client)
    await media.put("talk.mp4", pieces(DATA), content_type="video/mp4", max_bytes=SIZE)
    yield media
    await media.close()


@pytest.fixture
async def http(store: MediaStore) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=player_app(store))
    async with httpx.AsyncClient(transport=transport, base_url="http://library") as client:
        yield client


async def test_the_whole_object_with_its_type_etag_and_name(http: httpx.AsyncClient) -> None:
    response = await http.get("/media/talk.mp4")
    assert response.status_code == 200
    assert response.content == DATA
    assert response.headers["content-type"] == "video/mp4"
    assert response.headers["content-length"] == str(SIZE)
    assert response.headers["accept-ranges"] == "bytes"
    assert response.headers["etag"] == ETAG
    assert response.headers["content-disposition"] == (
        'inline; filename="Caf_ Z_rich _ a talk.mp4"; '
        "filename*=UTF-8''Caf%C3%A9%20Z%C3%BCrich%20%E2%80%93%20a%20talk.mp4"
    )


@pytest.mark.parametrize(
    ("header", "start", "end"),
    [
        ("bytes=0-0", 0, 0),
        ("bytes=0-99", 0, 99),
        ("bytes=300000-400000", 300000, 400000),  # a seek into the middle
        ("bytes=700000-", 700000, SIZE - 1),
        ("bytes=-1000", SIZE - 1000, SIZE - 1),
        ("bytes=-9999999", 0, SIZE - 1),  # a suffix longer than the object: all of it
        ("bytes=699990-9999999", 699990, SIZE - 1),  # an end past the end: clipped
    ],
)
async def test_a_range_is_206_with_those_bytes(http: httpx.AsyncClient, header: str, start: int, end: int) -> None:
    response = await http.get("/media/talk.mp4", headers={"Range": header})
    assert response.status_code == 206
    assert response.content == DATA[start : end + 1]
    assert response.headers["content-range"] == f"bytes {start}-{end}/{SIZE}"
    assert response.headers["content-length"] == str(end - start + 1)


@pytest.mark.parametrize("header", ["bytes=700001-", "bytes=800000-900000", "bytes=-0"])
async def test_a_range_past_the_end_is_416(http: httpx.AsyncClient, header: str) -> None:
    response = await http.get("/media/talk.mp4", headers={"Range": header})
    assert response.status_code == 416
    assert response.headers["content-range"] == f"bytes */{SIZE}"


@pytest.mark.parametrize("header", ["bytes=0-9,20-29", "bytes=9-2", "items=0-9", "bytes=abc"])
async def test_several_ranges_or_a_wrong_header_get_the_whole_object(http: httpx.AsyncClient, header: str) -> None:
    response = await http.get("/media/talk.mp4", headers={"Range": header})
    assert response.status_code == 200
    assert response.content == DATA


async def test_if_none_match_is_304_and_if_range_keeps_a_range_only_for_the_same_etag(http: httpx.AsyncClient) -> None:
    for header in [ETAG, f"W/{ETAG}", f'"other", {ETAG}', "*"]:
        response = await http.get("/media/talk.mp4", headers={"If-None-Match": header})
        assert response.status_code == 304, header
        assert response.content == b""
        assert response.headers["etag"] == ETAG
    assert (await http.get("/media/talk.mp4", headers={"If-None-Match": '"other"'})).status_code == 200

    same = await http.get("/media/talk.mp4", headers={"Range": "bytes=10-19", "If-Range": ETAG})
    assert (same.status_code, same.content) == (206, DATA[10:20])
    changed = await http.get("/media/talk.mp4", headers={"Range": "bytes=10-19", "If-Range": '"an older one"'})
    assert (changed.status_code, changed.content) == (200, DATA)


async def test_head_has_the_headers_and_no_body(http: httpx.AsyncClient) -> None:
    whole = await http.head("/media/talk.mp4")
    assert (whole.status_code, whole.content) == (200, b"")
    assert whole.headers["content-length"] == str(SIZE)
    assert whole.headers["etag"] == ETAG
    part = await http.head("/media/talk.mp4", headers={"Range": "bytes=5-9"})
    assert (part.status_code, part.content) == (206, b"")
    assert part.headers["content-range"] == f"bytes 5-9/{SIZE}"
    assert part.headers["content-length"] == "5"


async def test_a_missing_object_is_404(http: httpx.AsyncClient) -> None:
    assert (await http.get("/media/gone.mp4")).status_code == 404


class CountingStore:
    """The store, counting readers still open: a reader left open holds the store's resources for the read."""

    def __init__(self, store: MediaStore) -> None:
        self.store = store
        self.name = store.name
        self.open_readers = 0

    async def stat(self, key: str) -> StoredObject | None:
        return await self.store.stat(key)

    async def read(self, key: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        self.open_readers += 1
        try:
            async for piece in self.store.read(key, start, end):
                yield piece
        finally:
            self.open_readers -= 1


async def test_a_client_gone_mid_stream_leaves_no_reader_or_consumer(client: NatsBroker, settings: Settings) -> None:
    store = await media_store(settings, client)
    assert isinstance(store, NatsMediaStore)
    big = os.urandom(30 * 1024 * 1024)
    await store.put("big.mp4", pieces(big, 1024 * 1024), content_type="video/mp4", max_bytes=len(big))
    counting = CountingStore(store)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(player_app(counting), host="127.0.0.1", port=port, log_level="warning"))  # type: ignore[arg-type]
    serving = asyncio.create_task(server.serve())
    try:
        while not server.started:
            await asyncio.sleep(0.02)
        async with (
            httpx.AsyncClient() as http,
            http.stream("GET", f"http://127.0.0.1:{port}/media/big.mp4") as response,
        ):
            assert response.status_code == 200
            async for _ in response.aiter_raw():
                assert counting.open_readers == 1
                break  # the viewer closes the tab
        for _ in range(100):
            if counting.open_readers == 0:
                break
            await asyncio.sleep(0.05)
        assert counting.open_readers == 0
        assert await bus.jetstream(client).consumers_info(store.stream) == []
    finally:
        server.should_exit = True
        await serving
