"""Failed logins, counted per name and per client address in a moving window, in NATS KV.

The count lives on the bus rather than in the process so that every worker serving the pages shares it: with three
`impromptu run` behind a load balancer, a guesser still gets 5 tries per name, not 15. Each key holds the times of
the latest failures (at most as many as the limit allows) and is changed by compare-and-set, so two workers
recording a failure at once both count. Names and addresses are stored as SHA-256 digests, never in clear.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass

from faststream.nats import NatsBroker
from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue

from pipeline import stores

WINDOW_SECONDS = 15 * 60.0
CAS_ATTEMPTS = 20


@dataclass(frozen=True)
class Limit:
    kind: str  # "name" or "address": part of the key
    allowed: int  # failures within the window; the next try waits until the oldest leaves it


PER_NAME = Limit("name", 5)
PER_ADDRESS = Limit("address", 20)


def failure_key(limit: Limit, value: str) -> str:
    digest = hashlib.sha256(value.encode()).hexdigest()[:40]
    return f"failed.{limit.kind}.{digest}"


def recent(times: list[float], now: float) -> list[float]:
    """The failures still in the window. One stamped a moment after `now` is kept: another worker recorded it
    while this one was reading, and dropping it would lose a failure."""
    return sorted(t for t in times if t > now - WINDOW_SECONDS)


class LoginThrottle:
    """Seconds to wait before another try, shared by every worker through the bucket `impromptu-logins`."""

    def __init__(self, broker: NatsBroker, clock: Callable[[], float] = time.time) -> None:
        self.broker = broker
        self.clock = clock

    async def refused_for(self, name: str, address: str) -> float | None:
        """Seconds until another try is allowed, or None when it is allowed now."""
        kv = await stores.bucket(self.broker, stores.LOGINS)
        now = self.clock()
        waits = []
        for limit, value in self._keys(name, address):
            times, _ = await _read(kv, failure_key(limit, value), now)
            if len(times) >= limit.allowed:
                waits.append(times[-limit.allowed] + WINDOW_SECONDS - now)
        return max(waits) if waits else None

    async def failed(self, name: str, address: str) -> None:
        kv = await stores.bucket(self.broker, stores.LOGINS)
        for limit, value in self._keys(name, address):
            await _append(kv, failure_key(limit, value), limit, self.clock)

    async def forget(self, name: str) -> None:
        """A right password clears the name's count (the address keeps its own)."""
        kv = await stores.bucket(self.broker, stores.LOGINS)
        await kv.delete(failure_key(PER_NAME, name.casefold()))

    def _keys(self, name: str, address: str) -> list[tuple[Limit, str]]:
        return [(PER_NAME, name.casefold()), (PER_ADDRESS, address)]


async def _read(kv: KeyValue, key: str, now: float) -> tuple[list[float], int | None]:
    """The failures still in the window, and the revision to compare-and-set against (None: no such key)."""
    try:
        entry = await kv.get(key)
    except KeyNotFoundError:  # also a deleted key: `create` takes care of its tombstone
        return [], None
    return recent(_times(entry.value or b"[]"), now), entry.revision


def _times(value: bytes) -> list[float]:
    try:
        return [float(t) for t in json.loads(value)]
    except (ValueError, TypeError):
        return []  # unreadable: start over rather than lock everyone out


async def _append(kv: KeyValue, key: str, limit: Limit, clock: Callable[[], float]) -> None:
    def with_ours(times: list[float] | None) -> list[float]:  # after a conflict: another worker's failure, and ours
        now = clock()
        return (recent(times or [], now) + [now])[-limit.allowed :]

    await stores.compare_and_set(
        kv,
        key,
        with_ours,
        decode=_times,
        encode=lambda times: json.dumps(times).encode(),
        gave_up=RuntimeError(f"could not record a failed login on {key} after {CAS_ATTEMPTS} tries"),
        attempts=CAS_ATTEMPTS,
    )
