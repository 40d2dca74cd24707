"""What tracing costs a stage: an empty relay stage (consume a Share, validate it, publish it onward awaiting its
PubAck, ack) on a real nats-server, its broker built three ways:

- **off**: no middleware, as pipeline/connect.py builds every broker when OTEL_EXPORTER_OTLP_ENDPOINT is unset;
- **installed, no SDK**: FastStream's NatsTelemetryMiddleware on the API's no-op tracer provider (what installing it
  always, and relying on the no-op API when off, would cost);
- **on**: pipeline/tracing.py turned on (the SDK's provider, the correlation id's trace ids, every span handed to an
  exporter that drops it: the export itself, a background thread's batch POST, is not counted).

    .venv/bin/python bench/bench_tracing.py [--shares 3000] [--runs 3] 2>/dev/null
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import nats
from faststream.nats import NatsBroker
from faststream.nats.opentelemetry import NatsTelemetryMiddleware
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import NoOpTracerProvider

from pipeline import bus, tracing
from pipeline.app import prepare_bus
from pipeline.embedded import EmbeddedNats, free_port
from pipeline.logs import configure_logging
from pipeline.messages import Share
from pipeline.settings import Settings
from pipeline.stage import StageRouter, emit

RELAYED = "impromptu.bench.relayed"
DURABLE = "bench-relay"


class Dropped(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def relay_stage(settings: Settings) -> StageRouter:
    router = StageRouter(DURABLE, settings)
    relayed = router.output(RELAYED, Share)

    @router.consume(bus.SHARES, concurrency=16)
    async def relay(share: Share) -> None:
        await emit(relayed, Share.caused_by(share, id=f"relayed:{share.id}", **share.model_dump(exclude=_OWN)))

    return router


_OWN = {"id", "correlation_id", "causation_id"}


def shares(run: int, count: int) -> list[bytes]:
    return [
        Share.from_source(
            source="replay", native_id=f"{run}-{n}", sharer="@britz", url=f"https://example.com/{run}/{n}"
        )
        .model_dump_json()
        .encode()
        for n in range(count)
    ]


async def relay_cost(settings: Settings, middlewares: tuple[Any, ...], count: int, run: int) -> tuple[float, float]:
    """Shares per second through the relay stage, from its start until its consumer has nothing left, and this
    process's CPU time per share meanwhile (microseconds): the measure a busy machine disturbs least."""
    broker = NatsBroker(settings.nats_url or "", logger=None, middlewares=middlewares)
    broker.include_router(relay_stage(settings))
    await prepare_bus(broker, settings)  # the stream
    nc = await nats.connect(settings.nats_url or "")
    js = nc.jetstream()
    for body in shares(run, count):
        await js.publish(bus.SHARES, body)
    started, cpu = time.perf_counter(), time.process_time()
    await broker.start()
    while True:
        info = await js.consumer_info(bus.STREAM, DURABLE)
        if info.num_pending == 0 and info.num_ack_pending == 0:
            break
        await asyncio.sleep(0.01)
    elapsed, cpu_used = time.perf_counter() - started, time.process_time() - cpu
    await broker.stop()
    await nc.close()
    return count / elapsed, cpu_used / count * 1e6


async def main(count: int, runs: int) -> None:
    configure_logging(json=True, level="WARNING")
    with tempfile.TemporaryDirectory() as tmp, EmbeddedNats(Path(tmp) / "nats", port=free_port()) as server:
        settings = Settings(nats_url=server.url, data_dir=Path(tmp) / "data")
        no_op = (NatsTelemetryMiddleware(tracer_provider=NoOpTracerProvider(), include_messages_counters=False),)
        cases = {"off": (), "installed, no SDK": no_op, "on": None}  # on: pipeline/tracing.py's own middlewares
        rates: dict[str, list[float]] = {name: [] for name in cases}
        cpu: dict[str, list[float]] = {name: [] for name in cases}
        await relay_cost(settings, (), 200, -1)  # warm: the stream, the consumer, the imports
        for run in range(runs):
            order = list(cases) if run % 2 == 0 else list(reversed(cases))  # neither always first on a noisy box
            for number, name in enumerate(order):
                with _on() if name == "on" else nullcontext():
                    middlewares = cases[name] if cases[name] is not None else tracing.broker_middlewares()
                    rate, micros = await relay_cost(settings, middlewares, count, run * 3 + number)
                rates[name].append(rate)
                cpu[name].append(micros)
            print(f"run {run + 1}: " + ", ".join(f"{n} {rates[n][-1]:,.0f}/s {cpu[n][-1]:,.0f} µs" for n in cases))
    base_rate, base_cpu = statistics.median(rates["off"]), statistics.median(cpu["off"])
    print(f"median of {runs} runs, {count} shares each (consume, validate, publish onward, ack):")
    for name in cases:
        rate, micros = statistics.median(rates[name]), statistics.median(cpu[name])
        print(
            f"  {name:<18} {rate:>7,.0f} shares/s ({rate / base_rate:.2f} of off), "
            f"{micros:>5,.0f} µs CPU per share ({micros / base_cpu:.2f} of off)"
        )


@contextmanager
def _on() -> Iterator[None]:
    """Tracing on, its spans dropped."""
    tracing.start(exporter=Dropped())
    try:
        yield
    finally:
        tracing.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--shares", type=int, default=3000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(main(args.shares, args.runs))
