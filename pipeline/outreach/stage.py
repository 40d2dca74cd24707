"""The outreach stage's router: its four consumers are described in the package's docstring."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import get_args

import structlog
from faststream.nats.annotations import NatsBroker, NatsMessage
from nats.js.kv import KeyValue

from pipeline import bus, stores
from pipeline.channels import records
from pipeline.channels.base import Channel, ChannelBroken, Post, Posted
from pipeline.channels.bounded import TemplateWorkers
from pipeline.channels.records import PostRecord
from pipeline.channels.registry import build_channels, text_limit
from pipeline.channels.render import TemplateRefused, written_text
from pipeline.domain import approval
from pipeline.domain.sessions import session_id_for
from pipeline.errors import NotYet, PermanentError
from pipeline.messages import (
    AnnouncementDue,
    AnnouncementKind,
    LibraryEntry,
    OutreachResult,
    ProposalTransition,
    ScheduledSession,
    utc_now,
)
from pipeline.outreach import health
from pipeline.settings import Settings
from pipeline.stage import STAGE, Emits, Outputs, Route, StageRouter, stage_router

log = structlog.get_logger("pipeline.outreach")

FOLLOW_UPS: tuple[AnnouncementKind, ...] = tuple(kind for kind in get_args(AnnouncementKind) if kind != "scheduled")


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


def announcement_key(due: AnnouncementDue) -> str:
    return f"{due.session.id}.{due.channel}.scheduled"


def wait_deadline(settings: Settings, due: AnnouncementDue) -> datetime:
    """Until when a follow-up waits for its channel's announcement: "starting now" until the session ends (later it
    is pointless); the others a margin after the session's end, or after they came due (a recording kept late)."""
    if due.kind == "starting":
        return due.session.ends_at
    return max(due.session.ends_at, due.created_at) + timedelta(hours=settings.outreach_follow_up_wait_hours)


def delivery_count(message: NatsMessage) -> int:
    metadata = message.raw_message.metadata
    return metadata.num_delivered if metadata else 1


class OutreachStage:
    """What the outreach handlers share, given to them as `stage` (pipeline/stage.py): the settings, the channels,
    the template workers and the stage's publishers."""

    def __init__(self, settings: Settings, outputs: Outputs) -> None:
        self.settings = settings
        self.outputs = outputs
        self.channels = build_channels(settings)
        self.templates = TemplateWorkers.of(settings)  # off the event loop, each render bounded in time and memory


async def plan_announcements(session: ScheduledSession, stage: OutreachStage = STAGE) -> None:
    for channel in session.proposal.channels:
        await stage.outputs.emit(bus.OUTREACH_DUE, due_for(session, channel, "scheduled"))


async def follow_session(change: ProposalTransition, broker: NatsBroker, stage: OutreachStage = STAGE) -> None:
    if change.to_state not in ("live", "cancelled") or (change.to_state == "live" and change.by == "archive"):
        return  # the archive walks a session through "live" when its recording arrives: it is over, not starting
    session = await stores.stored_session(broker, session_id_for(change.proposal_id))
    if session is None:
        return  # never scheduled: nothing was announced
    kind: AnnouncementKind = "starting" if change.to_state == "live" else "cancelled"
    # every channel of the plan: the post step orders each after that channel's announcement, or says why not
    for channel in session.proposal.channels:
        await stage.outputs.emit(bus.OUTREACH_DUE, due_for(session, channel, kind, reason=change.reason))


async def announce_recording(entry: LibraryEntry, broker: NatsBroker, stage: OutreachStage = STAGE) -> None:
    session = await stores.stored_session(broker, entry.provenance.session_id)
    if session is None:
        return
    link = library_link(stage.settings, entry.entry_id)
    for channel in session.proposal.channels:
        await stage.outputs.emit(
            bus.OUTREACH_DUE, due_for(session, channel, "recording", library_url=link, tagline=entry.tagline)
        )


