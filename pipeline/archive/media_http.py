"""Serve a kept file from the media store to the library's player: GET and HEAD, one byte range, ETag.

Reads the object's size and digest (`MediaStore.stat`) and streams the bytes asked for (`MediaStore.read`), never
the whole object in memory. The player seeks with `Range: bytes=a-b`, `a-` or `-n` (206 with Content-Range);
a range past the end is 416 with `Content-Range: bytes */size`. A request for several ranges gets the whole object
(200): players ask for one, and a multipart/byteranges body buys nothing here. The ETag is the object's SHA-256;
If-None-Match answers 304, If-Range keeps a range only while the ETag is the same. A syntactically wrong Range header
is ignored (200), as RFC 9110 says.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from pipeline.archive.media import MediaStore
from pipeline.messages import KeptFile

RANGE = re.compile(r"^\s*(\d*)\s*-\s*(\d*)\s*$")
CACHE_CONTROL = "private, max-age=3600"  # the ETag changes with the bytes; a revalidation is a 304


class Unsatisfiable(Exception):
    """The range starts past the end (or asks for the last 0 bytes)."""


def parse_range(header: str, size: int) -> tuple[int, int] | None:
    """The (first, last) byte, inclusive, of a single range; None to serve the whole object (no range, several
    ranges, or a header that does not parse); Unsatisfiable when it asks for nothing that exists."""
    unit, _, specs = header.partition("=")
    if unit.strip().lower() != "bytes" or not specs or "," in specs:
        return None
    match = RANGE.match(specs)
    if match is None or match.group(1) == match.group(2) == "":
        return None
    first, last = match.group(1), match.group(2)
    if first == "":  # suffix: the last n bytes
        count = int(last)
        if count == 0 or size == 0:
            raise Unsatisfiable
        return max(size - count, 0), size - 1
    start = int(first)
    if last != "" and int(last) < start:
        return None  # invalid: ignored
    if start >= size:
        raise Unsatisfiable
    return start, size - 1 if last == "" else min(int(last), size - 1)


def _etag_matches(header: str, etag: str) -> bool:
    """If-None-Match: a weak comparison over a list (`W/"x"` matches `"x"`), or `*`."""
    candidates = [candidate.strip() for candidate in header.split(",")]
    return "*" in candidates or any(candidate.removeprefix("W/") == etag for candidate in candidates)


def content_disposition(filename: str) -> str:
    """inline, with the name in RFC 5987 form (any script), and an ASCII fallback for old clients."""
    fallback = "".join(c if c.isascii() and c.isprintable() and c not in '"\\;' else "_" for c in filename)
    return f"inline; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"


class ObjectStream(StreamingResponse):
    """A StreamingResponse that closes the store's reader however the response ends (a client gone mid-stream
    included), so a store holding server state for a read gives it back now rather than when garbage collected."""

    def __init__(self, reader: AsyncIterator[bytes], status_code: int, headers: dict[str, str]) -> None:
        super().__init__(reader, status_code=status_code, headers=headers)
        self._reader = reader

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            close = getattr(self._reader, "aclose", None)
            if close is not None:
                await asyncio.shield(close())


async def media_response(store: MediaStore, kept: KeptFile, request: Request) -> Response:
    stored = await store.stat(kept.key)
    if stored is None:
        return Response("This recording is not in the media store.", status_code=404, media_type="text/plain")
    size, etag = stored.size, f'"{stored.sha256}"'
    headers = {
        "Accept-Ranges": "bytes",
        "ETag": etag,
        "Cache-Control": CACHE_CONTROL,
        "Content-Type": kept.content_type,
        "Content-Disposition": content_disposition(kept.filename),
        "X-Content-Type-Options": "nosniff",
    }
    if_none_match = request.headers.get("if-none-match")
    if if_none_match is not None and _etag_matches(if_none_match, etag):
        return Response(status_code=304, headers={k: v for k, v in headers.items() if k != "Content-Type"})

    byte_range: tuple[int, int] | None = None
    range_header = request.headers.get("range")
    if_range = request.headers.get("if-range")
    if range_header is not None and (if_range is None or if_range.strip() == etag):  # If-Range: strong, ETag only
        try:
            byte_range = parse_range(range_header, size)
        except Unsatisfiable:
            headers["Content-Range"] = f"bytes */{size}"
            return Response(status_code=416, headers=headers)

    if byte_range is None:
        status, start, end = 200, 0, size - 1
    else:
        status, (start, end) = 206, byte_range
        headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    headers["Content-Length"] = str(end - start + 1)
    if request.method == "HEAD" or size == 0:
        return Response(status_code=status, headers=headers)
    return ObjectStream(store.read(kept.key, start, end), status, headers)
