"""What a facilitator can do with a proposal, checked: the one service behind the web pages, the JSON API and the CLI.

Edits are re-validated before they are stored (time in the future and free in the host's working hours, length,
channels known, each channel's announcement within its limit); approval re-checks the slot, since another
session may have been booked since the proposal was made.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from faststream.nats import NatsBroker
from pydantic import BaseModel, ConfigDict, Field

from pipeline import stores
from pipeline.channels.bounded import TemplateWorkers
from pipeline.channels.readable import readable
from pipeline.channels.records import records_of
from pipeline.channels.registry import registered, text_limit
from pipeline.channels.render import (
    JOIN_URL_MARK,
    WRITTEN_MAX,
    TemplateRefused,
    available_channels,
    weighted_length,
    written_text,
)
from pipeline.domain import approval, proposal_index
from pipeline.domain.approval import BOOKED, TEXT_CHANGE, DecisionRefused, ProposalRecord
from pipeline.domain.live_rules import LiveRules
from pipeline.domain.rules import Facilitator
from pipeline.domain.sessions import preview_session
from pipeline.domain.slots import Busy, slot_problem
from pipeline.messages import IN_PLAY, ProposalState, SessionProposal, utc_now
from pipeline.providers import SessionRequest
from pipeline.settings import Settings

TITLE_MAX = 200
DESCRIPTION_MAX = 5000
DURATION_RANGE = (5, 8 * 60)
KIND = "scheduled"
RECENT = 100  # proposals a history list shows unless asked for more


class ChannelPreview(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    channel: str
    text: str | None = Field(default=None, description="The announcement as it would be posted.")
    problem: str | None = Field(default=None, description="Why it cannot be posted as it stands.")
    length: int | None = Field(default=None, description="Length as the channel counts it.")
    limit: int | None = None
    readable: str | None = Field(
        default=None, description="What a reader sees, where the post is structure (Slack blocks, a Teams card)."
    )
    written: str | None = Field(default=None, description="The text a facilitator wrote for this channel, if any.")
    draft: str | None = Field(
        default=None, description=f"What an editor starts from: the text with {JOIN_URL_MARK} for the join link."
    )


class Announcement(BaseModel):
    """What one channel did with one moment of the session (scheduled, starting, recording, cancelled)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    channel: str
    kind: str
    state: str = Field(description="sending, posted, retry, failed, unknown (a person must check) or deleted.")
    location: str | None = Field(default=None, description="Where the post can be seen.")
    remote_id: str | None = Field(default=None, description="The post's id at the network.")
    at: datetime | None = Field(default=None, description="When its state last changed (posted: when it was posted).")
    reason: str | None = None
    key: str = Field(description="The post's record key (`impromptu outreach resolve KEY`).")


