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
    "structlog",  # and the logging set-up: ~0.1 s; a command that logs nothing needs neither
    "argon2",
    "starlette",
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
    "pipeline.actions.stage",
    "pipeline.web.approval",
    "pipeline.enrich.stage",
    "pipeline.archive.stage",
    "pipeline.connect",
)
# what a command that talks to the bus needs (nats-py, faststream) is not this: the stages, the web app, page tools
STAGES = (
    "pipeline.app",
    "pipeline.actions.stage",
    "pipeline.web.approval",
    "pipeline.enrich.stage",
    "pipeline.archive.stage",
    "pipeline.triggers.stage",
    "pipeline.outreach.stage",
    "pipeline.web.server",
    "fastapi",
    "starlette",
    "trafilatura",
    "yake",
    "botocore",
)
SUB_APPS = ["proposals", "facilitators", "library", "rules", "schemas", "channels", "outreach", "linkedin", "dlq"]
HELPS = [["--help"], *[[name, "--help"] for name in SUB_APPS], ["share", "--help"]]
LIGHT = [*HELPS, ["facilitators", "list"], ["rules", "check", "examples/rules.yaml"]]


def heavy_modules_loaded(argv: list[str], data_dir: Path, watched: tuple[str, ...] = HEAVY) -> list[str]:
    """Which of `watched` (modules and packages) `impromptu ARGV` has imported by the time it exits."""
    probe = (
        "import json, sys\n"
        "from pipeline.cli import main\n"
        f"sys.argv = ['impromptu', *{argv!r}]\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        f"watched = {watched!r}\n"
        "print(json.dumps(sorted(m for m in sys.modules if any(m == w or m.startswith(w + '.') for w in watched))),"
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


@pytest.mark.parametrize("argv", HELPS, ids=[" ".join(a) for a in HELPS])
def test_help_needs_no_event_loop(argv: list[str], tmp_path: Path) -> None:
    """asyncio alone is ~60 ms: only a command that runs a coroutine imports it (the settings' commands do, through
    pydantic_settings)."""
    assert heavy_modules_loaded(argv, tmp_path, ("asyncio",)) == []


def test_adding_a_login_loads_no_web_framework_and_no_bus(tmp_path: Path) -> None:
    """Hashing a password and making a token live apart from the web pages' auth (pipeline/domain/logins.py)."""
    assert heavy_modules_loaded(["facilitators", "add", "ada", "--no-password"], tmp_path) == []
    assert "ada" in (tmp_path / "facilitators.json").read_text()  # it did add the login


@pytest.mark.parametrize(
    "argv",
    [["share", "https://example.com/a", "--by", "@ada"], ["proposals", "approve", "p-1", "--by", "nobody"]],
    ids=["share", "proposals approve --by unknown"],
)
def test_a_bus_command_loads_the_bus_client_but_no_stage(argv: list[str], tmp_path: Path) -> None:
    """`connected()` lives in pipeline/connect.py and the actions stage in pipeline/actions/stage.py: joining the bus
    (or refusing --by before it) imports none of the stages, the web app or the page tools."""
    assert heavy_modules_loaded(argv, tmp_path, STAGES) == []


def test_the_probe_sees_the_bus_client_of_a_bus_command(tmp_path: Path) -> None:
    loaded = heavy_modules_loaded(["share", "https://example.com/a", "--by", "@ada"], tmp_path, ("faststream", "nats"))
    assert "faststream" in loaded and "nats" in loaded
