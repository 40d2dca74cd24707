"""Actions stage (re-exported by pipeline/actions/__init__.py, which imports it only when asked).

- consumes EnrichedContent on `impromptu.content.enriched`, stores a SessionProposal for a facilitator, at the
  first slot that fits the host's working hours and calendar, and emits it on `impromptu.proposals.created`
  (unless the rule's `article_must_match` vetoes the article);
- consumes EnrichmentFailed on `impromptu.content.failed`: proposes from the post's text alone when the rule's
  session says `without_article`, else records why no session is proposed;
- consumes SharerJoined on `impromptu.triggers.joined` and adds the sharer to the proposal ("also shared by");
- consumes FacilitatorDecision on `impromptu.decisions`; an approval creates the session at the provider (once,
  however often redelivered), with its calendar invite, and emits ScheduledSession on
  `impromptu.sessions.scheduled`. A rejection creates nothing anywhere;
- consumes SessionProposal on `impromptu.proposals.created` and tells facilitators (Slack and/or e-mail) with a link
  to the proposal's page: once per channel for Slack, once per recipient for e-mail (records `notify.<proposal>.
  slack` and `notify.<proposal>.email.<recipient digest>` in `impromptu-outreach`);
- consumes ProposalTransition on `impromptu.proposals.transitions`: a cancelled session is removed at the provider.
"""

from __future__ import annotations

import email.utils
import hashlib
from datetime import timedelta
from typing import Literal

import structlog
from faststream.nats.annotations import NatsBroker
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue
from pydantic import BaseModel, ConfigDict

from pipeline import bus, stores
from pipeline.actions.service import booked_now, session_request
from pipeline.domain import approval
from pipeline.domain.approval import SessionLink, add_sharer, save_new
from pipeline.domain.live_rules import LiveRules
from pipeline.domain.notify import email_notices, notifiers, proposal_link, send_email_notice, send_notice
from pipeline.domain.rules import Facilitator
from pipeline.domain.sessions import (
    calendar_invite,
    content_from_post,
    first_slot,
    propose,
    provider_key,
    session_id_for,
    vetoed,
)
from pipeline.domain.slots import NoSlot, Slot, suggest_slot
from pipeline.errors import ImpromptuError, RetryableError
from pipeline.messages import (
    EnrichedContent,
    EnrichmentFailed,
    FacilitatorDecision,
    ProposalTransition,
    ScheduledSession,
    SessionProposal,
    SharerJoined,
    utc_now,
)
from pipeline.providers import CreatedSession, SessionProvider, SessionRequest
from pipeline.providers.registry import provider_from_settings, provider_named
from pipeline.settings import Settings
from pipeline.stage import STAGE, Emits, Outputs, Route, StageRouter, stage_router

log = structlog.get_logger("pipeline.actions")


