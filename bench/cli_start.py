"""How long `impromptu` takes to start, next to a bare interpreter and a bare `import typer` in the same run.

    .venv/bin/python bench/cli_start.py [--runs 7]

Each case is a fresh process (as a user's shell starts one), run --runs times, interleaved so that a noisy
neighbour slows every case alike; prints the median wall time of each and its ratio to `python -c pass`.
The light commands need no bus: `--help`, a sub-app's help, `facilitators list`, `rules check` of the example rules.
A bus command (`share`) is timed up to where it would connect (no NATS_URL and no pipeline running: it stops at
"no NATS server to talk to"), next to what its bus client costs alone (`import faststream.nats`).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[1]
ENTRY = "from pipeline.cli import main; main()"
CASES: dict[str, list[str]] = {
    "python -c pass": ["-c", "pass"],
    'python -c "import typer"': ["-c", "import typer"],
    "impromptu --help": ["-c", ENTRY, "--help"],
    "impromptu proposals --help": ["-c", ENTRY, "proposals", "--help"],
    "impromptu library --help": ["-c", ENTRY, "library", "--help"],
    "impromptu facilitators list": ["-c", ENTRY, "facilitators", "list"],
    "impromptu rules check examples/rules.yaml": ["-c", ENTRY, "rules", "check", "examples/rules.yaml"],
    'python -c "import faststream.nats"': ["-c", "import faststream.nats"],
    "impromptu share URL --by @x (up to connecting)": ["-c", ENTRY, "share", "https://example.com/a", "--by", "@x"],
}
NO_BUS = {"impromptu share URL --by @x (up to connecting)"}  # run without NATS_URL: stops before connecting


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=7)
    runs = parser.parse_args().runs
    with tempfile.TemporaryDirectory() as data_dir:
        env = {k: v for k, v in os.environ.items() if not k.startswith("IMPROMPTU_") and k != "NATS_URL"}
        env.update(PYTHONPATH=str(CHECKOUT), IMPROMPTU_DATA_DIR=data_dir, NATS_URL="nats://127.0.0.1:1")
        times: dict[str, list[float]] = {name: [] for name in CASES}
        for _ in range(runs):
            for name, args in CASES.items():
                started = time.perf_counter()
                case_env = {k: v for k, v in env.items() if k != "NATS_URL"} if name in NO_BUS else env
                subprocess.run([sys.executable, *args], cwd=CHECKOUT, env=case_env, capture_output=True, check=False)
                times[name].append(time.perf_counter() - started)
    base = statistics.median(times["python -c pass"])
    print(f"{'case':<48} {'median':>8}  ratio to python -c pass   ({runs} runs each)")
    for name, measured in times.items():
        median = statistics.median(measured)
        print(f"{name:<48} {median:>7.3f}s  {median / base:>5.1f}")


if __name__ == "__main__":
    main()
