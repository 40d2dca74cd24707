"""The channel registry: the shipped adapters, those registered at run time, and the channels built from settings.

It imports every adapter (and so tweepy, icalendar, ...): the package itself does not, so a template worker, which
is given the adapter class it renders for, imports only that adapter's module.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import structlog

from pipeline.channels.base import Channel, ChannelAdapter
from pipeline.channels.email import EmailChannel
from pipeline.channels.facebook import FacebookChannel
from pipeline.channels.linkedin import LinkedInChannel
from pipeline.channels.mastodon import MastodonChannel
from pipeline.channels.outbox import OutboxChannel
from pipeline.channels.slack import SlackChannel
from pipeline.channels.teams import TeamsChannel
from pipeline.channels.x import XChannel
from pipeline.registry import Registry
from pipeline.settings import Settings

log = structlog.get_logger("pipeline.channels")

# The shipped channels, in the order they are built and listed.
ADAPTERS: tuple[type[ChannelAdapter], ...] = (
    XChannel,
    LinkedInChannel,
    FacebookChannel,
    MastodonChannel,
    SlackChannel,
    TeamsChannel,
    EmailChannel,
)
CHANNELS = tuple(adapter.name for adapter in ADAPTERS)
# each shipped channel's limit as its `length` counts it (Teams: UTF-8 bytes); Slack and e-mail have structural rules
LIMITS = {adapter.name: adapter.limit for adapter in ADAPTERS if adapter.limit is not None}
_ADAPTERS = Registry("channel", ADAPTERS)
_REGISTERED = _ADAPTERS.by_name  # the shipped ones, then those registered
register = _ADAPTERS.register
unregister = _ADAPTERS.unregister
adapters = _ADAPTERS.adapters


def channel_names() -> tuple[str, ...]:
    return tuple(_REGISTERED)


def registered(name: str) -> type[ChannelAdapter] | None:
    return _REGISTERED.get(name)


def channel_title(name: str) -> str:
    """How people call the channel ("LinkedIn", "E-mail"); a name without an adapter as it is."""
    adapter = _REGISTERED.get(name)
    return adapter.title or name if adapter is not None else name


def rules_for(name: str) -> type[ChannelAdapter]:
    """The channel's rules; a name with no adapter (a custom template folder) is plain text without a limit."""
    return _REGISTERED.get(name) or type("PlainText", (ChannelAdapter,), {"name": name})


def text_limit(name: str, settings: Settings) -> int | None:
    """The channel's length limit with these settings: what the outreach stage and the previews both check."""
    adapter = _REGISTERED.get(name)
    return adapter.text_limit(settings) if adapter is not None else None


def adapter(name: str, settings: Settings) -> Channel:
    return _REGISTERED[name].from_settings(settings)


@dataclass
class Channels:
    ready: dict[str, Channel] = field(default_factory=dict)
    disabled: dict[str, list[str]] = field(default_factory=dict)  # name -> the settings it lacks
    dry_run: bool = False

    def why_not(self, name: str) -> str:
        """Why `name` cannot post, for a channel that is not ready."""
        if name in self.disabled:
            return f"channel {name} is disabled: set {', '.join(self.disabled[name])}"
        return f"no channel named {name!r} (known: {', '.join(sorted(_REGISTERED))})"


def build_channels(settings: Settings, *, warn: bool = True) -> Channels:
    channels = Channels(dry_run=settings.outreach_dry_run)
    for name in _REGISTERED:
        real = adapter(name, settings)
        if settings.outreach_dry_run:
            channels.ready[name] = OutboxChannel(settings.outbox_dir, name, can_delete=real.can_delete)
        elif missing := real.missing():
            channels.disabled[name] = missing
        else:
            channels.ready[name] = real
    if warn and channels.dry_run:  # the default, not a problem: said once, at start
        log.info(
            "outreach.dry_run",
            outbox=str(settings.outbox_dir),
            hint="announcements are written to the outbox, not posted; set IMPROMPTU_OUTREACH_DRY_RUN=false to post",
        )
    elif warn:
        for name, missing in channels.disabled.items():
            log.warning("outreach.channel_disabled", channel=name, set=missing)
    return channels
