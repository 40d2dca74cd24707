"""The rules in force, reloaded when the file changes; an invalid edit is refused and the last good rules stay.

We poll the file's stat every second rather than use inotify: editors that save by rename, Kubernetes
ConfigMap symlink swaps and network file systems all show up in a stat, and a rules file is one small file.
A file larger than its bound is refused from its stat alone, one nested too deep by a scan before YAML sees it
(yaml_errors.py); the reading and parsing run in a thread, so a large valid file never stalls the event loop.
"""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import structlog

from pipeline.errors import ConfigError
from pipeline.settings import Settings
from pipeline.triggers.rules import Rules, load_rules, rules_bounds
from pipeline.triggers.scoring import Known
from pipeline.yaml_errors import DEFAULT_BOUNDS, YamlBounds

log = structlog.get_logger("pipeline.rules")


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
        """Reload if the file changed; True when new rules are now in force. Blocking: `watch` runs it in a thread."""
        stamp = _stamp(self.path)
        if stamp is None or stamp == self._stamp:
            return False  # unchanged, or mid-replace (the file reappears on the next check)
        self._stamp = stamp
        digest = self._read_digest()
        if digest is None or digest == self._digest:
            return False
        self._digest = digest
        try:
            rules = load_rules(self.path, self.bounds)
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
