"""How long the event loop stood still while a block ran: the gaps between the ticks of a 10 ms ticker."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


@asynccontextmanager
async def loop_pauses() -> AsyncIterator[list[float]]:
    """Yields the list the gaps are appended to, tick by tick, until the block ends."""
    gaps: list[float] = []

    async def ticking() -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(0.01)
            gaps.append(time.monotonic() - last)
            last = time.monotonic()

    ticker = asyncio.create_task(ticking())
    try:
        yield gaps
    finally:
        ticker.cancel()
