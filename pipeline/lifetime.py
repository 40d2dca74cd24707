"""Child processes never outlive the process that started them: on Linux the kernel signals a child when its parent
(the thread that forked it) ends (PR_SET_PDEATHSIG), even at kill -9. Used by the embedded nats-server, the
extraction workers and the template workers; elsewhere than Linux these do nothing."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
from collections.abc import Callable

PR_SET_PDEATHSIG = 1

Prctl = Callable[[int, int], int]


def _prctl() -> Prctl | None:
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True).prctl
    except (OSError, AttributeError):  # not Linux
        return None


def die_with_parent(sig: int = signal.SIGKILL) -> None:
    """Called in a child (a worker's initializer): the kernel sends it `sig` when its parent ends."""
    prctl = _prctl()
    if prctl is not None:
        prctl(PR_SET_PDEATHSIG, sig)


def death_signal_preexec(sig: int = signal.SIGTERM) -> Callable[[], None]:
    """A subprocess pre-exec doing the same for a program we exec (the nats-server: SIGTERM, a clean shutdown). libc is
    looked up here, before the fork, so the child only makes the call; a parent that died before the call took
    effect is noticed, since then the signal would never come. Start the child from a thread that lives as long as
    the process (the main thread): the signal follows the thread that forked."""
    parent = os.getpid()
    prctl = _prctl()

    def set_death_signal() -> None:
        if prctl is None:
            return
        prctl(PR_SET_PDEATHSIG, sig)
        if os.getppid() != parent:
            os.kill(os.getpid(), sig)

    return set_death_signal


M_TRIM_THRESHOLD = -1  # glibc's mallopt parameters
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
LARGE_BLOCK = 256 * 1024


def tune_malloc(arenas: int = 2) -> None:
    """Keep a long-running worker's RSS near the memory it uses, under glibc (elsewhere: nothing to do).

    Two arenas: each thread (SQLite, extraction, the default executor) would otherwise get one of its own, up to 8 per
    core, and memory freed in one stays there (the same as MALLOC_ARENA_MAX=2, the usual advice for threaded Python
    services). A fixed mmap threshold: glibc raises it after each large block is freed, so the next media chunks and
    page bodies come from the heap and leave holes it cannot return; at a fixed 256 KiB they are mapped and unmapped
    whole. Called before the threads start."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(M_ARENA_MAX, arenas)
        libc.mallopt(M_MMAP_THRESHOLD, LARGE_BLOCK)
        libc.mallopt(M_TRIM_THRESHOLD, 2 * LARGE_BLOCK)
    except (OSError, AttributeError):
        pass
