"""The long chaos run: hundreds of shares through several `impromptu run` workers on one external nats-server, with
every kind of fault, then the invariants of `tests/chaos/` and the figures for bench/README.md.

    .venv/bin/python bench/chaos.py [--seed N] [--shares 600] [--burst 500] [--workers 3] [--keep DIR]

Faults: random kill -9 of workers, kill -9 of the worker posting to Mastodon between `sending` and `posted`, kill
-9 and restart of nats-server (during the load and once after it), poison messages, slow article pages, and a
burst of shares published at once (`--burst`; with a consumer leak per KV read, a few hundred firing shares reach
the server's 1,000-consumer limit). Exit 1 when an invariant broke (each printed with its counts).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository: tests.chaos.harness

from tests.chaos.harness import Plan, run_chaos, seed_from_env  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=None, help="replay a run (default: a fresh seed, printed)")
    parser.add_argument("--shares", type=int, default=600)
    parser.add_argument("--burst", type=int, default=500, help="of the shares, published at once at the start")
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--rate", type=float, default=3.0, help="shares/s after the burst")
    parser.add_argument("--worker-kills", type=int, default=6)
    parser.add_argument("--mid-post-kills", type=int, default=3)
    parser.add_argument("--server-restarts", type=int, default=2, help="during the load (one more follows it)")
    parser.add_argument("--fault-seconds", type=float, default=150.0, help="spread the faults over this long")
    parser.add_argument("--keep", type=Path, default=None, help="keep the logs and the store in this folder")
    args = parser.parse_args()
    plan = Plan(
        seed=seed_from_env(args.seed),
        shares=args.shares,
        burst=args.burst,
        workers=args.workers,
        share_rate=args.rate,
        worker_kills=args.worker_kills,
        mid_post_kills=args.mid_post_kills,
        server_restarts=args.server_restarts,
        fault_seconds=args.fault_seconds,
        cli_approvals=3,
        cli_recordings=3,
        settle_seconds=600.0,
        healthy_within=180.0,
        consumers_within=30.0,
        ack_wait_seconds=10,
    )
    root = args.keep or Path(tempfile.mkdtemp(prefix="impromptu-chaos-"))
    try:
        broken, figures = asyncio.run(run_chaos(plan, root / "run"))
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    print("\n".join(figures.lines()))
    if broken:
        print(f"{len(broken)} invariant(s) broken (seed {plan.seed}):")
        print("\n".join(f"  - {line}" for line in broken))
        return 1
    print(f"every invariant held (seed {plan.seed})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
