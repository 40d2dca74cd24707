"""Broken channels: when a provider refuses our credentials (revoked, expired, missing permission, a retired API
version), the channel is marked broken in KV, facilitators and ops are told once, and nothing more is posted on it
until an operator fixes the settings and runs `impromptu channels reset NAME` (then replays the dead letters)."""

from __future__ import annotations

from datetime import datetime
from email.message import EmailMessage

import structlog
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue
from pydantic import BaseModel, ConfigDict

from pipeline import stores
from pipeline.domain.notify import send_email, send_slack
from pipeline.errors import ImpromptuError
from pipeline.messages import utc_now
from pipeline.settings import Settings

log = structlog.get_logger("pipeline.outreach.health")


class ChannelHealth(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    channel: str
    reason: str
    since: datetime
    found_by: str  # the post that met the error


def _key(channel: str) -> str:
    return f"channel.{channel}"


async def broken(kv: KeyValue, channel: str) -> ChannelHealth | None:
    try:
        entry = await kv.get(_key(channel))
    except KeyNotFoundError:
        return None
    return ChannelHealth.model_validate_json(entry.value) if entry.value else None


async def mark_broken(kv: KeyValue, channel: str, reason: str, found_by: str) -> bool:
    """True when this call broke it (so people are told once, whichever worker met the error first)."""
    health = ChannelHealth(channel=channel, reason=reason, since=utc_now(), found_by=found_by)
    try:
        await kv.create(_key(channel), health.model_dump_json().encode())
    except KeyWrongLastSequenceError:
        return False
    return True


async def reset(kv: KeyValue, channel: str) -> bool:
    """Forget that `channel` is broken; False when it was not."""
    if await broken(kv, channel) is None:
        return False
    await kv.purge(_key(channel))
    return True


async def all_broken(kv: KeyValue) -> list[ChannelHealth]:
    return [
        ChannelHealth.model_validate_json(entry.value) for entry in await stores.scan(kv, "channel.*") if entry.value
    ]


def broken_notice(channel: str, reason: str) -> str:
    return (
        f"Impromptu cannot post on {channel}: {reason}\n"
        f"Announcements for {channel} wait as dead letters. Fix the settings, then run "
        f"`impromptu channels reset {channel}` and replay them (`impromptu dlq list`, `impromptu dlq replay SEQ`)."
    )


async def tell_people(settings: Settings, channel: str, reason: str) -> list[str]:
    """Tell facilitators and ops on the notice channels (Slack webhook, e-mail); returns where it was told. A notice
    that fails is logged: the broken mark and the dead letters remain for `impromptu status` and the ops page."""
    text = broken_notice(channel, reason)
    told = []
    if settings.notify_slack_webhook is not None:
        try:
            await send_slack(settings.notify_slack_webhook.get_secret_value(), {"text": text})
            told.append("slack")
        except ImpromptuError as error:
            log.warning("outreach.broken_notice_failed", via="slack", error=str(error))
    if settings.smtp_host and settings.notify_email_to:
        message = EmailMessage()
        message["Subject"] = f"Impromptu: {channel} is broken"
        message["From"] = settings.smtp_from
        message["To"] = ", ".join(settings.notify_email_to)
        message.set_content(text)
        try:
            await send_email(settings, message)
            told.append("email")
        except ImpromptuError as error:
            log.warning("outreach.broken_notice_failed", via="email", error=str(error))
    return told
