"""`impromptu trace ID`: one share's journey over the bus, in stream order, and where it stopped and why.

The ID may be a share id, a correlation id, any message's id (proposal, session, ...) or the article's URL (as
shared or canonical). It is resolved to a correlation id by scanning the stream, then the journey is read back.

Cost: one full scan of the stream. Every message is read once; only those containing the ID as text are parsed,
and the sequence numbers of each correlation id (a header on every message we publish) are noted on the way, so
the journey's messages are then fetched by sequence. A message without that header (published by hand) makes it
read the stream a second time, from the journey's first message. `bench/bench_trace.py` measures it: about the
time of a raw nats-py read of the whole stream (seconds per 100,000 messages on a small machine). The stream is
read with ordered ephemeral consumers: the stages' durable consumers are never touched.

A journey that ends at its share (nothing fired) says why: the verdict the trigger stage kept for that share in the
bucket impromptu-verdicts, read with one key get (never a read of the bucket).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy
from nats.js.errors import BucketNotFoundError, KeyNotFoundError
from pydantic import ValidationError

from pipeline import bus, stores
from pipeline.domain.canonical import canonical_url
from pipeline.errors import ImpromptuError
from pipeline.ops.tail import summarize
from pipeline.triggers.explain import TriggerVerdict, verdict_key

READ_TIMEOUT_SECONDS = 5.0

# Top-level fields that identify a message or its article; nested copies (a proposal embeds its share) are not
# looked at, so an ID names the messages it belongs to rather than everything that mentions it.
ID_FIELDS = ("id", "correlation_id")
URL_FIELDS = ("url", "canonical_url")


async def read_stream(
    js: JetStreamContext, subject: str = bus.ALL_SUBJECTS, start_seq: int = 1, since: datetime | None = None
) -> AsyncIterator[Msg]:
    """Every message on `subject` from `start_seq` (or, with `since`, from that time: the server seeks by time) to
    the end of the stream as it is now, oldest first."""
    info = await js.stream_info(bus.STREAM, subjects_filter=subject)
    if start_seq > info.state.last_seq or not info.state.subjects:
        return
    if since is None:
        config = ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=start_seq)
    else:
        config = ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_TIME, opt_start_time=since)
    sub = await js.subscribe(subject, stream=bus.STREAM, ordered_consumer=True, config=config)
    try:
        consumer = await sub.consumer_info()
        if (consumer.num_pending or 0) + (consumer.delivered.consumer_seq if consumer.delivered else 0) == 0:
            return  # nothing from there on (only possible with `since`): say so now, not after a read timeout
        while True:
            msg = await sub.next_msg(timeout=READ_TIMEOUT_SECONDS)
            yield msg
            if msg.metadata.num_pending == 0:  # messages published while we read are read too
                return
    finally:
        await bus.close_reader(js, sub)


def parse_body(data: bytes) -> dict[str, Any] | None:
    try:
        body = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return None
    return body if isinstance(body, dict) else None


def is_url(ident: str) -> bool:
    return ident.startswith(("http://", "https://"))


def search_keys(ident: str) -> set[str]:
    """What to look for: the ID itself and, for a URL, its canonical form too."""
    return {ident, canonical_url(ident)} if is_url(ident) else {ident}


def identifiers(body: dict[str, Any]) -> set[str]:
    """The ids and URLs a message can be found by (URLs also in canonical form)."""
    found = {str(body[name]) for name in ID_FIELDS if body.get(name)}
    for name in URL_FIELDS:
        value = body.get(name)
        if isinstance(value, str) and is_url(value):
            found |= {value, canonical_url(value)}
    return found


@dataclass
class Resolution:
    """Correlation ids whose messages match an ID (first match first), and where each journey starts."""

    correlation_ids: list[str] = field(default_factory=list)
    first_seq: dict[str, int] = field(default_factory=dict)
    seqs: dict[str, list[int]] = field(default_factory=dict)  # per correlation id header, in stream order
    headerless: int = 0  # messages without a correlation id header: only a second scan finds theirs
    scanned: int = 0


async def resolve(js: JetStreamContext, ident: str) -> Resolution:
    keys = search_keys(ident)
    needles = [key.encode() for key in keys]
    found = Resolution()
    async for msg in read_stream(js):
        found.scanned += 1
        seq = msg.metadata.sequence.stream
        header_correlation = (msg.headers or {}).get("correlation_id")
        if header_correlation:
            found.first_seq.setdefault(header_correlation, seq)
            found.seqs.setdefault(header_correlation, []).append(seq)
        else:
            found.headerless += 1
        if not any(needle in msg.data for needle in needles):  # cheap: most messages are never parsed
            continue
        body = parse_body(msg.data)
        if body is None or not (keys & identifiers(body)):
            continue
        correlation_id = body.get("correlation_id") or header_correlation
        if isinstance(correlation_id, str) and correlation_id not in found.correlation_ids:
            found.correlation_ids.append(correlation_id)
            found.first_seq.setdefault(correlation_id, seq)
    return found


@dataclass(frozen=True)
class Step:
    seq: int
    subject: str
    stored_at: datetime
    body: dict[str, Any]
    since_previous: timedelta | None


@dataclass(frozen=True)
class Journey:
    ident: str
    correlation_id: str
    steps: list[Step]
    other_correlation_ids: list[str]
    scanned: int
    trigger_verdict: TriggerVerdict | None = None  # why the trigger let it go, when the journey ends at its share

    @property
    def subjects(self) -> list[str]:
        return [step.subject for step in self.steps]


async def find_journey(js: JetStreamContext, ident: str) -> Journey:
    """Every message of the journey `ident` belongs to, in stream order. Raises ImpromptuError when none does."""
    resolution = await resolve(js, ident)
    if not resolution.correlation_ids:
        raise ImpromptuError(f"nothing on the bus matches {ident!r} (read {resolution.scanned} messages)")
    correlation_id, *others = resolution.correlation_ids
    if resolution.headerless:
        messages = await _rescan(js, correlation_id, resolution.first_seq.get(correlation_id, 1))
    else:
        messages = [await _fetch(js, seq) for seq in resolution.seqs.get(correlation_id, [])]
    steps: list[Step] = []
    for seq, subject, stored_at, body in messages:
        since = stored_at - steps[-1].stored_at if steps else None
        steps.append(Step(seq, subject, stored_at, body, since))
    journey = Journey(ident, correlation_id, steps, others, resolution.scanned)
    last = _main_line(journey)[-1]
    if last.subject == bus.SHARES.subject and isinstance(last.body.get("id"), str):
        journey = replace(journey, trigger_verdict=await trigger_verdict(js, last.body["id"]))
    return journey


async def trigger_verdict(js: JetStreamContext, share_id: str) -> TriggerVerdict | None:
    """What the trigger stage said about a share it let go: one key get; None when it has not judged it (yet), the
    verdict has expired, or nothing was ever kept (a pipeline older than the bucket)."""
    try:
        kv = await js.key_value(stores.VERDICTS)
        entry = await kv.get(verdict_key(share_id))
    except (BucketNotFoundError, KeyNotFoundError):
        return None
    try:
        return TriggerVerdict.model_validate_json(entry.value or b"")
    except ValidationError:
        return None


Stored = tuple[int, str, datetime, dict[str, Any]]


async def _fetch(js: JetStreamContext, seq: int) -> Stored:
    msg = await js.get_msg(bus.STREAM, seq)
    assert msg.subject is not None and msg.time is not None  # always set on a stored message
    return seq, msg.subject, msg.time, parse_body(msg.data or b"") or {}


async def _rescan(js: JetStreamContext, correlation_id: str, start_seq: int) -> list[Stored]:
    """The journey's messages found by their bodies too, for streams holding messages without the header."""
    needle = correlation_id.encode()
    found: list[Stored] = []
    async for msg in read_stream(js, start_seq=start_seq):
        if needle not in msg.data and (msg.headers or {}).get("correlation_id") != correlation_id:
            continue
        body = parse_body(msg.data) or {}
        if body.get("correlation_id", (msg.headers or {}).get("correlation_id")) != correlation_id:
            continue
        found.append((msg.metadata.sequence.stream, msg.subject, msg.metadata.timestamp, body))
    return found