class ProposalEdit(BaseModel):
    """A facilitator's changes; a field left out (None) stays as it is."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    title: str | None = None
    description: str | None = None
    starts_at: datetime | None = Field(default=None, description="Aware date and time (UTC if no offset is given).")
    duration_minutes: int | None = None
    channels: list[str] | None = None
    texts: dict[str, str] | None = Field(
        default=None,
        description=f"Channel -> its announcement written by hand, with {JOIN_URL_MARK} where the join link goes; "
        '"" goes back to the template. Channels left out keep theirs.',
    )


def edited(current: SessionProposal, edit: ProposalEdit) -> SessionProposal:
    """`current` with `edit` applied as it stands (not validated): texts are merged channel by channel."""
    changes = edit.model_dump(exclude_none=True)
    if "texts" in changes:
        merged = {**current.texts, **changes["texts"]}
        changes["texts"] = {channel: text for channel, text in merged.items() if text.strip()}
    return current.model_copy(update=changes)


class EditRefused(DecisionRefused):
    """An edit that does not validate; `problems` maps each field to what is wrong with it."""

    def __init__(self, problems: dict[str, str]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{field}: {message}" for field, message in problems.items()))


def channel_limit(channel: str, settings: Settings) -> int | None:
    return text_limit(channel, settings)


async def channel_previews(
    proposal: SessionProposal, settings: Settings, join_url: str | None = None
) -> list[ChannelPreview]:
    """Each channel's announcement exactly as the outreach stage will post it (same templates, same limits, the
    same bounded worker processes: a runaway custom template costs a preview its bound, never the event loop; a
    text written by hand checked by the same `written_text`). `join_url`: the session's, once it is made."""
    templates = TemplateWorkers.of(settings)
    session = preview_session(proposal, settings, join_url)

    async def preview(channel: str) -> ChannelPreview:
        limit = channel_limit(channel, settings)
        written = proposal.texts.get(channel)
        try:
            if written is not None:
                text = written_text(channel, written, session, limit)
            else:
                text = await templates.render(channel, KIND, session, limit=limit)
        except TemplateRefused as error:
            return ChannelPreview(channel=channel, problem=str(error), limit=limit, written=written, draft=written)
        shown = readable(channel, text)
        return ChannelPreview(
            channel=channel,
            text=text,
            length=weighted_length(channel, text),
            limit=limit,
            readable=shown if shown != text else None,
            written=written,
            draft=written if written is not None else text.replace(session.join_url, JOIN_URL_MARK),
        )

    return list(await asyncio.gather(*(preview(channel) for channel in proposal.channels)))


async def preview_problems(proposal: SessionProposal, settings: Settings) -> dict[str, str]:
    """What `revised_proposal` reports for each channel whose announcement the proposal would not fit."""
    return {
        (f"{TEXT_CHANGE}{preview.channel}" if preview.written is not None else f"channel {preview.channel}"): (
            preview.problem
        )
        for preview in await channel_previews(proposal, settings)
        if preview.problem
    }


def session_request(proposal: SessionProposal, session_id: str, timezone: str) -> SessionRequest:
    return SessionRequest(
        session_id=session_id,
        title=proposal.title,
        description=proposal.description,
        starts_at=proposal.starts_at,
        duration_minutes=proposal.duration_minutes,
        timezone=timezone,
    )


def booked(entries: dict[str, proposal_index.Entry], *, except_id: str | None = None) -> list[Busy]:
    """Facilitators' time already taken by approved, scheduled or live sessions (from the index of proposals in
    play: a slot check costs a read per day with sessions in play, not one per proposal ever made)."""
    return [
        Busy(facilitator=e.facilitator, starts_at=e.starts_at, ends_at=e.ends_at, title=e.title)
        for proposal_id, e in entries.items()
        if e.state in BOOKED and e.facilitator and proposal_id != except_id
    ]


async def booked_now(broker: NatsBroker, *, except_id: str | None = None) -> list[Busy]:
    kv = await stores.bucket(broker, stores.PROPOSALS)
    return booked(await proposal_index.in_play(kv), except_id=except_id)


