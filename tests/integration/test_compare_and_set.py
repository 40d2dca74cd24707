"""stores.compare_and_set, the one read-change-write loop over KV (the library catalog, the proposal index's days,
the login throttle), against a real nats-server: concurrent writers all land, a repeat writes nothing, a deleted key
is written again, and a key that never stops changing gives up with the caller's error."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import pytest
from faststream.nats import NatsBroker
from nats.js.kv import KeyValue

from pipeline import stores
from pipeline.errors import RetryableError

pytestmark = pytest.mark.nats


def add_one(value: int | None) -> int:
    return (value or 0) + 1


async def cas(kv: KeyValue, key: str, change: Callable[[int | None], int | None], attempts: int = 20) -> int | None:
    return await stores.compare_and_set(
        kv,
        key,
        change,
        decode=json.loads,
        encode=lambda value: json.dumps(value).encode(),
        gave_up=RetryableError(f"{key} kept changing"),
        attempts=attempts,
    )


class Meddling(KeyValue):
    """The bucket as another worker sees it: someone else writes the key just before each of our updates."""

    def __init__(self, kv: KeyValue) -> None:
        self.kv = kv
        self.updates = 0

    async def get(self, key: str, revision: int | None = None, validate_keys: bool = True) -> KeyValue.Entry:
        return await self.kv.get(key)

    async def update(self, key: str, value: bytes | None = None, last: int | None = None, **_: object) -> int:
        self.updates += 1
        await self.kv.put(key, b"1000")
        return await self.kv.update(key, value or b"", last=last)


async def test_concurrent_writers_all_land(client: NatsBroker) -> None:
    kv = await stores.bucket(client, stores.LIBRARY)

    await asyncio.gather(*(cas(kv, "cas.counter", add_one) for _ in range(12)))

    assert json.loads((await kv.get("cas.counter")).value or b"") == 12


async def test_a_repeat_writes_nothing_and_returns_the_current_value(client: NatsBroker) -> None:
    kv = await stores.bucket(client, stores.LIBRARY)
    assert await cas(kv, "cas.once", lambda value: value or 5) == 5
    revision = (await kv.get("cas.once")).revision

    assert await cas(kv, "cas.once", lambda value: None) == 5

    assert (await kv.get("cas.once")).revision == revision


async def test_a_deleted_key_is_created_again(client: NatsBroker) -> None:
    kv = await stores.bucket(client, stores.LIBRARY)
    await cas(kv, "cas.gone", add_one)
    await kv.delete("cas.gone")

    assert await cas(kv, "cas.gone", add_one) == 1  # judged as absent, written over the tombstone


async def test_a_key_that_keeps_changing_gives_up_with_the_callers_error(client: NatsBroker) -> None:
    kv = await stores.bucket(client, stores.LIBRARY)
    await kv.put("cas.busy", b"0")
    meddling = Meddling(kv)

    with pytest.raises(RetryableError, match="cas.busy kept changing"):
        await cas(meddling, "cas.busy", add_one, attempts=3)

    assert meddling.updates == 3  # each conflict read again and tried again, then gave up
    assert json.loads((await kv.get("cas.busy")).value or b"") == 1000  # ours never overwrote theirs
