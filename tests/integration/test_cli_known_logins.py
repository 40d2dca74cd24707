"""Every command that records who decided or edited (--by) takes only a known login: an invented name is refused
with the logins there are, before anything reaches the bus, so the audit trail cannot hold it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.settings import Settings

pytestmark = pytest.mark.nats

IMPROMPTU = str(Path(sys.executable).parent / "impromptu")
CHECKOUT = (
    Path(__file__).resolve().parents[2]
)  # this checkout's code, whichever checkout the command was installed from

DECISIONS = [
    ["proposals", "approve", "proposal-x"],
    ["proposals", "reject", "proposal-x", "--reason", "r"],
    ["proposals", "cancel", "proposal-x", "--reason", "r"],
    ["proposals", "edit", "proposal-x", "--title", "t"],
    ["library", "edit", "entry-x", "--tags", "a"],
    ["library", "unpublish", "entry-x"],
    ["library", "publish", "entry-x"],
    ["library", "delete", "entry-x", "--yes"],
    ["pages", "retry", "https://example.com/a"],
    ["dlq", "replay", "1"],
    ["dlq", "discard", "1", "--reason", "r"],
]


def impromptu(settings: Settings, logins: str | None, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMPROMPTU_") and k != "NATS_URL"}
    env.update(NATS_URL=settings.nats_url or "", IMPROMPTU_DATA_DIR=str(settings.data_dir), PYTHONPATH=str(CHECKOUT))
    if logins is not None:
        env["IMPROMPTU_FACILITATOR_LOGINS"] = logins
    return subprocess.run([IMPROMPTU, *args], env=env, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("command", DECISIONS, ids=[" ".join(c[:2]) for c in DECISIONS])
def test_an_invented_name_is_refused_with_the_logins_there_are(settings: Settings, command: list[str]) -> None:
    done = impromptu(settings, '{"ana": {}, "olga": {"roles": ["ops"]}}', *command, "--by", "mallory")
    assert done.returncode == 1
    assert done.stderr.strip() == "error: --by 'mallory' is not a login; the logins are: ana, olga"


def test_without_any_login_the_refusal_says_how_to_add_one(settings: Settings) -> None:
    done = impromptu(settings, None, "proposals", "reject", "proposal-x", "--by", "someone", "--reason", "r")
    assert done.returncode == 1 and "there are no logins yet" in done.stderr
    assert "impromptu facilitators add NAME" in done.stderr


def test_a_known_login_gets_past_the_check(settings: Settings) -> None:
    done = impromptu(settings, '{"ana": {}}', "proposals", "reject", "proposal-x", "--by", "ana", "--reason", "r")
    assert done.returncode == 1 and "not a login" not in done.stderr
    assert "proposal-x" in done.stderr  # refused for what it is: no such proposal