def _get(body: object, *path: str) -> Any:
    for key in path:
        if not isinstance(body, dict):
            return None
        body = body.get(key)
    return body


FOLLOW_UPS = (bus.OUTREACH_DUE.subject, bus.PROPOSALS_TRANSITIONS.subject)


def where_it_stopped(journey: Journey) -> str:
    """The journey's end, read from its last message: finished, stopped (and why) or waiting (for what); then the
    posts still waiting for a result (a follow-up waits for its channel's announcement) and those skipped, why."""
    ending = _main_line_ending(journey)
    waiting, skipped = _posts_unsettled_and_skipped(journey)
    if waiting:
        ending = ending.replace("complete: ", "not complete: ", 1) if ending.startswith("complete: ") else ending
        ending += f"; waiting for {len(waiting)} post(s): {', '.join(waiting)}"
    if skipped:
        ending += f"; skipped: {'; '.join(skipped)}"
    return ending


def _posts_unsettled_and_skipped(journey: Journey) -> tuple[list[str], list[str]]:
    """The posts due (per session, channel and kind) with no result yet, and those whose last result is skipped."""
    due: list[tuple[object, object, object]] = []
    last_result: dict[tuple[object, object, object], dict[str, Any]] = {}
    for step in journey.steps:
        body = step.body
        if step.subject == bus.OUTREACH_DUE.subject:
            key = (_get(body, "session", "id"), body.get("channel"), body.get("kind"))
            if key not in due:
                due.append(key)
        elif step.subject == bus.OUTREACH_RESULTS.subject:
            last_result[(body.get("session_id"), body.get("channel"), body.get("kind"))] = body
    waiting, skipped = [], []
    for key in due:
        _, channel, kind = key
        result = last_result.get(key)
        if result is None:
            waiting.append(f"{channel} {kind}")
        elif result.get("status") == "skipped":
            skipped.append(f"{channel} {kind} ({result.get('reason')})")
    return waiting, skipped


