"""`impromptu run --stages`: a process for the CPU-heavy enrich stage (with its extraction processes) next to one
running the rest, both real `impromptu run` processes on one nats-server; they split the work and the seed story
still completes. Unknown stage names are refused; an enrich-only process serves no HTTP and leaves no worker."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from faststream.nats import NatsBroker

from pipeline import bus
from pipeline.demo import ASSETS, article_server, write_sample_wav
from pipeline.domain.approval import advance_by_clock
from pipeline.embedded import EmbeddedNats
from pipeline.messages import LibraryEntry, ScheduledSession
from tests.integration.bus_helpers import models_on, subject_counts, wait_for_count

pytestmark = pytest.mark.nats

IMPROMPTU = str(Path(sys.executable).parent / "impromptu")


def _env(tmp_path: Path, nats_url: str | None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMPROMPTU_") and k != "NATS_URL"}
    if nats_url:
        env["NATS_URL"] = nats_url
    env.update(
        IMPROMPTU_DATA_DIR=str(tmp_path / "data"),
        IMPROMPTU_FETCH_ALLOW='["127.0.0.1/32"]',
        IMPROMPTU_HTTP_PORT="0",
        IMPROMPTU_SOURCES_ENABLED="false",
        IMPROMPTU_LOG_JSON="true",
        IMPROMPTU_FACILITATOR_LOGINS='{"ana": {}}',  # --by names a login
        **extra,
    )
    return env


def _events(log_file: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log_file.read_text().splitlines() if line.startswith("{")]


def _wait(check: Callable[[], Any], what: str, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := check():
            return found
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _event(log_file: Path, name: str) -> dict[str, Any]:
    return _wait(lambda: next((e for e in _events(log_file) if e["event"] == name), None), f"{name} in {log_file}")


def _alive(pid: int) -> bool:
    try:
        return "\nState:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False


def _cli(env: dict[str, str], *args: str) -> str:
    done = subprocess.run([IMPROMPTU, *args], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


@contextmanager
def _running(env: dict[str, str], log_file: Path, *args: str) -> Iterator[subprocess.Popen[bytes]]:
    with log_file.open("wb") as log:
        process = subprocess.Popen([IMPROMPTU, "run", *args], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


async def test_an_enrich_process_and_one_with_the_rest_split_the_work_and_tell_the_seed_story(
    tmp_path: Path, nats_server: EmbeddedNats, client: NatsBroker
) -> None:
    enrich_log, rest_log = tmp_path / "enrich.log", tmp_path / "rest.log"
    enrich_env = _env(tmp_path, nats_server.url, IMPROMPTU_EXTRACT_PROCESSES="2")
    rest_env = _env(tmp_path, nats_server.url, IMPROMPTU_STAGES="trigger,actions,outreach,archive")
    with (
        _running(enrich_env, enrich_log, "--stages", "enrich") as enrich,
        _running(rest_env, rest_log) as rest,
        article_server((ASSETS / "bersin-article.html").read_bytes()) as url,
    ):
        pool = _event(enrich_log, "extract.pool_started")
        ready = [_event(log, "pipeline.ready") for log in (enrich_log, rest_log)]
        _cli(rest_env, "share", url, "--by", "@britz", "--text", "Bersin on leadership training", "--id", "t1")
        listing = _wait(lambda: _cli(rest_env, "proposals", "list").strip().removeprefix("no proposals"), "proposal")
        proposal_id = listing.split()[0]
        _cli(rest_env, "proposals", "approve", proposal_id, "--by", "ana")
        await wait_for_count(client, bus.SESSIONS_SCHEDULED.subject, 1, timeout=30)
        (session,) = await models_on(client, bus.SESSIONS_SCHEDULED.subject, ScheduledSession)
        # the session is held (the clock asked about its start and its end), then a person hands in its recording
        await advance_by_clock(client, session.starts_at)
        await advance_by_clock(client, session.ends_at)
        write_sample_wav(tmp_path / "data" / "import" / "rec.wav", seconds=1)
        _cli(rest_env, "record", session.id, "--media", str(tmp_path / "data" / "import" / "rec.wav"))
        await wait_for_count(client, bus.LIBRARY_ENTRIES.subject, 1, timeout=30)
        # three announcements, three "starting now" and three "recording available" posts
        await wait_for_count(client, bus.OUTREACH_RESULTS.subject, 9, timeout=30)
        counts = await subject_counts(client)
        enrich.send_signal(signal.SIGINT)
        rest.send_signal(signal.SIGINT)
        assert enrich.wait(timeout=30) == 0 and rest.wait(timeout=30) == 0

    (entry,) = await models_on(client, bus.LIBRARY_ENTRIES.subject, LibraryEntry)
    assert "Why eLearning Isn't Working" in entry.tagline and [f.kind for f in entry.files] == ["audio"]
    assert not [s for s in counts if s.startswith(bus.DEAD_LETTERS)]
    # Each process subscribed to its own stages' consumers only, and each did its own part of the story.
    assert ready[0]["stages"] == ["enrich"] and {c.split(" <- ")[0] for c in ready[0]["consumers"]} == {"enrich"}
    rest_consumers = {c.split(" <- ")[0] for c in ready[1]["consumers"]}
    assert "enrich" not in rest_consumers and {"trigger", "actions-propose", "outreach", "archive"} <= rest_consumers
    enrich_events, rest_events = _events(enrich_log), _events(rest_log)
    assert [e["event"] for e in enrich_events if e.get("stage")] == ["content.enriched"]
    rest_stages = {e["stage"] for e in rest_events if e.get("stage")}
    assert "enrich" not in rest_stages and {"trigger", "actions", "outreach", "archive"} <= rest_stages
    # The HTTP server and the clock went with actions; the enrich process listened nowhere.
    assert [e for e in rest_events if e["event"] == "http.listening"]
    assert not [e for e in enrich_events if e["event"] == "http.listening"]
    assert len(pool["pids"]) == 2 and not any(_alive(pid) for pid in pool["pids"])
    assert [e["event"] for e in enrich_events][-2:] == ["extract.pool_stopped", "pipeline.stopped"]


def test_unknown_stage_names_are_refused_with_the_reason(tmp_path: Path, nats_server: EmbeddedNats) -> None:
    env = _env(tmp_path, nats_server.url)
    by_option = subprocess.run(
        [IMPROMPTU, "run", "--stages", "enrich,enrichment"], env=env, capture_output=True, text=True, timeout=60
    )
    by_env = subprocess.run(
        [IMPROMPTU, "run"], env={**env, "IMPROMPTU_STAGES": "trigger,post"}, capture_output=True, text=True, timeout=60
    )
    reason = "the stages are trigger, enrich, actions, outreach, archive"
    assert by_option.returncode == 1
    assert by_option.stderr.strip() == f"error: --stages enrich,enrichment: unknown stage 'enrichment': {reason}"
    assert by_env.returncode == 1
    assert f"IMPROMPTU_STAGES: unknown stage 'post': {reason}" in by_env.stderr
    assert "Traceback" not in by_option.stderr + by_env.stderr


def test_some_stages_without_nats_url_join_the_embedded_pipeline_or_say_what_to_do(tmp_path: Path) -> None:
    alone = subprocess.run(
        [IMPROMPTU, "run", "--stages", "enrich"], env=_env(tmp_path, None), capture_output=True, text=True, timeout=60
    )
    assert alone.returncode == 1
    assert "joins a running pipeline: set NATS_URL, or start `impromptu run`" in alone.stderr
    assert not (tmp_path / "data" / "nats").exists()  # it embedded no server of its own


def test_a_killed_enrich_process_leaves_no_extraction_worker_behind(tmp_path: Path, nats_server: EmbeddedNats) -> None:
    log_file = tmp_path / "enrich.log"
    env = _env(tmp_path, nats_server.url, IMPROMPTU_EXTRACT_PROCESSES="2")
    with _running(env, log_file, "--stages", "enrich") as process:
        pids = _event(log_file, "extract.pool_started")["pids"]
        _event(log_file, "pipeline.ready")
        assert all(_alive(pid) for pid in pids)
        process.kill()  # kill -9: no shutdown hook runs
        process.wait()
        _wait(lambda: not any(_alive(pid) for pid in pids), "the extraction workers to end", timeout=10)
