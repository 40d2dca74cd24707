"""Actions: proposals, facilitators' decisions, sessions at the provider, notices.

stage.py is the stage (`actions_router` and what it keeps: `ProviderClaim`, `NoticeRecord`, …); its module docstring
says what each consumer reads and writes. This file imports nothing, so the light users of pipeline.actions.*
(`impromptu facilitators add`, the `--by` check of a CLI command) do not load the stage (faststream, nats-py).
"""

from __future__ import annotations

from typing import Any

# the stage's names that `from pipeline.actions import …` has always offered; a submodule (approval, index, …) is
# not among them, so importing one never loads the stage
STAGE_NAMES = frozenset(
    {
        "ProviderClaim",
        "schedule",
        "create_once",
        "NoticeRecord",
        "notice_once",
        "email_notice_once",
        "email_notice_key",
        "recipient_digest",
        "facilitators_for",
        "actions_router",
    }
)


def __getattr__(name: str) -> Any:  # PEP 562: `from pipeline.actions import actions_router` still works
    if name in STAGE_NAMES:
        from pipeline.actions import stage

        return getattr(stage, name)
    raise AttributeError(f"module 'pipeline.actions' has no attribute {name!r}")
