"""`impromptu tail`: what flows over the bus, one readable line per message.

It reads through an ordered, ephemeral consumer (no acks, in memory, removed when it goes), so the stages' durable
consumers never see it: tailing steals nothing and moves no ack floor.

It outlives the bus going away (the pipeline and its embedded NATS restarting): with a ConnectionWatch it says
"reconnecting…" when the connection drops, and when it is back, "reconnected", following on from the stream
sequence after the last one it read, so nothing is shown twice and nothing still in the stream is missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections import deque
from collections.abc import AsyncGenerator, Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import nats.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy
from pydantic import BaseModel, ValidationError
from rich.text import Text

from pipeline import bus
from pipeline.errors import ImpromptuError
from pipeline.messages import (
    AnnouncementDue,
    DeadLetter,
    EnrichedContent,
    EnrichmentFailed,
    FacilitatorDecision,
    LibraryEntry,
    OutreachResult,
    ProposalTransition,
    Recording,
    ScheduledSession,
    SessionProposal,
    Share,
    SharerJoined,
    TriggerFired,
    utc_now,
)

MESSAGE_TYPES: dict[str, type[BaseModel]] = {topic.subject: topic.model for topic in bus.TOPICS}

# What each stage consumes and emits: `tail --stage S` shows these subjects and S's dead letters.
STAGE_SUBJECTS: dict[str, tuple[str, ...]] = {
    "trigger": (bus.SHARES.subject, bus.TRIGGERS_FIRED.subject, bus.TRIGGERS_JOINED.subject),
    "enrich": (bus.TRIGGERS_FIRED.subject, bus.CONTENT_ENRICHED.subject, bus.CONTENT_FAILED.subject),
    "actions": (
        bus.CONTENT_ENRICHED.subject,
        bus.CONTENT_FAILED.subject,
        bus.TRIGGERS_JOINED.subject,
        bus.PROPOSALS_CREATED.subject,
        bus.DECISIONS.subject,
        bus.PROPOSALS_TRANSITIONS.subject,
        bus.SESSIONS_SCHEDULED.subject,
    ),
    "outreach": (
        bus.SESSIONS_SCHEDULED.subject,
        bus.PROPOSALS_TRANSITIONS.subject,
        bus.LIBRARY_ENTRIES.subject,
        bus.OUTREACH_DUE.subject,
        bus.OUTREACH_RESULTS.subject,
    ),
    "archive": (
        bus.RECORDINGS.subject,
        bus.PROPOSALS_TRANSITIONS.subject,
        bus.SESSIONS_SCHEDULED.subject,
        bus.LIBRARY_ENTRIES.subject,
    ),
}

SUMMARY_LIMIT = 200


def message_type(subject: str) -> type[BaseModel] | None:
    if subject.startswith(bus.dead_letter_subject("")):
        return DeadLetter
    return MESSAGE_TYPES.get(subject)


def short_url(url: str, limit: int = 40) -> str:
    """host/path without the scheme or www., cut to `limit` characters with an ellipsis."""
    try:
        parts = urlsplit(url)
        text = f"{(parts.hostname or '').removeprefix('www.')}{parts.path}".rstrip("/") or url
    except ValueError:
        text = url
    return text if len(text) <= limit else text[: limit - 1] + "…"


def clip(text: str, limit: int = 60) -> str:
    one_line = " ".join(text.split())
    return one_line if len(one_line) <= limit else one_line[: limit - 1] + "…"


def _share(m: Share) -> str:
    said = f': "{clip(m.text, 50)}"' if m.text else ""
    return f"{m.sharer} shared {short_url(m.url)} via {m.source}{said}"


def _fired(m: TriggerFired) -> str:
    return f"{m.share.sharer} shared {short_url(m.canonical_url)} -> fired rule {m.rule} ({m.score:.2f})"


def _joined(m: SharerJoined) -> str:
    return f"{m.sharer.handle} also shared {short_url(m.canonical_url)} (joins {m.trigger_id})"


def _enriched(m: EnrichedContent) -> str:
    by = f" by {m.article.author}" if m.article.author else ""
    topics = f"; topics: {', '.join(m.topics)}" if m.topics else ""
    unread = f"; from the post: {m.unread_reason}" if m.unread_reason else ""
    return f'"{clip(m.article.title)}"{by} ({m.article.word_count} words{topics}{unread})'


def _failed(m: EnrichmentFailed) -> str:
    retry = "retries ran out" if m.retryable else "refused"
    return f"could not read {short_url(m.url)}: {m.reason} ({retry})"


def _proposal(m: SessionProposal) -> str:
    return f'{m.id}: "{clip(m.title)}" at {m.starts_at:%H:%M} UTC, awaiting a facilitator until {m.expires_at:%H:%M}'


def _decision(m: FacilitatorDecision) -> str:
    reason = f": {clip(m.reason)}" if m.reason else ""
    return f"{m.proposal.id} {m.decision} by {m.decided_by}{reason}"


def _transition(m: ProposalTransition) -> str:
    edited = f" edited {', '.join(m.changes)}" if m.changes else ""
    reason = f": {clip(m.reason)}" if m.reason else ""
    return f"{m.proposal_id} {m.from_state} -> {m.to_state} by {m.by}{edited}{reason}"


def _scheduled(m: ScheduledSession) -> str:
    return f'{m.id}: "{clip(m.proposal.title)}" {m.starts_at:%H:%M}-{m.ends_at:%H:%M} UTC, join {m.join_url}'


def _due(m: AnnouncementDue) -> str:
    return f"{m.session.id} {m.kind} due on {m.channel}"


def _outreach(m: OutreachResult) -> str:
    why = f" ({m.reason})" if m.reason else ""
    where = f" at {m.location}" if m.location else ""
    return f"{m.channel} {m.kind} {m.status}{where}{why}: {clip(m.text)}"


def _recording(m: Recording) -> str:
    what = [f.kind for f in m.files] + (["youtube video"] if m.youtube_video_id else [])
    return f"recording of {m.session.id} from {m.source}: {', '.join(what) or 'nothing'}"


def _library(m: LibraryEntry) -> str:
    revised = f" (revision {m.revision})" if m.revision > 1 else ""
    return f"{m.entry_id}{revised}: {clip(m.tagline)} [{', '.join(m.tags)}]"


def _dead_letter(m: DeadLetter) -> str:
    kind = "permanent" if m.permanent else f"after {m.deliveries} deliveries"
    return f"{m.stage} gave up on {m.subject} #{m.stream_sequence or '?'} ({kind}): {clip(m.reason, 80)}"


SUMMARIES: dict[type[BaseModel], Callable[[Any], str]] = {
    Share: _share,
    TriggerFired: _fired,
    SharerJoined: _joined,
    EnrichedContent: _enriched,
    EnrichmentFailed: _failed,
    SessionProposal: _proposal,
    FacilitatorDecision: _decision,
    ProposalTransition: _transition,
    ScheduledSession: _scheduled,
    AnnouncementDue: _due,
    OutreachResult: _outreach,
    Recording: _recording,
    LibraryEntry: _library,
    DeadLetter: _dead_letter,
}


def _fallback(data: bytes, why: str) -> str:
    """For bodies we cannot read as the subject's message type: say so, and show what identifies it."""
    try:
        body = json.loads(data)
    except ValueError:
        return f"{why}: {len(data)} byte(s) that are not JSON"
    if isinstance(body, dict):
        keys = ", ".join(list(body)[:6])
        ident = f"{body['id']} " if isinstance(body.get("id"), str) else ""
        return f"{why}: {ident}{{{keys}}}"
    return f"{why}: JSON {type(body).__name__}"


