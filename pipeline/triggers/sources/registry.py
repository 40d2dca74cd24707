"""The share source registry: the shipped sources and those registered at run time, in the order they are started."""

from __future__ import annotations

from pipeline.registry import Registry
from pipeline.settings import Settings
from pipeline.triggers.sources.base import SourceAdapter, SourceContext
from pipeline.triggers.sources.feeds import FeedSource
from pipeline.triggers.sources.mastodon import MastodonSource
from pipeline.triggers.sources.x import XSource

ADAPTERS: tuple[type[SourceAdapter], ...] = (XSource, FeedSource, MastodonSource)
SOURCES = tuple(adapter.name for adapter in ADAPTERS)
_ADAPTERS = Registry("share source", ADAPTERS)
_REGISTERED = _ADAPTERS.by_name  # the shipped ones, then those registered
register = _ADAPTERS.register
unregister = _ADAPTERS.unregister
adapters = _ADAPTERS.adapters


def configured_sources(settings: Settings, context: SourceContext) -> list[SourceAdapter]:
    """Each source the settings configure (one not configured says so in the log once, and is left out)."""
    built = (adapter.from_settings(settings, context) for adapter in _REGISTERED.values())
    return [source for source in built if source is not None]
