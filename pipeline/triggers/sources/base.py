"""What every share source has in common: checkpoints, emitting shares, and polling without blocking the others.

A source is one adapter class (a `SourceAdapter`: its name, its settings section, how it is built from the settings
and how it polls), listed in `pipeline.triggers.sources.registry`; its async `poll()` emits the new shares it finds
and returns how long to wait before the next poll. Checkpoints (X `since_id`, feed ETags, seen entry ids) live in
NATS KV so a restart neither misses nor repeats: a source emits first (each share awaited until JetStream
acknowledges it) and saves its checkpoint after, so a crash in between re-emits shares whose
Nats-Msg-Id JetStream drops.
"""

from __future__ import annotations

import asyncio
import json
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import httpx
import structlog
from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue
from pydantic import Field

from pipeline.domain.rules import Person
from pipeline.messages import Share
from pipeline.settings import Settings, SettingsSection

log = structlog.get_logger("pipeline.sources")

Emit = Callable[[Share], Awaitable[None]]
"""Publishes one share on `impromptu.shares` (its id as Nats-Msg-Id) and returns once JetStream has it."""


class RateLimited(Exception):
    """The network said "slow down": wait `retry_after` seconds before polling this source again."""

    def __init__(self, retry_after: float, detail: str) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class SourceUnavailable(Exception):
    """The source failed this round (network error, 5xx, malformed response); try again later."""


class Checkpoints(Protocol):
    async def load(self, key: str) -> dict[str, Any] | None: ...
    async def save(self, key: str, value: dict[str, Any]) -> None: ...


class KvCheckpoints:
    """Checkpoints in a NATS KV bucket, one JSON document per key (keys: [-/_=.a-zA-Z0-9]+)."""

    def __init__(self, kv: KeyValue) -> None:
        self.kv = kv

    async def load(self, key: str) -> dict[str, Any] | None:
        try:
            entry = await self.kv.get(key)
        except KeyNotFoundError:
            return None
        checkpoint: dict[str, Any] = json.loads(entry.value or b"{}")
        return checkpoint

    async def save(self, key: str, value: dict[str, Any]) -> None:
        await self.kv.put(key, json.dumps(value, sort_keys=True).encode())


class MemoryCheckpoints:
    """Checkpoints in a dict: for tests and `--once` dry runs."""

    def __init__(self) -> None:
        self.data: dict[str, dict[str, Any]] = {}

    async def load(self, key: str) -> dict[str, Any] | None:
        return self.data.get(key)

    async def save(self, key: str, value: dict[str, Any]) -> None:
        self.data[key] = value


class Source(Protocol):
    @property
    def name(self) -> str: ...

    poll_seconds: float

    async def poll(self) -> float:
        """Emit every new share once; return seconds until the next poll. May raise RateLimited/SourceUnavailable."""
        ...


class SourceSettings(SettingsSection):
    """A source's section of the settings, declared in its adapter's file (see `SettingsSection`)."""

    source_timeout_seconds: float = 15.0  # every source's: how long one request may take
    source_max_bytes: int = Field(default=5 * 1024 * 1024, description="Largest feed or API response read.")


@dataclass(frozen=True)
class SourceContext:
    """What every source is given beside its settings section, by `impromptu run`'s source runner."""

    people: Callable[[], Sequence[Person]]  # the rules' people, read on every poll: the rules file hot-reloads
    checkpoints: Checkpoints
    emit: Emit
    http: httpx.AsyncClient  # shared by the sources that speak HTTP themselves; closed when they stop


class SourceAdapter(ABC):
    """Everything about one share source, in its adapter's file: the source classes derive from this and are listed
    in `pipeline.triggers.sources.registry.ADAPTERS` (a test or a plugin adds one with `register`)."""

    name: ClassVar[str]  # in logs, the task's name, `source` of its shares' log lines
    Section: ClassVar[type[SourceSettings]] = SourceSettings  # its section of the settings
    poll_seconds: float  # the usual wait between polls (also the least wait after a failure, with 30 s)

    @classmethod
    @abstractmethod
    def from_settings(cls, settings: Settings, context: SourceContext) -> SourceAdapter | None:
        """The source, configured from its section of `settings`; None (after one log line saying what to set) when
        it is not configured."""

    @abstractmethod
    async def poll(self) -> float:
        """Emit every new share once; return seconds until the next poll. May raise RateLimited/SourceUnavailable."""


async def run_source(source: Source, *, failure_backoff: float = 30.0, max_backoff: float = 900.0) -> None:
    """Poll `source` until cancelled. Its failures only delay it: every source runs in its own task."""
    failures = 0
    while True:
        try:
            delay = await source.poll()
            failures = 0
        except RateLimited as limit:
            delay = max(limit.retry_after, 1.0)
            log.warning("source.rate_limited", source=source.name, retry_in_seconds=round(delay), detail=str(limit))
        except SourceUnavailable as error:
            failures += 1
            delay = min(failure_backoff * 2 ** (failures - 1), max_backoff)
            log.warning("source.unavailable", source=source.name, retry_in_seconds=round(delay), reason=str(error))
        except Exception as error:  # a bug in one source must not stop the others
            failures += 1
            delay = min(failure_backoff * 2 ** (failures - 1), max_backoff)
            log.exception("source.failed", source=source.name, retry_in_seconds=round(delay), error=repr(error))
        await asyncio.sleep(delay)
