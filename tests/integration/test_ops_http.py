"""The operator's HTTP routes: /metrics counts what went over the bus, /healthz, /readyz, /docs/asyncapi."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from faststream.nats import NatsBroker
from prometheus_client.parser import text_string_to_metric_families

from pipeline import bus
from pipeline.actions.clock import run_clock
from pipeline.app import create_broker, prepare_bus, start_stages
from pipeline.bus import jetstream
from pipeline.demo import ASSETS, article_server, sample_recording, seed_share
from pipeline.domain.approval import advance_by_clock, decide
from pipeline.messages import OutreachResult, ScheduledSession, SessionProposal, Share
from pipeline.ops.metrics import metrics_of
from pipeline.settings import Settings
from pipeline.stage import StageRouter
from pipeline.web.server import create_web_app
from tests.integration.bus_helpers import (
    consumer,
    models_on,
    seed_proposal,
    subject_counts,
    wait_for_count,
    wait_until,
)

pytestmark = pytest.mark.nats

STAGES = ("trigger", "enrich", "actions", "outreach", "archive")


def http_client(settings: Settings, broker: NatsBroker) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=create_web_app(settings, broker))
    return httpx.AsyncClient(transport=transport, base_url="http://pipeline", timeout=10)


@pytest.fixture
async def stages(settings: Settings) -> AsyncIterator[NatsBroker]:
    broker = create_broker(settings)
    await start_stages(broker, settings)
    yield broker
    await broker.stop()


def samples(exposition: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """(sample name, labels) -> value, from the Prometheus text format."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
    }


