"""Opening a recording's file where the provider or a person left it, as a stream for the archive stage.

`open_file(file, recording, settings, broker)` reads:

- `import:<relative path>`: a file inside the import folder (IMPROMPTU_RECORDINGS_IMPORT_DIR, default
  DATA_DIR/import), never anywhere else: absolute paths, `..`, links leading out of the folder and anything that is
  not a regular file (a FIFO, a device, a directory) are refused. Read in chunks off the event loop.
- an http(s) URL: through the enrich stage's guarded fetcher (`fetch.stream_media`: public addresses only unless
  IMPROMPTU_FETCH_ALLOW says otherwise, every redirect checked again, connect/read timeouts and the size cap from
  settings). A Zoom file (credential "zoom") is sent with the event's download_token, read from the KV bucket
  impromptu-downloads by `recording.download_key`, else with the account's OAuth token; a YouTube caption track
  (credential "youtube") with the channel owner's token. Tokens go only to the host they were given for.

`file://` and bare paths are refused with the reason. Refusals are PermanentError subclasses (the reason says
what to fix); timeouts, 5xx and broken connections are RetryableError.
"""

from __future__ import annotations

import asyncio
import mimetypes
import os
import stat
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import structlog
from faststream.nats import NatsBroker
from nats.js.errors import KeyNotFoundError

from pipeline import stores
from pipeline.errors import PermanentError
from pipeline.messages import Recording, RecordingFile, RecordingFileKind
from pipeline.net.fetch import FetchPolicy, FetchRefused, check_url_form, parse_url, stream_media
from pipeline.settings import Settings

log = structlog.get_logger("pipeline.archive")

IMPORT_PREFIX = "import:"
CHUNK_BYTES = 1024 * 1024
SNIFF_BYTES = 64
DEFAULT_TYPES: dict[RecordingFileKind, str] = {
    "video": "video/mp4",
    "audio": "audio/mp4",
    "transcript": "text/vtt",
    "chat": "text/plain",
}
BINARY = ("application/octet-stream", "binary/octet-stream", "")
ACCEPTED: dict[RecordingFileKind, Callable[[str], bool]] = {
    "video": lambda t: t.startswith("video/") or t in BINARY,
    "audio": lambda t: t.startswith("audio/") or t in ("video/mp4", *BINARY),  # M4A is often served as video/mp4
    "transcript": lambda t: t in ("text/vtt", "text/plain", *BINARY),
    "chat": lambda t: t in ("text/plain", "application/json", *BINARY),
}


class SourceRefused(PermanentError):
    """The file cannot be read as asked (outside the import folder, not found, wrong type, refused address...)."""


@dataclass
class OpenedFile:
    content_type: str
    size: int | None
    chunks: AsyncIterator[bytes]


@asynccontextmanager
async def open_file(
    file: RecordingFile, recording: Recording, settings: Settings, broker: NatsBroker
) -> AsyncIterator[OpenedFile]:
    """`file` as a stream of chunks, with its content type and (when known) its size; see the module docstring."""
    location = file.location
    if location.startswith(IMPORT_PREFIX):
        async with open_import(location.removeprefix(IMPORT_PREFIX), file.kind, settings) as opened:
            yield opened
        return
    if location.startswith(("http://", "https://")):
        headers = await credential_headers(file, recording, settings, broker)
        policy = FetchPolicy(
            allow=tuple(settings.fetch_allow),
            timeout_seconds=settings.recordings_download_timeout_seconds,
            max_bytes=settings.recordings_max_bytes,
        )
        async with stream_media(location, policy, accept=ACCEPTED[file.kind], headers=headers) as media:
            content_type = media.content_type if media.content_type not in BINARY else _stated_type(file)
            yield OpenedFile(content_type, media.size, sniffed(media.chunks, file.kind, location))
        return
    if location.startswith("file:"):
        raise SourceRefused(
            f"{location}: file:// URLs are never read; put the file in the import folder and use "
            f"import:<path inside it>"
        )
    raise SourceRefused(
        f"{location!r} is neither an http(s) URL nor import:<path inside the import folder>; server paths are never "
        "read"
    )


