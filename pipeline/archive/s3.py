"""Media kept in an S3-compatible bucket (IMPROMPTU_MEDIA_STORE=s3): AWS, MinIO, Ceph, R2, moto in tests.

    <s3_prefix><key>    the object; its metadata `sha256` holds the hex SHA-256 computed while it streamed in

A put streams through a multipart upload, one part (8 MiB) buffered at a time; an object smaller than a part goes
up in one PutObject. The SHA-256 is known only at the end, so unless the caller gave it beforehand the object is
copied onto itself server-side with the digest in its metadata (no bytes travel through this process). An object
without `sha256` metadata (a put killed between those two steps, or written by another tool) is not reported by
`stat`. A put first aborts the key's incomplete multipart uploads: a worker killed mid-upload leaves nothing behind
once its recording is redelivered.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator, Coroutine
from contextlib import AsyncExitStack
from typing import Any

import structlog
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import BotoCoreError, ClientError

from pipeline.archive.media import MediaMissing, MediaRefused, StoredObject
from pipeline.errors import RetryableError
from pipeline.messages import StoreName
from pipeline.settings import Settings

log = structlog.get_logger("pipeline.archive")

PART_BYTES = 8 * 1024 * 1024  # S3's parts are >= 5 MiB but the last; 8 MiB x 10,000 parts = 78 GiB at most
COPY_MAX_BYTES = 5 * 1024**3  # the largest CopyObject; past it the digest goes on through a multipart copy
COPY_PART_BYTES = 1024**3
READ_BYTES = 256 * 1024
DIGEST_METADATA = "sha256"
MISSING_CODES = {"NoSuchKey", "404", "NotFound"}


def _code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


class S3MediaStore:
    name: StoreName = "s3"

    def __init__(self, client: Any, exits: AsyncExitStack, bucket: str, prefix: str, part_bytes: int) -> None:
        self._client = client
        self._exits = exits
        self.bucket = bucket
        self.prefix = prefix
        self._part_bytes = part_bytes

    @classmethod
    async def open(cls, settings: Settings, *, part_bytes: int = PART_BYTES) -> S3MediaStore:
        """A client for the settings' endpoint; the bucket is created when missing."""
        if part_bytes < 5 * 1024 * 1024:
            raise ValueError("S3 parts are at least 5 MiB")
        secret = settings.s3_secret_access_key
        config = AioConfig(
            # path-style for S3-compatible servers on an address or a name without wildcard DNS (MinIO, moto)
            s3={"addressing_style": "path" if settings.s3_endpoint_url else "auto"},
            retries={"max_attempts": 3, "mode": "standard"},
            connect_timeout=10,
            read_timeout=60,
        )
        exits = AsyncExitStack()
        client = await exits.enter_async_context(
            get_session().create_client(
                "s3",
                endpoint_url=settings.s3_endpoint_url,
                region_name=settings.s3_region,
                aws_access_key_id=settings.s3_access_key_id,
                aws_secret_access_key=secret.get_secret_value() if secret else None,
                config=config,
            )
        )
        store = cls(client, exits, settings.media_bucket, settings.s3_prefix, part_bytes)
        try:
            await store._ensure_bucket(settings.s3_region)
        except BaseException:
            await exits.aclose()
            raise
        return store

    async def _ensure_bucket(self, region: str) -> None:
        try:
            await self._client.head_bucket(Bucket=self.bucket)
            return
        except ClientError as error:
            if _code(error) not in MISSING_CODES | {"NoSuchBucket"}:
                raise RetryableError(f"S3 bucket {self.bucket}: {_code(error)} (credentials, endpoint?)") from error
        except BotoCoreError as error:
            raise RetryableError(f"S3 endpoint unreachable: {error}") from error
        options: dict[str, Any] = {"Bucket": self.bucket}
        if region != "us-east-1":
            options["CreateBucketConfiguration"] = {"LocationConstraint": region}
        await self._client.create_bucket(**options)
        log.info("media.bucket_created", store=self.name, bucket=self.bucket)

    def _full(self, key: str) -> str:
        return self.prefix + key

    async def stat(self, key: str) -> StoredObject | None:
        try:
            head = await self._client.head_object(Bucket=self.bucket, Key=self._full(key))
        except ClientError as error:
            if _code(error) in MISSING_CODES:
                return None
            raise RetryableError(f"S3 head {key}: {_code(error)}") from error
        except BotoCoreError as error:
            raise RetryableError(f"S3 endpoint unreachable: {error}") from error
        sha256 = head.get("Metadata", {}).get(DIGEST_METADATA)
        if not sha256:
            return None  # not known to be whole: a put stopped before its digest went on
        content_type = head.get("ContentType") or "application/octet-stream"
        return StoredObject(key=key, size=int(head["ContentLength"]), sha256=sha256, content_type=content_type)

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
        full, started = self._full(key), time.monotonic()
        try:
            await self._abort_incomplete(full)
            upload = _Multipart(self._client, self.bucket, full, content_type, expected_sha256)
            hasher, size, buffer = hashlib.sha256(), 0, bytearray()
            try:
                async for piece in chunks:
                    size += len(piece)
                    if size > max_bytes:
                        raise MediaRefused(f"{key}: more than the cap of {max_bytes} bytes")
                    hasher.update(piece)
                    buffer += piece
                    while len(buffer) >= self._part_bytes:
                        await upload.part(bytes(buffer[: self._part_bytes]))
                        del buffer[: self._part_bytes]
                sha256 = hasher.hexdigest()
                if expected_size is not None and size != expected_size:
                    raise MediaRefused(f"{key}: {size} bytes arrived, {expected_size} were expected")
                if expected_sha256 is not None and sha256 != expected_sha256.lower():
                    raise MediaRefused(f"{key}: SHA-256 {sha256} is not the expected {expected_sha256}")
                if upload.upload_id is None:  # smaller than a part: one request, digest included
                    await self._client.put_object(
                        Bucket=self.bucket,
                        Key=full,
                        Body=bytes(buffer),
                        ContentType=content_type,
                        Metadata={DIGEST_METADATA: sha256},
                    )
                else:
                    if buffer:
                        await upload.part(bytes(buffer))
                    buffer = bytearray()
                    await upload.complete()
                    if expected_sha256 is None:
                        await self._set_digest(full, size, content_type, sha256)
            except BaseException:
                if upload.upload_id is not None:
                    await _shielded(upload.abort())
                raise
        except ClientError as error:
            raise RetryableError(f"S3 put {key}: {_code(error)} {error}") from error
        except BotoCoreError as error:
            raise RetryableError(f"S3 endpoint unreachable: {error}") from error
        log.info("media.stored", store=self.name, key=key, bytes=size, seconds=round(time.monotonic() - started, 3))
        return StoredObject(key=key, size=size, sha256=sha256, content_type=content_type)

    async def _set_digest(self, full: str, size: int, content_type: str, sha256: str) -> None:
        """Copy the object onto itself with its digest in the metadata: server-side, the bytes stay there."""
        source = {"Bucket": self.bucket, "Key": full}
        metadata = {DIGEST_METADATA: sha256}
        if size <= COPY_MAX_BYTES:
            await self._client.copy_object(
                Bucket=self.bucket,
                Key=full,
                CopySource=source,
                MetadataDirective="REPLACE",
                ContentType=content_type,
                Metadata=metadata,
            )
            return
        upload = _Multipart(self._client, self.bucket, full, content_type, sha256)
        try:
            for first in range(0, size, COPY_PART_BYTES):
                await upload.part_copy(source, first, min(first + COPY_PART_BYTES, size) - 1)
            await upload.complete()
        except BaseException:
            if upload.upload_id is not None:
                await _shielded(upload.abort())
            raise

    async def _abort_incomplete(self, full: str) -> None:
        """Multipart uploads of this key left by a put that never finished (a killed worker)."""
        paginator = self._client.get_paginator("list_multipart_uploads")
        async for page in paginator.paginate(Bucket=self.bucket, Prefix=full):
            for upload in page.get("Uploads", []):
                if upload["Key"] != full:
                    continue  # another key that merely starts with this one
                await self._client.abort_multipart_upload(Bucket=self.bucket, Key=full, UploadId=upload["UploadId"])
                log.info("media.abandoned_upload_removed", store=self.name, key=full, upload=upload["UploadId"])

    async def read(self, key: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        byte_range = f"bytes={start}-{'' if end is None else end}"
        try:
            response = await self._client.get_object(Bucket=self.bucket, Key=self._full(key), Range=byte_range)
        except ClientError as error:
            if _code(error) in MISSING_CODES:
                raise MediaMissing(f"{key}: not in S3 bucket {self.bucket}") from error
            if _code(error) == "InvalidRange":
                return
            raise RetryableError(f"S3 get {key}: {_code(error)}") from error
        except BotoCoreError as error:
            raise RetryableError(f"S3 endpoint unreachable: {error}") from error
        async with response["Body"] as body:
            async for piece in body.iter_chunks(READ_BYTES):
                yield piece

    async def delete(self, key: str) -> None:
        full = self._full(key)
        try:
            await self._abort_incomplete(full)
            await self._client.delete_object(Bucket=self.bucket, Key=full)
        except ClientError as error:
            raise RetryableError(f"S3 delete {key}: {_code(error)}") from error
        except BotoCoreError as error:
            raise RetryableError(f"S3 endpoint unreachable: {error}") from error
        log.info("media.deleted", store=self.name, key=key)

    async def close(self) -> None:
        await self._exits.aclose()


class _Multipart:
    """One multipart upload, started with its first part."""

    def __init__(self, client: Any, bucket: str, key: str, content_type: str, sha256: str | None) -> None:
        self._client, self._bucket, self._key = client, bucket, key
        self._content_type, self._sha256 = content_type, sha256
        self.upload_id: str | None = None
        self._parts: list[dict[str, Any]] = []

    async def _start(self) -> str:
        if self.upload_id is None:
            metadata = {DIGEST_METADATA: self._sha256} if self._sha256 else {}
            created = await self._client.create_multipart_upload(
                Bucket=self._bucket, Key=self._key, ContentType=self._content_type, Metadata=metadata
            )
            self.upload_id = created["UploadId"]
        return self.upload_id

    async def part(self, data: bytes) -> None:
        upload_id, number = await self._start(), len(self._parts) + 1
        sent = await self._client.upload_part(
            Bucket=self._bucket, Key=self._key, UploadId=upload_id, PartNumber=number, Body=data
        )
        self._parts.append({"PartNumber": number, "ETag": sent["ETag"]})

    async def part_copy(self, source: dict[str, str], first: int, last: int) -> None:
        upload_id, number = await self._start(), len(self._parts) + 1
        sent = await self._client.upload_part_copy(
            Bucket=self._bucket,
            Key=self._key,
            UploadId=upload_id,
            PartNumber=number,
            CopySource=source,
            CopySourceRange=f"bytes={first}-{last}",
        )
        self._parts.append({"PartNumber": number, "ETag": sent["CopyPartResult"]["ETag"]})

    async def complete(self) -> None:
        await self._client.complete_multipart_upload(
            Bucket=self._bucket, Key=self._key, UploadId=self.upload_id, MultipartUpload={"Parts": self._parts}
        )

    async def abort(self) -> None:
        try:
            await self._client.abort_multipart_upload(Bucket=self._bucket, Key=self._key, UploadId=self.upload_id)
        except ClientError as error:
            if _code(error) != "NoSuchUpload":
                raise


async def _shielded(cleanup: Coroutine[object, object, None]) -> None:
    """Abort to the end even when the put was cancelled; a failed abort is logged (the next put of the key aborts
    what is left)."""
    try:
        await asyncio.shield(cleanup)
    except asyncio.CancelledError:
        raise
    except Exception as error:
        log.warning("media.cleanup_failed", store="s3", error=repr(error))
