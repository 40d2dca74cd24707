"""The share source registry: the shipped sources and those registered at run time, in the order they are started."""

from __future__ import annotations

from pipeline.settings import Settings
from pipeline.triggers.sources.base import SourceAdapter, SourceContext
from pipeline.triggers.sources.feeds import FeedSource
from pipeline.triggers.sources.mastodon import MastodonSource
from pipeline.triggers.sources.x import XSource

ADAPTERS: tuple[type[SourceAdapter], ...] = (XSource, FeedSource, MastodonSource)
SOURCES = tuple(adapter.name for adapter in ADAPTERS)
_REGISTERED: dict[str, type[SourceAdapter]] = {adapter.name: adapter for adapter in ADAPTERS}


def register(adapter: type[SourceAdapter]) -> type[SourceAdapter]:
    """Add a source (usable as a class decorator): `impromptu run` starts it with the others."""
    if not adapter.name or adapter.name in _REGISTERED and _REGISTERED[adapter.name] is not adapter:
        raise ValueError(f"a share source named {adapter.name!r} is registered already")
    _REGISTERED[adapter.name] = adapter
    return adapter


def unregister(name: str) -> None:
    """Remove a source `register` added (the shipped ones stay)."""
    if name in SOURCES:
        raise ValueError(f"{name} is a shipped share source")
    _REGISTERED.pop(name, None)


def adapters() -> dict[str, type[SourceAdapter]]:
    """Every source by name: the shipped ones, then those registered."""
    return dict(_REGISTERED)


def configured_sources(settings: Settings, context: SourceContext) -> list[SourceAdapter]:
    """Each source the settings configure (one not configured says so in the log once, and is left out)."""
    built = (adapter.from_settings(settings, context) for adapter in _REGISTERED.values())
    return [source for source in built if source is not None]
