"""The media store against real servers: the NATS Object Store on the nats_server fixture, S3 on a moto server."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from faststream.nats import NatsBroker
from pydantic import SecretStr

from pipeline import bus
from pipeline.archive.media import MediaMissing, MediaRefused, MediaStore, media_store
from pipeline.archive.objectstore import CHUNK_BYTES, NatsMediaStore
from pipeline.errors import RetryableError
from pipeline.settings import Settings
from tests.media_writer import BLOCK, generated_sha256
from tests.s3_server import ACCESS_KEY_ID, SECRET_ACCESS_KEY, moto_server

pytestmark = pytest.mark.nats
WORKTREE = Path(__file__).resolve().parents[2]
MB = 1024 * 1024


@pytest.fixture(scope="module")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with moto_server(tmp_path_factory.mktemp("moto")) as endpoint:
        yield endpoint


def s3_settings(settings: Settings, endpoint: str, bucket: str) -> Settings:
    return settings.model_copy(
        update={
            "media_store": "s3",
            "media_bucket": bucket,
            "s3_endpoint_url": endpoint,
            "s3_access_key_id": ACCESS_KEY_ID,
            "s3_secret_access_key": SecretStr(SECRET_ACCESS_KEY),
            "s3_prefix": "media/",
        }
    )


@pytest.fixture(params=["nats", "s3"])
def store_settings(request: pytest.FixtureRequest, settings: Settings) -> Settings:
    if request.param == "nats":
        return settings
    # one bucket per test: the moto server lives for the module
    bucket = "media-" + hashlib.sha256(request.node.nodeid.encode()).hexdigest()[:16]
    return s3_settings(settings, request.getfixturevalue("s3_endpoint"), bucket)


@pytest.fixture
async def store(store_settings: Settings, client: NatsBroker) -> AsyncIterator[MediaStore]:
    media = await media_store(store_settings, client)
    yield media
    await media.close()


async def pieces(data: bytes, step: int = 100_000) -> AsyncIterator[bytes]:
    for start in range(0, len(data), step):
        yield data[start : start + step]


async def read_all(store: MediaStore, key: str, start: int = 0, end: int | None = None) -> bytes:
    return b"".join([piece async for piece in store.read(key, start, end)])


async def leftovers(store: MediaStore, client: NatsBroker) -> dict[str, int]:
    """What the store holds on its server: stream messages and bytes (NATS), objects and incomplete multipart
    uploads (S3)."""
    if isinstance(store, NatsMediaStore):
        state = (await bus.jetstream(client).stream_info(store.stream)).state
        return {"messages": state.messages, "bytes": state.bytes}
    s3 = store._client  # the store's own client: same endpoint and credentials
    objects = await s3.list_objects_v2(Bucket=store.bucket)
    uploads = await s3.list_multipart_uploads(Bucket=store.bucket)
    return {
        "objects": objects.get("KeyCount", 0),
        "bytes": sum(item["Size"] for item in objects.get("Contents", [])),
        "uploads": len(uploads.get("Uploads", [])),
    }


@pytest.mark.parametrize("size", [0, 1, CHUNK_BYTES, 3 * CHUNK_BYTES + 5, 9 * MB + 7])
async def test_an_object_reads_back_as_it_was_stored(store: MediaStore, size: int) -> None:
    data = os.urandom(size)
    stored = await store.put("talks/one.mp4", pieces(data), content_type="video/mp4", max_bytes=20 * MB)
    sha256 = hashlib.sha256(data).hexdigest()
    assert (stored.size, stored.sha256, stored.content_type) == (size, sha256, "video/mp4")
    assert await store.stat("talks/one.mp4") == stored
    assert await read_all(store, "talks/one.mp4") == data


async def test_a_digest_that_does_not_match_is_refused_and_nothing_is_left(
    store: MediaStore, client: NatsBroker
) -> None:
    empty = await leftovers(store, client)
    data = os.urandom(2 * MB)
    with pytest.raises(MediaRefused, match="SHA-256"):
        await store.put("a.mp4", pieces(data), content_type="video/mp4", max_bytes=10 * MB, expected_sha256="0" * 64)
    with pytest.raises(MediaRefused, match="expected"):
        await store.put("a.mp4", pieces(data), content_type="video/mp4", max_bytes=10 * MB, expected_size=len(data) - 1)
    assert await store.stat("a.mp4") is None
    assert await leftovers(store, client) == empty
    good = await store.put(
        "a.mp4",
        pieces(data),
        content_type="video/mp4",
        max_bytes=10 * MB,
        expected_sha256=hashlib.sha256(data).hexdigest().upper(),
        expected_size=len(data),
    )
    assert await store.stat("a.mp4") == good


async def test_an_object_over_the_cap_is_refused_before_it_is_all_read(store: MediaStore, client: NatsBroker) -> None:
    empty = await leftovers(store, client)
    sent: list[int] = []

    async def endless() -> AsyncIterator[bytes]:
        while True:
            sent.append(MB)
            yield os.urandom(MB)

    with pytest.raises(MediaRefused, match="cap"):
        await store.put("big.mp4", endless(), content_type="video/mp4", max_bytes=12 * MB)
    assert sum(sent) == 13 * MB  # stopped at the first piece past the cap
    with pytest.raises(MediaRefused, match="cap"):
        await store.put("big.mp4", pieces(b""), content_type="video/mp4", max_bytes=MB, expected_size=MB + 1)
    assert await store.stat("big.mp4") is None
    assert await leftovers(store, client) == empty


async def test_ranges_are_the_bytes_at_that_place(store: MediaStore) -> None:
    data = os.urandom(10 * MB + 12345)
    size = len(data)
    await store.put("r.mp4", pieces(data, 1_000_003), content_type="video/mp4", max_bytes=20 * MB)
    for start, end in [
        (0, 0),
        (0, 99),
        (CHUNK_BYTES - 1, CHUNK_BYTES),  # across a chunk boundary
        (5 * MB - 3, 6 * MB + 17),  # the middle, across NATS chunks and S3 parts
        (size - 10, size - 1),  # the end
        (size - 1000, None),  # what a suffix range `-1000` reads
        (size - 5, size + 100),  # past the end: clipped
    ]:
        assert await read_all(store, "r.mp4", start, end) == data[start : None if end is None else end + 1], (
            start,
            end,
        )


async def test_a_replaced_object_leaves_nothing_of_the_old_one(store: MediaStore, client: NatsBroker) -> None:
    first, second = os.urandom(3 * MB), os.urandom(3 * MB)
    await store.put("x.mp4", pieces(first), content_type="video/mp4", max_bytes=10 * MB)
    once = await leftovers(store, client)
    await store.put("x.mp4", pieces(second), content_type="video/webm", max_bytes=10 * MB)
    assert await read_all(store, "x.mp4") == second
    assert (await store.stat("x.mp4")).content_type == "video/webm"  # type: ignore[union-attr]
    after = await leftovers(store, client)
    if isinstance(store, NatsMediaStore):
        assert after["messages"] == once["messages"]
        assert abs(after["bytes"] - once["bytes"]) < 200  # only the meta's length may differ
    else:
        assert after == once


async def test_delete_removes_meta_chunks_and_index(store: MediaStore, client: NatsBroker) -> None:
    empty = await leftovers(store, client)
    await store.put("d.mp4", pieces(os.urandom(MB)), content_type="video/mp4", max_bytes=10 * MB)
    await store.delete("d.mp4")
    assert await store.stat("d.mp4") is None
    with pytest.raises(MediaMissing):
        await read_all(store, "d.mp4")
    assert await leftovers(store, client) == empty
    await store.delete("d.mp4")  # absent: fine


async def test_objects_are_readable_both_ways_with_nats_py(client: NatsBroker, settings: Settings) -> None:
    store = await media_store(settings, client)
    assert isinstance(store, NatsMediaStore)
    ours, theirs = os.urandom(MB + 17), os.urandom(MB + 31)
    await store.put("ours.mp4", pieces(ours), content_type="video/mp4", max_bytes=10 * MB)
    nats_py = await bus.jetstream(client).object_store(settings.media_bucket)
    result = await nats_py.get("ours.mp4")  # nats-py checks the digest as it reads
    assert result.data == ours
    assert result.info.headers == {"Content-Type": ["video/mp4"]}

    await nats_py.put("theirs.bin", theirs)  # no index of ours: read by walking its chunks
    assert await read_all(store, "theirs.bin") == theirs
    assert (
        await read_all(store, "theirs.bin", CHUNK_BYTES + 3, 3 * CHUNK_BYTES)
        == theirs[CHUNK_BYTES + 3 : 3 * CHUNK_BYTES + 1]
    )
    stat = await store.stat("theirs.bin")
    assert stat is not None and stat.sha256 == hashlib.sha256(theirs).hexdigest()


async def test_reads_leave_no_consumer_on_the_server(client: NatsBroker, settings: Settings) -> None:
    store = await media_store(settings, client)
    assert isinstance(store, NatsMediaStore)
    js = bus.jetstream(client)
    data = os.urandom(2 * MB)
    await store.put("c.mp4", pieces(data), content_type="video/mp4", max_bytes=10 * MB)
    before = len(await js.consumers_info(store.stream))
    assert await read_all(store, "c.mp4", MB, None) == data[MB:]
    reader = store.read("c.mp4")
    assert await anext(reader)  # a client that goes away after the first piece
    await reader.aclose()
    assert len(await js.consumers_info(store.stream)) == before == 0


async def test_a_second_put_while_one_runs_waits_and_harms_nothing(client: NatsBroker, settings: Settings) -> None:
    store = await media_store(settings, client)
    data = os.urandom(2 * MB)
    release = asyncio.Event()

    async def slow() -> AsyncIterator[bytes]:
        yield data[:MB]
        await release.wait()
        yield data[MB:]

    running = asyncio.create_task(store.put("s.mp4", slow(), content_type="video/mp4", max_bytes=10 * MB))
    await asyncio.sleep(0.2)
    with pytest.raises(RetryableError, match="in progress"):
        await store.put("s.mp4", pieces(b"other"), content_type="video/mp4", max_bytes=10 * MB)
    release.set()
    await running
    assert await read_all(store, "s.mp4") == data


def start_writer(store_settings: Settings, key: str, size_mb: int, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(WORKTREE), "IMPROMPTU_NATS_URL": store_settings.nats_url or ""}
    env |= {"IMPROMPTU_MEDIA_STORE": store_settings.media_store, "IMPROMPTU_MEDIA_BUCKET": store_settings.media_bucket}
    if store_settings.media_store == "s3":
        env |= {
            "IMPROMPTU_S3_ENDPOINT_URL": store_settings.s3_endpoint_url or "",
            "IMPROMPTU_S3_ACCESS_KEY_ID": ACCESS_KEY_ID,
            "IMPROMPTU_S3_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY,
            "IMPROMPTU_S3_PREFIX": store_settings.s3_prefix,
        }
    command = [sys.executable, "-m", "tests.media_writer", key, str(size_mb), *args]
    return subprocess.Popen(command, cwd=WORKTREE, env=env, stdout=subprocess.PIPE, text=True)


async def test_a_put_killed_midway_leaves_nothing_once_put_again(store_settings: Settings, client: NatsBroker) -> None:
    key, size_mb = "killed.mp4", 40
    writer = start_writer(store_settings, key, size_mb, "--pause-after-mb", "24")
    try:
        line = await asyncio.wait_for(asyncio.to_thread(writer.stdout.readline), 30)  # type: ignore[union-attr]
        assert json.loads(line) == {"paused": 24 * BLOCK}
        await asyncio.sleep(0.3)  # the last chunks' acks / the last part in flight
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait()
        writer.stdout.close()  # type: ignore[union-attr]

    if store_settings.media_store == "nats":
        store: MediaStore = await NatsMediaStore.open(
            bus.jetstream(client), store_settings.media_bucket, upload_lease_seconds=1.0
        )
    else:
        store = await media_store(store_settings, client)
    try:
        halfway = await leftovers(store, client)
        assert halfway["bytes" if isinstance(store, NatsMediaStore) else "uploads"] > 0  # the killed put left some
        assert await store.stat(key) is None
        for _ in range(50):  # the redelivered recording: retried while the killed put's lease runs out
            try:
                await store.put(key, regenerated(size_mb), content_type="video/mp4", max_bytes=size_mb * MB)
                break
            except RetryableError:
                await asyncio.sleep(0.1)
        stored = await store.stat(key)
        assert stored is not None and stored.sha256 == generated_sha256(1, size_mb)
        after = await leftovers(store, client)
        if isinstance(store, NatsMediaStore):
            index_and_meta = 4096
            assert size_mb * MB <= after["bytes"] < size_mb * MB + (size_mb * MB // CHUNK_BYTES) * 100 + index_and_meta
        else:
            assert after["uploads"] == 0 and after["objects"] == 1
    finally:
        await store.close()


async def regenerated(size_mb: int) -> AsyncIterator[bytes]:
    from tests.media_writer import block

    for number in range(size_mb):
        yield block(1, number)


@pytest.mark.media_size
def test_a_200_mb_put_stays_under_300_mb_of_memory(store_settings: Settings) -> None:
    writer = start_writer(store_settings, "big.mp4", 200)
    output, _ = writer.communicate(timeout=120)
    result = json.loads(output.strip().splitlines()[-1])
    assert result["stored"] == 200 * MB
    assert result["sha256"] == generated_sha256(1, 200)
    assert result["maxrss_mb"] < 300, result
