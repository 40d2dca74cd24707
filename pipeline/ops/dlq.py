"""`impromptu dlq list|show|replay|discard`: what the stages gave up on, and what an operator did about it.

A dead letter is a message on `impromptu.dlq.<stage>`; it is named by its own stream sequence (SEQ). Dead letters
stay in the stream; what happened to each is recorded in the KV bucket `impromptu-dlq` (SEQ -> DlqRecord). No
record means `waiting`. Replaying and discarding are one-way: a record is replayed or discarded once, with who
and when, so nothing leaves the queue without a trace.

Replay and deduplication: the original message's Nats-Msg-Id (e.g. `x:123`) is most likely still inside
JetStream's duplicate window (24 h by default), so publishing it again with that id would be silently dropped.
A replay is published with `Nats-Msg-Id: <original id>:replay:<SEQ>`: new to JetStream, so it is delivered to the
stage again, yet the same for every attempt at replaying that dead letter, so a replay retried after a crash (or
two operators replaying at once) is dropped as a duplicate and reaches the stage once. The body is unchanged:
the stages' own ids and idempotent effects make a replay of something that partly got through create nothing
twice. If the replay fails again it becomes a new dead letter with a new SEQ, replayable in its turn.
Limit: a body that was not UTF-8 was stored with escapes and is replayed as that text.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from faststream.nats import NatsBroker
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError, NotFoundError
from nats.js.kv import KeyValue
from pydantic import BaseModel, ConfigDict, ValidationError

from pipeline import bus, stores
from pipeline.errors import ImpromptuError
from pipeline.messages import DeadLetter, utc_now
from pipeline.ops.trace import read_stream

BUCKET = "impromptu-dlq"  # dead letter's stream sequence -> DlqRecord
REPLAY_OF_HEADER = "Impromptu-Replay-Of"
REPLAYED_BY_HEADER = "Impromptu-Replayed-By"

DlqState = Literal["waiting", "replayed", "discarded"]


class DlqRecord(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    state: DlqState = "waiting"
    by: str | None = None
    at: datetime | None = None
    reason: str = ""
    replay_msg_id: str | None = None
    replay_seq: int | None = None


@dataclass(frozen=True)
class DeadLetterEntry:
    seq: int
    dead_letter: DeadLetter
    record: DlqRecord
    revision: int | None  # of the KV record; None: no record yet (waiting)


class DlqError(ImpromptuError):
    """Unknown SEQ, or a dead letter already replayed or discarded."""


def dead_letters_subject(stage: str | None) -> str:
    return bus.dead_letter_subject(stage) if stage else f"{bus.DEAD_LETTERS}.>"


async def _record(kv: KeyValue, seq: int) -> tuple[DlqRecord, int | None]:
    try:
        entry = await kv.get(str(seq))
    except KeyNotFoundError:
        return DlqRecord(), None
    return DlqRecord.model_validate_json(entry.value or b""), entry.revision


def _parse(seq: int, data: bytes) -> DeadLetter:
    try:
        return DeadLetter.model_validate_json(data)
    except ValidationError as error:
        raise DlqError(f"message {seq} on the dead-letter subject is not a dead letter: {error}") from error


async def list_dead_letters(broker: NatsBroker, stage: str | None = None, every: bool = False) -> list[DeadLetterEntry]:
    """Dead letters oldest first; only waiting ones unless `every`."""
    kv = await stores.bucket(broker, BUCKET)
    entries: list[DeadLetterEntry] = []
    async for msg in read_stream(bus.jetstream(broker), dead_letters_subject(stage)):
        seq = msg.metadata.sequence.stream
        record, revision = await _record(kv, seq)
        if every or record.state == "waiting":
            entries.append(DeadLetterEntry(seq, _parse(seq, msg.data), record, revision))
    return entries


async def get_dead_letter(broker: NatsBroker, seq: int) -> DeadLetterEntry:
    try:
        raw = await bus.jetstream(broker).get_msg(bus.STREAM, seq)
    except NotFoundError as error:
        raise DlqError(f"no dead letter {seq}: there is no message {seq} in the stream") from error
    if not (raw.subject or "").startswith(f"{bus.DEAD_LETTERS}."):
        raise DlqError(f"no dead letter {seq}: message {seq} is on {raw.subject}, not a dead-letter subject")
    record, revision = await _record(await stores.bucket(broker, BUCKET), seq)
    return DeadLetterEntry(seq, _parse(seq, raw.data or b""), record, revision)


def _refuse_unless_waiting(entry: DeadLetterEntry, action: str) -> None:
    record = entry.record
    if record.state != "waiting":
        why = f": {record.reason}" if record.reason else ""
        raise DlqError(
            f"cannot {action} dead letter {entry.seq}: already {record.state} by {record.by} "
            f"at {record.at:%Y-%m-%d %H:%M:%S} UTC{why}"
        )


async def _save(broker: NatsBroker, entry: DeadLetterEntry, record: DlqRecord, action: str) -> None:
    """Compare-and-set from the state we read: of two operators acting at once, one wins, the other is told."""
    kv = await stores.bucket(broker, BUCKET)
    value = record.model_dump_json().encode()
    try:
        if entry.revision is None:
            await kv.create(str(entry.seq), value)
        else:
            await kv.update(str(entry.seq), value, last=entry.revision)
    except KeyWrongLastSequenceError as error:
        _refuse_unless_waiting(await get_dead_letter(broker, entry.seq), action)
        raise DlqError(f"dead letter {entry.seq} changed while we were at it; try again") from error


def replay_msg_id(entry: DeadLetterEntry) -> str:
    original = entry.dead_letter.headers.get("Nats-Msg-Id")
    return f"{original}:replay:{entry.seq}" if original else f"replay:{entry.seq}"


def replay_headers(entry: DeadLetterEntry, by: str) -> dict[str, str]:
    headers = {k: v for k, v in entry.dead_letter.headers.items() if not k.lower().startswith("nats-")}
    return headers | {"Nats-Msg-Id": replay_msg_id(entry), REPLAY_OF_HEADER: str(entry.seq), REPLAYED_BY_HEADER: by}


async def replay(broker: NatsBroker, seq: int, by: str) -> DlqRecord:
    """Put the original message back on its subject (new Nats-Msg-Id, see above) and record the replay."""
    entry = await get_dead_letter(broker, seq)
    _refuse_unless_waiting(entry, "replay")
    dead = entry.dead_letter
    # Publish first, record after: a crash in between leaves a waiting record, and replaying again is deduplicated.
    ack = await bus.jetstream(broker).publish(
        dead.subject, dead.data.encode(), headers=replay_headers(entry, by), stream=bus.STREAM
    )
    record = DlqRecord(state="replayed", by=by, at=utc_now(), replay_msg_id=replay_msg_id(entry), replay_seq=ack.seq)
    await _save(broker, entry, record, "replay")
    return record


async def discard(broker: NatsBroker, seq: int, by: str, reason: str) -> DlqRecord:
    """Record who gave up on this dead letter and why; the dead letter itself stays in the stream."""
    entry = await get_dead_letter(broker, seq)
    _refuse_unless_waiting(entry, "discard")
    record = DlqRecord(state="discarded", by=by, at=utc_now(), reason=reason)
    await _save(broker, entry, record, "discard")
    return record


def render_list(entries: list[DeadLetterEntry], every: bool = False) -> str:
    if not entries:
        return "no dead letters" if every else "no waiting dead letters"
    lines = []
    for entry in entries:
        dead = entry.dead_letter
        state = f"{entry.record.state:<9} " if every else ""
        lines.append(
            f"{entry.seq:>6}  {state}{dead.failed_at:%Y-%m-%d %H:%M:%S} UTC  {dead.stage:<10} "
            f"x{dead.deliveries:<3} {dead.subject}  {dead.reason}"
        )
    return "\n".join(lines)


def to_json(entry: DeadLetterEntry) -> str:
    whole = {
        "seq": entry.seq,
        "record": entry.record.model_dump(mode="json"),
        "dead_letter": entry.dead_letter.model_dump(mode="json"),
    }
    return json.dumps(whole, indent=2, ensure_ascii=False)