class ProviderClaim(BaseModel):
    """Written before asking the provider, completed after: a crash in between is found, not repeated."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    state: Literal["creating", "created"]
    created: CreatedSession | None = None


def schedule(decision: FacilitatorDecision, created: CreatedSession) -> ScheduledSession:
    proposal = decision.proposal
    session_id = session_id_for(proposal.id)
    ends_at = proposal.starts_at + timedelta(minutes=proposal.duration_minutes)
    return ScheduledSession.caused_by(
        decision,
        id=session_id,
        proposal=proposal,
        approved_by=decision.decided_by,
        provider=proposal.provider,
        provider_id=created.provider_id,
        join_url=created.join_url,
        starts_at=proposal.starts_at,
        ends_at=ends_at,
        ics=calendar_invite(
            uid=session_id,
            title=proposal.title,
            description=proposal.description,
            starts_at=proposal.starts_at,
            ends_at=ends_at,
            join_url=created.join_url,
        ),
    )


async def create_once(kv: KeyValue, provider: SessionProvider, request: SessionRequest) -> CreatedSession:
    """Create the session at the provider at most once per session id, across crashes and redeliveries."""
    key = f"provider.{request.session_id}"
    claim = ProviderClaim(state="creating")
    try:
        revision = await kv.create(key, claim.model_dump_json().encode())
    except KeyWrongLastSequenceError:
        try:
            entry = await kv.get(key)
        except KeyNotFoundError:
            raise RetryableError(f"provider claim {key} vanished; will retry") from None
        claim, revision = ProviderClaim.model_validate_json(entry.value or b""), entry.revision or 0
        if claim.created is not None:
            return claim.created
        # An earlier attempt may have created it and crashed before recording: look before creating again.
        if (found := await provider.find(request)) is not None:
            log.warning("session.recovered", session_id=request.session_id, provider=provider.name)
            await kv.update(key, ProviderClaim(state="created", created=found).model_dump_json().encode(), revision)
            return found
    created = await provider.create(request)
    await kv.update(key, ProviderClaim(state="created", created=created).model_dump_json().encode(), revision)
    return created


class NoticeRecord(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    state: Literal["sending", "sent", "failed"]
    detail: str = ""


async def notice_once(kv: KeyValue, settings: Settings, channel: str, proposal: SessionProposal) -> None:
    """Tell facilitators on `channel` once. A notice found "sending" (a crash mid-send) is not sent again: one lost
    notice is better than a stream of copies, and the proposal is on the approval page anyway."""
    if channel == "email":
        await email_notice_once(kv, settings, proposal)
        return
    key = f"notify.{proposal.id}.{channel}"
    try:
        revision = await kv.create(key, NoticeRecord(state="sending").model_dump_json().encode())
    except KeyWrongLastSequenceError:
        log.info("notify.already_handled", proposal_id=proposal.id, channel=channel)
        return
    try:
        detail = await send_notice(settings, channel, proposal)
    except RetryableError:
        await kv.delete(key, last=revision)  # it was not delivered: the retry may send it
        raise
    except ImpromptuError as error:  # a person must fix the channel; the proposal itself goes on
        await kv.update(key, NoticeRecord(state="failed", detail=str(error)).model_dump_json().encode(), revision)
        log.warning("notify.failed", proposal_id=proposal.id, channel=channel, reason=str(error))
        return
    await kv.update(key, NoticeRecord(state="sent", detail=detail).model_dump_json().encode(), revision)
    log.info("notify.sent", proposal_id=proposal.id, channel=channel, detail=detail)


def recipient_digest(address: str) -> str:
    """A recipient's part of a key: the digest of their address (as mailed, lower case), never the address."""
    mailbox = email.utils.parseaddr(address)[1] or address
    return hashlib.sha256(mailbox.strip().lower().encode()).hexdigest()[:32]


def email_notice_key(proposal_id: str, address: str) -> str:
    return f"notify.{proposal_id}.email.{recipient_digest(address)}"


async def email_notice_once(kv: KeyValue, settings: Settings, proposal: SessionProposal) -> None:
    """E-mail each recipient once: a record per recipient, claimed ("sending") before their message goes out and
    marked "sent" or "failed" (with the server's reason) after, so a redelivery after a partial failure sends only to
    those not yet told. A recipient refused for now (4xx) is released and the stage retries; one refused for good
    (5xx) is recorded and logged, and the others are told all the same. Raises RetryableError when someone is left."""
    if await _told_before_per_recipient_records(kv, proposal.id):
        return
    retry: list[str] = []
    for notice in email_notices(settings):
        claimed: dict[str, int] = {}
        for address in notice.recipients:
            try:
                claimed[address] = await kv.create(
                    email_notice_key(proposal.id, address), NoticeRecord(state="sending").model_dump_json().encode()
                )
            except KeyWrongLastSequenceError:
                log.info("notify.already_handled", proposal_id=proposal.id, channel="email", recipient=address)
        if not claimed:
            continue
        try:
            refused = await send_email_notice(settings, proposal, notice, list(claimed))
        except RetryableError as error:  # the server is down or said "not now" to the whole message
            await _release(kv, proposal.id, claimed)
            log.info("notify.retrying", proposal_id=proposal.id, channel="email", reason=str(error))
            retry.append(str(error))
            break  # the others are tried on the retry, not against a server that is failing now
        except ImpromptuError as error:  # refused for good: recorded with the reason, the next message is tried
            refused = {address: error for address in claimed}
        except Exception:  # not sent (the message could not even be made): the redelivery may send it
            await _release(kv, proposal.id, claimed)
            raise
        for address, revision in claimed.items():
            key = email_notice_key(proposal.id, address)
            reason = refused.get(address)
            if isinstance(reason, RetryableError):
                await kv.delete(key, last=revision)
                retry.append(str(reason))
                log.info(
                    "notify.retrying", proposal_id=proposal.id, channel="email", recipient=address, reason=str(reason)
                )
            elif reason is not None:
                await kv.update(
                    key, NoticeRecord(state="failed", detail=str(reason)).model_dump_json().encode(), revision
                )
                log.warning(
                    "notify.failed", proposal_id=proposal.id, channel="email", recipient=address, reason=str(reason)
                )
            else:
                detail = f"sent{' with decision links for ' + notice.login if notice.login else ''}"
                await kv.update(key, NoticeRecord(state="sent", detail=detail).model_dump_json().encode(), revision)
                log.info("notify.sent", proposal_id=proposal.id, channel="email", recipient=address, detail=detail)
    if retry:
        raise RetryableError("; ".join(retry))


