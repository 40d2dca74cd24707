"""What every command module shares: the settings (with logging set up) and running a coroutine.

Light on purpose: each command imports what it uses when it runs, so `--help` and the light commands start fast
(tests/unit/test_cli_startup.py checks it; bench/cli_start.py measures it)."""

from __future__ import annotations

from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from pipeline.settings import Settings

T = TypeVar("T")


def load_settings() -> Settings:
    """The settings alone, for a command that logs nothing (`facilitators list`, `rules check`): structlog and the
    logging set-up cost ~0.1 s of their start."""
    from pipeline.settings import load_settings as load

    return load()


def command_settings(quiet: bool = False) -> Settings:
    """The settings, with logging set up: WARNING and above when `quiet` (a command's own output is its answer)."""
    from pipeline.logs import configure_logging

    settings = load_settings()
    configure_logging(json=settings.log_json, level="WARNING" if quiet else settings.log_level)
    return settings


def run_async(coroutine: Coroutine[Any, Any, T]) -> T:
    import asyncio  # here, not at the top: asyncio alone is ~60 ms of a `--help`

    return asyncio.run(coroutine)


def checked_by(name: str) -> str:
    """--by NAME: one of the logins (audit trails and histories hold no invented names); UnknownLogin listing them."""
    from pipeline.domain.logins import known_login

    return known_login(load_settings(), name)
