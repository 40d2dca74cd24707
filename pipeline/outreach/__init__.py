"""Outreach stage: consumes ScheduledSession on `impromptu.sessions.scheduled`, announces it on every channel
of its plan, and emits one OutreachResult per channel on `impromptu.outreach.results`.

Never twice: a record per (session, channel, kind) in NATS KV is written before posting and confirmed after.
A redelivered session finds "posted" and skips; one found "sending" (a crash mid-post) is reconciled with the
channel before anything is posted again.
"""

from __future__ import annotations

from typing import Literal

import structlog
from faststream.nats.annotations import NatsBroker
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue
from pydantic import BaseModel, ConfigDict

from pipeline import bus, stores
from pipeline.delivery import describe_error
from pipeline.errors import PermanentError, RetryableError
from pipeline.messages import OutreachResult, ScheduledSession
from pipeline.outreach.outbox import OutboxChannel
from pipeline.outreach.render import environment, render
from pipeline.settings import Settings
from pipeline.stage import StageRouter, emit

log = structlog.get_logger("pipeline.outreach")
KIND = "scheduled"


class PostRecord(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    state: Literal["sending", "posted"]
    location: str | None = None


async def _claim(kv: KeyValue, key: str) -> tuple[PostRecord | None, int]:
    """Write "sending" unless a record exists; return the existing record (or None) and the revision."""
    try:
        revision = await kv.create(key, PostRecord(state="sending").model_dump_json().encode())
        return None, revision
    except KeyWrongLastSequenceError:
        try:
            entry = await kv.get(key)
        except KeyNotFoundError:  # deleted between create and get: claim again on redelivery
            raise RetryableError(f"post record {key} vanished") from None
        return PostRecord.model_validate_json(entry.value or b""), entry.revision or 0


async def announce(kv: KeyValue, channel: OutboxChannel, session: ScheduledSession, text: str) -> tuple[str, str]:
    """Post once; returns (status, location)."""
    key = f"{session.id}.{channel.channel}.{KIND}"
    existing, revision = await _claim(kv, key)
    if existing is not None and existing.state == "posted":
        return "already_posted", existing.location or ""
    if existing is not None and (location := channel.find(session.id, KIND)):
        await kv.update(key, PostRecord(state="posted", location=location).model_dump_json().encode(), last=revision)
        return "already_posted", location
    location = channel.post(session.id, KIND, text)
    await kv.put(key, PostRecord(state="posted", location=location).model_dump_json().encode())
    return "posted", location


def outreach_router(settings: Settings) -> StageRouter:
    router = StageRouter("outreach", settings)
    results = router.output(bus.OUTREACH_RESULTS, OutreachResult, "What each channel's announcement did.")
    templates = environment()

    @router.consume(bus.SESSIONS_SCHEDULED)
    async def announce_session(session: ScheduledSession, broker: NatsBroker) -> None:
        kv = await stores.bucket(broker, stores.OUTREACH)
        retry_reasons = []
        for name in session.proposal.channels:
            result_fields = {"session_id": session.id, "channel": name, "kind": KIND}
            try:
                text = render(templates, name, KIND, session)
                status, location = await announce(kv, OutboxChannel(settings.outbox_dir, name), session, text)
                result = OutreachResult.caused_by(
                    session,
                    id=f"outreach:{session.id}:{name}:{KIND}",
                    status=status,  # type: ignore[arg-type]
                    text=text,
                    location=location,
                    **result_fields,
                )
            except PermanentError as error:  # this channel cannot post; the others still do
                result = OutreachResult.caused_by(
                    session,
                    id=f"outreach:{session.id}:{name}:{KIND}:failed",
                    status="failed",
                    text="",
                    reason=describe_error(error),
                    **result_fields,
                )
            except RetryableError as error:
                retry_reasons.append(f"{name}: {describe_error(error)}")
                continue
            await emit(results, result)
            log.info("outreach.result", channel=name, status=result.status, location=result.location)
        if retry_reasons:
            raise RetryableError("; ".join(retry_reasons))  # posted channels are skipped on redelivery

    return router