def _main_line(journey: Journey) -> list[Step]:
    return [step for step in journey.steps if step.subject not in FOLLOW_UPS] or journey.steps


def _main_line_ending(journey: Journey) -> str:
    """Where the main line ended. Follow-up announcements (the recording's, a cancellation's) come after it and do
    not change where it ended."""
    main = _main_line(journey)
    last = main[-1]
    kept = next((step for step in reversed(main) if step.subject == bus.LIBRARY_ENTRIES.subject), None)
    if kept is not None and last.subject == bus.OUTREACH_RESULTS.subject:
        last = kept  # the recording's announcements come after it is kept
    body = last.body
    if last.subject.startswith(f"{bus.DEAD_LETTERS}."):
        return (
            f"stopped: the {body.get('stage')} stage gave up: {body.get('reason')} "
            f"(see `impromptu dlq show {last.seq}`)"
        )
    if last.subject == bus.CONTENT_FAILED.subject:
        if _get(body, "trigger", "plan", "without_article"):
            return "waiting for the actions stage to propose from the post's text (the page could not be read)"
        return (
            f"stopped: the page could not be read ({body.get('reason')}) and the rule needs the article; "
            f"to read it again: `impromptu pages retry {body.get('url')} --by NAME`"
        )
    if last.subject == bus.DECISIONS.subject and body.get("decision") == "rejected":
        reason = f": {body['reason']}" if body.get("reason") else ""
        return f"stopped: rejected by {body.get('decided_by')}{reason}"
    if last.subject == bus.SHARES.subject and journey.trigger_verdict is not None:
        return f"no trigger: {journey.trigger_verdict.reason}"
    if last.subject == bus.CONTENT_ENRICHED.subject and _get(body, "trigger", "plan", "article_must_match"):
        return "no proposal: waiting for the actions stage, or the rule vetoed the article (its topics did not match)"
    endings = {
        bus.SHARES.subject: "no trigger: no rule fired for this share, or the trigger stage has not handled it yet",
        bus.TRIGGERS_JOINED.subject: (
            f"joined an earlier trigger ({body.get('trigger_id')}): 'also shared by' on its proposal"
        ),
        bus.TRIGGERS_FIRED.subject: "waiting for the enrich stage to read the page",
        bus.CONTENT_ENRICHED.subject: "waiting for the actions stage to propose a session",
        bus.PROPOSALS_CREATED.subject: (
            f"waiting for a facilitator: `impromptu proposals approve {body.get('id')} --by NAME`"
        ),
        bus.DECISIONS.subject: "approved: waiting for the actions stage to schedule the session",
        bus.SESSIONS_SCHEDULED.subject: "scheduled: waiting for outreach to announce it",
        bus.OUTREACH_RESULTS.subject: "announced: waiting for the recording (from its provider, or `impromptu record`)",
        bus.RECORDINGS.subject: "recorded: waiting for the archive stage",
        bus.LIBRARY_ENTRIES.subject: f"complete: kept in the library as {body.get('entry_id')}",
    }
    return endings.get(last.subject, f"last message on {last.subject}")


def format_gap(gap: timedelta | None) -> str:
    if gap is None:
        return "-"
    seconds = gap.total_seconds()
    if seconds < 60:
        return f"+{seconds:.3f}s"
    minutes, seconds = divmod(int(seconds), 60)
    if minutes < 60:
        return f"+{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"+{hours}h{minutes:02d}m"


def render(journey: Journey) -> str:
    steps = journey.steps
    total = format_gap(steps[-1].stored_at - steps[0].stored_at).lstrip("+")
    lines = [f"journey {journey.correlation_id}: {len(steps)} messages over {total}"]
    width = max(len(step.subject) for step in steps)
    for step in steps:
        stamp = f"{step.stored_at:%Y-%m-%d %H:%M:%S.%f}"[:-3]  # milliseconds
        gap = format_gap(step.since_previous)
        what = summarize(step.subject, json.dumps(step.body).encode())  # the same one-liner `impromptu tail` prints
        lines.append(f"  {step.seq:>6}  {stamp}  {gap:>9}  {step.subject:<{width}}  {what}")
    lines.append(where_it_stopped(journey))
    if journey.trigger_verdict is not None and _main_line(journey)[-1].subject == bus.SHARES.subject:
        lines += [f"  rule {rule}" for rule in journey.trigger_verdict.rules]
    if journey.other_correlation_ids:
        lines.append(f"also matching {journey.ident!r}: {', '.join(journey.other_correlation_ids)}")
    lines.append(f"(scanned {journey.scanned} messages of the stream to resolve {journey.ident!r})")
    return "\n".join(lines)
