"""Media kept in the NATS JetStream Object Store (the default): streamed in, checked, readable by range.

Objects keep the layout of NATS's own object store (`nats object get`, nats-py's and nats.go's ObjectStore read them):

    OBJ_<bucket>                      the stream (file storage, replicated like the pipeline's stream)
    $O.<bucket>.M.<base64url(key)>    the object's meta: JSON ObjectInfo (nuid, size, chunks, digest "SHA-256=...")
    $O.<bucket>.C.<nuid>              its chunks, 128 KiB each, in order

and add two subjects of our own, which other tools never read:

    $O.<bucket>.C.<nuid>.index        where each chunk sits in the stream (runs of sequences), so a range read
                                      fetches only the chunks it needs (direct get by sequence, no consumer)
    $O.<bucket>.C.upload.<sha256(key)> the put in progress for a key: its nuid, and the nuid it replaces; written
                                      before the first chunk, removed once the meta is in and old chunks are gone

nats-py's `put` reads only bytes or a sync file, and its `get` holds the whole object in memory; here a put streams
from an async iterator of bytes and a read streams chunk by chunk. Nothing creates consumers: reads use direct gets.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import time
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime

import nats.errors
import structlog
from nats.js import JetStreamContext, api
from nats.js.errors import APIError, NotFoundError
from nats.js.kv import MSG_ROLLUP_SUBJECT
from pydantic import BaseModel, ConfigDict

from pipeline.archive.media import MediaMissing, MediaRefused, StoredObject, UploadInProgress
from pipeline.errors import RetryableError
from pipeline.messages import StoreName

log = structlog.get_logger("pipeline.archive")

CHUNK_BYTES = 128 * 1024  # nats-py's and nats.go's default chunk size
PUBLISH_WINDOW = 32  # chunk publishes awaiting their ack at once (4 MiB in flight)
READ_AHEAD = 4  # chunk fetches in flight during a read
ACK_TIMEOUT_SECONDS = 10.0
# An upload marker younger than this belongs to a put still running (it is refreshed every third of it): a second
# put of the key waits (RetryableError) rather than purge chunks being written. Older: its worker died; cleaned up.
UPLOAD_LEASE_SECONDS = 60.0
INDEX_MAX_BYTES = 512 * 1024  # past this (an upload interleaved with many others) reads fall back to a walk
DIGEST_PREFIX = "SHA-256="


class UploadMarker(BaseModel):
    model_config = ConfigDict(extra="ignore")

    nuid: str
    replaces: str | None = None  # the nuid of the object this put replaces: purged once the new meta is in


@dataclass(frozen=True)
class ChunkIndex:
    """Stream sequences of an object's chunks as runs (first sequence, count): one run when nothing interleaved."""

    chunk_bytes: int
    runs: tuple[tuple[int, int], ...]

    @classmethod
    def of(cls, chunk_bytes: int, sequences: list[int]) -> ChunkIndex:
        runs: list[tuple[int, int]] = []
        for seq in sequences:
            if runs and runs[-1][0] + runs[-1][1] == seq:
                runs[-1] = (runs[-1][0], runs[-1][1] + 1)
            else:
                runs.append((seq, 1))
        return cls(chunk_bytes, tuple(runs))

    def sequence(self, chunk: int) -> int:
        for first, count in self.runs:
            if chunk < count:
                return first + chunk
            chunk -= count
        raise IndexError(chunk)

    @property
    def chunks(self) -> int:
        return sum(count for _, count in self.runs)

    def encode(self) -> bytes:
        # Delta-coded (gap from the previous run's end, count) keeps an interleaved upload's index small.
        flat, previous_end = [], 0
        for first, count in self.runs:
            flat += [first - previous_end, count]
            previous_end = first + count
        return json.dumps({"v": 1, "chunk": self.chunk_bytes, "runs": flat}, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, data: bytes) -> ChunkIndex:
        document = json.loads(data)
        flat, runs, previous_end = document["runs"], [], 0
        for gap, count in zip(flat[::2], flat[1::2], strict=True):
            runs.append((previous_end + gap, count))
            previous_end += gap + count
        return cls(int(document["chunk"]), tuple(runs))


def encode_name(key: str) -> str:
    return base64.urlsafe_b64encode(key.encode()).decode()


def digest_field(sha256: bytes) -> str:
    return DIGEST_PREFIX + base64.urlsafe_b64encode(sha256).decode()


def digest_hex(field: str | None) -> str:
    if not field or not field.upper().startswith(DIGEST_PREFIX):
        return ""
    return base64.urlsafe_b64decode(field[len(DIGEST_PREFIX) :]).hex()


