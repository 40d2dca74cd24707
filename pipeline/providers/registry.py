"""The session provider registry: the shipped adapters and those registered at run time, by name.

The actions stage (which provider makes a proposal's session), the previews (a stand-in join link) and the settings'
check all ask it; it imports every adapter, the package's `__init__.py` none.
"""

from __future__ import annotations

from pipeline.providers import ProviderAdapter
from pipeline.providers.jitsi import JitsiProvider
from pipeline.providers.youtube import YouTubeProvider
from pipeline.providers.zoom import ZoomProvider
from pipeline.registry import Registry
from pipeline.settings import Settings

# The shipped providers; each name is also one word of `messages.Provider`, the bus contract (a test keeps both
# lists the same).
ADAPTERS: tuple[type[ProviderAdapter], ...] = (JitsiProvider, ZoomProvider, YouTubeProvider)
PROVIDERS = tuple(adapter.name for adapter in ADAPTERS)
_ADAPTERS = Registry("session provider", ADAPTERS)
_REGISTERED = _ADAPTERS.by_name  # the shipped ones, then those registered
register = _ADAPTERS.register
unregister = _ADAPTERS.unregister
adapters = _ADAPTERS.adapters


def provider_class(name: str) -> type[ProviderAdapter]:
    try:
        return _REGISTERED[name]
    except KeyError:
        raise ValueError(f"no session provider named {name!r} (known: {', '.join(_REGISTERED)})") from None


def provider_named(name: str, settings: Settings) -> ProviderAdapter:
    """The adapter for `name`, configured from its section of `settings`."""
    return provider_class(name).from_settings(settings)


def provider_from_settings(settings: Settings) -> ProviderAdapter:
    """The adapter IMPROMPTU_SESSION_PROVIDER names."""
    return provider_named(settings.session_provider, settings)
