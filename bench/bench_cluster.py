"""What replication costs: the trigger stage and raw nats-py on one nats-server (R1) and on a three-node JetStream
cluster (R3, every write acknowledged by two of three nodes), measured in the same run.

    .venv/bin/python bench/bench_cluster.py [--shares 3000] [--runs 3]

The same measurements as `bench_trigger.py` (its generated rules file: 10,000 people, 1,000 rules; the same mix of
shares), once against an embedded single server with a stream of 1 replica and once against three `nats-server`
processes routed on loopback with the stream, its consumers and KV buckets at 3 replicas. All of it shares one
machine here, so the cluster's figure is a floor: each node would have its own cores and disk in production.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository: tests.nats_cluster

from bench_trigger import raw_consume, rules_document, stage_consume  # noqa: E402

from pipeline import bus  # noqa: E402
from pipeline.app import new_broker  # noqa: E402
from pipeline.domain.live_rules import LiveRules  # noqa: E402
from pipeline.embedded import EmbeddedNats, free_port  # noqa: E402
from pipeline.logs import configure_logging  # noqa: E402
from pipeline.settings import Settings  # noqa: E402
from pipeline.triggers.stage import trigger_router  # noqa: E402
from tests.nats_cluster import Cluster, jetstream_ready  # noqa: E402


async def measure(url: str, replicas: int, store: Path, count: int, runs: int) -> tuple[float, float]:
    """Medians of raw consume+ack and of the trigger stage, in msg/s."""
    rules_file = store / "rules.yaml"
    rules_file.write_text(yaml.safe_dump(rules_document()), encoding="utf-8")
    live = LiveRules.load(rules_file)
    settings = Settings(nats_url=url, data_dir=store / "data", rules_file=rules_file, stream_replicas=replicas)
    probe = new_broker(url)
    await probe.connect()
    await bus.ensure_stream(probe, settings)
    await probe.stop()
    raw, stage = [], []
    for run in range(runs):
        raw.append(await raw_consume(url.split(",")[0], count, run))
        stage.append((await stage_consume(settings, trigger_router(settings, live), count, run))[0])
        print(f"  R{replicas} run {run + 1}: raw consume+ack {raw[-1]:,.0f} msg/s, trigger stage {stage[-1]:,.0f}/s")
    return statistics.median(raw), statistics.median(stage)


async def main(count: int, runs: int) -> None:
    configure_logging(json=True, level="WARNING")
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        with EmbeddedNats(root / "single", port=free_port()) as server:
            single = await measure(server.url, 1, root, count, runs)
        cluster = Cluster(root / "cluster").start()
        try:
            await jetstream_ready(cluster.url)
            replicated = await measure(cluster.url, 3, root, count, runs)
        finally:
            cluster.stop()
    print(f"median of {runs} runs, {count} shares each:")
    print("                               one server (R1)   3-node cluster (R3)   R3 / R1")
    for name, one, three in (
        ("raw nats-py consume+ack", single[0], replicated[0]),
        ("trigger stage", single[1], replicated[1]),
    ):
        print(f"  {name:<27} {one:>12,.0f}/s {three:>16,.0f}/s {three / one:>10.2f}")
    print(f"  trigger stage / raw:        {single[1] / single[0]:>12.2f}   {replicated[1] / replicated[0]:>16.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--shares", type=int, default=3000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(main(args.shares, args.runs))
