"""What keeping a recording in the NATS Object Store costs: our streamed put next to nats-py's own put of the same
file in the same run, and how long a seek into the middle takes against a read from the start.

    .venv/bin/python bench/bench_media.py [--size-mb 2048] [--runs 3] [--reads 20]

An embedded nats-server (JetStream, file storage) on loopback; one generated file of `--size-mb` MiB on disk.
Per run, in alternating order (median of `--runs`):

- **ours**: `NatsMediaStore.put` from an async reader of the file (1 MiB reads in a thread), SHA-256 and size
  computed as it streams, a chunk-sequence index written at the end;
- **raw nats-py**: `ObjectStore.put(name, open(file, "rb"))`, the least a put of that file costs with nats-py.

Then `read(key, start, start + 1 MiB - 1)` at byte 0 and in the middle (median ms of `--reads`): the index lets
a seek fetch only the chunks it needs, so both should cost the same.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository

from pipeline import bus  # noqa: E402
from pipeline.app import connected  # noqa: E402
from pipeline.archive.objectstore import NatsMediaStore  # noqa: E402
from pipeline.embedded import EmbeddedNats, free_port  # noqa: E402
from pipeline.logs import configure_logging  # noqa: E402
from pipeline.settings import Settings  # noqa: E402

MIB = 1024 * 1024
BUCKET = "bench-media"


def generate(path: Path, size_mb: int) -> None:
    block = bytearray(Path("/dev/urandom").open("rb").read(MIB))
    with path.open("wb") as file:
        for number in range(size_mb):
            block[:8] = number.to_bytes(8, "big")
            file.write(block)


async def read_file(path: Path) -> AsyncIterator[bytes]:
    with path.open("rb", buffering=0) as file:
        while piece := await asyncio.to_thread(file.read, MIB):
            yield piece


async def ms(read: AsyncIterator[bytes]) -> float:
    start = time.perf_counter()
    async for _ in read:
        pass
    return (time.perf_counter() - start) * 1000


async def main(size_mb: int, runs: int, reads: int) -> None:
    configure_logging(json=True, level="WARNING")
    with tempfile.TemporaryDirectory() as folder, EmbeddedNats(Path(folder) / "nats", port=free_port()) as server:
        path = Path(folder) / "recording.mp4"
        generate(path, size_mb)
        settings = Settings(nats_url=server.url, data_dir=Path(folder) / "data")
        async with connected(settings) as broker:
            js = bus.jetstream(broker)
            store = await NatsMediaStore.open(js, BUCKET)
            raw = await js.object_store(BUCKET)
            ours_mbs, raw_mbs = [], []
            for run in range(runs):
                for which in ("ours", "raw") if run % 2 == 0 else ("raw", "ours"):
                    start = time.perf_counter()
                    if which == "ours":
                        await store.put("ours", read_file(path), content_type="video/mp4", max_bytes=size_mb * MIB)
                        ours_mbs.append(size_mb / (time.perf_counter() - start))
                    else:
                        with path.open("rb") as file:
                            await raw.put("raw", file)
                        raw_mbs.append(size_mb / (time.perf_counter() - start))
                    if run < runs - 1 or which == "raw":
                        await store.delete(which)  # keeps the disk at one object or two
            ours, theirs = statistics.median(ours_mbs), statistics.median(raw_mbs)
            print(f"ingest of {size_mb} MiB, median of {runs} runs (MiB/s):")
            print(f"  ours (async reader, streamed put)  {ours:8.1f}   runs: {', '.join(f'{v:.0f}' for v in ours_mbs)}")
            print(
                f"  raw nats-py object_store.put       {theirs:8.1f}   runs: {', '.join(f'{v:.0f}' for v in raw_mbs)}"
            )
            print(f"  ratio ours / raw                   {ours / theirs:8.2f}   (target >= 0.8)")

            middle = (size_mb // 2) * MIB + 12345
            at_start = [await ms(store.read("ours", 0, MIB - 1)) for _ in range(reads)]
            in_middle = [await ms(store.read("ours", middle, middle + MIB - 1)) for _ in range(reads)]
            print(f"range read of 1 MiB, median of {reads} (ms):")
            print(f"  from byte 0                        {statistics.median(at_start):8.2f}")
            print(f"  from byte {middle:<24} {statistics.median(in_middle):8.2f}")
            consumers = await js.consumers_info(store.stream)
            print(f"consumers left on the object store stream: {len(consumers)}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=2048)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--reads", type=int, default=20)
    arguments = parser.parse_args()
    asyncio.run(main(arguments.size_mb, arguments.runs, arguments.reads))
