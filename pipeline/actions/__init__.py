"""Actions stage.

- consumes EnrichedContent on `impromptu.content.enriched`, stores a SessionProposal for a facilitator and
  emits it on `impromptu.proposals.created` (unless the rule's `article_must_match` vetoes the article);
- consumes EnrichmentFailed on `impromptu.content.failed`: proposes from the post's text alone when the rule's
  session says `without_article`, else records why no session is proposed;
- consumes SharerJoined on `impromptu.triggers.joined` and adds the sharer to the proposal ("also shared by");
- consumes FacilitatorDecision on `impromptu.decisions`; an approval creates the session (Jitsi room,
  calendar invite) and emits ScheduledSession on `impromptu.sessions.scheduled`. A rejection creates nothing.
"""

from __future__ import annotations

from datetime import timedelta

import structlog
from faststream.nats.annotations import NatsBroker

from pipeline import bus, stores
from pipeline.actions.approval import add_sharer, save_new
from pipeline.actions.sessions import calendar_invite, content_from_post, jitsi_room_url, propose, vetoed
from pipeline.messages import (
    EnrichedContent,
    EnrichmentFailed,
    FacilitatorDecision,
    ScheduledSession,
    SessionProposal,
    SharerJoined,
    stable_id,
    utc_now,
)
from pipeline.settings import Settings
from pipeline.stage import StageRouter, emit

log = structlog.get_logger("pipeline.actions")


def schedule(decision: FacilitatorDecision, jitsi_base_url: str) -> ScheduledSession:
    proposal = decision.proposal
    session_id = stable_id("session", proposal.id)
    join_url = jitsi_room_url(jitsi_base_url, proposal.title)
    ends_at = proposal.starts_at + timedelta(minutes=proposal.duration_minutes)
    return ScheduledSession.caused_by(
        decision,
        id=session_id,
        proposal=proposal,
        approved_by=decision.decided_by,
        join_url=join_url,
        starts_at=proposal.starts_at,
        ends_at=ends_at,
        ics=calendar_invite(
            uid=session_id,
            title=proposal.title,
            description=proposal.description,
            starts_at=proposal.starts_at,
            ends_at=ends_at,
            join_url=join_url,
        ),
    )


def actions_router(settings: Settings) -> StageRouter:
    router = StageRouter("actions", settings)
    proposals = router.output(bus.PROPOSALS_CREATED, SessionProposal, "A session awaiting approval.")
    scheduled = router.output(bus.SESSIONS_SCHEDULED, ScheduledSession, "An approved session with its join link.")

    async def propose_from(content: EnrichedContent, broker: NatsBroker) -> None:
        if (veto := vetoed(content)) is not None:
            log.warning("proposal.vetoed", rule=content.trigger.rule, url=content.article.final_url, reason=veto)
            return
        proposal = await save_new(broker, propose(content, utc_now()))
        await emit(proposals, proposal)
        log.info("proposal.created", proposal_id=proposal.id, starts_at=proposal.starts_at.isoformat())

    @router.consume(bus.CONTENT_ENRICHED, durable="actions-propose")
    async def propose_session(content: EnrichedContent, broker: NatsBroker) -> None:
        await propose_from(content, broker)

    @router.consume(bus.CONTENT_FAILED, durable="actions-unread")
    async def propose_without_article(failure: EnrichmentFailed, broker: NatsBroker) -> None:
        if not failure.trigger.plan.without_article:
            log.warning(
                "proposal.skipped",
                rule=failure.trigger.rule,
                url=failure.url,
                reason=f"the page could not be read ({failure.reason}) and the rule needs the article",
            )
            return
        await propose_from(content_from_post(failure), broker)

    @router.consume(bus.TRIGGERS_JOINED, durable="actions-joined")
    async def note_sharer(joined: SharerJoined, broker: NatsBroker) -> None:
        record = await add_sharer(broker, joined)
        names = [s.name for s in record.also_shared_by]
        log.info("proposal.also_shared_by", proposal_id=record.proposal.id, sharers=names)

    @router.consume(bus.DECISIONS, durable="actions-schedule")
    async def schedule_session(decision: FacilitatorDecision, broker: NatsBroker) -> None:
        if decision.decision != "approved":
            log.info("proposal.rejected", proposal_id=decision.proposal.id, by=decision.decided_by)
            return
        kv = await stores.bucket(broker, stores.SESSIONS)
        candidate = schedule(decision, settings.jitsi_base_url)
        session = await stores.save_once(kv, candidate.id, candidate)  # one room, however often redelivered
        await emit(scheduled, session)
        log.info("session.scheduled", session_id=session.id, join_url=session.join_url)

    return router
