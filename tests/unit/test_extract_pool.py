"""The enrich stage's extraction processes: pages read in workers, a time bound per page, a hung or crashed worker
replaced, and no worker left once the pool stops. Real processes, real extraction."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import pytest

from pipeline.enrich.extract import Extraction, extract
from pipeline.enrich.pool import ExtractorPool
from pipeline.errors import PermanentError, RetryableError

SEED = (Path(__file__).parents[2] / "pipeline" / "demo_assets" / "bersin-article.html").read_text()
HANG = "<html><body><p>hang-the-extractor</p></body></html>"
CRASH = "<html><body><p>crash-the-extractor</p></body></html>"


def read_or_misbehave(html: str | bytes, *, url: str, final_url: str) -> Extraction:
    """The real extraction, except on the two pages standing for a page that hangs lxml or kills the process."""
    if "hang-the-extractor" in str(html):
        time.sleep(600)
    if "crash-the-extractor" in str(html):
        os._exit(3)
    return extract(html, url=url, final_url=final_url)


def alive(pid: int) -> bool:
    """Running (a zombie, waiting for its parent to reap it, counts as gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status


async def wait_idle(pool: ExtractorPool, count: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while len(pool.worker_pids()) < count:
        assert time.monotonic() < deadline, "the workers did not start"
        await asyncio.sleep(0.05)


async def test_pages_are_read_in_worker_processes_as_in_process() -> None:
    pool = ExtractorPool(2, timeout_seconds=30, text_limit=100)
    await pool.start()
    try:
        pids = pool.worker_pids()
        assert len(pids) == 2 and os.getpid() not in pids
        url = "https://www.linkedin.com/pulse/why-elearning-isnt-working/"
        extraction = await pool.extract(SEED, url=url, final_url=url)
        with pytest.raises(PermanentError, match="^no_content"):
            await pool.extract("   ", url=url, final_url=url)
    finally:
        await pool.stop()
    assert extraction.article == extract(SEED, url=url, final_url=url).article
    assert len(extraction.text) == 100  # cut in the worker: the rest is never sent back
    assert not any(alive(pid) for pid in pids)


async def test_a_page_that_hangs_fails_in_time_and_its_worker_is_replaced() -> None:
    pool = ExtractorPool(2, timeout_seconds=1.5, text_limit=1000, read=read_or_misbehave)
    await pool.start()
    try:
        await wait_idle(pool, 2)
        first = set(pool.worker_pids())
        url = "https://example.com/a"
        started = time.monotonic()
        hung = asyncio.create_task(pool.extract(HANG, url=url, final_url=url))
        await asyncio.sleep(0.2)
        # the stage goes on with the other worker meanwhile
        other = await pool.extract(SEED, url=url, final_url=url)
        read_meanwhile = time.monotonic() - started
        with pytest.raises(PermanentError, match=r"^extract_timeout: .*1\.5 s"):
            await hung
        failed_after = time.monotonic() - started
        await wait_idle(pool, 2)
        now = set(pool.worker_pids())
        again = await pool.extract(SEED, url=url, final_url=url)
    finally:
        await pool.stop()
    assert other.article.title and read_meanwhile < 1.5
    assert 1.5 <= failed_after < 5
    (replaced,) = first - now
    assert not alive(replaced) and len(now) == 2
    assert again.article == other.article
    assert not any(alive(pid) for pid in first | now)


async def test_a_worker_that_dies_on_a_page_is_replaced_and_the_page_retried() -> None:
    pool = ExtractorPool(1, timeout_seconds=30, text_limit=1000, read=read_or_misbehave)
    await pool.start()
    try:
        (first,) = pool.worker_pids()
        with pytest.raises(RetryableError, match=r"^extract_crashed: .*exit code 3"):
            await pool.extract(CRASH, url="https://example.com/c", final_url="https://example.com/c")
        url = "https://example.com/b"
        after = await pool.extract(SEED, url=url, final_url=url)
        (second,) = pool.worker_pids()
    finally:
        await pool.stop()
    assert second != first and after.article.title
    assert not alive(first) and not alive(second)


async def test_stopping_mid_page_leaves_no_worker_behind() -> None:
    pool = ExtractorPool(1, timeout_seconds=60, text_limit=1000, read=read_or_misbehave)
    await pool.start()
    await wait_idle(pool, 1)
    pids = pool.worker_pids()
    hung = asyncio.create_task(pool.extract(HANG, url="https://example.com/h", final_url="https://example.com/h"))
    await asyncio.sleep(0.3)
    started = time.monotonic()
    await pool.stop()
    with pytest.raises(RetryableError, match="^extract_crashed"):  # the page goes back to the stage's retries
        await hung
    assert time.monotonic() - started < 10
    assert not any(alive(pid) for pid in pids)
    with pytest.raises(RetryableError, match="^extract_unavailable"):
        await pool.extract(SEED, url="https://example.com/s", final_url="https://example.com/s")


async def test_stopping_while_the_pool_starts_leaves_no_worker_and_raises_nothing() -> None:
    pool = ExtractorPool(2, timeout_seconds=30, text_limit=1000)
    spawned: list[int] = []
    launch = pool._launch

    def recording_launch(pebble_pool):  # type: ignore[no-untyped-def]
        launch(pebble_pool)
        spawned.extend(pool.worker_pids())

    pool._launch = recording_launch  # type: ignore[method-assign]
    starting = asyncio.create_task(pool.start())
    await asyncio.sleep(0)  # Ctrl-C right after the stage came up
    await pool.stop()
    await starting
    assert spawned and not any(alive(pid) for pid in spawned)
    late = ExtractorPool(1, timeout_seconds=30, text_limit=1000)
    await late.stop()  # stopped before it ever started: a start after that does nothing
    await late.start()
    assert not late.started and late.worker_pids() == []


async def test_a_worker_killed_while_idle_costs_no_page() -> None:
    pool = ExtractorPool(2, timeout_seconds=30, text_limit=1000)
    await pool.start()
    try:
        await wait_idle(pool, 2)
        first = pool.worker_pids()
        os.kill(first[0], signal.SIGKILL)  # the OOM killer picks an idle worker
        await asyncio.sleep(0.5)
        url = "https://example.com/i"
        after = await pool.extract(SEED, url=url, final_url=url)
        now = pool.worker_pids()
    finally:
        await pool.stop()
    assert after.article.title and len(now) == 2
    assert not any(alive(pid) for pid in first + now)
