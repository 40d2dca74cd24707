"""Archive: recordings become entries of the learning library.

stage.py is the router (`archive_router`, `StoreOnce`); its module docstring says what each consumer reads and
writes. This file imports nothing, so `impromptu library …` and other light users of pipeline.archive.* do not load
the stage (faststream, the enrich stage's text tools).
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:  # PEP 562: `from pipeline.archive import archive_router` still works
    if name in {"archive_router", "StoreOnce"}:
        from pipeline.archive import stage

        return getattr(stage, name)
    raise AttributeError(f"module 'pipeline.archive' has no attribute {name!r}")
