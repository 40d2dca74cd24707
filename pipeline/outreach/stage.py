"""The outreach stage's router: its four consumers are described in the package's docstring."""

from __future__ import annotations

import structlog
from faststream.nats.annotations import NatsBroker
from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue

from pipeline import bus, stores
from pipeline.actions import approval, session_id_for
from pipeline.errors import PermanentError
from pipeline.messages import (
    AnnouncementDue,
    AnnouncementKind,
    LibraryEntry,
    OutreachResult,
    ProposalTransition,
    ScheduledSession,
    utc_now,
)
from pipeline.outreach import health, records
from pipeline.outreach.channels import build_channels
from pipeline.outreach.channels.base import Channel, ChannelBroken, Post, Posted
from pipeline.outreach.records import PostRecord
from pipeline.outreach.render import environment, render
from pipeline.settings import Settings
from pipeline.stage import StageRouter, emit

log = structlog.get_logger("pipeline.outreach")


def library_link(settings: Settings, entry_id: str) -> str:
    return f"{settings.base_url}/library/{entry_id}"


def due_for(session: ScheduledSession, channel: str, kind: AnnouncementKind, **fields: object) -> AnnouncementDue:
    return AnnouncementDue.caused_by(
        session, id=f"due:{session.id}:{channel}:{kind}", session=session, channel=channel, kind=kind, **fields
    )


def post_for(due: AnnouncementDue, text: str) -> Post:
    proposal = due.session.proposal
    return Post(
        key=due.key,
        channel=due.channel,
        kind=due.kind,
        text=text,
        session=due.session,
        link=due.library_url if due.kind == "recording" and due.library_url else due.session.join_url,
        title=proposal.title,
        description=proposal.content.article.summary[:300],
    )


async def stored_session(broker: NatsBroker, session_id: str) -> ScheduledSession | None:
    kv = await stores.bucket(broker, stores.SESSIONS)
    try:
        entry = await kv.get(session_id)
    except KeyNotFoundError:
        return None
    return ScheduledSession.model_validate_json(entry.value) if entry.value else None


async def announced_on(kv: KeyValue, session: ScheduledSession) -> list[str]:
    """The channels where the session's announcement went out: follow-ups go there only."""
    posted = await records.records_of(kv, session.id)
    return [
        channel
        for channel in session.proposal.channels
        if (record := posted.get(f"{session.id}.{channel}.scheduled")) is not None and record.state == "posted"
    ]


