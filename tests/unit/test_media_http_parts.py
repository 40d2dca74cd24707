"""The pure parts of the media store and its HTTP answer: range parsing, file names, the chunk index, and the
streamed response closing its reader."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from starlette.requests import ClientDisconnect

from pipeline.archive.media_http import ObjectStream, Unsatisfiable, content_disposition, parse_range
from pipeline.archive.objectstore import ChunkIndex, digest_field, digest_hex

SIZE = 1000


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("bytes=0-0", (0, 0)),
        ("bytes=0-499", (0, 499)),
        ("bytes=500-", (500, 999)),
        ("bytes=-100", (900, 999)),
        ("bytes=-5000", (0, 999)),
        ("bytes=990-5000", (990, 999)),
        ("BYTES = 1 - 2", (1, 2)),
        ("bytes=0-9,20-29", None),  # several ranges: the whole object
        ("bytes=9-2", None),
        ("bytes=-", None),
        ("bytes=a-b", None),
        ("pages=1-2", None),
        ("", None),
    ],
)
def test_a_single_range_is_parsed_and_anything_else_is_the_whole_object(
    header: str, expected: tuple[int, int] | None
) -> None:
    assert parse_range(header, SIZE) == expected


@pytest.mark.parametrize(
    ("header", "size"),
    [("bytes=1000-", SIZE), ("bytes=2000-3000", SIZE), ("bytes=-0", SIZE), ("bytes=0-", 0), ("bytes=-5", 0)],
)
def test_a_range_of_nothing_is_unsatisfiable(header: str, size: int) -> None:
    with pytest.raises(Unsatisfiable):
        parse_range(header, size)


def test_a_file_name_in_any_script_is_offered_safely() -> None:
    assert content_disposition('Genève "live"; ok.mp4') == (
        "inline; filename=\"Gen_ve _live__ ok.mp4\"; filename*=UTF-8''Gen%C3%A8ve%20%22live%22%3B%20ok.mp4"
    )


def test_the_chunk_index_finds_each_chunk_and_stays_small_when_interleaved() -> None:
    contiguous = list(range(10, 10 + 16384))
    index = ChunkIndex.of(131072, contiguous)
    assert index.runs == ((10, 16384),)
    assert [index.sequence(n) for n in (0, 1, 16383)] == [10, 11, 16393]
    interleaved = [5 + 2 * n for n in range(16384)] + [100_000, 100_001]  # another put wrote every other message
    decoded = ChunkIndex.decode(ChunkIndex.of(131072, interleaved).encode())
    assert [decoded.sequence(n) for n in range(len(interleaved))] == interleaved
    assert decoded.chunks == len(interleaved)
    assert len(ChunkIndex.of(131072, interleaved).encode()) < 100_000
    with pytest.raises(IndexError):
        decoded.sequence(len(interleaved))


def test_the_digest_field_is_nats_object_store_s() -> None:
    sha = bytes(range(32))
    assert digest_field(sha) == "SHA-256=AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
    assert digest_hex(digest_field(sha)) == sha.hex()
    assert digest_hex("") == ""


async def test_the_stream_closes_its_reader_when_the_client_is_gone() -> None:
    closed: list[bool] = []

    async def reader() -> AsyncIterator[bytes]:
        try:
            for _ in range(100):
                yield b"x" * 1000
        finally:
            closed.append(True)

    source = reader()  # held here, as a traceback or a middleware may hold it: no garbage collection closes it
    sent: list[dict[str, object]] = []

    async def send(message: dict[str, object]) -> None:
        sent.append(message)
        if message["type"] == "http.response.body":
            raise OSError("connection reset")  # the viewer closed the tab

    async def receive() -> dict[str, object]:
        return {"type": "http.disconnect"}

    scope = {"type": "http", "asgi": {"spec_version": "2.4"}, "method": "GET"}
    with pytest.raises(ClientDisconnect):
        await ObjectStream(source, 200, {})(scope, receive, send)  # type: ignore[arg-type]
    assert closed == [True]
