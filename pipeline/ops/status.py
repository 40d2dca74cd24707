"""`impromptu status`: each stage's backlog, liveness and dead letters, and the health rules that judge them.

Gathering (`gather_status`, `stage_status`) only reads consumer and stream info; it never creates, binds to or
acknowledges on a stage's durable consumer. Judging (`health_problems`) is a plain function of what was gathered.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from faststream.nats import NatsBroker
from nats.js import JetStreamContext
from nats.js.api import ConsumerInfo, PeerInfo
from nats.js.errors import NotFoundError
from rich.console import Group
from rich.table import Table
from rich.text import Text

from pipeline import bus, stores
from pipeline.channels import records
from pipeline.messages import utc_now
from pipeline.ops.dlq import list_dead_letters
from pipeline.outreach import health

DEFAULT_MAX_AGE_SECONDS = 300.0

# How often a consumer without an outstanding pull request is looked at again before it is called idle: a worker
# re-issues its pull (FastStream: a 1 s fetch) right after the previous one ends or its batch is handled.
LIVENESS_SAMPLES = 3
LIVENESS_SAMPLE_INTERVAL_SECONDS = 0.25


@dataclass(frozen=True)
class StageConsumer:
    durable: str
    stage: str  # the router's name: its dead letters go to impromptu.dlq.<stage>
    subject: str


STAGE_CONSUMERS: tuple[StageConsumer, ...] = (
    StageConsumer("trigger", "trigger", bus.SHARES.subject),
    StageConsumer("enrich", "enrich", bus.TRIGGERS_FIRED.subject),
    StageConsumer("actions-propose", "actions", bus.CONTENT_ENRICHED.subject),
    StageConsumer("actions-unread", "actions", bus.CONTENT_FAILED.subject),
    StageConsumer("actions-joined", "actions", bus.TRIGGERS_JOINED.subject),
    StageConsumer("actions-schedule", "actions", bus.DECISIONS.subject),
    StageConsumer("actions-notify", "actions", bus.PROPOSALS_CREATED.subject),
    StageConsumer("actions-cancel", "actions", bus.PROPOSALS_TRANSITIONS.subject),
    StageConsumer("outreach", "outreach", bus.SESSIONS_SCHEDULED.subject),
    StageConsumer("outreach-followups", "outreach", bus.PROPOSALS_TRANSITIONS.subject),
    StageConsumer("outreach-recordings", "outreach", bus.LIBRARY_ENTRIES.subject),
    StageConsumer("outreach-post", "outreach", bus.OUTREACH_DUE.subject),
    StageConsumer("archive", "archive", bus.RECORDINGS.subject),
    StageConsumer("archive-ended", "archive", bus.PROPOSALS_TRANSITIONS.subject),
    StageConsumer("archive-reading-list", "archive", bus.SESSIONS_SCHEDULED.subject),
)


@dataclass(frozen=True)
class StageStatus:
    durable: str
    stage: str
    subject: str
    exists: bool
    pending: int = 0  # in the stream, not yet delivered to any worker
    ack_pending: int = 0  # delivered, not yet acknowledged
    redelivered: int = 0
    waiting_pulls: int = 0
    oldest_unacked_age: float = 0.0  # seconds since the oldest message not yet acknowledged was stored; 0: none
    last_active: datetime | None = None
    live: bool = False
    # No dead-letter count here: it is the stage's, not each consumer's (StatusReport.dead_letters), so that no row or
    # JSON entry repeats it for every consumer of one stage (six actions rows each saying 10 read as 60).


@dataclass(frozen=True)
class StreamStatus:
    messages: int
    bytes: int
    first_seq: int
    last_seq: int
    consumers: int
    max_msgs: int  # -1: unlimited
    max_bytes: int  # -1: unlimited
    max_age: float  # seconds; 0: unlimited
    replicas: int = 1
    leader: str | None = None  # on a cluster: the node that orders the stream's writes
    peers: dict[str, str] = field(default_factory=dict)  # the other replicas: node -> current | behind N | offline


@dataclass(frozen=True)
class StatusReport:
    taken_at: datetime
    stream: StreamStatus
    stages: list[StageStatus]
    dead_letters: dict[str, int] = field(default_factory=dict)  # stage -> dead letters still waiting
    dead_letters_stored: dict[str, int] = field(default_factory=dict)  # stage -> all on impromptu.dlq.<stage>
    broken_channels: dict[str, str] = field(default_factory=dict)  # outreach channel -> why it cannot post
    unknown_posts: list[str] = field(default_factory=list)  # post keys whose outcome a person must check


def is_live(info: ConsumerInfo, now: datetime) -> bool:
    """A stage's pull consumer has a live worker when a pull request is waiting (`num_waiting > 0`: a worker is
    asking for messages), or when it holds unacknowledged messages delivered within the ack wait (a worker busy
    handling a batch has no pull outstanding)."""
    if (info.num_waiting or 0) > 0:
        return True
    last_delivery = info.delivered.last_active if info.delivered else None
    ack_wait = info.config.ack_wait or 30.0
    return (
        (info.num_ack_pending or 0) > 0
        and last_delivery is not None
        and (now - last_delivery).total_seconds() <= ack_wait
    )


def last_activity(info: ConsumerInfo) -> datetime | None:
    times = [seq.last_active for seq in (info.delivered, info.ack_floor) if seq and seq.last_active]
    return max(times) if times else None


async def oldest_unacked_age(js: JetStreamContext, info: ConsumerInfo, subject: str, now: datetime) -> float:
    """Age of the first message after the ack floor on the consumer's subject: everything before it is acknowledged."""
    if (info.num_pending or 0) + (info.num_ack_pending or 0) == 0:
        return 0.0
    floor = info.ack_floor.stream_seq if info.ack_floor else 0
    try:
        message = await js.get_msg(bus.STREAM, seq=floor + 1, subject=subject, next=True)
    except NotFoundError:  # purged or aged out meanwhile
        return 0.0
    return max(0.0, (now - message.time).total_seconds()) if message.time else 0.0