def revised_proposal(
    current: SessionProposal,
    edit: ProposalEdit,
    *,
    now: datetime,
    channels: list[str],
    host: Facilitator | None,
    busy: list[Busy],
    settings: Settings,
    default_timezone: str = "UTC",
    channel_problems: Mapping[str, str] | None = None,
) -> SessionProposal:
    """The proposal with `edit` applied, or EditRefused naming every field that is wrong. `channel_problems` are
    those of `preview_problems`, rendered beforehand (off the event loop) for the edited proposal."""
    problems: dict[str, str] = {}
    changes = edit.model_dump(exclude_none=True)
    if "title" in changes:
        changes["title"] = " ".join(changes["title"].split())
        if not changes["title"]:
            problems["title"] = "must not be empty"
        elif len(changes["title"]) > TITLE_MAX:
            problems["title"] = f"is {len(changes['title'])} characters; at most {TITLE_MAX}"
    if "description" in changes and len(changes["description"]) > DESCRIPTION_MAX:
        problems["description"] = f"is {len(changes['description'])} characters; at most {DESCRIPTION_MAX}"
    if "duration_minutes" in changes and not DURATION_RANGE[0] <= changes["duration_minutes"] <= DURATION_RANGE[1]:
        problems["duration_minutes"] = f"must be {DURATION_RANGE[0]} to {DURATION_RANGE[1]} minutes"
    if "starts_at" in changes and changes["starts_at"].tzinfo is None:
        problems["starts_at"] = "needs a time zone (UTC offset)"
    if unknown := sorted(set(changes.get("channels", [])) - set(channels)):
        problems["channels"] = f"unknown: {', '.join(unknown)} (known: {', '.join(channels)})"
    for channel, text in changes.get("texts", {}).items():
        if channel not in channels:
            problems[f"{TEXT_CHANGE}{channel}"] = f"unknown channel (known: {', '.join(channels)})"
        elif len(text) > WRITTEN_MAX:
            problems[f"{TEXT_CHANGE}{channel}"] = f"is {len(text)} characters; at most {WRITTEN_MAX}"
    if problems:
        raise EditRefused(problems)
    if "channels" in changes:
        changes["channels"] = [c for c in channels if c in changes["channels"]]  # one order everywhere
    margin = timedelta(minutes=settings.decision_margin_minutes)
    proposal = edited(current, ProposalEdit(**changes))
    proposal = proposal.model_copy(update={"expires_at": max(now, proposal.starts_at - margin)})
    if "starts_at" in changes or "duration_minutes" in changes:
        if proposal.starts_at <= now + margin:
            problems["starts_at"] = (
                f"is in the past or too soon: must be after {now + margin:%Y-%m-%d %H:%M} UTC "
                f"(now + {settings.decision_margin_minutes} minutes to decide)"
            )
        elif problem := slot_problem(
            proposal.starts_at, proposal.duration_minutes, host, busy, now, default_timezone=default_timezone
        ):
            problems["starts_at"] = problem
    problems.update(channel_problems or {})
    if problems:
        raise EditRefused(problems)
    return proposal


