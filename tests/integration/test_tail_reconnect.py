"""`impromptu tail` outlives the bus restarting, on a real nats-server stopped and started again on the same port and
store: it says "reconnecting…", then "reconnected", and goes on from the message after the last it showed (a
message published while it was still reconnecting is shown, none twice). Ctrl-C still ends it, even mid-outage."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from pipeline import bus
from pipeline.app import connected
from pipeline.embedded import EmbeddedNats
from pipeline.messages import Share
from pipeline.settings import Settings

pytestmark = pytest.mark.nats

CHECKOUT = Path(__file__).resolve().parents[2]
WAIT_SECONDS = 20.0


def share(n: int) -> Share:
    return Share.from_source(source="cli", native_id=f"rc-{n}", sharer="@stranger", url=f"https://example.com/r-{n}")


@dataclass
class Tail:
    process: asyncio.subprocess.Process
    out: list[str] = field(default_factory=list)  # JSON lines
    err: list[str] = field(default_factory=list)  # notices (and anything else on stderr)

    async def _read(self, stream: asyncio.StreamReader, into: list[str]) -> None:
        async for raw in stream:
            into.append(raw.decode().rstrip("\n"))

    async def until(self, what: str, check: object) -> None:
        deadline = time.monotonic() + WAIT_SECONDS
        while not check():  # type: ignore[operator]
            if time.monotonic() > deadline:
                raise AssertionError(f"tail never {what}; stdout={self.out} stderr={self.err}")
            await asyncio.sleep(0.05)

    def shown(self) -> list[str]:
        return [json.loads(line)["correlation_id"] for line in self.out]

    def said(self, word: str) -> int:
        return sum(word in line for line in self.err)


@pytest.fixture
async def tail(settings: Settings) -> AsyncIterator[Tail]:
    async with connected(settings):  # the stream exists before tail starts (as under a running pipeline)
        pass
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMPROMPTU_")}
    env.update(NATS_URL=settings.nats_url or "", IMPROMPTU_DATA_DIR=str(settings.data_dir))
    process = await asyncio.create_subprocess_exec(
        *(sys.executable, "-c", "from pipeline.cli import main; main()", "tail", "--json"),
        cwd=CHECKOUT,  # this checkout's code, not the installed one
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    running = Tail(process)
    assert process.stdout is not None and process.stderr is not None
    readers = [
        asyncio.ensure_future(running._read(process.stdout, running.out)),
        asyncio.ensure_future(running._read(process.stderr, running.err)),
    ]
    yield running
    if process.returncode is None:
        process.kill()
        await process.wait()
    await asyncio.gather(*readers, return_exceptions=True)


async def publish(settings: Settings, message: Share) -> None:
    async with connected(settings) as client:
        await bus.publish(client, bus.SHARES, message)


async def tail_consumers(settings: Settings) -> int:
    async with connected(settings) as client:
        return len(await bus.jetstream(client).consumers_info(bus.STREAM))


async def wait_subscribed(settings: Settings, running: Tail) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while await tail_consumers(settings) == 0:
        assert running.process.returncode is None, running.err
        assert time.monotonic() < deadline, f"tail never subscribed: {running.err}"
        await asyncio.sleep(0.1)


async def test_tail_reconnects_after_the_bus_restarts(
    nats_server: EmbeddedNats, settings: Settings, tail: Tail
) -> None:
    await wait_subscribed(settings, tail)
    await publish(settings, share(1))
    await tail.until("showed the first message", lambda: len(tail.out) == 1)

    nats_server.stop()
    await tail.until("said it is reconnecting", lambda: tail.said("reconnecting…"))
    assert tail.process.returncode is None

    nats_server.start()  # same port, same store: the stream and its sequence numbers are back
    await publish(settings, share(2))  # very likely before tail has its new consumer: must not be missed
    await tail.until("said it reconnected", lambda: tail.said("reconnected:"))
    await publish(settings, share(3))
    await tail.until("showed the messages after the restart", lambda: len(tail.out) >= 3)
    await asyncio.sleep(0.5)  # a duplicate would arrive now
    assert tail.shown() == [share(1).correlation_id, share(2).correlation_id, share(3).correlation_id]

    tail.process.send_signal(signal.SIGINT)  # Ctrl-C
    assert await asyncio.wait_for(tail.process.wait(), WAIT_SECONDS) in (0, 130)
    assert not any("Traceback" in line or line.startswith("error:") for line in tail.err), tail.err
    assert await tail_consumers(settings) == 0  # its consumer went with it


async def test_ctrl_c_during_an_outage_ends_tail_at_once(
    nats_server: EmbeddedNats, settings: Settings, tail: Tail
) -> None:
    await wait_subscribed(settings, tail)
    nats_server.stop()
    await tail.until("said it is reconnecting", lambda: tail.said("reconnecting…"))
    started = time.monotonic()
    tail.process.send_signal(signal.SIGINT)
    assert await asyncio.wait_for(tail.process.wait(), WAIT_SECONDS) in (0, 130)
    assert time.monotonic() - started < 3.0
    assert not any("Traceback" in line or line.startswith("error:") for line in tail.err), tail.err
