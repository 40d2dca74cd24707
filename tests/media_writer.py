"""A process that streams a generated object into the media store, for tests that kill it or measure its memory.

    python -m tests.media_writer KEY SIZE_MB [--pause-after-mb N]   (store settings from IMPROMPTU_* variables)

Prints one JSON line when it pauses ({"paused": bytes}) and one when done ({"stored": ..., "maxrss_mb": ...}).
Run it with cwd= the worktree so it imports this checkout's pipeline.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import random
from collections.abc import AsyncIterator

from pipeline.app import connected
from pipeline.archive.media import media_store
from pipeline.logs import configure_logging
from pipeline.settings import Settings

BLOCK = 1024 * 1024


def block(seed: int, number: int, base: dict[int, bytes] = {}) -> bytes:  # noqa: B006 - a cache of one base
    """Block `number` of the generated object: a random MiB (per seed) stamped with its number, so a misplaced
    block changes the digest."""
    if seed not in base:
        base[seed] = random.Random(seed).randbytes(BLOCK)
    return number.to_bytes(8, "big") + base[seed][8:]


def generated_sha256(seed: int, size_mb: int) -> str:
    hasher = hashlib.sha256()
    for number in range(size_mb):
        hasher.update(block(seed, number))
    return hasher.hexdigest()


async def generate(seed: int, size_mb: int, pause_after_mb: int | None) -> AsyncIterator[bytes]:
    for number in range(size_mb):
        if number == pause_after_mb:
            print(json.dumps({"paused": number * BLOCK}), flush=True)
            await asyncio.sleep(3600)  # killed here
        yield block(seed, number)


def peak_rss_mb() -> float:
    """This process's peak RSS since it started: VmHWM (getrusage's ru_maxrss is no good here, since on Linux it
    keeps the peak of the forked parent, the whole test run, across exec)."""
    status = open("/proc/self/status").read()  # noqa: SIM115
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:"))) / 1024


async def main(key: str, size_mb: int, seed: int, pause_after_mb: int | None) -> None:
    configure_logging(json=True, level="WARNING")
    settings = Settings()
    async with connected(settings) as broker:
        store = await media_store(settings, broker)
        try:
            stored = await store.put(
                key,
                generate(seed, size_mb, pause_after_mb),
                content_type="video/mp4",
                max_bytes=size_mb * BLOCK,
            )
        finally:
            await store.close()
    maxrss_mb = peak_rss_mb()
    print(json.dumps({"stored": stored.size, "sha256": stored.sha256, "maxrss_mb": round(maxrss_mb, 1)}), flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("key")
    parser.add_argument("size_mb", type=int)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--pause-after-mb", type=int, default=None)
    arguments = parser.parse_args()
    asyncio.run(main(arguments.key, arguments.size_mb, arguments.seed, arguments.pause_after_mb))
