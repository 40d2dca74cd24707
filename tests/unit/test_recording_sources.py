"""Opening a recording's file: a local HTTP server on 127.0.0.1 serves it (streamed, capped, redirected to a refused
address, 404, 5xx, an HTML page instead of a video), the import folder lets nothing out (.., absolute paths, links
leading out, a FIFO), and a Zoom file is fetched with the event's download_token from KV (real nats-server)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI, Request, Response
from fastapi.responses import RedirectResponse, StreamingResponse
from faststream.nats import NatsBroker

from pipeline import stores
from pipeline.archive.sources import SourceRefused, open_file, recording_location
from pipeline.errors import PermanentError, RetryableError
from pipeline.messages import Recording, RecordingFile, RecordingFileKind
from pipeline.net.fetch import FetchFailed, FetchRefused
from pipeline.settings import Settings
from tests.peers import serve
from tests.unit.conftest import make_session

VIDEO = b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 4096  # ~1 MiB, an MP4's first box then data
SEEN_AUTHORIZATION: list[str | None] = []


def media_app() -> FastAPI:
    app = FastAPI()

    async def pieces(data: bytes, size: int = 64 * 1024) -> AsyncIterator[bytes]:
        for start in range(0, len(data), size):
            yield data[start : start + size]
            await asyncio.sleep(0)

    @app.get("/video.mp4")
    async def video() -> Response:
        return Response(VIDEO, media_type="video/mp4")

    @app.get("/chunked.mp4")
    async def chunked() -> StreamingResponse:  # no Content-Length: the cap is counted while streaming
        return StreamingResponse(pieces(VIDEO), media_type="video/mp4")

    @app.get("/login-page")
    async def login_page() -> Response:
        return Response(b"<!doctype html><html>Sign in</html>", media_type="application/octet-stream")

    @app.get("/page.html")
    async def page() -> Response:
        return Response(b"<html></html>", media_type="text/html")

    @app.get("/to-private")
    async def to_private() -> RedirectResponse:
        return RedirectResponse("http://10.1.2.3/video.mp4")

    @app.get("/broken")
    async def broken() -> Response:
        return Response(b"upstream down", status_code=503)

    @app.get("/zoom/download")
    async def zoom_download(request: Request) -> Response:
        SEEN_AUTHORIZATION.append(request.headers.get("authorization"))
        if request.headers.get("authorization") != "Bearer the-download-token":
            return Response(b'{"code":124,"message":"Invalid access token."}', 401, media_type="application/json")
        return Response(b"WEBVTT\n\n00:00.000 --> 00:01.000\nHello\n", media_type="text/vtt")

    return app


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    with serve(media_app()) as base:
        yield base


@pytest.fixture
def local_settings(tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        fetch_allow=["127.0.0.1/32"],
        recordings_max_bytes=2 * 1024 * 1024,
        recordings_download_timeout_seconds=5,
    )


def recording(*files: RecordingFile, download_key: str | None = None) -> Recording:
    return Recording.arrived(make_session(), source="cli", files=list(files), download_key=download_key)


async def read(location: str, settings: Settings, kind: RecordingFileKind = "video") -> tuple[str, int | None, bytes]:
    file = RecordingFile(kind=kind, location=location)
    chunks = 0
    body = bytearray()
    async with open_file(file, recording(file), settings, None) as opened:  # type: ignore[arg-type]
        async for chunk in opened.chunks:
            chunks += 1
            body += chunk
    return opened.content_type, opened.size, bytes(body)


async def test_a_url_is_streamed_with_its_type_and_size(server: str, local_settings: Settings) -> None:
    content_type, size, body = await read(f"{server}/video.mp4", local_settings)
    assert (content_type, size, body) == ("video/mp4", len(VIDEO), VIDEO)


async def test_the_stream_comes_in_chunks_never_the_whole_body_at_once(server: str, local_settings: Settings) -> None:
    file = RecordingFile(kind="video", location=f"{server}/chunked.mp4")
    sizes = []
    async with open_file(file, recording(file), local_settings, None) as opened:  # type: ignore[arg-type]
        assert opened.size is None
        async for chunk in opened.chunks:
            sizes.append(len(chunk))
    assert sum(sizes) == len(VIDEO) and len(sizes) > 1 and max(sizes) <= 1024 * 1024


async def test_the_size_cap_holds_from_content_length_and_while_streaming(
    server: str, local_settings: Settings
) -> None:
    small = local_settings.model_copy(update={"recordings_max_bytes": 100_000})
    with pytest.raises(FetchRefused, match="too_large"):
        await read(f"{server}/video.mp4", small)  # declared
    with pytest.raises(FetchRefused, match="too_large"):
        await read(f"{server}/chunked.mp4", small)  # counted


async def test_a_redirect_to_a_private_address_is_refused(server: str, local_settings: Settings) -> None:
    with pytest.raises(FetchRefused, match="literal_ip") as refused:
        await read(f"{server}/to-private", local_settings)
    assert isinstance(refused.value, PermanentError) and "10.1.2.3" in str(refused.value)


async def test_a_loopback_server_is_refused_unless_allowed(server: str, local_settings: Settings) -> None:
    with pytest.raises(FetchRefused, match="IMPROMPTU_FETCH_ALLOW"):
        await read(f"{server}/video.mp4", local_settings.model_copy(update={"fetch_allow": []}))


async def test_404_is_permanent_and_5xx_retryable(server: str, local_settings: Settings) -> None:
    with pytest.raises(FetchRefused, match="http_404"):
        await read(f"{server}/nothing-here.mp4", local_settings)
    with pytest.raises(FetchFailed, match="http_503") as failed:
        await read(f"{server}/broken", local_settings)
    assert isinstance(failed.value, RetryableError)


async def test_an_html_page_is_not_a_video_whatever_type_it_claims(server: str, local_settings: Settings) -> None:
    with pytest.raises(FetchRefused, match="wrong_type"):
        await read(f"{server}/page.html", local_settings)
    with pytest.raises(SourceRefused, match="HTML"):
        await read(f"{server}/login-page", local_settings)


# --- the import folder ----------------------------------------------------------------------------------------------


@pytest.fixture
def import_dir(local_settings: Settings) -> Path:
    folder = local_settings.import_dir
    (folder / "2025").mkdir(parents=True)
    (folder / "2025" / "session.mp4").write_bytes(VIDEO)
    (folder / "notes.vtt").write_text("WEBVTT\n\n00:00.000 --> 00:02.000\nWelcome\n")
    return folder


async def test_a_file_in_the_import_folder_is_read(import_dir: Path, local_settings: Settings) -> None:
    content_type, size, body = await read("import:2025/session.mp4", local_settings)
    assert (content_type, size, body) == ("video/mp4", len(VIDEO), VIDEO)
    _, _, vtt = await read("import:notes.vtt", local_settings, kind="transcript")
    assert vtt.startswith(b"WEBVTT")


@pytest.mark.parametrize(
    ("location", "reason"),
    [
        ("import:../secret.mp4", "'..' is not allowed"),
        ("import:2025/../../secret.mp4", "'..' is not allowed"),
        ("import:/etc/passwd", "absolute path"),
        ("import:missing.mp4", "no such file"),
        ("file:///etc/passwd", "file:// URLs are never read"),
        ("/etc/passwd", "server paths are never read"),
    ],
)
async def test_nothing_outside_the_import_folder_is_read(
    import_dir: Path, local_settings: Settings, location: str, reason: str
) -> None:
    with pytest.raises(SourceRefused, match=reason):
        await read(location, local_settings)


async def test_a_link_leading_out_of_the_folder_is_refused(
    import_dir: Path, local_settings: Settings, tmp_path: Path
) -> None:
    outside = tmp_path / "outside.mp4"
    outside.write_bytes(VIDEO)
    (import_dir / "escape.mp4").symlink_to(outside)
    (import_dir / "inside-link.mp4").symlink_to(import_dir / "2025" / "session.mp4")
    with pytest.raises(SourceRefused, match="leads out of the import folder"):
        await read("import:escape.mp4", local_settings)
    assert (await read("import:inside-link.mp4", local_settings))[2] == VIDEO  # a link that stays inside is fine


async def test_a_fifo_is_refused_without_waiting_for_a_writer(import_dir: Path, local_settings: Settings) -> None:
    os.mkfifo(import_dir / "pipe.mp4")
    with pytest.raises(SourceRefused, match="not a regular file"):
        await asyncio.wait_for(read("import:pipe.mp4", local_settings), 5)


async def test_a_wrong_kind_of_file_is_refused(import_dir: Path, local_settings: Settings) -> None:
    with pytest.raises(SourceRefused, match="not a transcript file|must be WebVTT"):
        await read("import:2025/session.mp4", local_settings, kind="transcript")


def test_a_person_s_file_must_be_in_the_import_folder(
    import_dir: Path, local_settings: Settings, tmp_path: Path
) -> None:
    assert recording_location("2025/session.mp4", local_settings) == "import:2025/session.mp4"
    absolute = str(import_dir / "2025" / "session.mp4")
    assert recording_location(absolute, local_settings) == "import:2025/session.mp4"
    assert recording_location("https://example.com/r.mp4", local_settings) == "https://example.com/r.mp4"
    elsewhere = tmp_path / "elsewhere.mp4"
    elsewhere.write_bytes(b"x")
    with pytest.raises(SourceRefused) as refused:
        recording_location(str(elsewhere), local_settings)
    assert str(import_dir.resolve()) in str(refused.value)


# --- a Zoom file, with the event's download token from KV -------------------------------------------------------------


@pytest.mark.nats
async def test_a_zoom_file_is_fetched_with_the_events_download_token(
    server: str, settings: Settings, client: NatsBroker
) -> None:
    downloads = await stores.bucket(client, stores.DOWNLOADS)
    await downloads.put("zoom.event-1", b"the-download-token")
    file = RecordingFile(kind="transcript", location=f"{server}/zoom/download", credential="zoom")
    SEEN_AUTHORIZATION.clear()
    async with open_file(file, recording(file, download_key="zoom.event-1"), settings, client) as opened:
        body = b"".join([chunk async for chunk in opened.chunks])
    assert body.startswith(b"WEBVTT") and opened.content_type == "text/vtt"
    assert SEEN_AUTHORIZATION == ["Bearer the-download-token"]


@pytest.mark.nats
async def test_a_zoom_file_whose_token_expired_needs_the_account_credentials(
    server: str, settings: Settings, client: NatsBroker
) -> None:
    file = RecordingFile(kind="transcript", location=f"{server}/zoom/download", credential="zoom")
    with pytest.raises(SourceRefused, match="IMPROMPTU_ZOOM_ACCOUNT_ID"):
        async with open_file(file, recording(file, download_key="zoom.expired"), settings, client):
            pass