async def _release(kv: KeyValue, proposal_id: str, claimed: dict[str, int]) -> None:
    for address, revision in claimed.items():
        await kv.delete(email_notice_key(proposal_id, address), last=revision)


async def _told_before_per_recipient_records(kv: KeyValue, proposal_id: str) -> bool:
    """A proposal whose e-mail notice was recorded per channel (before records per recipient) is not sent again."""
    try:
        await kv.get(f"notify.{proposal_id}.email")
    except KeyNotFoundError:
        return False
    log.info("notify.already_handled", proposal_id=proposal_id, channel="email")
    return True


def facilitators_for(live: LiveRules, content: EnrichedContent) -> list[Facilitator]:
    """The plan's named facilitators, else everyone in the rules file."""
    everyone = live.rules.facilitators
    named = content.trigger.plan.facilitators
    return [f for f in everyone if f.name in named] if named else list(everyone)


class ActionsStage:
    """What the actions handlers share, given to them as `stage` (pipeline/stage.py): the settings, the live rules,
    the configured session provider and the stage's publishers."""

    def __init__(self, settings: Settings, live: LiveRules, outputs: Outputs) -> None:
        self.settings = settings
        self.live = live
        self.outputs = outputs
        self.provider = provider_from_settings(settings)
        self.margin = timedelta(minutes=settings.decision_margin_minutes)

    def provider_for(self, name: str) -> SessionProvider:
        """The proposal's own provider: settings may have changed since it was proposed."""
        if name == self.provider.name:
            return self.provider
        return provider_named(name, self.settings)


async def propose_from(stage: ActionsStage, content: EnrichedContent, broker: NatsBroker) -> None:
    if (veto := vetoed(content)) is not None:
        log.warning("proposal.vetoed", rule=content.trigger.rule, url=content.article.final_url, reason=veto)
        return
    settings, live, provider = stage.settings, stage.live, stage.provider
    now, plan = utc_now(), content.trigger.plan
    busy = await booked_now(broker)
    try:
        slot = suggest_slot(
            now,
            lead_minutes=plan.lead_minutes,
            duration_minutes=plan.duration_minutes,
            facilitators=facilitators_for(live, content),
            busy=busy,
            default_timezone=live.rules.timezone,
        )
    except NoSlot as error:  # still proposed: a facilitator may pick a time by hand
        slot = Slot(facilitator=None, starts_at=first_slot(now, plan.lead_minutes), reason=f"{error}; pick a time")
    draft = propose(content, now, slot=slot, margin=stage.margin, timezone=live.rules.timezone)
    preview = provider.preview(session_request(draft, session_id_for(draft.id), settings.session_timezone))
    proposal = await save_new(broker, draft.model_copy(update={"provider": provider.name, "preview": preview}))
    await stage.outputs.emit(bus.PROPOSALS_CREATED, proposal)
    log.info(
        "proposal.created",
        proposal_id=proposal.id,
        title=proposal.title,
        starts_at=proposal.starts_at.isoformat(),
        decide_by=proposal.expires_at.isoformat(),
        on_timeout=proposal.content.trigger.plan.on_timeout,
        url=proposal_link(settings, proposal.id),
        notices=notifiers(settings) or "none (see notify.disabled)",
    )


async def propose_session(content: EnrichedContent, broker: NatsBroker, stage: ActionsStage = STAGE) -> None:
    await propose_from(stage, content, broker)


async def propose_without_article(failure: EnrichmentFailed, broker: NatsBroker, stage: ActionsStage = STAGE) -> None:
    if not failure.trigger.plan.without_article:
        log.warning(
            "proposal.skipped",
            rule=failure.trigger.rule,
            url=failure.url,
            reason=f"the page could not be read ({failure.reason}) and the rule needs the article",
        )
        return
    await propose_from(stage, content_from_post(failure), broker)


