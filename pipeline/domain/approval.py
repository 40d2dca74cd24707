"""The approval state machine: proposals kept in NATS KV, every change a compare-and-set on the revision.

    proposed -> approved -> scheduled -> live -> ended -> archived
    proposed -> rejected | expired | cancelled;  approved | scheduled -> cancelled

Each change appends an audit entry (who, when, what changed) and goes on the bus as a ProposalTransition. Two
facilitators deciding at once: one write wins, the other re-reads and is told who decided. The web pages, the
JSON API, the CLI and the demo all call these functions, so there is one code path for every way of deciding.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime, timedelta

from faststream.nats import NatsBroker
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue
from pydantic import BaseModel, ConfigDict, Field

from pipeline import bus, stores
from pipeline.domain import proposal_index
from pipeline.domain.sessions import proposal_id_for
from pipeline.errors import ImpromptuError, RetryableError
from pipeline.messages import (
    FacilitatorDecision,
    FieldChange,
    ProposalState,
    ProposalTransition,
    SessionProposal,
    Sharer,
    SharerJoined,
    utc_now,
)

NEXT: dict[ProposalState, frozenset[ProposalState]] = {
    "proposed": frozenset({"approved", "rejected", "expired", "cancelled"}),
    "approved": frozenset({"scheduled", "cancelled"}),
    "scheduled": frozenset({"live", "cancelled"}),
    "live": frozenset({"ended"}),
    "ended": frozenset({"archived"}),
}
OPEN: frozenset[ProposalState] = frozenset({"proposed"})
BOOKED: frozenset[ProposalState] = frozenset({"approved", "scheduled", "live"})  # hold the facilitator's time
CAS_ATTEMPTS = 20
RECORD_KEYS = "*"  # a proposal's key is its id, one token; the index's keys have several (index.…)


class AuditEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    at: datetime
    by: str
    from_state: ProposalState
    to_state: ProposalState
    reason: str = ""
    changes: dict[str, FieldChange] = Field(default_factory=dict)


class SessionLink(BaseModel):
    """Where the scheduled session lives, once the provider made it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    session_id: str
    provider: str
    provider_id: str | None = None
    join_url: str


