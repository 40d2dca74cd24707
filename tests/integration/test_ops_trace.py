"""`impromptu trace ID` against a real nats-server: the seed story read back by share id, proposal id and URL."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from faststream.nats import NatsBroker

from pipeline import bus
from pipeline.demo import ASSETS, article_server, run_story, seed_share
from pipeline.errors import ImpromptuError
from pipeline.messages import SessionProposal, Share
from pipeline.ops.trace import Journey, Step, find_journey, render, where_it_stopped
from pipeline.settings import Settings
from tests.integration.bus_helpers import jetstream, models_on

pytestmark = pytest.mark.nats

IMPROMPTU = str(Path(sys.executable).parent / "impromptu")

STORY_SUBJECTS = [  # the main line; outreach's due posts and results interleave with it (OUTREACH below)
    bus.SHARES.subject,
    bus.TRIGGERS_FIRED.subject,
    bus.CONTENT_ENRICHED.subject,
    bus.PROPOSALS_CREATED.subject,
    bus.PROPOSALS_TRANSITIONS.subject,  # proposed -> approved
    bus.DECISIONS.subject,
    bus.PROPOSALS_TRANSITIONS.subject,  # approved -> scheduled
    bus.SESSIONS_SCHEDULED.subject,
    *[bus.PROPOSALS_TRANSITIONS.subject] * 2,  # scheduled -> live -> ended, by the clock
    bus.RECORDINGS.subject,
    bus.PROPOSALS_TRANSITIONS.subject,  # ended -> archived, as the recording is kept
    bus.LIBRARY_ENTRIES.subject,
]
# three channels announce the session, say it starts, then the recording: each a due post and its result
OUTREACH = {bus.OUTREACH_DUE.subject: 9, bus.OUTREACH_RESULTS.subject: 9}
JOURNEY_LENGTH = len(STORY_SUBJECTS) + sum(OUTREACH.values())


def main_line(subjects: list[str]) -> list[str]:
    return [subject for subject in subjects if subject not in OUTREACH]


def impromptu(*args: str, nats_url: str, data_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMPROMPTU_")}
    env.update(NATS_URL=nats_url, IMPROMPTU_DATA_DIR=str(data_dir), IMPROMPTU_LOG_JSON="true")
    return subprocess.run([IMPROMPTU, *args], env=env, capture_output=True, text=True, timeout=60)


async def test_trace_reconstructs_the_seed_story_by_share_id_proposal_id_and_url(
    settings: Settings, client: NatsBroker
) -> None:
    with article_server((ASSETS / "bersin-article.html").read_bytes()) as url:
        await run_story(settings, url, lambda line: None)
    share = seed_share(url)
    (proposal,) = await models_on(client, bus.PROPOSALS_CREATED.subject, SessionProposal)
    js = jetstream(client)

    by_share = await find_journey(js, share.id)
    assert by_share.correlation_id == share.correlation_id
    assert main_line(by_share.subjects) == STORY_SUBJECTS
    assert {subject: by_share.subjects.count(subject) for subject in OUTREACH} == OUTREACH
    seqs = [step.seq for step in by_share.steps]
    assert seqs == sorted(seqs)
    assert by_share.steps[0].since_previous is None
    assert all(step.since_previous is not None and step.since_previous >= timedelta(0) for step in by_share.steps[1:])
    assert where_it_stopped(by_share).startswith("complete: kept in the library")
    assert by_share.scanned >= JOURNEY_LENGTH

    for ident in (proposal.id, share.correlation_id, url, f"{url}?utm_source=twitter#comments"):
        again = await find_journey(js, ident)
        assert (again.correlation_id, again.subjects) == (share.correlation_id, by_share.subjects), ident

    text = render(by_share)
    lines = text.splitlines()
    assert lines[0].startswith(f"journey {share.correlation_id}: {JOURNEY_LENGTH} messages over ")
    body = lines[1 : 1 + JOURNEY_LENGTH]
    assert [line.split()[4] for line in body] == by_share.subjects  # seq, date, time, +gap, subject, what
    assert body[0].split()[3] == "-"
    assert all(line.split()[3].startswith("+") for line in body[1:])
    assert "@britz shared" in body[0] and proposal.id in body[3] and "approved by" in body[4]
    assert lines[1 + JOURNEY_LENGTH].startswith("complete:")

    cli = impromptu("trace", proposal.id, nats_url=settings.nats_url or "", data_dir=settings.data_dir)
    assert cli.returncode == 0, cli.stderr
    assert cli.stdout.splitlines()[0] == lines[0]
    assert "complete: kept in the library" in cli.stdout


async def test_a_message_published_by_hand_without_the_header_is_found_by_its_body(
    settings: Settings, client: NatsBroker
) -> None:
    """Stages always set the correlation id header; a message put on the bus by hand may not. Its journey is then
    read by a second scan, and the result is the same journey plus that message."""
    with article_server((ASSETS / "bersin-article.html").read_bytes()) as url:
        await run_story(settings, url, lambda line: None)
    share = seed_share(url)
    js = jetstream(client)
    fetched = await find_journey(js, share.id)  # every message has the header: fetched by sequence
    assert main_line(fetched.subjects) == STORY_SUBJECTS

    by_hand = {"id": "note:1", "correlation_id": share.correlation_id, "text": "published by hand"}
    await js.publish(bus.RECORDINGS.subject, json.dumps(by_hand).encode(), stream=bus.STREAM)
    await js.publish(bus.SHARES.subject, b'{"id": "x:other", "correlation_id": "c-other"}', stream=bus.STREAM)
    rescanned = await find_journey(js, share.id)
    assert rescanned.subjects == [*fetched.subjects, bus.RECORDINGS.subject]
    assert [step.body for step in rescanned.steps[:-1]] == [step.body for step in fetched.steps]
    for again, first in zip(rescanned.steps, fetched.steps, strict=False):  # the same times, to the microsecond
        assert abs(again.stored_at - first.stored_at) <= timedelta(microseconds=1)
    assert rescanned.steps[-1].body == by_hand


async def test_an_unknown_id_is_an_error_and_the_cli_exits_1(settings: Settings, client: NatsBroker) -> None:
    await bus.publish(client, bus.Topic("impromptu.probe", Share), seed_share("https://example.com/a"))
    with pytest.raises(ImpromptuError, match="nothing on the bus matches 'nope'"):
        await find_journey(jetstream(client), "nope")
    cli = impromptu("trace", "nope", nats_url=settings.nats_url or "", data_dir=settings.data_dir)
    assert cli.returncode == 1
    assert "error: nothing on the bus matches 'nope'" in cli.stderr


async def test_a_share_that_stopped_says_where_and_why(pipeline: NatsBroker, client: NatsBroker) -> None:
    """A share no rule fires for ends at the share; a second, unrelated share is not part of its journey."""
    lonely = seed_share("https://example.com/nobody-cares").model_copy(
        update={"id": "x:lonely", "correlation_id": "c-lonely", "sharer": "@stranger", "text": "hello"}
    )
    other = seed_share("https://example.com/other")
    await bus.publish(client, bus.SHARES, lonely)
    await bus.publish(client, bus.SHARES, other)

    journey = await find_journey(jetstream(client), "https://example.com/nobody-cares")
    assert journey.subjects == [bus.SHARES.subject]
    assert where_it_stopped(journey).startswith("no trigger")


def step(subject: str, body: dict[str, object], seq: int = 1) -> Step:
    return Step(seq, subject, datetime(2025, 1, 1, tzinfo=UTC), body, None)


@pytest.mark.parametrize(
    ("subject", "body", "expected"),
    [
        (
            bus.PROPOSALS_CREATED.subject,
            {"id": "proposal-1"},
            "waiting for a facilitator: `impromptu proposals approve",
        ),
        (bus.dead_letter_subject("enrich"), {"stage": "enrich", "reason": "boom"}, "stopped: the enrich stage gave"),
        (
            bus.CONTENT_FAILED.subject,
            {"reason": "http_404", "trigger": {"plan": {}}},
            "stopped: the page could not be read",
        ),
        (
            bus.DECISIONS.subject,
            {"decision": "rejected", "decided_by": "ana", "reason": "not now"},
            "stopped: rejected by ana",
        ),
        (bus.TRIGGERS_JOINED.subject, {"trigger_id": "fired:x"}, "joined an earlier trigger (fired:x)"),
    ],
)
def test_where_it_stopped_reads_the_last_message(subject: str, body: dict[str, object], expected: str) -> None:
    journey = Journey("x", "c-1", [step(bus.SHARES.subject, {}), step(subject, body, 2)], [], 2)
    assert where_it_stopped(journey).startswith(expected)
