"""The channels an organisation announces on, built from settings: each a small adapter speaking its real API.

With IMPROMPTU_OUTREACH_DRY_RUN (the default) every channel writes to the outbox instead; otherwise a channel whose
credentials are not set is disabled, with one warning at start naming what to set, and the pipeline runs on.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field

import structlog

from pipeline.messages import CHANNEL_NAMES
from pipeline.outreach.channels.base import Channel
from pipeline.outreach.channels.outbox import OutboxChannel
from pipeline.settings import Settings

log = structlog.get_logger("pipeline.outreach.channels")

# each channel is a module of this package, named as the channel, with `from_settings(settings) -> Channel`
ADAPTERS: dict[str, str] = {name: name for name in CHANNEL_NAMES}


def adapter(name: str, settings: Settings) -> Channel:
    module = importlib.import_module(f"{__name__}.{ADAPTERS[name]}")
    channel: Channel = module.from_settings(settings)
    return channel


@dataclass
class Channels:
    ready: dict[str, Channel] = field(default_factory=dict)
    disabled: dict[str, list[str]] = field(default_factory=dict)  # name -> the settings it lacks
    dry_run: bool = False

    def why_not(self, name: str) -> str:
        """Why `name` cannot post, for a channel that is not ready."""
        if name in self.disabled:
            return f"channel {name} is disabled: set {', '.join(self.disabled[name])}"
        return f"no channel named {name!r} (known: {', '.join(sorted(ADAPTERS))})"


def build_channels(settings: Settings, *, warn: bool = True) -> Channels:
    channels = Channels(dry_run=settings.outreach_dry_run)
    for name in ADAPTERS:
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