class ProposalRecord(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    proposal: SessionProposal
    state: ProposalState = "proposed"
    decided_by: str | None = None
    decided_at: datetime | None = None
    reason: str = ""
    also_shared_by: list[Sharer] = Field(default_factory=list, description="Trusted sharers who joined later.")
    history: list[AuditEntry] = Field(default_factory=list, description="Every transition and edit, oldest first.")
    session: SessionLink | None = None
    problem: str | None = Field(default=None, description="Why the last attempt to schedule failed, for people.")

    @property
    def last(self) -> AuditEntry | None:
        return self.history[-1] if self.history else None


class DecisionRefused(ImpromptuError):
    """The proposal is unknown, already decided, expired, or the change is not allowed; the message says why."""


async def save_new(broker: NatsBroker, proposal: SessionProposal) -> SessionProposal:
    """Store a new proposal once; a redelivered message finds the stored one and gets it back unchanged."""
    kv = await stores.bucket(broker, stores.PROPOSALS)
    stored = ProposalRecord(proposal=proposal)
    try:
        revision = await kv.create(proposal.id, stored.model_dump_json().encode())
    except KeyWrongLastSequenceError:
        stored, revision = await _entry(broker, proposal.id)
    await proposal_index.note_created(kv, stored.proposal)
    await proposal_index.note(kv, stored.proposal, stored.state, revision)
    return stored.proposal


async def list_records(broker: NatsBroker) -> list[ProposalRecord]:
    """Every proposal ever, newest first: one ordered read of the whole bucket. For tests and repairs only; the
    pipeline, the pages and the API read what they need through the index (pipeline/domain/proposal_index.py)."""
    kv = await stores.bucket(broker, stores.PROPOSALS)
    records = [ProposalRecord.model_validate_json(e.value) for e in await stores.scan(kv, RECORD_KEYS) if e.value]
    return sorted(records, key=lambda r: r.proposal.created_at, reverse=True)


async def records_by_id(broker: NatsBroker, ids: list[str]) -> list[ProposalRecord]:
    """The records of `ids`, newest first, each read by its key (an id the index names but KV lost is left out)."""
    kv = await stores.bucket(broker, stores.PROPOSALS)

    async def read(proposal_id: str) -> ProposalRecord | None:
        try:
            entry = await kv.get(proposal_id)
        except KeyNotFoundError:
            return None
        return ProposalRecord.model_validate_json(entry.value) if entry.value else None

    found = [r for r in await asyncio.gather(*(read(i) for i in ids)) if r is not None]
    return sorted(found, key=lambda r: r.proposal.created_at, reverse=True)


async def in_play(broker: NatsBroker) -> list[ProposalRecord]:
    """The proposals still in play (proposed, approved, scheduled, live), newest first."""
    kv = await stores.bucket(broker, stores.PROPOSALS)
    return await records_by_id(broker, list(await proposal_index.in_play(kv)))


async def recent(broker: NatsBroker, limit: int) -> list[ProposalRecord]:
    """The newest `limit` proposals, whatever their state."""
    kv = await stores.bucket(broker, stores.PROPOSALS)
    return (await records_by_id(broker, await proposal_index.recent_ids(kv, limit)))[:limit]


async def reindex(broker: NatsBroker, *, unless_done: bool = False) -> int:
    """Write the index from the records themselves: once on a bucket made before the index existed (every worker
    tries at start; `unless_done` skips a bucket already indexed), and by `impromptu proposals reindex`."""
    kv = await stores.bucket(broker, stores.PROPOSALS)
    if unless_done and await proposal_index.is_built(kv):
        return 0
    entries = [e for e in await stores.scan(kv, RECORD_KEYS) if e.value]
    for entry in entries:
        record = ProposalRecord.model_validate_json(entry.value or b"")
        await proposal_index.note_created(kv, record.proposal)
        await proposal_index.note(kv, record.proposal, record.state, entry.revision or 0)
    await proposal_index.mark_built(kv)
    return len(entries)


async def get_record(broker: NatsBroker, proposal_id: str) -> ProposalRecord:
    return (await _entry(broker, proposal_id))[0]


async def _entry(broker: NatsBroker, proposal_id: str) -> tuple[ProposalRecord, int]:
    kv = await stores.bucket(broker, stores.PROPOSALS)
    try:
        entry = await kv.get(proposal_id)
    except (KeyNotFoundError, ValueError) as error:  # ValueError: a key nats-py finds invalid
        raise DecisionRefused(f"no proposal {proposal_id!r}: see `impromptu proposals list`") from error
    if not entry.value:
        raise DecisionRefused(f"no proposal {proposal_id!r}: see `impromptu proposals list`")
    return ProposalRecord.model_validate_json(entry.value), entry.revision or 0


DECISIONS: frozenset[ProposalState] = frozenset({"approved", "rejected", "expired", "cancelled"})


def who_decided(record: ProposalRecord) -> str:
    """Who settled this proposal and when, even after the pipeline moved it on (approved, now scheduled)."""
    decided = next((e for e in reversed(record.history) if e.to_state in DECISIONS), record.last)
    if decided is None:
        return f"proposal {record.proposal.id} is {record.state}"
    said = f"proposal {record.proposal.id} is already {decided.to_state} (by {decided.by} at {decided.at:%H:%M:%S} UTC)"
    return said if decided.to_state == record.state else f"{said} and now {record.state}"


Change = Callable[[ProposalRecord, datetime], ProposalRecord | None]


async def _apply(
    broker: NatsBroker, proposal_id: str, change: Change, now: datetime | None, *, republish: bool = False
) -> ProposalRecord:
    """Read, change, write with compare-and-set; on a conflict re-read and let `change` judge the new state.

    `change` returns the new record, None when the record already is what was asked (an idempotent repeat),
    or raises DecisionRefused. A new audit entry goes on the bus after the write; with `republish`, a repeat
    publishes the last one again (a crash may have come between write and publish) under the same message id,
    which JetStream drops if the first publish landed.
    """
    kv = await stores.bucket(broker, stores.PROPOSALS)
    for _ in range(CAS_ATTEMPTS):
        record, revision = await _entry(broker, proposal_id)
        at = now or utc_now()
        updated = change(record, at)
        if updated is None:
            await proposal_index.note(
                kv, record.proposal, record.state, revision
            )  # a crash may have come before the index
            if republish:
                await _publish_audit(broker, record)
            return record
        try:
            written = await kv.update(proposal_id, updated.model_dump_json().encode(), last=revision)
        except KeyWrongLastSequenceError:
            continue
        await proposal_index.note(kv, updated.proposal, updated.state, written, moved_from=record.proposal.starts_at)
        if len(updated.history) > len(record.history):
            await _publish_audit(broker, updated)
        return updated
    raise RetryableError(f"proposal {proposal_id} kept changing under us; try again")


async def _publish_audit(broker: NatsBroker, record: ProposalRecord) -> None:
    entry = record.last
    if entry is None:
        return
    message = ProposalTransition.caused_by(
        record.proposal,
        id=f"transition:{record.proposal.id}:{len(record.history)}",
        created_at=entry.at,
        proposal_id=record.proposal.id,
        from_state=entry.from_state,
        to_state=entry.to_state,
        by=entry.by,
        reason=entry.reason,
        changes=entry.changes,
    )
    await bus.publish(broker, bus.PROPOSALS_TRANSITIONS, message)


def moved(
    record: ProposalRecord,
    to: ProposalState,
    *,
    by: str,
    at: datetime,
    reason: str = "",
    changes: dict[str, FieldChange] | None = None,
    record_fields: dict[str, object] | None = None,
) -> ProposalRecord:
    entry = AuditEntry(at=at, by=by, from_state=record.state, to_state=to, reason=reason, changes=changes or {})
    return record.model_copy(update={"state": to, "history": [*record.history, entry], **(record_fields or {})})


def _transition(
    to: ProposalState, by: str, reason: str, fields: dict[str, object], seen_version: int | None = None
) -> Change:
    def change(record: ProposalRecord, at: datetime) -> ProposalRecord | None:
        if record.state == to and record.last is not None and record.last.by == by:
            return None  # the same step by the same actor again (a retry, a redelivery): already done
        if to not in NEXT.get(record.state, frozenset()):
            raise DecisionRefused(f"{who_decided(record)}; it cannot become {to}")
        if seen_version is not None and version_of(record) != seen_version:
            raise DecisionRefused(f"{what_changed_since(record, seen_version)}; look at it again, then decide")
        if to == "approved" and at >= record.proposal.expires_at:
            raise DecisionRefused(
                f"proposal {record.proposal.id} lapsed at {record.proposal.expires_at:%H:%M} UTC; "
                "edit its start time to propose it again"
            )
        return moved(record, to, by=by, at=at, reason=reason, record_fields=fields)

    return change


async def transition(
    broker: NatsBroker,
    proposal_id: str,
    to: ProposalState,
    *,
    by: str,
    reason: str = "",
    now: datetime | None = None,
    record_fields: dict[str, object] | None = None,
    seen_version: int | None = None,
) -> ProposalRecord:
    """Move a proposal to `to` if the state machine allows it from where it is now; raise DecisionRefused if not.
    `record_fields` are set on the record in the same write (e.g. the session's link). With `seen_version` (the
    `version_of` the record the decider was shown), a record changed since is refused: nobody approves a time or
    a text they did not see."""
    change = _transition(to, by, reason, record_fields or {}, seen_version)
    return await _apply(broker, proposal_id, change, now, republish=True)


async def decide(
    broker: NatsBroker,
    proposal_id: str,
    decision: str,
    *,
    by: str,
    reason: str = "",
    now: datetime | None = None,
    seen_version: int | None = None,
) -> FacilitatorDecision:
    """Approve or reject, exactly once, and put the decision on the bus for the actions stage to act on."""
    if decision not in ("approved", "rejected"):
        raise DecisionRefused(f"unknown decision {decision!r}: approved or rejected")
    extra = {"decided_by": by, "decided_at": now or utc_now(), "reason": reason}
    record = await transition(
        broker,
        proposal_id,
        decision,  # type: ignore[arg-type]
        by=by,
        reason=reason,
        now=now,
        record_fields=extra,
        seen_version=seen_version,
    )
    message = FacilitatorDecision.caused_by(
        record.proposal,
        id=f"decision:{proposal_id}",
        created_at=record.decided_at or utc_now(),
        proposal=record.proposal,
        decision=decision,
        decided_by=by,
        reason=record.reason,
    )
    await bus.publish(broker, bus.DECISIONS, message)
    return message


async def revise(
    broker: NatsBroker,
    proposal_id: str,
    *,
    by: str,
    revised: Callable[[ProposalRecord, datetime], SessionProposal],
    now: datetime | None = None,
) -> ProposalRecord:
    """Edit a proposal still awaiting a decision. `revised` builds (and validates) the new proposal from the
    current record; it runs again after a conflict, so it always sees the latest version."""

    def change(record: ProposalRecord, at: datetime) -> ProposalRecord | None:
        if record.state not in OPEN:
            raise DecisionRefused(f"{who_decided(record)}; only a proposed session can be edited")
        proposal = revised(record, at)
        changes = changed_fields(record.proposal, proposal)
        if not changes:
            return None
        return moved(
            record, "proposed", by=by, at=at, changes=changes, record_fields={"proposal": proposal, "problem": None}
        )

    return await _apply(broker, proposal_id, change, now)


EDITABLE = ("title", "description", "starts_at", "duration_minutes", "channels", "facilitator")
TEXT_CHANGE = "text."  # + channel: an audit entry's change of that channel's text written by hand


def changed_fields(before: SessionProposal, after: SessionProposal) -> dict[str, FieldChange]:
    def shown(value: object) -> str:
        if isinstance(value, datetime):
            return value.isoformat()
        if isinstance(value, list):
            return ", ".join(map(str, value))
        return "" if value is None else str(value)

    changes = {
        name: FieldChange(before=shown(getattr(before, name)), after=shown(getattr(after, name)))
        for name in EDITABLE
        if getattr(before, name) != getattr(after, name)
    }
    for channel in sorted(before.texts.keys() | after.texts.keys()):  # "" before or after: the template's text
        if before.texts.get(channel) != after.texts.get(channel):
            changes[f"{TEXT_CHANGE}{channel}"] = FieldChange(
                before=before.texts.get(channel, ""), after=after.texts.get(channel, "")
            )
    return changes


def version_of(record: ProposalRecord) -> int:
    """What a page shows a decider as "this version": every edit and transition adds an audit entry."""
    return len(record.history)


def what_changed_since(record: ProposalRecord, seen_version: int) -> str:
    later = record.history[seen_version:] if 0 <= seen_version < len(record.history) else []
    edits = [e for e in later if e.changes]
    if not edits:
        return f"proposal {record.proposal.id} changed since you saw it"
    fields = sorted({name for e in edits for name in e.changes})
    last = edits[-1]
    return (
        f"proposal {record.proposal.id} changed since you saw it ({', '.join(fields)} edited by {last.by} "
        f"at {last.at:%H:%M:%S} UTC)"
    )


async def note_problem(broker: NatsBroker, proposal_id: str, problem: str | None) -> ProposalRecord:
    """Record why scheduling failed (shown on the proposal's page), or clear it."""

    def change(record: ProposalRecord, at: datetime) -> ProposalRecord | None:
        return None if record.problem == problem else record.model_copy(update={"problem": problem})

    return await _apply(broker, proposal_id, change, None)


CLOCK = "clock"
AUTO_APPROVED = "nobody decided in time; the rule says on_timeout: auto_approve"


def clash_with(record: ProposalRecord, booked: list[proposal_index.Entry]) -> str | None:
    """Why the proposal's host cannot take it now: another approved or scheduled session of theirs overlaps."""
    proposal = record.proposal
    if proposal.facilitator is None:
        return None
    ends_at = proposal.starts_at + timedelta(minutes=proposal.duration_minutes)
    for other in booked:
        if (
            other.facilitator == proposal.facilitator
            and other.starts_at < ends_at
            and proposal.starts_at < other.ends_at
        ):
            return f"{proposal.facilitator} is booked then ({other.title}, {other.starts_at:%H:%M} UTC)"
    return None


def due_by_clock(
    record: ProposalRecord, now: datetime, booked: list[proposal_index.Entry] | None = None
) -> tuple[ProposalState, str] | None:
    """What time alone decides: undecided proposals lapse (or, when their rule says `on_timeout: auto_approve`, are
    approved unless the host is booked by then: `booked`); scheduled sessions go live, then end."""
    proposal = record.proposal
    if record.state == "proposed" and now >= proposal.expires_at:
        lapsed = "no decision before the start time (less the decision margin)"
        if proposal.content.trigger.plan.on_timeout == "auto_approve":
            if (clash := clash_with(record, booked or [])) is None:
                return "approved", AUTO_APPROVED
            return "expired", f"{lapsed}; not approved automatically: {clash}"
        return "expired", lapsed
    if record.state == "scheduled" and now >= proposal.starts_at:
        return "live", "start time reached"
    if record.state == "live" and now >= proposal.starts_at + timedelta(minutes=proposal.duration_minutes):
        return "ended", "end time reached"
    return None


async def advance_by_clock(
    broker: NatsBroker, now: datetime | None = None, in_play: dict[str, proposal_index.Entry] | None = None
) -> list[ProposalRecord]:
    """Move the proposals time alone moves. Reads the index of proposals in play (`in_play`, if just read), and
    judges each that looks due on its record, which may be newer than the index."""
    now = now or utc_now()
    kv = await stores.bucket(broker, stores.PROPOSALS)
    entries = in_play if in_play is not None else await proposal_index.in_play(kv)
    booked = [e for e in entries.values() if e.state in BOOKED]
    moved_records = []
    for proposal_id, entry in sorted(entries.items(), key=lambda item: item[1].starts_at):
        if entry.state == "approved" and now >= entry.expires_at:
            await _finish_auto_approval(broker, proposal_id)  # rare: approved, past its deadline, not yet scheduled
            continue
        looks_due = (
            (entry.state == "proposed" and now >= entry.expires_at)
            or (entry.state == "scheduled" and now >= entry.starts_at)
            or (entry.state == "live" and now >= entry.ends_at)
        )
        others = [e for e in booked if e is not entry]
        if looks_due and (record := await _clock_step(broker, kv, proposal_id, entry, now, others)) is not None:
            moved_records.append(record)
            if record.state == "approved":
                await _publish_decision(broker, record)
                booked.append(proposal_index.Entry.of(record.proposal, record.state, 0))  # the host's time is taken now
    return moved_records


async def _publish_decision(broker: NatsBroker, record: ProposalRecord) -> None:
    """The clock's approval on the bus, as `decide` puts a person's (the same message id: a repeat is dropped)."""
    message = FacilitatorDecision.caused_by(
        record.proposal,
        id=f"decision:{record.proposal.id}",
        created_at=record.decided_at or utc_now(),
        proposal=record.proposal,
        decision="approved",
        decided_by=record.decided_by or CLOCK,
        reason=record.reason,
    )
    await bus.publish(broker, bus.DECISIONS, message)


async def _finish_auto_approval(broker: NatsBroker, proposal_id: str) -> None:
    """A crash between the clock's approval and its message would leave the session never created: say it again."""
    try:
        record = await get_record(broker, proposal_id)
    except DecisionRefused:
        return
    if record.state == "approved" and record.decided_by == CLOCK:
        await _publish_decision(broker, record)


async def _clock_step(
    broker: NatsBroker,
    kv: KeyValue,
    proposal_id: str,
    entry: proposal_index.Entry,
    now: datetime,
    booked: list[proposal_index.Entry] | None = None,
) -> ProposalRecord | None:
    clocked: list[ProposalRecord] = []  # what the last (the written) run of `change` made

    def change(record: ProposalRecord, at: datetime) -> ProposalRecord | None:
        clocked.clear()
        if (due := due_by_clock(record, at, booked)) is None:
            return None  # a person moved it meanwhile (their step stands), or the index was behind
        decided = {"decided_by": CLOCK, "decided_at": at, "reason": due[1]} if due[0] == "approved" else {}
        clocked.append(updated := moved(record, due[0], by=CLOCK, at=at, reason=due[1], record_fields=decided))
        return updated

    try:
        record = await _apply(broker, proposal_id, change, now)
    except DecisionRefused:  # the index names a proposal that is gone
        await proposal_index.forget(kv, entry.starts_at, proposal_id)
        return None
    if record.proposal.starts_at != entry.starts_at:  # edited after the index was written: its old day forgets it
        await proposal_index.forget(kv, entry.starts_at, proposal_id)
    return clocked[0] if clocked else None


async def add_sharer(broker: NatsBroker, joined: SharerJoined) -> ProposalRecord:
    """Record "also shared by" on the trigger's proposal, once per person, whatever state it is in."""
    proposal_id = proposal_id_for(joined.trigger_id)

    def change(record: ProposalRecord, at: datetime) -> ProposalRecord | None:
        if any(s.name == joined.sharer.name for s in record.also_shared_by):
            return None
        return record.model_copy(update={"also_shared_by": [*record.also_shared_by, joined.sharer]})

    try:
        return await _apply(broker, proposal_id, change, None)
    except DecisionRefused:
        raise RetryableError(f"no proposal for {joined.trigger_id} yet (its article is still being fetched)") from None


async def mark_archived(broker: NatsBroker, proposal_id: str, *, by: str) -> ProposalRecord | None:
    """The recording is in the library: walk the session forward to archived (a recording may arrive before the
    clock has marked the session live or ended). None when no proposal is known for it (a hand-made session)."""
    steps: list[tuple[ProposalState, str]] = [("live", "recording arrived"), ("ended", "recording arrived")]
    try:
        record = await get_record(broker, proposal_id)
    except DecisionRefused:
        return None
    for to, reason in [*steps, ("archived", "recording kept in the library")]:
        if record.state == "archived":
            break
        if to in NEXT.get(record.state, frozenset()):
            record = await transition(broker, proposal_id, to, by=by, reason=reason)
    return record