async def make_announcement(
    due: AnnouncementDue, broker: NatsBroker, message: NatsMessage, stage: OutreachStage = STAGE
) -> None:
    kv = await stores.bucket(broker, stores.OUTREACH)
    try:
        result = await announce(stage, broker, kv, due, delivery_count(message))
    except PermanentError as error:
        await stage.outputs.emit(bus.OUTREACH_RESULTS, failure(due, str(error)))
        if isinstance(error, ChannelBroken) and await health.mark_broken(kv, due.channel, str(error), due.key):
            log.error("outreach.channel_broken", channel=due.channel, reason=str(error))
            await health.tell_people(stage.settings, due.channel, str(error))
        raise  # to the dead letters: replayable once the cause is fixed
    if result is None:
        return  # put back on the bus after waiting for its announcement
    await stage.outputs.emit(bus.OUTREACH_RESULTS, result)
    if result.status == "skipped":
        log.info("outreach.result", channel=due.channel, kind=due.kind, status=result.status, reason=result.reason)
    else:
        log.info("outreach.result", channel=due.channel, kind=due.kind, status=result.status)


async def announce(
    stage: OutreachStage, broker: NatsBroker, kv: KeyValue, due: AnnouncementDue, delivered: int
) -> OutreachResult | None:
    channel = stage.channels.ready.get(due.channel)
    if channel is None:
        if due.kind in FOLLOW_UPS:  # its announcement failed with this reason already: one dead letter is enough
            why = f"channel {due.channel} announced nothing: {stage.channels.why_not(due.channel)}"
            return result_of(due, "skipped", "", reason=why)
        raise PermanentError(stage.channels.why_not(due.channel))
    if (sick := await health.broken(kv, due.channel)) is not None:
        raise PermanentError(
            f"channel {due.channel} is broken since {sick.since:%Y-%m-%d %H:%M} UTC ({sick.reason}); fix it, "
            f"then `impromptu channels reset {due.channel}` and replay this dead letter"
        )
    if due.kind in FOLLOW_UPS:
        if (nothing_to_follow := await after_announcement(stage.settings, kv, due)) is not None:
            return result_of(due, "skipped", "", reason=nothing_to_follow)
        if delivered > 1 and not due.after_announcement and (await records.read(kv, due.key))[0] is None:
            # it waited (deliveries spent on nothing but waiting): a fresh message, with its own retries
            again = due.model_copy(update={"id": f"{due.id}:after-announcement", "after_announcement": True})
            await stage.outputs.emit(bus.OUTREACH_DUE, again)
            log.info("outreach.follow_up_released", channel=due.channel, kind=due.kind, waited=delivered - 1)
            return None
    if due.kind in ("scheduled", "starting") and (skip := await _stale(broker, due)):
        if due.kind == "scheduled" and not await _maybe_out_there(kv, due.key):
            await records.mark_not_made(kv, due.key, "skipped", skip)  # its follow-ups settle on this
            return result_of(due, "skipped", "", reason=skip)
        if due.kind == "starting":
            return result_of(due, "skipped", "", reason=skip)
        # an interrupted attempt may have posted it: reconcile below, so the cancellation can take it down
    if due.kind == "cancelled" and channel.can_delete:
        return await take_down(kv, channel, due)
    limit = text_limit(due.channel, stage.settings)
    written = due.session.proposal.texts.get(due.channel) if due.kind == "scheduled" else None
    try:
        if written is not None:  # a facilitator rewrote this channel's announcement on the approval page
            text = written_text(due.channel, written, due.session, limit)
        else:
            text = await stage.templates.render(
                due.channel,
                due.kind,
                due.session,
                library_url=due.library_url,
                tagline=due.tagline,
                reason=due.reason,
                limit=limit,
            )
    except TemplateRefused as error:
        await records.mark_not_made(kv, due.key, "failed", str(error))  # so its follow-ups need not wait
        raise
    outcome = await records.post_once(kv, channel, post_for(due, text), due)
    return result_of(due, outcome.status, outcome.record.text or text, record=outcome.record)


