"""Opening a recording's file as a stream of bytes (interface; the implementation arrives with the intake work)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from faststream.nats import NatsBroker

    from pipeline.messages import Recording, RecordingFile
    from pipeline.settings import Settings


@dataclass
class OpenedFile:
    content_type: str
    size: int | None
    chunks: AsyncIterator[bytes]


def open_file(
    file: RecordingFile, recording: Recording, settings: Settings, broker: NatsBroker
) -> AbstractAsyncContextManager[OpenedFile]:
    raise NotImplementedError