def summarize(subject: str, data: bytes) -> str:
    """One line saying what a message on `subject` is about; never raises."""
    model = message_type(subject)
    if model is None:
        return clip(_fallback(data, "unknown subject"), SUMMARY_LIMIT)
    try:
        message = model.model_validate_json(data)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "body"
        return clip(_fallback(data, f"not a valid {model.__name__} ({where}: {first['msg']})"), SUMMARY_LIMIT)
    return clip(SUMMARIES[model](message), SUMMARY_LIMIT)


def correlation_of(msg: Msg) -> str:
    """The correlation id from the body (every message carries one), else FastStream's header."""
    try:
        body = json.loads(msg.data)
    except ValueError:
        body = None
    value = body.get("correlation_id") if isinstance(body, dict) else None
    return value if isinstance(value, str) else (msg.headers or {}).get("correlation_id", "")


@dataclass(frozen=True)
class TailLine:
    time: datetime  # when the stream stored it
    seq: int
    subject: str
    correlation_id: str
    type: str
    summary: str

    def as_json(self) -> str:
        return json.dumps({**asdict(self), "time": self.time.isoformat()}, ensure_ascii=False)

    def as_text(self) -> Text:
        label = self.subject.removeprefix("impromptu.")
        style = "red" if self.type == "DeadLetter" else "cyan"
        return Text.assemble(
            (f"{self.time:%H:%M:%S} ", "dim"),
            (f"{label:<18} ", style),
            (f"{self.correlation_id or '-':<20} ", "magenta"),
            self.summary,
        )


def tail_line(msg: Msg) -> TailLine:
    model = message_type(msg.subject)
    return TailLine(
        time=msg.metadata.timestamp,
        seq=msg.metadata.sequence.stream,
        subject=msg.subject,
        correlation_id=correlation_of(msg),
        type=model.__name__ if model else "unknown",
        summary=summarize(msg.subject, msg.data),
    )