async def note_sharer(joined: SharerJoined, broker: NatsBroker) -> None:
    record = await add_sharer(broker, joined)
    names = [s.name for s in record.also_shared_by]
    log.info("proposal.also_shared_by", proposal_id=record.proposal.id, sharers=names)


async def schedule_session(decision: FacilitatorDecision, broker: NatsBroker, stage: ActionsStage = STAGE) -> None:
    if decision.decision != "approved":
        log.info("proposal.rejected", proposal_id=decision.proposal.id, by=decision.decided_by)
        return
    record = await approval.get_record(broker, decision.proposal.id)
    if record.state not in ("approved", "scheduled", "live", "ended", "archived"):
        log.info("session.not_created", proposal_id=record.proposal.id, state=record.state)
        return  # cancelled before the provider was asked: nothing to create
    kv = await stores.bucket(broker, stores.SESSIONS)
    session_id = session_id_for(record.proposal.id)
    request = session_request(record.proposal, session_id, stage.settings.session_timezone)
    try:
        created = await create_once(kv, stage.provider_for(record.proposal.provider), request)
    except ImpromptuError as error:
        await approval.note_problem(broker, record.proposal.id, str(error))
        raise
    session = await stores.save_once(kv, session_id, schedule(decision, created))
    # the recording intake matches a provider's event (a Zoom meeting id, a Jitsi room) to this session
    await kv.put(provider_key(created.provider, created.provider_id), session.id.encode())
    if record.state == "approved":
        link = SessionLink(
            session_id=session.id,
            provider=created.provider,
            provider_id=created.provider_id,
            join_url=created.join_url,
        )
        reason = f"{created.provider} {created.provider_id}"
        await approval.transition(
            broker,
            record.proposal.id,
            "scheduled",
            by="actions",
            reason=reason,
            record_fields={"session": link, "problem": None},
        )
    await stage.outputs.emit(bus.SESSIONS_SCHEDULED, session)
    log.info("session.scheduled", session_id=session.id, join_url=session.join_url, provider=created.provider)


async def cancel_at_provider(change: ProposalTransition, broker: NatsBroker, stage: ActionsStage = STAGE) -> None:
    if change.to_state != "cancelled":
        return
    kv = await stores.bucket(broker, stores.SESSIONS)
    try:
        entry = await kv.get(f"provider.{session_id_for(change.proposal_id)}")
    except KeyNotFoundError:
        return  # never created at the provider
    claim = ProviderClaim.model_validate_json(entry.value or b"")
    if claim.created is None:
        return
    await stage.provider_for(claim.created.provider).cancel(claim.created)
    log.info("session.cancelled_at_provider", proposal_id=change.proposal_id, provider=claim.created.provider)


async def tell_facilitators(proposal: SessionProposal, broker: NatsBroker, stage: ActionsStage = STAGE) -> None:
    kv = await stores.bucket(broker, stores.OUTREACH)
    retry = []
    for channel in notifiers(stage.settings):
        try:
            await notice_once(kv, stage.settings, channel, proposal)
        except RetryableError as error:
            retry.append(f"{channel}: {error}")
    if retry:
        raise RetryableError("; ".join(retry))  # channels already told are skipped on redelivery


PROPOSALS = Emits(bus.PROPOSALS_CREATED, "A session awaiting approval.")
SCHEDULED = Emits(bus.SESSIONS_SCHEDULED, "An approved session with its join link.")

# What the actions stage reads, through which durable consumer, and what it emits.
ROUTES = (
    Route(propose_session, bus.CONTENT_ENRICHED, "actions-propose", emits=(PROPOSALS,)),
    Route(propose_without_article, bus.CONTENT_FAILED, "actions-unread", emits=(PROPOSALS,)),
    Route(note_sharer, bus.TRIGGERS_JOINED, "actions-joined"),
    Route(schedule_session, bus.DECISIONS, "actions-schedule", emits=(SCHEDULED,)),
    Route(cancel_at_provider, bus.PROPOSALS_TRANSITIONS, "actions-cancel"),
    Route(tell_facilitators, bus.PROPOSALS_CREATED, "actions-notify"),
)


def actions_router(settings: Settings, live: LiveRules) -> StageRouter:
    return stage_router("actions", settings, ROUTES, lambda outputs: ActionsStage(settings, live, outputs))
