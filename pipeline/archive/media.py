"""Where recordings are kept: one small interface, two stores (the NATS JetStream Object Store by default, an
S3-compatible bucket as the option; IMPROMPTU_MEDIA_STORE).

    nats  pipeline/archive/objectstore.py: JetStream Object Store bucket IMPROMPTU_MEDIA_BUCKET (stream OBJ_<bucket>)
    s3    pipeline/archive/s3.py: an S3-compatible bucket (IMPROMPTU_S3_*), multipart uploads

pipeline/archive/media_http.py serves a stored object to the library's player (HTTP ranges, ETag).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from pipeline import bus, stores
from pipeline.errors import NotYet, PermanentError
from pipeline.messages import StoreName

if TYPE_CHECKING:
    from faststream.nats import NatsBroker

    from pipeline.settings import Settings


@dataclass(frozen=True)
class StoredObject:
    key: str
    size: int
    sha256: str  # hex of the whole object
    content_type: str


class UploadInProgress(NotYet):
    """Another worker is still putting this key (its upload marker is fresh): wait, without spending the retry
    budget, until it finishes or its lease runs out (a killed worker's)."""


class MediaRefused(PermanentError):
    """The bytes cannot be kept as they are: over the size cap, or not what was expected (digest, size)."""


class MediaMissing(PermanentError):
    """No object under that key (read of a key never stored, or deleted)."""


class MediaStore(Protocol):
    name: StoreName  # KeptFile.store

    async def put(
        self,
        key: str,
        chunks: AsyncIterator[bytes],
        *,
        content_type: str,
        max_bytes: int,
        expected_sha256: str | None = None,
        expected_size: int | None = None,
    ) -> StoredObject:
        """Stream `chunks` into `key`, never holding the whole object in memory. The object becomes visible under
        `key` only once complete and checked (SHA-256 computed while streaming; MediaRefused when over `max_bytes`
        or not matching what was expected). An earlier put of `key` cut short (a killed worker) is cleaned up
        first, so a redelivered recording restarts it and nothing is left behind; a put over an existing object
        replaces it."""
        ...

    async def stat(self, key: str) -> StoredObject | None: ...

    def read(self, key: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        """Bytes start..end (inclusive; None: to the end), streamed, for HTTP Range requests. MediaMissing when
        there is no such object; RetryableError when it ends early (replaced or deleted during the read)."""
        ...

    async def delete(self, key: str) -> None:
        """Remove the object (absent already: fine)."""
        ...

    async def close(self) -> None: ...


async def media_store(settings: Settings, broker: NatsBroker) -> MediaStore:
    """The store IMPROMPTU_MEDIA_STORE names, bound to its bucket (created when missing). Close it when done."""
    if settings.media_store == "s3":
        from pipeline.archive.s3 import S3MediaStore

        return await S3MediaStore.open(settings)
    from pipeline.archive.objectstore import NatsMediaStore

    replicas = await stores.stream_replicas(broker)
    # a live worker's put refreshes its marker (lease / 3) and its message (ack_wait / 3); once a killed worker's
    # recording comes back (after ack_wait), its marker is stale within another ack_wait
    lease = max(10.0, 2 * settings.ack_wait_seconds)
    return await NatsMediaStore.open(
        bus.jetstream(broker), settings.media_bucket, replicas=replicas, upload_lease_seconds=lease
    )