def total(metrics: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    wanted = set(labels.items())
    return sum(value for (sample, found), value in metrics.items() if sample == name and wanted <= found)


async def settled(broker: NatsBroker) -> bool:
    """No consumer has work, and nothing was published while they were asked one by one (a stage may have handed
    on a message between two of the questions)."""
    last = (await jetstream(broker).stream_info(bus.STREAM)).state.last_seq
    durables = [sub.config.durable_name for sub in broker.subscribers if sub.config.durable_name]
    for durable in durables:
        info = await consumer(broker, durable)
        if info.num_pending or info.num_ack_pending:
            return False
    return (await jetstream(broker).stream_info(bus.STREAM)).state.last_seq == last


async def run_seed_story_and_more(client: NatsBroker, settings: Settings) -> None:
    """The seed story to the library, plus a page that cannot be read and a message the archive cannot read."""
    with article_server((ASSETS / "bersin-article.html").read_bytes()) as url:
        await bus.publish(client, bus.SHARES, seed_share(url))
        unreadable = Share.from_source(
            source="x", native_id="metrics-404", sharer="@britz", text="leadership training", url=url + "-gone"
        )
        await bus.publish(client, bus.SHARES, unreadable)
        await wait_for_count(client, bus.PROPOSALS_CREATED.subject, 1)
        await wait_for_count(client, bus.CONTENT_FAILED.subject, 1)
    proposals = await models_on(client, bus.PROPOSALS_CREATED.subject, SessionProposal)
    seed = next(p for p in proposals if "eLearning" in p.title)
    await decide(client, seed.id, "approved", by="ana")
    await wait_for_count(client, bus.OUTREACH_RESULTS.subject, 3)
    (session,) = await models_on(client, bus.SESSIONS_SCHEDULED.subject, ScheduledSession)
    await advance_by_clock(client, session.starts_at)  # the session is held: it starts ("starting now") and ends
    await wait_for_count(client, bus.OUTREACH_RESULTS.subject, 6)
    await advance_by_clock(client, session.ends_at)
    await bus.publish(client, bus.RECORDINGS, sample_recording(session, settings.import_dir))
    await client.publish(b"not json", bus.RECORDINGS.subject, stream=bus.STREAM, headers={"Nats-Msg-Id": "garbage-1"})
    await wait_for_count(client, bus.LIBRARY_ENTRIES.subject, 1)
    await wait_for_count(client, bus.dead_letter_subject("archive"), 1)


async def test_metrics_count_exactly_the_messages_on_the_bus(
    settings: Settings, stages: NatsBroker, client: NatsBroker, tmp_path: Path
) -> None:
    await run_seed_story_and_more(client, settings)
    await wait_until(lambda: settled(stages), what="every stage to settle")
    counts = await subject_counts(client)
    results = await models_on(client, bus.OUTREACH_RESULTS.subject, OutreachResult)

    def expected() -> dict[str, float]:
        return {
            "impromptu_shares_received_total": counts[bus.SHARES.subject],
            "impromptu_triggers_fired_total": counts[bus.TRIGGERS_FIRED.subject],
            "impromptu_shares_joined_total": counts.get(bus.TRIGGERS_JOINED.subject, 0),
            "impromptu_proposals_created_total": counts[bus.PROPOSALS_CREATED.subject],
            "impromptu_proposals_decided_total": counts[bus.DECISIONS.subject],
            "impromptu_outreach_posts_total": counts[bus.OUTREACH_RESULTS.subject],
            "impromptu_fetch_refusals_total": counts[bus.CONTENT_FAILED.subject],
            "impromptu_dead_letters_total": counts[bus.dead_letter_subject("archive")],
            "impromptu_proposals_entered_total": counts[bus.PROPOSALS_TRANSITIONS.subject],  # no edits in this story
        }

    async with http_client(settings, stages) as http:

        async def scraped() -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
            response = await http.get("/metrics")
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/plain")
            return samples(response.text)

        async def counters_caught_up() -> bool:  # a counter moves just after its message is settled
            metrics = await scraped()
            return all(total(metrics, name) == value for name, value in expected().items())

        await wait_until(counters_caught_up, what="the counters to match the stream")
        metrics = await scraped()

    assert counts[bus.SHARES.subject] == 2 and counts[bus.OUTREACH_RESULTS.subject] == 9  # the story ran as planned
    assert total(metrics, "impromptu_shares_received_total", source="x") == 2
    assert total(metrics, "impromptu_triggers_fired_total", rule="trusted-share-on-leadership-or-learning") == 2
    assert total(metrics, "impromptu_proposals_decided_total", decision="approved") == 1
    for result in results:
        labels = {"channel": result.channel, "kind": result.kind, "status": result.status}
        assert total(metrics, "impromptu_outreach_posts_total", **labels) == 1
    assert total(metrics, "impromptu_fetch_refusals_total", reason="http_404") == 1
    assert total(metrics, "impromptu_dead_letters_total", stage="archive") == 1
    for state in ("approved", "scheduled", "live", "ended", "archived"):  # the clock, then the recording
        assert total(metrics, "impromptu_proposals_entered_total", state=state) == 1, state
    # FastStream's own middleware shares the registry: it saw every stage's handler and publisher.
    assert total(metrics, "faststream_received_messages_total", handler=bus.SHARES.subject) == 2
    assert total(metrics, "faststream_published_messages_total", destination=bus.LIBRARY_ENTRIES.subject) >= 1


async def test_the_proposals_gauge_follows_the_states_in_kv(
    settings: Settings, stages: NatsBroker, client: NatsBroker
) -> None:
    proposal = await seed_proposal(client)
    gauge = metrics_of(stages)
    assert gauge is not None
    clock = asyncio.create_task(run_clock(stages, every=0.05, count_states=gauge.set_proposal_states))
    try:
        async with http_client(settings, stages) as http:

            async def gauge_is(**expected: float) -> bool:
                metrics = samples((await http.get("/metrics")).text)
                now = {
                    dict(labels)["state"]: value
                    for (name, labels), value in metrics.items()
                    if name == "impromptu_proposals"
                }
                return len(now) == 4 and all(now[state] == expected.get(state, 0) for state in now)

            await wait_until(lambda: gauge_is(proposed=1), what="one proposal, proposed")
            await decide(client, proposal.id, "approved", by="ana")
            await wait_until(lambda: gauge_is(scheduled=1), what="the proposal scheduled, none proposed")
    finally:
        clock.cancel()
        await asyncio.gather(clock, return_exceptions=True)


async def test_each_pipeline_has_its_own_registry(settings: Settings) -> None:
    first, second = create_broker(settings), create_broker(settings)
    first_metrics, second_metrics = metrics_of(first), metrics_of(second)
    assert first_metrics is not None and second_metrics is not None
    first_metrics.shares_received.labels(source="cli").inc()
    assert total(samples(second_metrics.exposition().decode()), "impromptu_shares_received_total") == 0


async def test_readyz_is_ready_only_while_every_stage_consumes(settings: Settings) -> None:
    broker = create_broker(settings)
    async with http_client(settings, broker) as http:
        assert (await http.get("/healthz")).status_code == 200
        before = await http.get("/readyz")
        assert before.status_code == 503
        assert before.json()["missing"] == ["nats: not connected"]

        await prepare_bus(broker, settings)  # connected, stages not started yet
        connected_only = await http.get("/readyz")
        assert connected_only.status_code == 503
        durables = sorted(sub.config.durable_name for sub in broker.subscribers if sub.config.durable_name)
        assert connected_only.json()["missing"] == sorted(f"consumer {d}: stage not running" for d in durables)

        await broker.start()
        try:
            running = await http.get("/readyz")
            assert running.status_code == 200, running.text
            assert running.json() == {"status": "ready", "missing": []}
        finally:
            await broker.stop()
        after = await http.get("/readyz")
        assert after.status_code == 503
        assert (await http.get("/healthz")).json() == {"status": "ok"}


async def test_readyz_names_a_consumer_that_is_gone(settings: Settings, stages: NatsBroker) -> None:
    js = jetstream(stages)
    await js.delete_consumer(bus.STREAM, "archive")
    async with http_client(settings, stages) as http:
        response = await http.get("/readyz")
    assert response.status_code == 503
    (missing,) = response.json()["missing"]
    assert missing.startswith("consumer archive: NotFoundError")


def bus_subjects() -> set[str]:
    named = {topic.subject for topic in bus.TOPICS}
    return named | {bus.dead_letter_subject(stage) for stage in STAGES}


async def test_asyncapi_lists_every_subject_and_message(settings: Settings) -> None:
    broker = create_broker(settings)
    stage_names = {router.stage_name for router in broker.routers if isinstance(router, StageRouter)}
    assert stage_names == set(STAGES)
    async with http_client(settings, broker) as http:
        response = await http.get("/docs/asyncapi")
    assert response.status_code == 200
    document = response.json()
    assert document["asyncapi"] == "3.0.0"
    addresses = {channel["address"] for channel in document["channels"].values()}
    assert bus_subjects() <= addresses
    payloads = {message["payload"].get("$ref", "") for message in document["components"]["messages"].values()}
    for model in ("Share", "TriggerFired", "SessionProposal", "FacilitatorDecision", "OutreachResult", "DeadLetter"):
        assert f"#/components/schemas/{model}" in payloads
