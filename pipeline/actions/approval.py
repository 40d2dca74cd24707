"""The facilitator's side: proposals kept in NATS KV, decided with compare-and-set.

The CLI (`impromptu proposals ...`) and the demo call these same functions, so what a facilitator does by
hand and what the demo shows are one code path.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from faststream.nats import NatsBroker
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError, NoKeysError
from pydantic import BaseModel, ConfigDict, Field

from pipeline import bus, stores
from pipeline.actions.sessions import proposal_id_for
from pipeline.errors import ImpromptuError, RetryableError
from pipeline.messages import FacilitatorDecision, SessionProposal, Sharer, SharerJoined, utc_now

ProposalState = Literal["proposed", "approved", "rejected", "expired"]


class ProposalRecord(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    proposal: SessionProposal
    state: ProposalState = "proposed"
    decided_by: str | None = None
    decided_at: datetime | None = None
    reason: str = ""
    also_shared_by: list[Sharer] = Field(default_factory=list, description="Trusted sharers who joined later.")


class DecisionRefused(ImpromptuError):
    """The proposal is unknown, already decided, or expired; the message says which and by whom."""


async def save_new(broker: NatsBroker, proposal: SessionProposal) -> SessionProposal:
    """Store a new proposal once; a redelivered message finds the stored one and gets it back unchanged."""
    kv = await stores.bucket(broker, stores.PROPOSALS)
    return (await stores.save_once(kv, proposal.id, ProposalRecord(proposal=proposal))).proposal


async def list_records(broker: NatsBroker) -> list[ProposalRecord]:
    kv = await stores.bucket(broker, stores.PROPOSALS)
    try:
        keys = await kv.keys()
    except NoKeysError:
        return []
    records = [await get_record(broker, key) for key in keys]
    return sorted(records, key=lambda r: r.proposal.created_at, reverse=True)


async def get_record(broker: NatsBroker, proposal_id: str) -> ProposalRecord:
    return (await _entry(broker, proposal_id))[0]


async def _entry(broker: NatsBroker, proposal_id: str) -> tuple[ProposalRecord, int]:
    kv = await stores.bucket(broker, stores.PROPOSALS)
    try:
        entry = await kv.get(proposal_id)
    except KeyNotFoundError as error:
        raise DecisionRefused(f"no proposal {proposal_id!r}: see `impromptu proposals list`") from error
    return ProposalRecord.model_validate_json(entry.value or b""), entry.revision or 0


async def decide(
    broker: NatsBroker,
    proposal_id: str,
    decision: Literal["approved", "rejected"],
    *,
    by: str,
    reason: str = "",
    now: datetime | None = None,
) -> FacilitatorDecision:
    """Move a proposal from proposed to approved/rejected, exactly once, and put the decision on the bus."""
    now = now or utc_now()
    kv = await stores.bucket(broker, stores.PROPOSALS)
    record, revision = await _entry(broker, proposal_id)
    if record.state == "proposed" and now >= record.proposal.expires_at:
        expired = record.model_copy(update={"state": "expired", "decided_at": now, "decided_by": "clock"})
        await kv.update(proposal_id, expired.model_dump_json().encode(), last=revision)
        raise DecisionRefused(f"proposal {proposal_id} expired at {record.proposal.expires_at:%H:%M} UTC")
    if record.state == "proposed":
        record = record.model_copy(update={"state": decision, "decided_by": by, "decided_at": now, "reason": reason})
        try:
            await kv.update(proposal_id, record.model_dump_json().encode(), last=revision)
        except KeyWrongLastSequenceError:
            winner = await get_record(broker, proposal_id)
            raise DecisionRefused(f"proposal {proposal_id} was just {winner.state} by {winner.decided_by}") from None
    elif record.state != decision or record.decided_by != by:
        raise DecisionRefused(f"proposal {proposal_id} is already {record.state} by {record.decided_by}")
    # Same decision by the same person again (e.g. after a crash before publishing): publish again;
    # JetStream drops the copy if the first publish did land.
    message = FacilitatorDecision.caused_by(
        record.proposal,
        id=f"decision:{proposal_id}",
        created_at=record.decided_at or now,
        proposal=record.proposal,
        decision=decision,
        decided_by=by,
        reason=record.reason,
    )
    await broker.publish(
        message,
        bus.DECISIONS,
        headers=bus.msg_headers(message),
        correlation_id=message.correlation_id,
        stream=bus.STREAM,
    )
    return message


async def add_sharer(broker: NatsBroker, joined: SharerJoined) -> ProposalRecord:
    """Record "also shared by" on the trigger's proposal, once per person, whatever state it is in."""
    proposal_id = proposal_id_for(joined.trigger_id)
    kv = await stores.bucket(broker, stores.PROPOSALS)
    for _ in range(10):
        try:
            record, revision = await _entry(broker, proposal_id)
        except DecisionRefused:
            raise RetryableError(
                f"no proposal for {joined.trigger_id} yet (its article is still being fetched)"
            ) from None
        if any(s.name == joined.sharer.name for s in record.also_shared_by):
            return record
        updated = record.model_copy(update={"also_shared_by": [*record.also_shared_by, joined.sharer]})
        try:
            await kv.update(proposal_id, updated.model_dump_json().encode(), last=revision)
            return updated
        except KeyWrongLastSequenceError:
            continue  # a facilitator decided meanwhile: add to the new revision
    raise RetryableError(f"proposal {proposal_id} kept changing; will retry")
