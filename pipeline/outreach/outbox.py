"""The console/outbox channel: writes each announcement to a file (and the log) instead of a network.

It needs no credentials, so demos and dry runs show exactly what every channel would post.
"""

from __future__ import annotations

import os
from pathlib import Path


class OutboxChannel:
    def __init__(self, folder: Path, channel: str) -> None:
        self.folder = folder / channel
        self.channel = channel

    def path_for(self, session_id: str, kind: str) -> Path:
        return self.folder / f"{session_id}.{kind}.txt"

    def find(self, session_id: str, kind: str) -> str | None:
        """Where an earlier attempt already posted, if it did (used to reconcile after a crash)."""
        path = self.path_for(session_id, kind)
        return str(path) if path.exists() else None

    def post(self, session_id: str, kind: str, text: str) -> str:
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.path_for(session_id, kind)
        partial = path.with_suffix(".partial")
        partial.write_text(text + "\n", encoding="utf-8")
        os.replace(partial, path)  # atomic: a crash leaves either no post or a whole one
        return str(path)
