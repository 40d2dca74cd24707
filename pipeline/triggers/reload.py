"""The rules in force, reloaded when the file changes; an invalid edit is refused and the last good rules stay.

We poll the file's stat every second rather than use inotify: editors that save by rename, Kubernetes
ConfigMap symlink swaps and network file systems all show up in a stat, and a rules file is one small file.
"""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import structlog

from pipeline.errors import ConfigError
from pipeline.triggers.rules import Rules, load_rules
from pipeline.triggers.scoring import Known

log = structlog.get_logger("pipeline.rules")


def _stamp(path: Path) -> tuple[int, int, int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_ino, stat.st_mtime_ns, stat.st_size


class LiveRules:
    """Holds the indexed rules every share is judged by; `refresh()` swaps them when the file changed and is valid."""

    def __init__(self, path: Path, rules: Rules) -> None:
        self.path = path
        self.known = Known.of(rules)
        self._stamp = _stamp(path)
        self._digest = hashlib.sha256(path.read_bytes()).hexdigest() if self._stamp else ""

    @classmethod
    def load(cls, path: Path) -> LiveRules:
        return cls(path, load_rules(path))

    @property
    def rules(self) -> Rules:
        return self.known.rules

    def refresh(self) -> bool:
        """Reload if the file changed; True when new rules are now in force."""
        stamp = _stamp(self.path)
        if stamp is None or stamp == self._stamp:
            return False  # unchanged, or mid-replace (the file reappears on the next check)
        self._stamp = stamp
        try:
            digest = hashlib.sha256(self.path.read_bytes()).hexdigest()
        except OSError:
            return False
        if digest == self._digest:
            return False
        self._digest = digest
        try:
            rules = load_rules(self.path)
        except ConfigError as error:
            log.error("rules.refused", file=str(self.path), errors=str(error).splitlines(), kept="last good rules")
            return False
        self.known = Known.of(rules)
        log.info("rules.reloaded", file=str(self.path), people=len(rules.people), rules=len(rules.rules))
        return True

    async def watch(self, every: float = 1.0) -> None:
        while True:
            await asyncio.sleep(every)
            self.refresh()
