"""Reading pages in worker processes: the enrich stage's CPU-bound part (trafilatura, summary, key phrases) on every
core of the machine, each page under a time bound.

One process reads one page at a time, so the GIL is never shared between extractions. A page whose extraction
overruns `timeout_seconds` fails with `extract_timeout` and its worker is killed and replaced: a page that hangs the
extractor costs one worker for the bound, never the stage. A worker that dies on a page (a crash in lxml, the OOM
killer) is replaced too and the page is retried through the delivery policy. Workers end with the stage (`stop`),
when their pipe closes, and (on Linux) when the stage's process dies, so none outlives it. As with any
multiprocessing start method but fork, a worker imports the main module first: a script that starts a pool needs
the `if __name__ == "__main__":` guard (the `impromptu` command has it).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import multiprocessing
import signal
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from multiprocessing.connection import Connection
from typing import Any

import structlog

from pipeline.enrich.extract import Extraction, extract
from pipeline.errors import PermanentError, RetryableError
from pipeline.logs import configure_logging

log = structlog.get_logger("pipeline.enrich.pool")

# Workers fork from a server process that has imported the extraction and loaded its models once (`warm.py`): a
# replacement starts in milliseconds and the models are shared copy-on-write; never from the stage itself, which
# runs an event loop and threads.
CONTEXT = multiprocessing.get_context("forkserver")
CONTEXT.set_forkserver_preload(["pipeline.enrich.warm"])
START_SECONDS = 60.0  # importing trafilatura, yake, py3langid and warming up: ~1 s, longer on a loaded machine
STOP_SECONDS = 5.0
RESTART_DELAY_SECONDS = 1.0
PR_SET_PDEATHSIG = 1
WARM_UP_PAGE = "<html><head><title>Warm-up</title></head><body><p>" + "Learning in public, live and together. " * 20


@dataclass(frozen=True)
class Job:
    html: str | bytes
    url: str
    final_url: str


def _die_with_parent() -> None:
    """Linux: the kernel kills this worker when its parent dies: the fork server, which ends with the stage's
    process (even at kill -9, mid-extraction)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: a closed pipe still ends an idle worker
        pass


def worker_main(
    connection: Connection, read: Callable[..., Extraction], text_limit: int, log_json: bool | None, log_level: str
) -> None:
    """A worker's life: warm up, say ready, then read pages until the pipe says stop or closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group; the stage stops us
    _die_with_parent()
    configure_logging(json=log_json, level=log_level)
    with contextlib.suppress(PermanentError):  # the models are loaded (warm.py); this warms `read` itself
        read(WARM_UP_PAGE, url="https://warm-up.invalid/", final_url="https://warm-up.invalid/")
    connection.send(("ready", None))
    while True:
        try:
            job = connection.recv()
        except (EOFError, OSError):  # the stage closed the pipe or died
            return
        if job is None:
            return
        try:
            extraction = read(job.html, url=job.url, final_url=job.final_url)
            outcome: tuple[str, Any] = ("ok", Extraction(extraction.article, extraction.text[:text_limit]))
        except PermanentError as error:
            outcome = ("permanent", str(error))
        except Exception as error:  # noqa: BLE001 - extract raises nothing else; if it does, the page is to blame
            outcome = ("permanent", f"no_content: the page could not be read ({type(error).__name__}: {error})")
        try:
            connection.send(outcome)
        except (EOFError, OSError):
            return


@dataclass(eq=False)  # one per process: compared and hashed by identity
class Worker:
    process: multiprocessing.process.BaseProcess
    connection: Connection

    def wait_ready(self) -> bool:
        """In a thread: True once the worker has warmed up; False when it died or took too long."""
        try:
            return self.connection.poll(START_SECONDS) and self.connection.recv()[0] == "ready"
        except (EOFError, OSError):
            return False

    def run(self, job: Job, timeout: float) -> tuple[str, Any]:
        """In a thread: the worker's outcome for one page, ("timeout", None) or ("crashed", exit code)."""
        try:
            self.connection.send(job)
            if not self.connection.poll(timeout):
                return ("timeout", None)
            return self.connection.recv()
        except (EOFError, OSError):
            self.process.join(1)
            return ("crashed", self.process.exitcode)

    def kill(self, *, close: bool = True) -> None:
        """Kill and reap the process; `close=False` while another thread may still be reading its pipe (the kill
        ends that read with EOF; the pipe closes when the worker is collected)."""
        if self.process.is_alive():
            self.process.kill()
        self.process.join(STOP_SECONDS)
        if close:
            self.connection.close()

    def stop(self) -> None:
        """An idle worker: ask it to leave, then make sure it has."""
        with contextlib.suppress(OSError):
            self.connection.send(None)
        self.process.join(STOP_SECONDS)
        self.kill()