class Approvals:
    """The facilitator's actions on proposals, against the bus and the current rules file."""

    def __init__(self, broker: NatsBroker, settings: Settings, live: LiveRules) -> None:
        self.broker = broker
        self.settings = settings
        self.live = live

    def host(self, name: str | None) -> Facilitator | None:
        return next((f for f in self.live.rules.facilitators if f.name == name), None)

    def local_zone(self, proposal: SessionProposal) -> ZoneInfo:
        """The zone a facilitator reads and edits the start in: the host's, else the rules file's."""
        host = self.host(proposal.facilitator)
        return host.zone(self.live.rules.timezone) if host else self.live.rules.zone

    def host_time(self, proposal: SessionProposal) -> str | None:
        """The start in the host's own time zone, e.g. "Tue 24 Nov 16:00 Europe/Berlin", when that is not UTC."""
        if self.host(proposal.facilitator) is None:
            return None
        zone = self.local_zone(proposal)
        if zone.key == "UTC":
            return None
        return f"{proposal.starts_at.astimezone(zone):%a %d %b %H:%M} {zone.key}"

    async def in_play(self) -> list[ProposalRecord]:
        """Proposed, approved, scheduled and live proposals, newest first."""
        return await approval.in_play(self.broker)

    async def recent(self, limit: int = RECENT) -> list[ProposalRecord]:
        """The newest `limit` proposals in any state, newest first."""
        return await approval.recent(self.broker, limit)

    async def listed(self, state: ProposalState | None, limit: int = RECENT) -> list[ProposalRecord]:
        """What a list shows: those in `state` (one still in play: all of them; else among the newest `limit`)."""
        records = await (self.in_play() if state in IN_PLAY else self.recent(limit))
        return [r for r in records if state is None or r.state == state]

    async def get(self, proposal_id: str) -> ProposalRecord:
        return await approval.get_record(self.broker, proposal_id)

    async def previews(self, record: ProposalRecord) -> list[ChannelPreview]:
        join_url = record.session.join_url if record.session else None
        return await channel_previews(record.proposal, self.settings, join_url)

    async def announcements(self, record: ProposalRecord) -> list[Announcement]:
        """The session's posts on each channel, as the outreach stage recorded them, in the order they were made."""
        if record.session is None:
            return []
        kv = await stores.bucket(self.broker, stores.OUTREACH)
        found = await records_of(kv, record.session.session_id)
        made = [
            Announcement(
                channel=key.split(".")[1],
                kind=key.split(".")[2],
                state=post.state,
                location=post.location,
                remote_id=post.remote_id,
                at=post.updated_at,
                reason=post.reason,
                key=key,
            )
            for key, post in found.items()
        ]
        never = datetime.max.replace(tzinfo=UTC)
        return sorted(made, key=lambda a: (a.at or never, a.key))

    async def library_entry(self, record: ProposalRecord) -> str | None:
        """The id of the session's entry in the library, once its recording is kept there."""
        from pipeline.domain import catalog  # the archive stage imports this package: not at import time
        from pipeline.domain.describe import entry_id_for

        if record.session is None or record.state not in ("ended", "archived"):
            return None
        entry_id = entry_id_for(record.session.session_id)
        kv = await catalog.library_bucket(self.broker)
        return entry_id if await catalog.get_record(kv, entry_id) is not None else None

    async def upcoming(self) -> list[ProposalRecord]:
        """Approved, scheduled and live sessions, soonest first."""
        return sorted(
            (r for r in await self.in_play() if r.state in BOOKED), key=lambda r: (r.proposal.starts_at, r.proposal.id)
        )

    def channels_available(self) -> list[str]:
        # a custom template for a channel without an adapter could never be posted: not offered
        return [c for c in available_channels(folder=self.settings.outreach_templates_dir) if registered(c)]

    async def edit(self, proposal_id: str, edit: ProposalEdit, *, by: str) -> ProposalRecord:
        busy = await booked_now(self.broker, except_id=proposal_id)
        # the announcements are rendered here, in the template workers, not in `revised` (which runs on the loop);
        # a concurrent edit between the two is re-validated field by field but not re-rendered: the post itself is
        current = (await self.get(proposal_id)).proposal
        draft = edited(current, edit)
        channel_problems = await preview_problems(draft, self.settings)

        def revised(record: ProposalRecord, now: datetime) -> SessionProposal:
            return revised_proposal(
                record.proposal,
                edit,
                now=now,
                channels=self.channels_available(),
                host=self.host(record.proposal.facilitator),
                busy=busy,
                settings=self.settings,
                default_timezone=self.live.rules.timezone,
                channel_problems=channel_problems,
            )

        return await approval.revise(self.broker, proposal_id, by=by, revised=revised)

    async def approve(self, proposal_id: str, *, by: str, seen_version: int | None = None) -> ProposalRecord:
        """`seen_version`: the record's `version_of` as the decider saw it; a proposal edited since is refused."""
        record = await self.get(proposal_id)
        proposal = record.proposal
        if record.state == "proposed":
            busy = await booked_now(self.broker, except_id=proposal_id)
            host = self.host(proposal.facilitator)
            problem = slot_problem(
                proposal.starts_at,
                proposal.duration_minutes,
                host,
                busy,
                utc_now(),
                default_timezone=self.live.rules.timezone,
            )
            if problem:
                raise DecisionRefused(f"the start time no longer fits: {problem}; edit the time, then approve")
        await approval.decide(self.broker, proposal_id, "approved", by=by, seen_version=seen_version)
        return await self.get(proposal_id)

    async def reject(self, proposal_id: str, *, by: str, reason: str) -> ProposalRecord:
        await approval.decide(self.broker, proposal_id, "rejected", by=by, reason=reason)
        return await self.get(proposal_id)

    async def cancel(self, proposal_id: str, *, by: str, reason: str) -> ProposalRecord:
        return await approval.transition(self.broker, proposal_id, "cancelled", by=by, reason=reason)