def outreach_router(settings: Settings) -> StageRouter:
    router = StageRouter("outreach", settings)
    due_out = router.output(bus.OUTREACH_DUE, AnnouncementDue, "One channel's announcement, waiting to be made.")
    results = router.output(bus.OUTREACH_RESULTS, OutreachResult, "What each channel's announcement did.")
    channels = build_channels(settings)
    templates = environment(settings.outreach_templates_dir)

    @router.consume(bus.SESSIONS_SCHEDULED)
    async def plan_announcements(session: ScheduledSession) -> None:
        for channel in session.proposal.channels:
            await emit(due_out, due_for(session, channel, "scheduled"))

    @router.consume(bus.PROPOSALS_TRANSITIONS, durable="outreach-followups")
    async def follow_session(change: ProposalTransition, broker: NatsBroker) -> None:
        if change.to_state not in ("live", "cancelled") or (change.to_state == "live" and change.by == "archive"):
            return  # the archive walks a session through "live" when its recording arrives: it is over, not starting
        session = await stored_session(broker, session_id_for(change.proposal_id))
        if session is None:
            return  # never scheduled: nothing was announced
        kv = await stores.bucket(broker, stores.OUTREACH)
        kind: AnnouncementKind = "starting" if change.to_state == "live" else "cancelled"
        for channel in await announced_on(kv, session):
            await emit(due_out, due_for(session, channel, kind, reason=change.reason))

    @router.consume(bus.LIBRARY_ENTRIES, durable="outreach-recordings")
    async def announce_recording(entry: LibraryEntry, broker: NatsBroker) -> None:
        session = await stored_session(broker, entry.provenance.session_id)
        if session is None:
            return
        kv = await stores.bucket(broker, stores.OUTREACH)
        link = library_link(settings, entry.id)
        for channel in await announced_on(kv, session):
            await emit(due_out, due_for(session, channel, "recording", library_url=link, tagline=entry.tagline))

    @router.consume(bus.OUTREACH_DUE, durable="outreach-post")
    async def make_announcement(due: AnnouncementDue, broker: NatsBroker) -> None:
        kv = await stores.bucket(broker, stores.OUTREACH)
        try:
            result = await announce(broker, kv, due)
        except PermanentError as error:
            await emit(results, failure(due, str(error)))
            if isinstance(error, ChannelBroken) and await health.mark_broken(kv, due.channel, str(error), due.key):
                log.error("outreach.channel_broken", channel=due.channel, reason=str(error))
                await health.tell_people(settings, due.channel, str(error))
            raise  # to the dead letters: replayable once the cause is fixed
        await emit(results, result)
        log.info("outreach.result", channel=due.channel, kind=due.kind, status=result.status)

    async def announce(broker: NatsBroker, kv: KeyValue, due: AnnouncementDue) -> OutreachResult:
        channel = channels.ready.get(due.channel)
        if channel is None:
            raise PermanentError(channels.why_not(due.channel))
        if (sick := await health.broken(kv, due.channel)) is not None:
            raise PermanentError(
                f"channel {due.channel} is broken since {sick.since:%Y-%m-%d %H:%M} UTC ({sick.reason}); fix it, "
                f"then `impromptu channels reset {due.channel}` and replay this dead letter"
            )
        if due.kind in ("scheduled", "starting") and (skip := await _stale(broker, due)):
            return result_of(due, "skipped", "", reason=skip)
        if due.kind == "cancelled" and channel.can_delete:
            return await take_down(kv, channel, due)
        text = render(
            templates,
            due.channel,
            due.kind,
            due.session,
            library_url=due.library_url,
            tagline=due.tagline,
            reason=due.reason,
            limit=settings.mastodon_max_characters if due.channel == "mastodon" else None,
        )
        outcome = await records.post_once(kv, channel, post_for(due, text), due)
        return result_of(due, outcome.status, outcome.record.text or text, record=outcome.record)

    async def take_down(kv: KeyValue, channel: Channel, due: AnnouncementDue) -> OutreachResult:
        """Delete the scheduled announcement (the API allows it): better than a second post saying "cancelled"."""
        key = f"{due.session.id}.{due.channel}.scheduled"
        record, _ = await records.read(kv, key)
        if record is not None and record.state == "deleted":  # a redelivery: done already
            return result_of(due, "deleted", record.text, location=record.location)
        if record is None or record.state != "posted" or not record.remote_id:
            state = record.state if record else "never made"
            return result_of(due, "skipped", "", reason=f"the announcement is {state}: nothing to delete")
        await channel.delete(Posted(remote_id=record.remote_id, url=record.location))
        await records.mark_deleted(kv, key, f"session cancelled: {due.reason}".strip(": "))
        return result_of(due, "deleted", record.text, location=record.location)

    return router


async def _stale(broker: NatsBroker, due: AnnouncementDue) -> str | None:
    """Why this announcement no longer fits the session (cancelled meanwhile, or already over), or None."""
    try:
        record = await approval.get_record(broker, due.session.proposal.id)
    except approval.DecisionRefused:
        return None  # a session with no proposal record (published by hand): announce as asked
    if record.state == "cancelled":
        return "the session was cancelled before this was posted"
    if due.kind == "starting" and (record.state != "live" or utc_now() > due.session.ends_at):
        return f"the session is {record.state} and over: too late to say it starts"
    return None


def result_of(
    due: AnnouncementDue,
    status: str,
    text: str,
    *,
    record: PostRecord | None = None,
    location: str | None = None,
    reason: str | None = None,
    attempt: str | None = None,
) -> OutreachResult:
    """The result's id names the attempt, so a replayed post's new outcome is not dropped as a duplicate."""
    return OutreachResult.caused_by(
        due,
        id=f"outreach:{due.key}:{status}:{attempt or (record.attempts if record else 0)}",
        session_id=due.session.id,
        channel=due.channel,
        kind=due.kind,
        status=status,  # type: ignore[arg-type]
        text=text,
        location=location or (record.location if record else None),
        reason=reason or (record.reason if record and status in ("unknown", "failed") else None),
    )


def failure(due: AnnouncementDue, reason: str) -> OutreachResult:
    return result_of(due, "failed", "", reason=reason, attempt=f"{utc_now().timestamp():.0f}")