def _content_type(info: api.ObjectInfo) -> str:
    values = (info.headers or {}).get("Content-Type") or ["application/octet-stream"]
    return values[0] if isinstance(values, list) else str(values)


class NatsMediaStore:
    name: StoreName = "nats"

    def __init__(
        self,
        js: JetStreamContext,
        bucket: str,
        *,
        allow_direct: bool = True,
        chunk_bytes: int = CHUNK_BYTES,
        upload_lease_seconds: float = UPLOAD_LEASE_SECONDS,
    ) -> None:
        self._js = js
        self.bucket = bucket
        self.stream = f"OBJ_{bucket}"
        self._direct = allow_direct
        self._chunk_bytes = chunk_bytes
        self._lease = upload_lease_seconds

    @classmethod
    async def open(cls, js: JetStreamContext, bucket: str, *, replicas: int = 1, **options: float) -> NatsMediaStore:
        """Bind to the bucket (ops may have made it with `nats object add`), else create it: file storage, the
        pipeline stream's replicas."""
        try:
            info = await js.stream_info(f"OBJ_{bucket}")
        except NotFoundError:
            config = api.ObjectStoreConfig(bucket=bucket, storage=api.StorageType.FILE, replicas=replicas)
            await js.create_object_store(bucket, config=config)
            info = await js.stream_info(f"OBJ_{bucket}")
        return cls(js, bucket, allow_direct=bool(info.config.allow_direct), **options)  # type: ignore[arg-type]

    # subjects
    def _meta_subject(self, key: str) -> str:
        return f"$O.{self.bucket}.M.{encode_name(key)}"

    def _chunk_subject(self, nuid: str) -> str:
        return f"$O.{self.bucket}.C.{nuid}"

    def _index_subject(self, nuid: str) -> str:
        return f"$O.{self.bucket}.C.{nuid}.index"

    def _upload_subject(self, key: str) -> str:
        return f"$O.{self.bucket}.C.upload.{hashlib.sha256(key.encode()).hexdigest()}"

    async def _last(self, subject: str) -> api.RawStreamMsg | None:
        try:
            return await self._js.get_msg(self.stream, subject=subject, direct=self._direct)
        except NotFoundError:
            return None
        except (nats.errors.TimeoutError, nats.errors.NoRespondersError) as error:
            raise RetryableError(f"object store {self.bucket} did not answer: {error!r}") from error

    async def _info(self, key: str) -> api.ObjectInfo | None:
        msg = await self._last(self._meta_subject(key))
        if msg is None or not msg.data:
            return None
        info = api.ObjectInfo.from_response(json.loads(msg.data))
        return None if info.deleted else info

    async def stat(self, key: str) -> StoredObject | None:
        info = await self._info(key)
        if info is None:
            return None
        return StoredObject(
            key=key, size=info.size or 0, sha256=digest_hex(info.digest), content_type=_content_type(info)
        )

    # put
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
        if expected_size is not None and expected_size > max_bytes:
            raise MediaRefused(f"{key}: {expected_size} bytes is over the cap of {max_bytes}")
        upload_subject = self._upload_subject(key)
        await self._clear_abandoned(key, upload_subject)
        current = await self._info(key)
        nuid = self._js._nc._nuid.next().decode()  # the same generator nats-py's put uses for chunk subjects
        marker = UploadMarker(nuid=nuid, replaces=current.nuid if current else None)
        await self._js.publish(upload_subject, marker.model_dump_json().encode(), headers=_rollup())
        started = time.monotonic()
        refresher = asyncio.ensure_future(self._keep_marker_young(upload_subject, marker))
        try:
            size, sha256, sequences = await self._write_chunks(nuid, chunks, max_bytes)
            refresher.cancel()
            if expected_size is not None and size != expected_size:
                raise MediaRefused(f"{key}: {size} bytes arrived, {expected_size} were expected")
            if expected_sha256 is not None and sha256.hex() != expected_sha256.lower():
                raise MediaRefused(f"{key}: SHA-256 {sha256.hex()} is not the expected {expected_sha256}")
            if await self._marker_nuid(upload_subject) != nuid:
                raise RetryableError(f"{key}: another put of this key took over; this one gives way")
            index = ChunkIndex.of(self._chunk_bytes, sequences).encode()
            if len(index) <= INDEX_MAX_BYTES:
                await self._js.publish(self._index_subject(nuid), index)
            info = api.ObjectInfo(
                name=key,
                bucket=self.bucket,
                nuid=nuid,
                size=size,
                chunks=len(sequences),
                digest=digest_field(sha256),
                mtime=datetime.now(UTC).isoformat(),
                headers={"Content-Type": [content_type]},
                options=api.ObjectMetaOptions(max_chunk_size=self._chunk_bytes),
            )
            await self._js.publish(self._meta_subject(key), json.dumps(info.as_dict()).encode(), headers=_rollup())
        except BaseException:
            refresher.cancel()
            await _shielded(self._abandon(nuid, upload_subject))
            raise
        if marker.replaces and marker.replaces != nuid:
            await self._purge_object(marker.replaces)
        await self._purge(upload_subject)
        log.info(
            "media.stored",
            store=self.name,
            key=key,
            bytes=size,
            chunks=len(sequences),
            seconds=round(time.monotonic() - started, 3),
        )
        return StoredObject(key=key, size=size, sha256=sha256.hex(), content_type=content_type)

    async def _keep_marker_young(self, upload_subject: str, marker: UploadMarker) -> None:
        """While this put runs (however slowly its source sends), no other put of the key takes it for dead."""
        while True:
            await asyncio.sleep(self._lease / 3)
            try:
                await self._js.publish(upload_subject, marker.model_dump_json().encode(), headers=_rollup())
            except (APIError, nats.errors.Error) as error:
                log.warning("media.upload_marker_not_refreshed", store=self.name, error=repr(error))

    async def _write_chunks(
        self, nuid: str, pieces: AsyncIterator[bytes], max_bytes: int
    ) -> tuple[int, bytes, list[int]]:
        """Publish `pieces` as fixed-size chunks (so chunk n starts at byte n * chunk size), acks awaited in a
        window; return size, SHA-256 and each chunk's stream sequence."""
        subject, hasher, size = self._chunk_subject(nuid), hashlib.sha256(), 0
        pending: deque[asyncio.Future[api.PubAck]] = deque()
        sequences: list[int] = []
        buffer = bytearray()

        async def send(chunk: bytes) -> None:
            pending.append(await self._js.publish_async(subject, chunk))
            while len(pending) >= PUBLISH_WINDOW:
                sequences.append((await asyncio.wait_for(pending.popleft(), ACK_TIMEOUT_SECONDS)).seq)

        try:
            async for piece in pieces:
                size += len(piece)
                if size > max_bytes:
                    raise MediaRefused(f"more than the cap of {max_bytes} bytes")
                hasher.update(piece)
                if not buffer and len(piece) == self._chunk_bytes:
                    await send(bytes(piece))
                    continue
                buffer += piece
                while len(buffer) >= self._chunk_bytes:
                    await send(bytes(buffer[: self._chunk_bytes]))
                    del buffer[: self._chunk_bytes]
            if buffer:
                await send(bytes(buffer))
            while pending:
                sequences.append((await asyncio.wait_for(pending.popleft(), ACK_TIMEOUT_SECONDS)).seq)
        except (APIError, nats.errors.Error, TimeoutError) as error:
            raise RetryableError(f"object store {self.bucket} refused a chunk: {error!r}") from error
        finally:
            for future in pending:
                future.cancel()
        return size, hasher.digest(), sequences

    async def _marker_nuid(self, upload_subject: str) -> str | None:
        msg = await self._last(upload_subject)
        return UploadMarker.model_validate_json(msg.data).nuid if msg and msg.data else None

    async def _clear_abandoned(self, key: str, upload_subject: str) -> None:
        """A put of `key` that never finished (its worker was killed) left a marker: purge what it wrote."""
        msg = await self._last(upload_subject)
        if msg is None or not msg.data:
            return
        marker = UploadMarker.model_validate_json(msg.data)
        age = (datetime.now(UTC) - msg.time).total_seconds() if msg.time else self._lease
        if age < self._lease:
            raise UploadInProgress(
                f"{key}: another put of this key is in progress (marked {age:.0f} s ago); waiting for it",
                retry_after=max(1.0, self._lease - age),
            )
        current = await self._info(key)
        if current is not None and current.nuid == marker.nuid:
            # it finished writing the meta and died before purging what it replaced
            if marker.replaces:
                await self._purge_object(marker.replaces)
        else:
            await self._purge_object(marker.nuid)
        await self._purge(upload_subject)
        log.info("media.abandoned_upload_removed", store=self.name, key=key, nuid=marker.nuid)

    async def _abandon(self, nuid: str, upload_subject: str) -> None:
        await self._purge_object(nuid)
        if await self._marker_nuid(upload_subject) == nuid:
            await self._purge(upload_subject)

    async def _purge_object(self, nuid: str) -> None:
        await self._purge(self._chunk_subject(nuid))
        await self._purge(self._index_subject(nuid))

    async def _purge(self, subject: str) -> None:
        await self._js.purge_stream(self.stream, subject=subject)

    # read
    async def read(self, key: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        info = await self._info(key)
        if info is None:
            raise MediaMissing(f"{key}: not in object store {self.bucket}")
        size = info.size or 0
        last = size - 1 if end is None else min(end, size - 1)
        if start > last:
            return
        index = await self._index(info.nuid)
        whole = start == 0 and last == size - 1
        hasher = hashlib.sha256() if whole else None
        chunks = self._chunks_indexed(info.nuid, index, start, last) if index else self._chunks_walked(info.nuid)
        position = 0 if not index else (start // index.chunk_bytes) * index.chunk_bytes
        try:
            async for data in chunks:
                piece_start, position = position, position + len(data)
                if position <= start:
                    continue
                piece = data[max(start - piece_start, 0) : last + 1 - piece_start]
                if hasher:
                    hasher.update(piece)
                yield piece
                if position > last:
                    break
        finally:
            await chunks.aclose()
        if position <= last:
            raise RetryableError(f"{key}: object ended at byte {position} of {size} (replaced or deleted meanwhile)")
        if hasher and hasher.hexdigest() != digest_hex(info.digest):
            raise RetryableError(f"{key}: stored bytes do not match the object's SHA-256")

    async def _index(self, nuid: str) -> ChunkIndex | None:
        msg = await self._last(self._index_subject(nuid))
        return ChunkIndex.decode(msg.data) if msg and msg.data else None

    async def _chunks_indexed(self, nuid: str, index: ChunkIndex, start: int, last: int) -> AsyncGenerator[bytes, None]:
        """The chunks holding bytes start..last, fetched by sequence, a few in flight."""
        subject = self._chunk_subject(nuid)
        wanted = iter(range(start // index.chunk_bytes, min(last // index.chunk_bytes + 1, index.chunks)))
        in_flight: deque[asyncio.Task[api.RawStreamMsg]] = deque()

        def fetch_next() -> None:
            chunk = next(wanted, None)
            if chunk is not None:
                in_flight.append(asyncio.ensure_future(self._get(index.sequence(chunk))))

        for _ in range(READ_AHEAD):
            fetch_next()
        try:
            while in_flight:
                msg = await in_flight.popleft()
                fetch_next()
                if msg.subject != subject:
                    return  # purged meanwhile: the caller sees the object end early
                yield msg.data or b""
        finally:
            for task in in_flight:
                task.cancel()

    async def _chunks_walked(self, nuid: str) -> AsyncGenerator[bytes, None]:
        """An object written by another tool (no index): its chunks in order, one direct get after the other."""
        subject, seq = self._chunk_subject(nuid), 1
        while True:
            try:
                msg = await self._js.get_msg(self.stream, seq=seq, subject=subject, direct=self._direct, next=True)
            except NotFoundError:
                return
            yield msg.data or b""
            assert msg.seq is not None  # a stored message's sequence (nats-py's RawStreamMsg leaves it optional)
            seq = msg.seq + 1

    async def _get(self, seq: int) -> api.RawStreamMsg:
        try:
            return await self._js.get_msg(self.stream, seq=seq, direct=self._direct)
        except NotFoundError:
            return api.RawStreamMsg(subject="", seq=seq)
        except (nats.errors.TimeoutError, nats.errors.NoRespondersError) as error:
            raise RetryableError(f"object store {self.bucket} did not answer: {error!r}") from error

    async def delete(self, key: str) -> None:
        info = await self._info(key)
        await self._purge(self._meta_subject(key))
        if info is not None:
            await self._purge_object(info.nuid)
            log.info("media.deleted", store=self.name, key=key)

    async def close(self) -> None:
        """The connection is the broker's: nothing of ours to close."""


def _rollup() -> dict[str, str]:
    """Each marker or meta replaces the subject's earlier ones (a fresh dict: nats-py may add to it)."""
    return {api.Header.ROLLUP: MSG_ROLLUP_SUBJECT}


async def _shielded(cleanup: Coroutine[object, object, None]) -> None:
    """Run a cleanup to its end even when the put was cancelled (a worker stopping, a client gone): the shielded
    task goes on when this await is cancelled. A cleanup that fails is logged, the original error matters more; the
    upload marker lets the key's next put finish it."""
    try:
        await asyncio.shield(cleanup)
    except asyncio.CancelledError:
        raise
    except Exception as error:
        log.warning("media.cleanup_failed", error=repr(error))
