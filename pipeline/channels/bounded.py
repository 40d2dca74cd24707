"""Rendering announcements off the event loop, in worker processes with a hard time and memory limit.

render.py bounds a render cooperatively (its sandbox checks the clock at every step and counts what it writes) and
refuses an overrun with the template's name and line. Only a process can be stopped whatever runs in it, so the
pipeline (the outreach stage, the proposal previews) renders here: `processes` workers under `pebble.ProcessPool`,
each render killed (and its worker replaced) if it outlives its bound by `GRACE_SECONDS`, each worker's address
space capped at what it uses at start plus `memory_mb`, so a template that builds a huge string fails there with a
MemoryError, never in the pipeline. Workers fork from the fork server the extraction pool also uses (a replacement
starts in milliseconds), start with the first render, die with the process that started them (Linux: the kernel
kills them when the fork server, which ends with that process, dies), and are stopped at exit.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import multiprocessing
import os
import resource
import threading
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypedDict

import pebble
import structlog
from jinja2.sandbox import SandboxedEnvironment

from pipeline.channels.base import ChannelAdapter
from pipeline.channels.render import RENDER_MAX_OUTPUT, RENDER_SECONDS, TemplateRefused, environment, render
from pipeline.errors import RetryableError
from pipeline.lifetime import die_with_parent
from pipeline.messages import ScheduledSession
from pipeline.settings import Settings

log = structlog.get_logger("pipeline.outreach")

CONTEXT = multiprocessing.get_context("forkserver")  # never fork the stage itself: it runs an event loop and threads
GRACE_SECONDS = 1.0  # past its own bound, a render's worker is killed: the sandbox's clock did not stop it


# --- in a worker ---------------------------------------------------------------------------------------------------

_environments: dict[Path | None, SandboxedEnvironment] = {}  # one per templates folder: compiled templates are kept


def start_worker(memory_mb: int) -> None:
    """A worker's start: die with its parent, and cap its address space at what it uses now plus `memory_mb`."""
    die_with_parent()  # not Linux: pebble's closed channel still ends a worker
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/self/statm") as statm:
            in_use = int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        cap = in_use + memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))


class RenderOptions(TypedDict):
    """render.render's keyword arguments, as they cross to the worker."""

    library_url: str | None
    tagline: str | None
    reason: str | None
    limit: int | None
    seconds: float
    max_output: int


def render_in_worker(
    folder: Path | None,
    channel: str | type[ChannelAdapter],
    kind: str,
    session: ScheduledSession,
    options: RenderOptions,
) -> tuple[str, str]:
    """("ok", text) or ("refused", the reason): a refusal is data, so it crosses the process boundary as it is.
    `channel` is the adapter class when there is one (pickled by reference, so a channel registered in the calling
    process at run time has its rules here too), else the name of a channel with templates only."""
    env = _environments.get(folder)
    if env is None:
        env = _environments[folder] = environment(folder)
    try:
        return ("ok", render(env, channel, kind, session, **options))
    except TemplateRefused as error:
        return ("refused", str(error))
    except MemoryError:  # outside the template's own frames (e.g. joining its output): still the template's doing
        name = channel if isinstance(channel, str) else channel.name
        return ("refused", f"template_error: {name}/{kind}.j2: MemoryError: the render needed too much memory")


# --- in the pipeline -----------------------------------------------------------------------------------------------

_SHARED: dict[tuple[Path | None, int, float, int, int], TemplateWorkers] = {}
_SHARED_LOCK = threading.Lock()