async def _consumer_info(js: JetStreamContext, durable: str) -> ConsumerInfo | None:
    try:
        info: ConsumerInfo = await js.consumer_info(bus.STREAM, durable)  # nats-py leaves it unannotated
    except NotFoundError:
        return None
    return info


async def _sampled_info(js: JetStreamContext, durable: str) -> tuple[ConsumerInfo | None, bool]:
    """The consumer's info and whether it is live, looking a few times before calling it idle."""
    info = None
    for sample in range(LIVENESS_SAMPLES):
        if sample:
            await asyncio.sleep(LIVENESS_SAMPLE_INTERVAL_SECONDS)
        info = await _consumer_info(js, durable)
        if info is None:
            return None, False
        if is_live(info, utc_now()):
            return info, True
    return info, False


async def one_stage(js: JetStreamContext, consumer: StageConsumer) -> StageStatus:
    info, live = await _sampled_info(js, consumer.durable)
    if info is None:
        return StageStatus(consumer.durable, consumer.stage, consumer.subject, exists=False)
    now = utc_now()
    return StageStatus(
        durable=consumer.durable,
        stage=consumer.stage,
        subject=consumer.subject,
        exists=True,
        pending=info.num_pending or 0,
        ack_pending=info.num_ack_pending or 0,
        redelivered=info.num_redelivered or 0,
        waiting_pulls=info.num_waiting or 0,
        oldest_unacked_age=await oldest_unacked_age(js, info, consumer.subject, now),
        last_active=last_activity(info),
        live=live,
    )


async def stage_status(
    js: JetStreamContext, consumers: tuple[StageConsumer, ...] = STAGE_CONSUMERS
) -> list[StageStatus]:
    return list(await asyncio.gather(*(one_stage(js, c) for c in consumers)))


async def gather_status(broker: NatsBroker) -> StatusReport:
    """The stream, every stage's consumers, and the dead letters still waiting: a replayed or discarded one is kept
    in the stream (with its record in KV) but waits no more, so it no longer makes the pipeline unhealthy."""
    js = bus.jetstream(broker)
    info = await js.stream_info(bus.STREAM, subjects_filter=bus.dead_letter_subject(">"))
    prefix = bus.dead_letter_subject("")
    stored = {subject.removeprefix(prefix): count for subject, count in (info.state.subjects or {}).items()}
    waiting = Counter(entry.dead_letter.stage for entry in await list_dead_letters(broker))
    config = info.config
    stream = StreamStatus(
        messages=info.state.messages,
        bytes=info.state.bytes,
        first_seq=info.state.first_seq,
        last_seq=info.state.last_seq,
        consumers=info.state.consumer_count,
        max_msgs=config.max_msgs if config.max_msgs is not None else -1,
        max_bytes=config.max_bytes if config.max_bytes is not None else -1,
        max_age=config.max_age or 0.0,
        replicas=config.num_replicas or 1,
        leader=info.cluster.leader if info.cluster else None,
        peers={peer.name or "?": peer_state(peer) for peer in (info.cluster.replicas or [])} if info.cluster else {},
    )
    counts = {stage: waiting[stage] for stage in sorted({*stored, *waiting})}
    broken, unknown = await outreach_troubles(broker)
    return StatusReport(utc_now(), stream, await stage_status(js), counts, stored, broken, unknown)


async def outreach_troubles(broker: NatsBroker) -> tuple[dict[str, str], list[str]]:
    """Channels marked broken, and posts interrupted where the channel cannot tell whether they went out."""
    kv = await stores.bucket(broker, stores.OUTREACH)
    broken = {sick.channel: sick.reason for sick in await health.all_broken(kv)}
    unknown = await records.unknown_keys(kv)
    return broken, unknown


def peer_state(peer: PeerInfo) -> str:
    if peer.offline:
        return "offline"
    return "current" if peer.current else f"behind {peer.lag or 0}"


def _near_limit(used: int, limit: int) -> bool:
    return limit > 0 and used >= 0.9 * limit