def _stated_type(file: RecordingFile) -> str:
    stated = (file.content_type or "").split(";")[0].strip().lower()
    return stated if stated and stated not in BINARY else DEFAULT_TYPES[file.kind]


# --- credentials ----------------------------------------------------------------------------------------------------


async def credential_headers(
    file: RecordingFile, recording: Recording, settings: Settings, broker: NatsBroker
) -> dict[str, str]:
    """The Authorization a provider's file needs; never logged."""
    if file.credential == "zoom":
        token = await zoom_download_token(recording, broker)
        if token is None:
            from pipeline.providers.zoom import ZoomProvider

            provider = ZoomProvider.from_settings(settings)
            if not provider.configured:
                raise SourceRefused(
                    "zoom: the event's download_token has expired (24 h) and no account credentials are set "
                    "(IMPROMPTU_ZOOM_ACCOUNT_ID/CLIENT_ID/CLIENT_SECRET or IMPROMPTU_ZOOM_ACCESS_TOKEN)"
                )
            token = await provider.tokens.get()
        return {"Authorization": f"Bearer {token}"}
    if file.credential == "youtube":
        from pipeline.providers.youtube import YouTubeProvider

        youtube = YouTubeProvider.from_settings(settings)
        if not youtube.configured:
            raise SourceRefused("youtube: a caption track needs the channel owner's token; none is configured")
        return {"Authorization": f"Bearer {await youtube.tokens.get()}"}
    return {}


async def zoom_download_token(recording: Recording, broker: NatsBroker) -> str | None:
    if not recording.download_key:
        return None
    kv = await stores.bucket(broker, stores.DOWNLOADS)
    try:
        entry = await kv.get(recording.download_key)
    except KeyNotFoundError:
        return None  # expired with its 24 h: the account's token takes over
    return (entry.value or b"").decode() or None


# --- checking what arrives ------------------------------------------------------------------------------------------


async def sniffed(chunks: AsyncIterator[bytes], kind: RecordingFileKind, where: str) -> AsyncIterator[bytes]:
    """`chunks`, refused at the first one when it is plainly not that kind of file: a login page or a JSON error
    served as "application/octet-stream", a transcript that is not WebVTT."""
    first = True
    async for chunk in chunks:
        if first and chunk:
            first = False
            problem = sniff_problem(chunk[:SNIFF_BYTES], kind)
            if problem:
                raise SourceRefused(f"{where}: {problem}")
        yield chunk


def sniff_problem(head: bytes, kind: RecordingFileKind) -> str | None:
    text = head.lstrip(b"\xef\xbb\xbf").lstrip()
    if kind in ("video", "audio") and text[:1] in (b"<", b"{", b"["):
        return f"starts like an HTML, XML or JSON document, not {kind} ({text[:20]!r})"
    if kind == "transcript" and not text.startswith(b"WEBVTT"):
        return "a transcript must be WebVTT (it does not start with WEBVTT)"
    return None


# --- the import folder ----------------------------------------------------------------------------------------------


def import_location(path: Path, settings: Settings) -> str:
    """`import:<relative>` for a file given relative to the import folder, or by a path inside it; SourceRefused
    (naming the folder) for anything else."""
    folder = settings.import_dir.resolve()
    candidate = path if path.is_absolute() else folder / path
    try:
        relative = candidate.resolve(strict=True).relative_to(folder)
    except FileNotFoundError:
        raise SourceRefused(f"{path}: no such file in the import folder {folder}") from None
    except ValueError:
        raise SourceRefused(
            f"{path} is not inside the import folder {folder}: copy it there (IMPROMPTU_RECORDINGS_IMPORT_DIR sets "
            "the folder)"
        ) from None
    return IMPORT_PREFIX + relative.as_posix()


def relative_parts(relative: str) -> list[str]:
    """The path's parts, or SourceRefused for an absolute path, `..`, an empty path."""
    if not relative or relative.startswith(("/", "\\")) or PurePosixPath(relative).is_absolute():
        raise SourceRefused(f"import:{relative}: an absolute path is never read; give a path inside the import folder")
    if "\x00" in relative:
        raise SourceRefused("import: a path with a NUL character")
    parts = [p for p in PurePosixPath(relative).parts if p not in ("", ".")]
    if ".." in parts:
        raise SourceRefused(f"import:{relative}: '..' is not allowed; give a path inside the import folder")
    if not parts:
        raise SourceRefused(f"import:{relative}: names no file")
    return parts