@dataclass
class TemplateWorkers:
    """Renders in `processes` worker processes; renders beyond them wait in pebble's queue (their clock starts when
    a worker takes them)."""

    folder: Path | None
    processes: int = 1
    seconds: float = RENDER_SECONDS
    max_output: int = RENDER_MAX_OUTPUT
    memory_mb: int = 256
    _pool: pebble.ProcessPool | None = field(default=None, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)

    @classmethod
    def of(cls, settings: Settings) -> TemplateWorkers:
        """The workers for these settings, one set per process (the outreach stage and the previews share it)."""
        key = (
            settings.outreach_templates_dir,
            settings.template_processes,
            settings.template_seconds,
            settings.template_max_output,
            settings.template_memory_mb,
        )
        with _SHARED_LOCK:
            if key not in _SHARED:
                folder, processes, seconds, max_output, memory_mb = key
                _SHARED[key] = cls(folder, processes, seconds, max_output, memory_mb)
            return _SHARED[key]

    async def render(
        self,
        channel: str,
        kind: str,
        session: ScheduledSession,
        *,
        library_url: str | None = None,
        tagline: str | None = None,
        reason: str | None = "",
        limit: int | None = None,
    ) -> str:
        """render.render's announcement, made in a worker. TemplateRefused as render.render raises it, and for a
        render its worker had to be killed (time) or that killed its worker (memory); RetryableError when the
        workers stopped under it."""
        name = f"{channel}/{kind}.j2"
        options: RenderOptions = {
            "library_url": library_url,
            "tagline": tagline,
            "reason": reason,
            "limit": limit,
            "seconds": self.seconds,
            "max_output": self.max_output,
        }
        # here, not at the top: the registry imports every adapter, and a worker needs only the one it is given
        from pipeline.channels.registry import registered

        args = (self.folder, registered(channel) or channel, kind, session, options)
        bound = self.seconds + GRACE_SECONDS
        pool = self._pool
        if pool is None:
            pool = await asyncio.get_running_loop().run_in_executor(None, self._start)
        try:
            future = pool.schedule(render_in_worker, args=args, timeout=bound)
        except RuntimeError as error:  # pebble's pool broke or was stopped: a new one takes the render
            future = self._renew(pool, error).schedule(render_in_worker, args=args, timeout=bound)
        running = asyncio.wrap_future(future)
        try:
            outcome, text = await running
        except asyncio.CancelledError:
            future.cancel()
            raise
        except TimeoutError:  # pebble has killed the worker and starts another
            log.warning("template.worker_replaced", template=name, reason="timeout")
            raise TemplateRefused(
                f"template_timeout: {name}: rendering took over {self.seconds:g} s and was stopped"
            ) from None
        except pebble.ProcessExpired as error:
            log.warning("template.worker_replaced", template=name, reason="died", exit_code=error.exitcode)
            raise TemplateRefused(
                f"template_error: {name}: the render's worker died (exit code {error.exitcode}): the template "
                "likely needs more memory than a render may use"
            ) from None
        except BrokenProcessPool as error:
            self._renew(pool, error)
            raise RetryableError(f"template_unavailable: the template workers broke rendering {name}") from None
        if outcome == "refused":
            raise TemplateRefused(text)
        return text

    def _start(self) -> pebble.ProcessPool:
        """In a thread: the pool, its workers started by a first trivial task (starting the fork server, the first
        time, takes a second or two)."""
        with self._lock:
            if self._pool is None:
                self._pool = self._new_pool()
                self._pool.schedule(os.getpid).result()
                atexit.register(self.stop)
                log.info("template.workers_started", processes=self.processes, seconds=self.seconds)
            return self._pool

    def _new_pool(self) -> pebble.ProcessPool:
        return pebble.ProcessPool(
            max_workers=self.processes, initializer=start_worker, initargs=(self.memory_mb,), context=CONTEXT
        )

    def _renew(self, broken: pebble.ProcessPool, error: BaseException) -> pebble.ProcessPool:
        with self._lock:
            if self._pool is broken:
                log.warning("template.pool_replaced", error=f"{type(error).__name__}: {error}")
                self._pool = self._new_pool()
                broken.stop()  # pebble kills what is left; joining happens at exit
            assert self._pool is not None
            return self._pool

    def stop(self) -> None:
        """Stop every worker and wait for them (at exit; a render in flight is abandoned with its event loop)."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.stop()
            pool.join()