def health_problems(report: StatusReport, max_age: float = DEFAULT_MAX_AGE_SECONDS) -> list[str]:
    """Why the pipeline is unhealthy, one sentence each; empty when healthy."""
    problems: list[str] = []
    for stage in report.stages:
        if not stage.exists:
            problems.append(f"{stage.durable}: no durable consumer on {bus.STREAM} (has the pipeline ever run?)")
            continue
        if not stage.live:
            problems.append(f"{stage.durable}: no live worker (no pull request waiting, nothing being handled)")
        if stage.oldest_unacked_age > max_age:
            problems.append(
                f"{stage.durable}: backlog of {stage.pending + stage.ack_pending} message(s), the oldest "
                f"{format_age(stage.oldest_unacked_age)} old (over --max-age {format_age(max_age)})"
            )
    for stage_name, count in sorted(report.dead_letters.items()):
        if count:
            problems.append(f"{stage_name}: {count} dead letter(s) waiting on {bus.dead_letter_subject(stage_name)}")
    for channel, reason in sorted(report.broken_channels.items()):
        fix = f"fix it, then `impromptu channels reset {channel}`"
        problems.append(f"outreach: channel {channel} is broken ({reason}): {fix}")
    if report.unknown_posts:
        problems.append(
            f"outreach: {len(report.unknown_posts)} post(s) may or may not have gone out "
            "(`impromptu outreach list --unknown`, then `impromptu outreach resolve KEY`)"
        )
    stream = report.stream
    if _near_limit(stream.messages, stream.max_msgs) or _near_limit(stream.bytes, stream.max_bytes):
        problems.append(f"stream {bus.STREAM} is at 90% or more of its limits: new messages may push old ones out")
    if stream.replicas > 1 and not stream.leader:
        problems.append(f"stream {bus.STREAM} has no leader: nothing can be published until the cluster elects one")
    offline = sorted(name for name, state in stream.peers.items() if state == "offline")
    if offline:
        problems.append(
            f"stream {bus.STREAM}: replica(s) {', '.join(offline)} offline, "
            f"{stream.replicas - len(offline)} of {stream.replicas} copies left (bring the node back)"
        )
    return problems


def format_age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def format_bytes(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def _limit(value: float, render: Any = str) -> str:
    return "unlimited" if value <= 0 else render(value)


def render(report: StatusReport, problems: list[str]) -> Group:
    """The status as a rich renderable: one row per durable consumer, grouped by stage, whose name and dead letters
    are on its first row only (they are the stage's, not each consumer's); the stream, then the verdict and why."""
    table = Table(title=f"Impromptu at {report.taken_at:%H:%M:%S} UTC", title_justify="left")
    columns = (
        "stage",
        "dlq",
        "consumer",
        "subject",
        "pending",
        "acks",
        "redelivered",
        "oldest",
        "last active",
        "worker",
    )
    for column in columns:
        table.add_column(column, justify="right" if column in {"pending", "acks", "redelivered", "dlq"} else "left")
    for index, stage in enumerate(report.stages):
        first = index == 0 or report.stages[index - 1].stage != stage.stage
        last = index + 1 == len(report.stages) or report.stages[index + 1].stage != stage.stage
        dead = report.dead_letters.get(stage.stage, 0)
        heading = (stage.stage, Text(str(dead), "red" if dead else "")) if first else ("", "")
        if not stage.exists:
            row = (stage.durable, stage.subject, "-", "-", "-", "-", "-", Text("missing", "red"))
            table.add_row(*heading, *row, end_section=last)
            continue
        idle = (report.taken_at - stage.last_active).total_seconds() if stage.last_active else None
        table.add_row(
            *heading,
            stage.durable,
            stage.subject,
            str(stage.pending),
            str(stage.ack_pending),
            str(stage.redelivered),
            format_age(stage.oldest_unacked_age) if stage.pending + stage.ack_pending else "-",
            f"{format_age(idle)} ago" if idle is not None else "never",
            Text("live", "green") if stage.live else Text("none", "red"),
            end_section=last,
        )
    s = report.stream
    stream_line = Text(
        f"stream {bus.STREAM}: {s.messages} messages, {format_bytes(s.bytes)} (seq {s.first_seq}..{s.last_seq}), "
        f"{s.consumers} consumers; limits: {_limit(s.max_msgs)} messages, {_limit(s.max_bytes, format_bytes)}, "
        f"max age {_limit(s.max_age, format_age)}"
        + (f"; {s.replicas} replicas: leader {s.leader or 'none'}" if s.replicas > 1 else "")
        + "".join(f", {name} {state}" for name, state in sorted(s.peers.items()))
    )
    verdict = Text("healthy", "bold green") if not problems else Text("UNHEALTHY", "bold red")
    reasons = [Text(f"  - {problem}", "red") for problem in problems]
    return Group(table, stream_line, verdict, *reasons)


def report_json(report: StatusReport, problems: list[str]) -> dict[str, Any]:
    return {"healthy": not problems, "problems": problems, **asdict(report)}