@dataclass
class ExtractorPool:
    """`processes` extraction workers; `extract` waits for an idle one: at most `processes` pages are read at once."""

    processes: int
    timeout_seconds: float
    text_limit: int
    read: Callable[..., Extraction] = extract  # a module-level function: the workers import it by name
    log_json: bool | None = None
    log_level: str = "INFO"
    _idle: asyncio.Queue[Worker] = field(default_factory=asyncio.Queue, init=False)
    _workers: set[Worker] = field(default_factory=set, init=False)
    _starting: set[asyncio.Task[None]] = field(default_factory=set, init=False)
    _threads: ThreadPoolExecutor | None = field(default=None, init=False)
    _stopping: bool = field(default=False, init=False)

    @property
    def started(self) -> bool:
        return self._threads is not None

    async def start(self) -> None:
        """Start the workers (the first start also starts the fork server: about a second, in a thread); each joins
        the idle queue once warm."""
        if self.started or self._stopping:
            return
        # one thread per worker for the blocking pipe calls, plus one per worker being started or replaced
        self._threads = ThreadPoolExecutor(max_workers=2 * self.processes, thread_name_prefix="extract-pool")
        loop = asyncio.get_running_loop()
        for _ in range(self.processes):
            if self._stopping:  # Ctrl-C while starting: `stop` owns what was spawned
                return
            worker = await loop.run_in_executor(self._threads, self._spawn)
            if self._stopping:
                return
            self._start_worker(worker)
        log.info(
            "extract.pool_started", processes=self.processes, pids=self.worker_pids(), timeout=self.timeout_seconds
        )

    def worker_pids(self) -> list[int]:
        return sorted(w.process.pid for w in list(self._workers) if w.process.pid is not None)

    async def extract(self, html: str | bytes, *, url: str, final_url: str) -> Extraction:
        """Read one page in a worker. PermanentError for an unreadable page or one that overran the time bound,
        RetryableError when the worker died under it."""
        if not self.started or self._stopping:
            raise RetryableError("extract_unavailable: the extraction pool is not running")
        assert self._threads is not None
        worker = await self._idle.get()
        loop = asyncio.get_running_loop()
        try:
            kind, value = await loop.run_in_executor(
                self._threads, worker.run, Job(html, url, final_url), self.timeout_seconds
            )
        except BaseException:  # cancelled mid-page (the stage stops): the worker's state is unknown
            self._replace(worker, reason="cancelled")
            raise
        if kind == "ok":
            self._idle.put_nowait(worker)
            return value
        if kind == "permanent":
            self._idle.put_nowait(worker)
            raise PermanentError(value)
        if kind == "timeout":
            self._replace(worker, reason="timeout", url=url)
            raise PermanentError(
                f"extract_timeout: reading the page took over {self.timeout_seconds:g} s; its worker was replaced"
            )
        self._replace(worker, reason="crashed", url=url, exit_code=value)
        raise RetryableError(f"extract_crashed: the extraction worker died reading the page (exit code {value})")

    async def stop(self) -> None:
        """Stop every worker (idle ones leave, busy ones are killed) and wait until each has exited."""
        if self._stopping:
            return
        self._stopping = True  # also when not started yet: a start that comes after does nothing
        if not self.started:
            return
        for task in self._starting:
            task.cancel()
        await asyncio.gather(*self._starting, return_exceptions=True)
        idle = []
        while not self._idle.empty():
            idle.append(self._idle.get_nowait())
        busy = [w for w in list(self._workers) if w not in idle]  # a snapshot: spawning threads add to it
        loop = asyncio.get_running_loop()
        await asyncio.gather(
            *(loop.run_in_executor(None, w.stop) for w in idle),
            *(loop.run_in_executor(None, partial(w.kill, close=False)) for w in busy),
        )
        assert self._threads is not None
        await loop.run_in_executor(None, partial(self._threads.shutdown, wait=True, cancel_futures=True))
        # a worker spawned while its starter was being cancelled joined the set only now
        late = [w for w in list(self._workers) if w not in idle and w not in busy]
        await asyncio.gather(*(loop.run_in_executor(None, w.kill) for w in late))
        self._workers.clear()
        log.info("extract.pool_stopped")

    # -- workers ------------------------------------------------------------------------------------------------------

    def _spawn(self) -> Worker:
        """In a thread. The worker joins `_workers` here, so one spawned while the pool stops is still stopped."""
        ours, theirs = CONTEXT.Pipe()
        process = CONTEXT.Process(
            target=worker_main,
            args=(theirs, self.read, self.text_limit, self.log_json, self.log_level),
            name="impromptu-extract",
            daemon=True,
        )
        process.start()
        theirs.close()
        worker = Worker(process, ours)
        self._workers.add(worker)
        return worker

    def _start_worker(self, worker: Worker | None = None) -> None:
        task = asyncio.get_running_loop().create_task(self._warm(worker), name="extract-worker-start")
        self._starting.add(task)
        task.add_done_callback(self._starting.discard)

    async def _warm(self, worker: Worker | None) -> None:
        """Put the worker in the idle queue once it is ready; one that is not is replaced, a second later."""
        assert self._threads is not None
        loop = asyncio.get_running_loop()
        while not self._stopping:
            if worker is None:
                worker = await loop.run_in_executor(self._threads, self._spawn)
            try:
                ready = await loop.run_in_executor(self._threads, worker.wait_ready)
            except BaseException:  # stopped while it warms up: its thread may still be reading the pipe
                self._workers.discard(worker)
                await loop.run_in_executor(None, partial(worker.kill, close=False))
                raise
            if ready:
                self._idle.put_nowait(worker)
                return
            log.warning("extract.worker_not_ready", pid=worker.process.pid, exit_code=worker.process.exitcode)
            self._workers.discard(worker)
            await loop.run_in_executor(None, worker.kill)
            worker = None
            await asyncio.sleep(RESTART_DELAY_SECONDS)

    def _replace(self, worker: Worker, *, reason: str, **detail: object) -> None:
        """Kill `worker` (reaped in the background: joining may take a moment) and start another in its place."""
        log.warning("extract.worker_replaced", pid=worker.process.pid, reason=reason, **detail)
        self._workers.discard(worker)
        worker.process.kill()
        # cancelled mid-page, the thread running the page may still be reading the pipe: it is closed when collected
        asyncio.get_running_loop().run_in_executor(None, partial(worker.kill, close=reason != "cancelled"))
        if not self._stopping:
            self._start_worker()