def parse_since(text: str) -> timedelta:
    """`90s`, `10m`, `2h`, `1d` -> a duration."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd])\s*", text)
    if not match:
        raise ImpromptuError(f"--since {text!r}: give a duration like 90s, 10m, 2h or 1d")
    unit = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}[match.group(2)]
    return timedelta(**{unit: float(match.group(1))})


def shows(subject: str, stage: str | None) -> bool:
    if stage is None:
        return True
    return subject in STAGE_SUBJECTS[stage] or subject == bus.dead_letter_subject(stage)


@dataclass(frozen=True)
class TailNotice:
    """Not a message: what happened to the connection ("reconnecting…", "reconnected")."""

    time: datetime
    text: str

    def as_text(self) -> Text:
        return Text.assemble((f"{self.time:%H:%M:%S} ", "dim"), (self.text, "yellow"))

    def as_plain(self) -> str:
        return f"{self.time:%H:%M:%S} {self.text}"


RECONNECT_WAIT_SECONDS = 1.0
POLL_SECONDS = 0.5  # how soon a change of the connection is told between messages


class ConnectionWatch:
    """nats-py's connection callbacks for a client that must never give up while a person watches: pass
    `options()` to `connected()`; `tail` reads the changes between messages."""

    def __init__(self) -> None:
        self.up = True
        self.changes: deque[bool] = deque(maxlen=64)  # True: reconnected, False: disconnected; drained as it goes

    def options(self) -> dict[str, Any]:
        return {
            "max_reconnect_attempts": -1,  # nats-py's default gives up after 60 attempts: tail then hung silently
            "reconnect_time_wait": RECONNECT_WAIT_SECONDS,
            "disconnected_cb": self._disconnected,
            "reconnected_cb": self._reconnected,
        }

    async def _disconnected(self) -> None:
        self.up = False
        self.changes.append(False)

    async def _reconnected(self) -> None:
        self.up = True
        self.changes.append(True)


def _from(since: datetime | None, last_seq: int | None) -> ConsumerConfig:
    if last_seq is not None:
        return ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=last_seq + 1)
    return ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_TIME, opt_start_time=since)


async def _close_quietly(js: JetStreamContext, sub: JetStreamContext.PushSubscription, up: bool) -> None:
    if not up:  # no server to ask: its consumer went with it (in memory), or goes when it sees no interest
        with contextlib.suppress(*bus.NOT_ANSWERING):
            await sub.unsubscribe()
        return
    with contextlib.suppress(*bus.NOT_ANSWERING):
        await bus.close_reader(js, sub)


async def tail(
    js: JetStreamContext,
    subject: str = bus.ALL_SUBJECTS,
    since: datetime | None = None,
    stage: str | None = None,
    connection: ConnectionWatch | None = None,
) -> AsyncGenerator[TailLine | TailNotice, None]:
    """Messages on `subject` (a NATS pattern) from `since` (default: from now on), forever; with `connection`, a
    TailNotice when it drops and when it is back, then on from the message after the last one read."""
    if stage is not None and stage not in STAGE_SUBJECTS:
        raise ImpromptuError(f"--stage {stage!r}: one of {', '.join(STAGE_SUBJECTS)}")
    # "From now on" is "after the stream's last message now": a sequence to go on from after a reconnect.
    last_seq = (await js.stream_info(bus.STREAM)).state.last_seq if since is None else None
    sub = await js.subscribe(subject, stream=bus.STREAM, ordered_consumer=True, config=_from(since, last_seq))
    try:
        while True:
            if connection is not None and connection.changes:
                if not connection.changes.popleft():
                    yield TailNotice(utc_now(), "reconnecting… (the bus went away; Ctrl-C to stop)")
                    continue
                await _close_quietly(js, sub, up=True)
                sub = await _resubscribe(js, subject, since, last_seq)
                after = f"from #{last_seq + 1}" if last_seq is not None else "from the start time"
                yield TailNotice(utc_now(), f"reconnected: following on {after}")
                continue
            try:
                msg = await sub.next_msg(timeout=POLL_SECONDS if connection is not None else None)
            except nats.errors.TimeoutError:
                continue
            seq = msg.metadata.sequence.stream
            if last_seq is not None and seq <= last_seq:
                continue  # read already, from the consumer before a reconnect
            last_seq = seq
            if shows(msg.subject, stage):
                yield tail_line(msg)
    finally:
        await _close_quietly(js, sub, up=connection is None or connection.up)


async def _resubscribe(
    js: JetStreamContext, subject: str, since: datetime | None, last_seq: int | None
) -> JetStreamContext.PushSubscription:
    """A new ordered consumer once the server answers again (JetStream may need a moment after a restart)."""
    while True:
        try:
            return await js.subscribe(subject, stream=bus.STREAM, ordered_consumer=True, config=_from(since, last_seq))
        except bus.NOT_ANSWERING:
            await asyncio.sleep(RECONNECT_WAIT_SECONDS)