@asynccontextmanager
async def open_import(relative: str, kind: RecordingFileKind, settings: Settings) -> AsyncIterator[OpenedFile]:
    fd = await asyncio.to_thread(_open_inside, settings.import_dir, relative_parts(relative), relative)
    try:
        size = os.fstat(fd).st_size
        if size > settings.recordings_max_bytes:
            raise SourceRefused(
                f"import:{relative} is {size} bytes, over the {settings.recordings_max_bytes} bytes "
                "IMPROMPTU_RECORDINGS_MAX_BYTES allows"
            )
        content_type = mimetypes.guess_type(relative)[0] or DEFAULT_TYPES[kind]
        if not ACCEPTED[kind](content_type):
            raise SourceRefused(f"import:{relative} looks like {content_type}, not a {kind} file")
        yield OpenedFile(content_type, size, sniffed(_read_chunks(fd, size), kind, f"import:{relative}"))
    finally:
        os.close(fd)


def _open_inside(folder: Path, parts: list[str], relative: str) -> int:
    """Open `parts` under `folder` without following a link that leaves it: the path is resolved and checked,
    then opened component by component with O_NOFOLLOW, so a link swapped in after the check is refused too."""
    root = folder.resolve()
    try:
        target = root.joinpath(*parts).resolve(strict=True)
    except FileNotFoundError:
        raise SourceRefused(f"import:{relative}: no such file in the import folder {root}") from None
    except (OSError, RuntimeError) as error:  # a link loop
        raise SourceRefused(f"import:{relative}: cannot be resolved ({type(error).__name__})") from None
    try:
        inside = target.relative_to(root).parts
    except ValueError:
        raise SourceRefused(f"import:{relative} leads out of the import folder {root} (a link); refused") from None
    if not inside:
        raise SourceRefused(f"import:{relative}: is the import folder itself, not a file")
    directory = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for name in inside[:-1]:
            try:
                step = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=directory)
            except OSError:
                raise SourceRefused(f"import:{relative}: {name} changed while being opened; refused") from None
            os.close(directory)
            directory = step
        try:
            # O_NONBLOCK: opening a FIFO must not wait for a writer; it is refused just below
            fd = os.open(inside[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=directory)
        except OSError as error:
            raise SourceRefused(f"import:{relative}: cannot be opened ({error.strerror})") from None
    finally:
        os.close(directory)
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise SourceRefused(f"import:{relative} is not a regular file (a FIFO, a device or a folder); refused")
    os.set_blocking(fd, True)
    return fd


async def _read_chunks(fd: int, size: int) -> AsyncIterator[bytes]:
    read = 0
    while True:
        chunk = await asyncio.to_thread(os.read, fd, CHUNK_BYTES)
        if not chunk:
            break
        read += len(chunk)
        if read > size:  # the file grew while being read: someone is still writing it
            raise SourceRefused(f"the file grew past its {size} bytes while being read; import it once it is complete")
        yield chunk


def recording_location(value: str, settings: Settings) -> str:
    """Where a person's recording file is, as a RecordingFile location: an http(s) URL as given (its address is
    checked now, as the fetcher will), `import:<path>`, or a local path inside the import folder; SourceRefused
    (naming the folder) otherwise."""
    if value.startswith(("http://", "https://")):
        try:
            check_url_form(parse_url(value), FetchPolicy(allow=tuple(settings.fetch_allow)))
        except FetchRefused as refused:
            raise SourceRefused(f"{value}: {refused}") from None
        return value
    if value.startswith(IMPORT_PREFIX):
        relative_parts(value.removeprefix(IMPORT_PREFIX))
        return value
    if value.startswith("file:") or "://" in value:
        raise SourceRefused(f"{value}: only http(s) URLs and files inside the import folder {settings.import_dir}")
    return import_location(Path(value).expanduser(), settings)