async def after_announcement(settings: Settings, kv: KeyValue, due: AnnouncementDue) -> str | None:
    """A follow-up goes after its channel's announcement: None once that is posted (go ahead), else why this
    follow-up is skipped. While the announcement is not settled (queued, sending, retry, unknown) raises
    NotYet: redelivered later without spending retries, until `wait_deadline`."""
    record, _ = await records.read(kv, announcement_key(due))
    if record is not None and (record.state == "posted" or (record.state == "deleted" and due.kind == "cancelled")):
        return None
    if record is not None and record.state in records.SETTLED:
        because = f" ({record.reason})" if record.reason else ""
        what = {"failed": "failed", "deleted": "was deleted", "skipped": "was skipped"}[record.state]
        return f"the announcement on {due.channel} {what}{because}: nothing to follow up"
    waiting_for: str = "not made yet" if record is None else record.state
    if record is not None and record.state in ("unknown", "retry") and record.reason:
        waiting_for += f" ({record.reason})"
    deadline = wait_deadline(settings, due)
    if utc_now() >= deadline:
        log.warning("outreach.follow_up_gave_up", channel=due.channel, kind=due.kind, announcement=waiting_for)
        until = f"{deadline:%Y-%m-%d %H:%M} UTC"
        return f"gave up waiting at {until}: the announcement on {due.channel} is still {waiting_for}"
    raise NotYet(f"the {due.kind} post on {due.channel} waits for the announcement, which is {waiting_for}")


async def take_down(kv: KeyValue, channel: Channel, due: AnnouncementDue) -> OutreachResult:
    """Delete the scheduled announcement (the API allows it): better than a second post saying "cancelled"."""
    key = announcement_key(due)
    record, _ = await records.read(kv, key)
    if record is not None and record.state == "deleted":  # a redelivery: done already
        return result_of(due, "deleted", record.text, location=record.location)
    if record is None or record.state != "posted" or not record.remote_id:
        state = record.state if record else "never made"
        return result_of(due, "skipped", "", reason=f"the announcement is {state}: nothing to delete")
    await channel.delete(Posted(remote_id=record.remote_id, url=record.location))
    await records.mark_deleted(kv, key, f"session cancelled: {due.reason}".strip(": "))
    return result_of(due, "deleted", record.text, location=record.location)


DUE = Emits(bus.OUTREACH_DUE, "One channel's announcement, waiting to be made.")
RESULTS = Emits(bus.OUTREACH_RESULTS, "What each channel's announcement did.")

# What the outreach stage reads, through which durable consumer, and what it emits.
ROUTES = (
    Route(plan_announcements, bus.SESSIONS_SCHEDULED, emits=(DUE,)),
    Route(follow_session, bus.PROPOSALS_TRANSITIONS, "outreach-followups", emits=(DUE,)),
    Route(announce_recording, bus.LIBRARY_ENTRIES, "outreach-recordings", emits=(DUE,)),
    Route(make_announcement, bus.OUTREACH_DUE, "outreach-post", emits=(DUE, RESULTS)),
)


def outreach_router(settings: Settings) -> StageRouter:
    return stage_router("outreach", settings, ROUTES, lambda outputs: OutreachStage(settings, outputs))


async def _maybe_out_there(kv: KeyValue, key: str) -> bool:
    record, _ = await records.read(kv, key)
    return record is not None and record.state in ("sending", "unknown")


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
        status=status,
        text=text,
        location=location or (record.location if record else None),
        reason=reason or (record.reason if record and status in ("unknown", "failed") else None),
    )


def failure(due: AnnouncementDue, reason: str) -> OutreachResult:
    return result_of(due, "failed", "", reason=reason, attempt=f"{utc_now().timestamp():.0f}")
