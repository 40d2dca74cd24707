"""What the proposal path's reads cost as the history grows, next to a raw nats-py KV get in the same run.

    .venv/bin/python bench/bench_proposals.py [--history 0 1200 5000] [--reads 50]

An embedded nats-server (JetStream, file storage). For each history size the bucket holds that many finished
(rejected) proposals plus 20 in play; then, per read, median of `--reads`:

- **raw KV get**: nats-py `kv.get` of one proposal (the least any read costs);
- **slot check**: `booked_now`, what a new proposal and an approval read (the index of proposals in play);
- **open queue**: `Approvals.listed("proposed")`, the queue page and `GET /api/proposals?state=proposed`;
- **whole-bucket read**: `list_records`, what all three read before the index (kept for tests and repairs).

Prints medians (ms) and each one's ratio to the raw get.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository: tests.unit.conftest

from pipeline import stores  # noqa: E402
from pipeline.actions.service import Approvals, booked_now  # noqa: E402
from pipeline.app import connected  # noqa: E402
from pipeline.domain import approval  # noqa: E402
from pipeline.domain.approval import ProposalRecord  # noqa: E402
from pipeline.domain.live_rules import LiveRules  # noqa: E402
from pipeline.domain.sessions import propose  # noqa: E402
from pipeline.domain.slots import Slot  # noqa: E402
from pipeline.embedded import EmbeddedNats, free_port  # noqa: E402
from pipeline.logs import configure_logging  # noqa: E402
from pipeline.messages import utc_now  # noqa: E402
from pipeline.settings import Settings  # noqa: E402
from tests.unit.conftest import make_content  # noqa: E402

IN_PLAY = 20
CONCURRENCY = 50


def a_proposal(n: int, hours: float):  # noqa: ANN201 - a SessionProposal
    now = utc_now()
    slot = Slot(facilitator="ana", starts_at=now + timedelta(hours=hours), reason="bench")
    draft = propose(make_content(title=f"Session {n}"), now, slot=slot, margin=timedelta(minutes=5))
    return draft.model_copy(update={"id": f"proposal-bench{n:06d}"})


async def median_ms(read: Callable[[], Awaitable[object]], reads: int) -> float:
    times = []
    for _ in range(reads):
        start = time.perf_counter()
        await read()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


async def fill(broker, start: int, count: int) -> None:  # noqa: ANN001
    """`count` finished proposals, written as the pipeline writes them (record, then index)."""
    semaphore = asyncio.Semaphore(CONCURRENCY)

    async def one(n: int) -> None:
        async with semaphore:
            proposal = await approval.save_new(broker, a_proposal(n, hours=2 + (n % 200) / 10))
            await approval.decide(broker, proposal.id, "rejected", by="bench", reason="bench")

    await asyncio.gather(*(one(n) for n in range(start, start + count)))


async def main(history: list[int], reads: int) -> None:
    configure_logging(json=True, level="WARNING")
    with tempfile.TemporaryDirectory() as folder, EmbeddedNats(Path(folder), port=free_port()) as server:
        settings = Settings(nats_url=server.url, data_dir=Path(folder) / "data")
        async with connected(settings) as broker:
            approvals = Approvals(broker, settings, LiveRules.load(settings.rules_file))
            for n in range(IN_PLAY):
                await approval.save_new(broker, a_proposal(10_000_000 + n, hours=1 + n / 10))
            kv = await stores.bucket(broker, stores.PROPOSALS)
            some_id = f"proposal-bench{10_000_000:06d}"
            stored = 0
            print(f"{'history':>8} {'raw get':>9} {'slot check':>16} {'open queue':>16} {'whole bucket':>18}")
            for size in history:
                await fill(broker, stored, size - stored)
                stored = size

                async def raw_get() -> None:
                    ProposalRecord.model_validate_json((await kv.get(some_id)).value or b"")

                raw = await median_ms(raw_get, reads)
                slot = await median_ms(lambda: booked_now(broker), reads)
                queue = await median_ms(lambda: approvals.listed("proposed"), reads)
                whole = await median_ms(lambda: approval.list_records(broker), max(3, reads // 10))
                print(
                    f"{size:>8} {raw:>7.2f}ms {slot:>7.2f}ms {slot / raw:>6.1f}x {queue:>7.2f}ms {queue / raw:>6.1f}x"
                    f" {whole:>8.1f}ms {whole / raw:>7.0f}x"
                )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--history", type=int, nargs="+", default=[0, 1200, 5000])
    parser.add_argument("--reads", type=int, default=50)
    args = parser.parse_args()
    asyncio.run(main(sorted(args.history), args.reads))
