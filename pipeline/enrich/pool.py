"""Reading pages in worker processes: the enrich stage's CPU-bound part (trafilatura, summary, key phrases) on every
core of the machine, each page under a time bound. A thin layer over `pebble.ProcessPool`, which runs the workers,
kills one whose page overruns its bound and replaces any that dies.

One process reads one page at a time, so the GIL is never shared between extractions. A page whose extraction
overruns `timeout_seconds` (counted from when a worker takes it) fails with `extract_timeout` and its worker is
killed and replaced: a page that hangs the extractor costs one worker for the bound, never the stage. A worker that
dies on a page (a crash in lxml, the OOM killer) is replaced too and the page is retried through the delivery policy.
Workers end with the stage (`stop`) and (on Linux) when the stage's process dies, so none outlives it. As with any
multiprocessing start method but fork, a worker imports the main module first: a script that starts a pool needs
the `if __name__ == "__main__":` guard (the `impromptu` command has it).
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Any, Literal

import pebble
import structlog

from pipeline.enrich.extract import Extraction, extract
from pipeline.errors import PermanentError, RetryableError
from pipeline.lifetime import die_with_parent
from pipeline.logs import configure_logging

log = structlog.get_logger("pipeline.enrich.pool")

# Workers fork from a server process that has imported the extraction and loaded its models once (`warm.py`): a
# replacement starts in milliseconds and the models are shared copy-on-write; never from the stage itself, which
# runs an event loop and threads.
CONTEXT = multiprocessing.get_context("forkserver")
CONTEXT.set_forkserver_preload(["pipeline.enrich.warm"])
WARM_UP_PAGE = "<html><head><title>Warm-up</title></head><body><p>" + "Learning in public, live and together. " * 20


def warm_worker(read: Callable[..., Extraction], log_json: bool | None, log_level: str) -> None:
    """A worker's start (pebble's initializer): die with the stage, log as it does, warm up `read`."""
    die_with_parent()  # with the fork server, which ends with the stage's process (even at kill -9)
    configure_logging(json=log_json, level=log_level)
    with contextlib.suppress(Exception):  # the models are loaded (warm.py); a failure here shows on the first page
        read(WARM_UP_PAGE, url="https://warm-up.invalid/", final_url="https://warm-up.invalid/")


PageRead = tuple[Literal["ok"], Extraction] | tuple[Literal["permanent"], str]


def read_page(
    read: Callable[..., Extraction], text_limit: int, html: str | bytes, url: str, final_url: str
) -> PageRead:
    """In a worker: ("ok", extraction, its text cut so the rest is never sent back) or ("permanent", reason)."""
    try:
        extraction = read(html, url=url, final_url=final_url)
    except PermanentError as error:
        return ("permanent", str(error))
    except Exception as error:  # noqa: BLE001 - extract raises nothing else; if it does, the page is to blame
        return ("permanent", f"no_content: the page could not be read ({type(error).__name__}: {error})")
    return ("ok", Extraction(extraction.article, extraction.text[:text_limit]))


def _stop_and_join(pool: pebble.ProcessPool) -> None:
    """In a thread: pebble terminates every worker (SIGKILL after 3 s) and waits until each has exited."""
    pool.stop()
    pool.join()


@dataclass
class ExtractorPool:
    """`processes` extraction workers; pages beyond them wait in pebble's queue: at most `processes` read at once."""

    processes: int
    timeout_seconds: float
    text_limit: int
    read: Callable[..., Extraction] = extract  # a module-level function: the workers import it by name
    log_json: bool | None = None
    log_level: str = "INFO"
    _pool: pebble.ProcessPool | None = field(default=None, init=False)
    _launching: asyncio.Future[None] | None = field(default=None, init=False)
    _stopped: asyncio.Future[None] | None = field(default=None, init=False)
    _retired: list[asyncio.Future[None]] = field(default_factory=list, init=False)
    _stopping: bool = field(default=False, init=False)

    @property
    def started(self) -> bool:
        return self._pool is not None

    async def start(self) -> None:
        """Start the workers (the first start also starts the fork server: about a second, in a thread)."""
        if self.started or self._stopping:
            return
        loop = asyncio.get_running_loop()
        self._stopped = loop.create_future()
        self._pool = self._new_pool()
        self._launching = loop.run_in_executor(None, self._launch, self._pool)
        await asyncio.shield(self._launching)
        if self._stopping:  # Ctrl-C while starting: `stop` owns what was spawned
            return
        log.info(
            "extract.pool_started", processes=self.processes, pids=self.worker_pids(), timeout=self.timeout_seconds
        )

    def worker_pids(self) -> list[int]:
        """This pool's live workers (not another pebble pool's in the same process, such as the template workers';
        pebble keeps its workers by pid in the pool's manager, privately)."""
        if self._pool is None:
            return []
        workers = self._pool._pool_manager.worker_manager.workers
        return sorted(pid for pid, process in list(workers.items()) if process.is_alive())

    async def extract(self, html: str | bytes, *, url: str, final_url: str) -> Extraction:
        """Read one page in a worker. PermanentError for an unreadable page or one that overran the time bound,
        RetryableError when the worker died under it (or the pool stopped)."""
        if self._pool is None or self._stopped is None or self._stopping:
            raise RetryableError("extract_unavailable: the extraction pool is not running")
        args = (self.read, self.text_limit, html, url, final_url)
        try:
            future = self._pool.schedule(read_page, args=args, timeout=self.timeout_seconds)
        except RuntimeError as error:  # pebble's pool broke (a worker died with no page under it): the page is
            self._renew(error)  # not to blame, it goes to the new pool
            future = self._pool.schedule(read_page, args=args, timeout=self.timeout_seconds)
        page = asyncio.wrap_future(future)
        try:
            either: set[asyncio.Future[Any]] = {page, self._stopped}  # the page read, or the pool stopping
            await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            future.cancel()  # a page still queued is never read; one being read runs out its bound
            raise
        if not page.done():  # the pool stopped under it: pebble never settles such a future
            page.cancel()
            raise RetryableError("extract_crashed: the extraction pool stopped while reading the page")
        try:
            outcome = page.result()
        except TimeoutError:  # pebble has killed the worker; it starts another
            log.warning("extract.worker_replaced", reason="timeout", url=url)
            raise PermanentError(
                f"extract_timeout: reading the page took over {self.timeout_seconds:g} s; its worker was replaced"
            ) from None
        except pebble.ProcessExpired as error:
            log.warning("extract.worker_replaced", pid=error.pid, reason="crashed", url=url, exit_code=error.exitcode)
            raise RetryableError(
                f"extract_crashed: the extraction worker died reading the page (exit code {error.exitcode})"
            ) from None
        except BrokenProcessPool as error:
            self._renew(error)
            raise RetryableError("extract_crashed: the extraction pool broke reading the page") from None
        if outcome[0] == "permanent":
            raise PermanentError(outcome[1])
        return outcome[1]

    async def stop(self) -> None:
        """Stop every worker (busy ones too) and wait until each has exited; pages in flight fail as retryable."""
        if self._stopping:
            return
        self._stopping = True  # also when not started yet: a start that comes after does nothing
        if self._pool is None:
            return
        if self._launching is not None:  # pebble must have started its workers before it can stop them
            await asyncio.gather(self._launching, return_exceptions=True)
        assert self._stopped is not None
        self._stopped.set_result(None)
        loop = asyncio.get_running_loop()
        await asyncio.gather(loop.run_in_executor(None, _stop_and_join, self._pool), *self._retired)
        log.info("extract.pool_stopped")

    # -- pebble's pool ------------------------------------------------------------------------------------------------

    def _new_pool(self) -> pebble.ProcessPool:
        return pebble.ProcessPool(
            max_workers=self.processes,
            initializer=warm_worker,
            initargs=(self.read, self.log_json, self.log_level),
            context=CONTEXT,
        )

    @staticmethod
    def _launch(pool: pebble.ProcessPool) -> None:
        """In a thread: pebble starts its workers with the first task; a trivial one starts them now, not under
        the first page."""
        pool.schedule(os.getpid)

    def _renew(self, error: BaseException) -> None:
        """pebble's pool is unusable once broken (a worker died with no page under it): the next page gets a new one
        (its workers start with that page); the old one is stopped in the background."""
        if self._pool is None or self._stopping:
            return
        log.warning("extract.pool_replaced", error=f"{type(error).__name__}: {error}")
        broken, self._pool = self._pool, self._new_pool()
        self._retired.append(asyncio.get_running_loop().run_in_executor(None, _stop_and_join, broken))
