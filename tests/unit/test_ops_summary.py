"""`impromptu tail`'s one-line summaries (every bus message type, and bodies it cannot read) and the status rules."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import pytest
from pydantic import BaseModel
from rich.console import Console

from pipeline import bus
from pipeline.domain.describe import describe
from pipeline.domain.sessions import propose
from pipeline.errors import ImpromptuError
from pipeline.messages import (
    BUS_MESSAGES,
    AnnouncementDue,
    DeadLetter,
    EnrichedContent,
    EnrichmentFailed,
    FacilitatorDecision,
    FieldChange,
    LibraryEntry,
    OutreachResult,
    ProposalTransition,
    Recording,
    RecordingFile,
    ScheduledSession,
    SessionProposal,
    Share,
    Sharer,
    SharerJoined,
    TriggerFired,
)
from pipeline.ops.status import (
    STAGE_CONSUMERS,
    StageStatus,
    StatusReport,
    StreamStatus,
    health_problems,
    render,
    report_json,
)
from pipeline.ops.tail import MESSAGE_TYPES, message_type, parse_since, shows, summarize
from tests.unit.conftest import NOW, make_content, make_session

SUBJECT_OF = {model: subject for subject, model in MESSAGE_TYPES.items()} | {DeadLetter: "impromptu.dlq.enrich"}


def every_message() -> dict[type[BaseModel], BaseModel]:
    content = make_content()
    trigger = content.trigger
    share = trigger.share
    proposal = propose(content, NOW)
    session = make_session()
    recording = Recording.arrived(
        session, source="zoom", files=[RecordingFile(kind="video", location="https://media.example/rec.mp4")]
    )
    ana = Sharer(name="Ana", handle="@ana", trust=0.8, share_id="x:2", shared_at=NOW)
    return {
        Share: share,
        TriggerFired: trigger,
        SharerJoined: SharerJoined.caused_by(
            share,
            id="joined:1",
            trigger_id=trigger.id,
            canonical_url=trigger.canonical_url,
            sharer=ana,
            share=share,
        ),
        EnrichedContent: content,
        EnrichmentFailed: EnrichmentFailed.caused_by(
            trigger, id="failed:1", trigger=trigger, url=share.url, reason="http_404", detail="gone", retryable=False
        ),
        SessionProposal: proposal,
        FacilitatorDecision: FacilitatorDecision.caused_by(
            proposal, id="decision:1", proposal=proposal, decision="rejected", decided_by="ana", reason="not now"
        ),
        ProposalTransition: ProposalTransition.caused_by(
            proposal,
            id="transition:1",
            proposal_id=proposal.id,
            from_state="proposed",
            to_state="proposed",
            by="ana",
            changes={"starts_at": FieldChange(before="10:45", after="11:45")},
        ),
        ScheduledSession: session,
        AnnouncementDue: AnnouncementDue.caused_by(session, id="due:1", session=session, channel="x", kind="starting"),
        OutreachResult: OutreachResult.caused_by(
            session, id="out:1", session_id=session.id, channel="x", status="posted", text="Live at 10:45 UTC"
        ),
        Recording: recording,
        LibraryEntry: describe(recording, [], revision=1, cues=[], resources=[]),
        DeadLetter: DeadLetter(
            stage="enrich",
            subject=bus.TRIGGERS_FIRED.subject,
            data="{}",
            reason="page kept timing out",
            error_type="RetryableError",
            permanent=False,
            deliveries=5,
            stream_sequence=42,
        ),
    }


def test_every_bus_message_type_has_a_subject_and_a_summary() -> None:
    messages = every_message()
    assert set(messages) == set(BUS_MESSAGES)
    for model, message in messages.items():
        subject = SUBJECT_OF[model]
        assert message_type(subject) is model
        summary = summarize(subject, message.model_dump_json().encode())
        assert summary and "not a valid" not in summary and "\n" not in summary, (model, summary)


def test_summaries_say_what_happened() -> None:
    messages = every_message()

    def line(model: type[BaseModel]) -> str:
        return summarize(SUBJECT_OF[model], messages[model].model_dump_json().encode())

    assert line(TriggerFired) == (
        "@britz shared linkedin.com/pulse/why-elearning-isnt-w… -> fired rule trusted-share-on-leadership-or-learning"
        " (0.90)"
    )
    assert line(SharerJoined).startswith("@ana also shared linkedin.com/pulse/")
    assert "rejected by ana: not now" in line(FacilitatorDecision)
    assert line(ProposalTransition).endswith("proposed -> proposed by ana edited starts_at")
    assert line(EnrichmentFailed) == "could not read linkedin.com/pulse/why-elearning-isnt-w…: http_404 (refused)"
    assert line(DeadLetter) == (
        "enrich gave up on impromptu.triggers.fired #42 (after 5 deliveries): page kept timing out"
    )
    assert line(OutreachResult) == "x scheduled posted: Live at 10:45 UTC"
    assert line(AnnouncementDue) == f"{every_message()[ScheduledSession].id} starting due on x"


@pytest.mark.parametrize(
    ("subject", "data", "expected"),
    [
        (bus.SHARES.subject, b"\xff\x00not json", "not a valid Share"),
        (bus.SHARES.subject, b'{"id": "x:1", "url": "ftp://nope"}', "not a valid Share"),
        (bus.SHARES.subject, b"[1, 2]", "not a valid Share"),
        ("impromptu.somewhere.new", b'{"id": "m-1", "what": 1}', "unknown subject: m-1 {id, what}"),
        ("impromptu.somewhere.new", b"plain text", "unknown subject: 10 byte(s) that are not JSON"),
        ("impromptu.somewhere.new", b"", "unknown subject: 0 byte(s) that are not JSON"),
    ],
)
def test_bodies_that_cannot_be_read_are_summarized_not_raised(subject: str, data: bytes, expected: str) -> None:
    assert expected in summarize(subject, data)


def test_since_and_stage_filters() -> None:
    assert parse_since("10m") == timedelta(minutes=10)
    assert parse_since("90s") == timedelta(seconds=90)
    assert parse_since("1.5h") == timedelta(hours=1.5)
    with pytest.raises(ImpromptuError, match="--since"):
        parse_since("yesterday")
    assert shows(bus.SHARES.subject, None)
    assert shows(bus.SHARES.subject, "trigger") and shows("impromptu.dlq.trigger", "trigger")
    assert not shows(bus.SHARES.subject, "outreach") and not shows("impromptu.dlq.enrich", "trigger")


def _stage(**fields: object) -> StageStatus:
    defaults: dict[str, object] = {"durable": "enrich", "stage": "enrich", "subject": bus.TRIGGERS_FIRED.subject}
    defaults.update(exists=True, live=True)
    return StageStatus(**(defaults | fields))  # type: ignore[arg-type]


def _report(*stages: StageStatus, dead_letters: dict[str, int] | None = None, messages: int = 10) -> StatusReport:
    stream = StreamStatus(
        messages=messages, bytes=1000, first_seq=1, last_seq=10, consumers=8, max_msgs=100, max_bytes=-1, max_age=0
    )
    return StatusReport(NOW, stream, list(stages), dead_letters or {})


def test_health_rules() -> None:
    assert health_problems(_report(_stage(pending=3, oldest_unacked_age=10))) == []
    assert health_problems(_report(_stage(exists=False, live=False))) == [
        "enrich: no durable consumer on IMPROMPTU (has the pipeline ever run?)"
    ]
    assert health_problems(_report(_stage(live=False))) == [
        "enrich: no live worker (no pull request waiting, nothing being handled)"
    ]
    old = health_problems(_report(_stage(pending=2, ack_pending=1, oldest_unacked_age=301)), max_age=300)
    assert old == ["enrich: backlog of 3 message(s), the oldest 5m old (over --max-age 5m)"]
    assert health_problems(_report(_stage(pending=2, oldest_unacked_age=301)), max_age=600) == []
    assert health_problems(_report(_stage(), dead_letters={"enrich": 2, "trigger": 0})) == [
        "enrich: 2 dead letter(s) waiting on impromptu.dlq.enrich"
    ]
    assert "90% or more of its limits" in health_problems(_report(_stage(), messages=95))[0]


def test_outreach_troubles_make_the_pipeline_unhealthy() -> None:
    report = dataclasses.replace(
        _report(_stage()),
        broken_channels={"x": "X refused the token (401)"},
        unknown_posts=["session-1.slack.scheduled", "session-2.teams.starting"],
    )
    assert health_problems(report) == [
        "outreach: channel x is broken (X refused the token (401)): fix it, then `impromptu channels reset x`",
        "outreach: 2 post(s) may or may not have gone out "
        "(`impromptu outreach list --unknown`, then `impromptu outreach resolve KEY`)",
    ]


def test_replicas_a_lost_node_and_no_leader_are_reported() -> None:
    def on_cluster(leader: str | None, peers: dict[str, str]) -> StatusReport:
        stream = StreamStatus(
            messages=10, bytes=1000, first_seq=1, last_seq=10, consumers=8, max_msgs=-1, max_bytes=-1, max_age=0,
            replicas=3, leader=leader, peers=peers,
        )  # fmt: skip
        return StatusReport(NOW, stream, [_stage()], {})

    healthy = on_cluster("n1", {"n0": "current", "n2": "behind 4"})
    assert health_problems(healthy) == []  # a replica catching up is normal
    console = Console(width=300, record=True)
    console.print(render(healthy, []))
    assert "3 replicas: leader n1, n0 current, n2 behind 4" in console.export_text()

    assert health_problems(on_cluster("n1", {"n0": "offline", "n2": "current"})) == [
        "stream IMPROMPTU: replica(s) n0 offline, 2 of 3 copies left (bring the node back)"
    ]
    assert health_problems(on_cluster(None, {})) == [
        "stream IMPROMPTU has no leader: nothing can be published until the cluster elects one"
    ]


def test_a_stages_dead_letters_are_shown_once_not_on_each_of_its_consumers_rows() -> None:
    actions = [c for c in STAGE_CONSUMERS if c.stage == "actions"]
    assert len(actions) == 6
    stages = [_stage(durable="enrich", stage="enrich", subject=bus.TRIGGERS_FIRED.subject, last_active=NOW)]
    stages += [_stage(durable=c.durable, stage="actions", subject=c.subject, last_active=NOW) for c in actions]
    report = _report(*stages, dead_letters={"actions": 10, "enrich": 0})
    console = Console(width=200, record=True, color_system=None)
    console.print(render(report, health_problems(report)))
    rows = [line for line in console.export_text().splitlines() if "impromptu." in line and "│" in line]
    assert len(rows) == 7
    cells = [[cell.strip() for cell in row.split("│")[1:-1]] for row in rows]
    assert [row[:2] for row in cells] == [["enrich", "0"], ["actions", "10"]] + [["", ""]] * 5
    as_json = report_json(report, [])
    assert as_json["dead_letters"] == {"actions": 10, "enrich": 0}
    assert all("dead_letters" not in stage for stage in as_json["stages"])  # no per-consumer copy to add up
