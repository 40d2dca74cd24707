"""The rules in force, reloaded when the file changes; an invalid edit is refused and the last good rules stay.

We poll the file's stat every second rather than use inotify: editors that save by rename, Kubernetes
ConfigMap symlink swaps and network file systems all show up in a stat, and a rules file is one small file.
A file larger than its bound is refused unread, one nested too deep by a scan before YAML sees it (yaml_errors.py).
An edit is loaded in a child process (forked from the fork server the worker pools share), which `watch` waits
for in a thread: a large valid file (1 MB parses in about 3 s) never stalls the event loop, not even in the C
parts of YAML and pydantic that hold the GIL, and a loader that crashes or hangs costs that child, not the pipeline.
"""

from __future__ import annotations

import asyncio
import hashlib
import multiprocessing
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import pebble
import structlog

from pipeline.domain.rules import Rules, load_rules, rules_bounds
from pipeline.domain.scoring import Known
from pipeline.errors import ConfigError
from pipeline.settings import Settings
from pipeline.yaml_errors import DEFAULT_BOUNDS, YamlBounds

log = structlog.get_logger("pipeline.rules")

RELOAD_SECONDS = 60.0  # a child loading an edit longer than this (no valid file within the size bound does) is killed


def _load_in_child(path: Path, bounds: YamlBounds) -> tuple[Rules | None, str]:
    try:
        return load_rules(path, bounds), ""
    except ConfigError as error:
        return None, str(error)


def load_isolated(path: Path, bounds: YamlBounds = DEFAULT_BOUNDS) -> Rules:
    """`load_rules` in a child process: blocking (call it from a thread), ConfigError as load_rules raises it, and
    for a child that crashed or overran RELOAD_SECONDS."""
    pool = pebble.ProcessPool(max_workers=1, context=multiprocessing.get_context("forkserver"))
    try:
        future = pool.schedule(_load_in_child, args=(path, bounds), timeout=RELOAD_SECONDS)
        try:
            rules, problem = future.result()
        except TimeoutError:
            raise ConfigError(f"{path}:1:1: <file>: loading took over {RELOAD_SECONDS:g} s: refused") from None
        except pebble.ProcessExpired as error:
            raise ConfigError(f"{path}:1:1: <file>: the loader died (exit code {error.exitcode}): refused") from None
        except BrokenProcessPool as error:  # the child could not even start: not the file's fault, but not loaded
            raise ConfigError(f"{path}:1:1: <file>: the loader could not start ({error}): not loaded") from None
    finally:
        pool.stop()
        pool.join()
    if rules is None:
        raise ConfigError(problem)
    return rules


def _stamp(path: Path) -> tuple[int, int, int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_ino, stat.st_mtime_ns, stat.st_size


class LiveRules:
    """Holds the indexed rules every share is judged by; `refresh()` swaps them when the file changed and is valid."""

    def __init__(self, path: Path, rules: Rules, bounds: YamlBounds = DEFAULT_BOUNDS) -> None:
        self.path = path
        self.bounds = bounds
        self.known = Known.of(rules)
        self._stamp = _stamp(path)
        self._digest = self._read_digest() or ""

    @classmethod
    def load(cls, path: Path, bounds: YamlBounds = DEFAULT_BOUNDS) -> LiveRules:
        return cls(path, load_rules(path, bounds), bounds)

    @classmethod
    def of(cls, settings: Settings) -> LiveRules:
        """The rules file of `settings`, within its bounds (IMPROMPTU_RULES_MAX_BYTES, IMPROMPTU_RULES_MAX_DEPTH)."""
        return cls.load(settings.rules_file, rules_bounds(settings))

    @property
    def rules(self) -> Rules:
        return self.known.rules

    def _read_digest(self) -> str | None:
        """The file's digest, read only up to the size bound (a larger file is refused by `load_rules` anyway)."""
        try:
            with self.path.open("rb") as file:
                return hashlib.sha256(file.read(self.bounds.max_bytes + 1)).hexdigest()
        except OSError:
            return None

    def refresh(self) -> bool:
        """Reload if the file changed; True when new rules are now in force. Blocking (the edit loads in a child
        process): `watch` runs it in a thread."""
        stamp = _stamp(self.path)
        if stamp is None or stamp == self._stamp:
            return False  # unchanged, or mid-replace (the file reappears on the next check)
        self._stamp = stamp
        digest = self._read_digest()
        if digest is None or digest == self._digest:
            return False
        self._digest = digest
        try:
            rules = load_isolated(self.path, self.bounds)
        except ConfigError as error:  # logged once per edit: the stamp and digest above are already the new ones
            log.error("rules.refused", file=str(self.path), errors=str(error).splitlines(), kept="last good rules")
            return False
        self.known = Known.of(rules)
        log.info("rules.reloaded", file=str(self.path), people=len(rules.people), rules=len(rules.rules))
        return True

    async def watch(self, every: float = 1.0) -> None:
        while True:
            await asyncio.sleep(every)
            await asyncio.to_thread(self.refresh)
