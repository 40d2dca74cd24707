"""The console/outbox channel: each announcement is written to DATA_DIR/outbox/<channel>/ (and the log) instead of
being posted. It needs no credentials, so demos and rehearsals show exactly what every channel would post."""

from __future__ import annotations

import os
from pathlib import Path

import structlog

from pipeline.channels.base import Post, Posted

log = structlog.get_logger("pipeline.outreach.outbox")


class OutboxChannel:
    can_find = True  # the file is there or it is not

    def __init__(self, folder: Path, name: str, *, can_delete: bool = True) -> None:
        self.folder = folder / name
        self.name = name
        self.can_delete = can_delete  # as the real channel: a rehearsal of a cancellation shows what would happen

    def missing(self) -> list[str]:
        return []

    def path_for(self, post: Post) -> Path:
        return self.folder / f"{post.session.id}.{post.kind}.txt"

    async def find(self, post: Post) -> Posted | None:
        path = self.path_for(post)
        return Posted(remote_id=str(path), url=str(path)) if path.exists() else None

    async def post(self, post: Post) -> Posted:
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.path_for(post)
        partial = path.with_suffix(".partial")
        partial.write_text(post.text + "\n", encoding="utf-8")
        os.replace(partial, path)  # atomic: a crash leaves either no post or a whole one
        log.info("outbox.written", channel=self.name, kind=post.kind, path=str(path))
        return Posted(remote_id=str(path), url=str(path))

    async def delete(self, posted: Posted) -> None:
        if posted.remote_id:
            Path(posted.remote_id).unlink(missing_ok=True)
