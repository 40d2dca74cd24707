"""`impromptu run` as a user starts it: embedded NATS, the facilitator's CLI against it, Ctrl-C stops all."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from pipeline.demo import ASSETS, article_server
from pipeline.embedded import EmbeddedNats, free_port
from tests.integration.bus_helpers import STORY_STEPS

pytestmark = pytest.mark.nats

IMPROMPTU = str(Path(sys.executable).parent / "impromptu")


def _env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "NATS_URL"}
    env.update(
        IMPROMPTU_DATA_DIR=str(data_dir),
        IMPROMPTU_EMBEDDED_NATS_PORT=str(free_port()),
        IMPROMPTU_FETCH_ALLOW='["127.0.0.1/32"]',
        IMPROMPTU_HTTP_PORT="0",  # any free port: the default 8000 may be taken on a test machine
        IMPROMPTU_LOG_JSON="true",
        IMPROMPTU_FACILITATOR_LOGINS='{"ana": {}}',  # --by names a login
        **extra,
    )
    return env


def _cli(env: dict[str, str], *args: str) -> str:
    done = subprocess.run([IMPROMPTU, *args], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def _wait(check, timeout: float = 30.0, what: str = "condition"):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := check():
            return result
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _log_events(log_file: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in log_file.read_text().splitlines() if line.startswith("{")]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def running(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], dict[str, str], Path]]:
    env = _env(tmp_path / "data")
    log_file = tmp_path / "run.log"
    with log_file.open("wb") as log:
        process = subprocess.Popen([IMPROMPTU, "run"], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield process, env, log_file
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_run_serves_the_facilitator_cli_and_stops_cleanly_on_ctrl_c(running) -> None:  # type: ignore[no-untyped-def]
    process, env, log_file = running
    data_dir = Path(env["IMPROMPTU_DATA_DIR"])
    _wait(lambda: (data_dir / "nats.url").exists(), what="the embedded NATS server")

    with article_server((ASSETS / "bersin-article.html").read_bytes()) as url:
        out = _cli(env, "share", url, "--by", "@britz", "--text", "Bersin on leadership training", "--id", "t1")
        assert out.startswith("cli:t1 published")
        listing = _wait(lambda: _cli(env, "proposals", "list").strip().removeprefix("no proposals"), what="a proposal")
    proposal_id, state = listing.split()[:2]
    assert state == "proposed"

    assert _cli(env, "proposals", "approve", proposal_id, "--by", "ana").strip() == f"{proposal_id} approved by ana"

    def three_posts() -> list[Path] | None:
        posts = sorted((data_dir / "outbox").rglob("*.txt"))
        return posts if len(posts) == 3 else None

    posts = _wait(three_posts, what="three posts")
    assert [p.parent.name for p in posts] == ["facebook", "linkedin", "x"]
    assert re.search(r"\b(approved|scheduled)\b", _cli(env, "proposals", "list"))

    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=20) == 0
    events = _log_events(log_file)
    (started,) = [e for e in events if e["event"] == "nats.embedded_started"]
    assert not _alive(int(started["pid"]))  # type: ignore[arg-type]
    assert [e["event"] for e in events][-2:] == ["pipeline.stopped", "nats.embedded_stopped"]
    assert not (data_dir / "nats.url").exists()
    # Every line of this share's journey carries its correlation id.
    journey = [e for e in events if e.get("stage")]
    assert journey and {e["correlation_id"] for e in journey} == {journey[0]["correlation_id"]}


@contextmanager
def run_interrupted(env: dict[str, str], log_file: Path) -> Iterator[list[int]]:
    """`impromptu run` until it logs pipeline.starting, then the body, then Ctrl-C; yields [its exit code]."""
    with log_file.open("wb") as log:
        process = subprocess.Popen([IMPROMPTU, "run"], env=env, stdout=log, stderr=subprocess.STDOUT)
    code: list[int] = []
    try:
        _wait(lambda: any(e["event"] == "pipeline.starting" for e in _log_events(log_file)), what="start")
        yield code
    finally:
        process.send_signal(signal.SIGINT)
        code.append(process.wait(timeout=20))


def test_run_uses_nats_url_and_starts_no_server(tmp_path: Path) -> None:
    with EmbeddedNats(tmp_path / "external", port=free_port()) as external:
        env = _env(tmp_path / "data", NATS_URL=external.url)
        with run_interrupted(env, tmp_path / "run.log") as code:
            assert _cli(env, "proposals", "list").strip() == "no proposals"
        assert code == [0]
        events = [e["event"] for e in _log_events(tmp_path / "run.log")]
        assert "nats.embedded_started" not in events
        assert not (tmp_path / "data" / "nats").exists()


def test_a_stop_while_starting_is_a_clean_stop(tmp_path: Path) -> None:
    """Ctrl-C while the extraction processes start: the sources must not be started on a closed broker (that was
    `pipeline.failed`, exit 1)."""
    with EmbeddedNats(tmp_path / "external", port=free_port()) as external:
        env = _env(tmp_path / "data", NATS_URL=external.url)
        with run_interrupted(env, tmp_path / "run.log") as code:
            time.sleep(0.5)  # into the start of the extraction processes
        events = [e["event"] for e in _log_events(tmp_path / "run.log")]
        assert code == [0], events
        assert "pipeline.failed" not in events and events[-1] == "pipeline.stopped"


def test_cli_without_a_server_says_what_to_do(tmp_path: Path) -> None:
    done = subprocess.run(
        [IMPROMPTU, "proposals", "list"], env=_env(tmp_path / "data"), capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1
    assert "make run" in done.stderr and "NATS_URL" in done.stderr
    assert "Traceback" not in done.stderr


def test_demo_command_tells_the_seed_story_and_exits_0(tmp_path: Path) -> None:
    done = subprocess.run([IMPROMPTU, "demo"], env=_env(tmp_path / "data"), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    steps = [line.split("]")[0].strip("[ ") for line in done.stdout.splitlines()]
    assert steps == ["bus", *STORY_STEPS, "done"]
    assert "@britz" in done.stdout and "Josh Bersin" in done.stdout and "https://meet.jit.si/" in done.stdout
    assert not (tmp_path / "data").exists()  # the demo keeps its store in a temp folder
