"""`impromptu --help`, each sub-app's help and the light commands load no heavy module: the stages, the bus client,
page extraction, templates, object storage, the web framework are imported only by the commands that use them.
(What this buys in seconds is measured by bench/cli_start.py, not asserted here.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

CHECKOUT = Path(__file__).resolve().parents[2]
HEAVY = (
    "faststream",
    "nats",
    "trafilatura",
    "yake",
    "jinja2",
    "playwright",
    "botocore",
    "aiobotocore",
    "fastapi",
    "pipeline.app",
    "pipeline.bus",
    "pipeline.actions",
    "pipeline.enrich",
    "pipeline.archive.stage",
)
SUB_APPS = ["proposals", "facilitators", "library", "rules", "schemas", "channels", "outreach", "linkedin", "dlq"]
LIGHT = [["--help"], *[[name, "--help"] for name in SUB_APPS], ["facilitators", "list"], ["share", "--help"]]


def heavy_modules_loaded(argv: list[str], data_dir: Path) -> list[str]:
    probe = (
        "import json, sys\n"
        "from pipeline.cli import main\n"
        f"sys.argv = ['impromptu', *{argv!r}]\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r} or m in {HEAVY!r})),"
        " file=sys.stderr)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMPROMPTU_") and k != "NATS_URL"}
    env.update(PYTHONPATH=str(CHECKOUT), IMPROMPTU_DATA_DIR=str(data_dir))
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=CHECKOUT, env=env, capture_output=True, text=True, timeout=60
    )
    return json.loads(done.stderr.strip().splitlines()[-1])


@pytest.mark.parametrize("argv", LIGHT, ids=[" ".join(a) for a in LIGHT])
def test_help_and_light_commands_import_no_heavy_module(argv: list[str], tmp_path: Path) -> None:
    assert heavy_modules_loaded(argv, tmp_path) == []


def test_the_probe_sees_a_heavy_module_when_one_is_loaded(tmp_path: Path) -> None:
    """The check above can fail: a command that talks to the bus does load faststream."""
    loaded = heavy_modules_loaded(["proposals", "list"], tmp_path)  # fails to connect, after importing the client
    assert "faststream" in loaded
