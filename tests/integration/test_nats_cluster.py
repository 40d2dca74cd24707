"""Impromptu on a real three-node NATS JetStream cluster: replicated stream and KV, workers on different nodes
sharing the stages' durable consumers, and a node lost mid-flow without losing or doubling anything."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
from faststream.nats import NatsBroker

from pipeline import bus, stores
from pipeline.actions.service import Approvals
from pipeline.app import connected, create_broker, start_stages
from pipeline.demo import ASSETS, article_server, sample_recording, seed_share
from pipeline.domain.approval import advance_by_clock, decide
from pipeline.domain.live_rules import LiveRules
from pipeline.messages import OutreachResult, ScheduledSession, SessionProposal, Share, TriggerFired
from pipeline.ops.status import gather_status, health_problems
from pipeline.settings import Settings
from pipeline.web.server import create_web_app
from tests.integration import test_ops_web as ops_logins
from tests.integration.bus_helpers import consumer, models_on, subject_counts, wait_for_count, wait_until
from tests.nats_cluster import Cluster, jetstream_ready

pytestmark = pytest.mark.nats


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    running = Cluster(tmp_path / "cluster").start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
async def cluster_settings(cluster: Cluster, settings: Settings) -> Settings:
    await jetstream_ready(cluster.url)
    return settings.model_copy(update={"nats_url": cluster.url, "stream_replicas": 3})


@pytest.fixture
async def workers(cluster: Cluster, cluster_settings: Settings) -> AsyncIterator[list[NatsBroker]]:
    """Two whole pipelines, each connected first to a different node (`nodes[0]` and `nodes[1]`)."""
    async with AsyncExitStack() as stack:
        brokers = []
        for node in cluster.nodes[:2]:
            worker_url = ",".join([node.url] + [n.url for n in cluster.nodes if n is not node])
            broker = create_broker(cluster_settings.model_copy(update={"nats_url": worker_url}))
            await start_stages(broker, cluster_settings)
            stack.push_async_callback(broker.stop)
            brokers.append(broker)
        yield brokers


@pytest.fixture
async def cluster_client(cluster: Cluster, cluster_settings: Settings) -> AsyncIterator[NatsBroker]:
    third_first = cluster_settings.model_copy(
        update={"nats_url": ",".join(n.url for n in [cluster.nodes[2], *cluster.nodes[:2]])}
    )
    async with connected(third_first) as broker:
        yield broker


async def test_the_seed_story_on_three_nodes_with_workers_on_two_of_them(
    workers: list[NatsBroker], cluster_client: NatsBroker, cluster_settings: Settings
) -> None:
    client = cluster_client
    with article_server((ASSETS / "bersin-article.html").read_bytes()) as url:
        await bus.publish(client, bus.SHARES, seed_share(url))
        await wait_for_count(client, bus.PROPOSALS_CREATED.subject, 1, timeout=30)
    (proposal,) = await models_on(client, bus.PROPOSALS_CREATED.subject, SessionProposal)
    await decide(client, proposal.id, "approved", by="ana")
    await wait_for_count(client, bus.OUTREACH_RESULTS.subject, len(proposal.channels), timeout=30)
    (session,) = await models_on(client, bus.SESSIONS_SCHEDULED.subject, ScheduledSession)
    await advance_by_clock(client, session.starts_at)  # held: it starts and ends, then its recording is kept
    await advance_by_clock(client, session.ends_at)
    await bus.publish(client, bus.RECORDINGS, sample_recording(session, cluster_settings.import_dir))
    await wait_for_count(client, bus.LIBRARY_ENTRIES.subject, 1, timeout=30)

    counts = await subject_counts(client)
    assert (
        counts[bus.PROPOSALS_CREATED.subject],
        counts[bus.SESSIONS_SCHEDULED.subject],
        counts[bus.LIBRARY_ENTRIES.subject],
    ) == (1, 1, 1)
    report = await gather_status(client)
    assert report.stream.replicas == 3 and report.stream.leader in {"n0", "n1", "n2"}
    assert not [problem for problem in health_problems(report) if "replica" in problem or "leader" in problem]
    announced = [
        r for r in await models_on(client, bus.OUTREACH_RESULTS.subject, OutreachResult) if r.kind == "scheduled"
    ]
    assert sorted(r.channel for r in announced) == sorted(proposal.channels)  # once each, on either worker

    js = bus.jetstream(client)
    stream = await js.stream_info(bus.STREAM)
    assert stream.config.num_replicas == 3
    assert stream.cluster is not None and stream.cluster.leader and len(stream.cluster.replicas or []) == 2
    for name in (stores.PROPOSALS, stores.SESSIONS, stores.OUTREACH, stores.TRIGGERS):
        kv_stream = await js.stream_info(f"KV_{name}")  # created by the stages, replicated like the stream
        assert kv_stream.config.num_replicas == 3, name
    trigger = await consumer(client, "trigger")
    assert trigger.cluster is not None and len(trigger.cluster.replicas or []) == 2  # the consumer too


def trusted_share(n: int, url: str) -> Share:
    return Share.from_source(
        source="cli", native_id=f"cluster-{n}", sharer="@britz", text="leadership training", url=f"{url}?n={n}"
    )


async def test_a_node_lost_mid_flow_loses_nothing_and_doubles_nothing(
    cluster: Cluster, workers: list[NatsBroker], cluster_client: NatsBroker, cluster_settings: Settings
) -> None:
    """Shares flow while the node the first worker is connected to stops. That worker reconnects to another
    node, the stream (3 replicas) keeps a quorum, and every share fires exactly one trigger and one proposal."""
    client = cluster_client
    with article_server((ASSETS / "bersin-article.html").read_bytes()) as url:
        for n in range(10):
            await bus.publish(client, bus.SHARES, trusted_share(n, url))
        await wait_for_count(client, bus.TRIGGERS_FIRED.subject, 3, timeout=30)
        cluster.nodes[0].stop()  # worker 0's node, maybe the stream's leader: mid-flow
        for n in range(10, 20):
            await bus.publish(client, bus.SHARES, trusted_share(n, url))
        await wait_for_count(client, bus.PROPOSALS_CREATED.subject, 20, timeout=60)

        async def settled() -> bool:
            for durable in ("trigger", "enrich", "actions-propose"):
                info = await consumer(client, durable)
                if info.num_pending or info.num_ack_pending:
                    return False
            return True

        await wait_until(settled, timeout=60, what="the stages to settle after the node loss")

    counts = await subject_counts(client)
    assert counts[bus.SHARES.subject] == 20
    assert (counts[bus.TRIGGERS_FIRED.subject], counts[bus.PROPOSALS_CREATED.subject]) == (
        20,
        20,
    )  # none lost, none twice
    fired = await models_on(client, bus.TRIGGERS_FIRED.subject, TriggerFired)
    assert sorted(f.share.id for f in fired) == sorted(f"cli:cluster-{n}" for n in range(20))
    assert not any(subject.startswith(bus.DEAD_LETTERS) for subject in counts)
    assert all(worker.config.connection_state.connection.is_connected for worker in workers)  # reconnected

    async def replica_reported_offline() -> bool:  # `impromptu status` and the ops page say so, and why
        report = await gather_status(client)
        return report.stream.peers.get("n0") == "offline" and any(
            "replica(s) n0 offline, 2 of 3 copies left" in problem for problem in health_problems(report)
        )

    await wait_until(replica_reported_offline, timeout=30, what="status to report the lost node")
    ops_settings = cluster_settings.model_copy(update={"facilitator_logins": ops_logins.LOGINS})
    app = create_web_app(ops_settings, client, Approvals(client, ops_settings, LiveRules.load(ops_settings.rules_file)))
    async with ops_logins.logged_in(app, "olga") as olga:  # the ops page shows the same
        page = (await olga.get("/ops")).text
    assert page.count("replica(s) n0 offline, 2 of 3 copies left") == 1  # the pipeline's problem, not each stage's
    replicas = r'<span class="replicas">3 replicas: leader n[12], n0 offline, n[12] (current|behind \d+)\.</span>'
    assert re.search(replicas, page), page
