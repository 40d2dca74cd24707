"""What an operator writes cannot freeze or crash a live `impromptu run`: a runaway custom template is refused within
its bound while /healthz keeps answering (and SIGTERM still stops everything), a rules file 50,000 brackets deep
or 9 MB large is refused while the pipeline keeps its rules, its nats-server and its HTTP server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from pipeline.demo import ASSETS, article_server
from pipeline.embedded import free_port
from pipeline.web.auth import hash_password, new_api_token

pytestmark = pytest.mark.nats

WORKTREE = Path(__file__).resolve().parents[2]
IMPROMPTU = str(Path(sys.executable).parent / "impromptu")
DEFAULT_RULES = (WORKTREE / "pipeline" / "triggers" / "default_rules.yaml").read_text()
NESTED_RANGES = "Hello {{ title }}\n{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}\n"
PROBE_LIMIT = 0.5  # seconds a /healthz may take while a template or a rules file is being dealt with


def env_for(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "NATS_URL"}
    env.update(
        PYTHONPATH=str(WORKTREE),  # this worktree's pipeline, not the one the shared virtualenv installs
        IMPROMPTU_DATA_DIR=str(tmp_path / "data"),
        IMPROMPTU_EMBEDDED_NATS_PORT=str(free_port()),
        IMPROMPTU_FETCH_ALLOW='["127.0.0.1/32"]',
        IMPROMPTU_HTTP_PORT="0",
        IMPROMPTU_LOG_JSON="true",
        IMPROMPTU_EXTRACT_PROCESSES="1",
        **extra,
    )
    return env


def events(log_file: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log_file.read_text().splitlines() if line.startswith("{")]


def wait(check: Callable[[], Any], timeout: float = 60.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := check():
            return result
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def event(log_file: Path, name: str, **fields: Any) -> Callable[[], dict[str, Any] | None]:
    def found() -> dict[str, Any] | None:
        return next(
            (e for e in events(log_file) if e["event"] == name and all(e.get(k) == v for k, v in fields.items())), None
        )

    return found


def cli(env: dict[str, str], *args: str) -> str:
    done = subprocess.run([IMPROMPTU, *args], env=env, capture_output=True, text=True, timeout=60, cwd=WORKTREE)
    assert done.returncode == 0, done.stderr
    return done.stdout


def descendants(pid: int) -> set[int]:
    """Every process below `pid` now (nats-server, the fork server, its workers), from /proc."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] == "Z")


class Probe:
    """/healthz asked every 0.1 s in a thread while `with` lasts: the slowest answer."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.took: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        with httpx.Client(base_url=self.base_url, timeout=30) as http:
            while not self._stop.is_set():
                started = time.monotonic()
                assert http.get("/healthz").status_code == 200
                self.took.append(time.monotonic() - started)
                time.sleep(0.1)

    def __enter__(self) -> Probe:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def slowest(self) -> float:
        assert len(self.took) >= 3, self.took
        return max(self.took)


@pytest.fixture
def run(tmp_path: Path) -> Iterator[Callable[..., tuple[subprocess.Popen[bytes], dict[str, str], Path, str]]]:
    started: list[subprocess.Popen[bytes]] = []

    def start(**extra: str) -> tuple[subprocess.Popen[bytes], dict[str, str], Path, str]:
        env = env_for(tmp_path, **extra)
        log_file = tmp_path / "run.log"
        with log_file.open("wb") as log:
            process = subprocess.Popen([IMPROMPTU, "run"], env=env, stdout=log, stderr=subprocess.STDOUT, cwd=WORKTREE)
        started.append(process)
        listening = wait(event(log_file, "http.listening"), what="the HTTP server")
        wait(event(log_file, "pipeline.ready"), what="the stages")
        return process, env, log_file, listening["url"]

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait()


def proposal_from_a_share(env: dict[str, str], listed: Callable[[], str] | None = None) -> str:
    """The proposal @britz's share of Bersin's article makes (the shipped rule fires); `listed` lists proposals
    some other way than `impromptu proposals list` (which reads the rules file itself)."""
    listed = listed or (lambda: cli(env, "proposals", "list").strip().removeprefix("no proposals"))
    with article_server((ASSETS / "bersin-article.html").read_bytes()) as url:
        cli(env, "share", url, "--by", "@britz", "--text", "Bersin on leadership training", "--id", "t1")
        listing = wait(listed, what="a proposal")
    return listing.split()[0]


def api_login() -> tuple[str, str]:
    """A bearer token for ana, and IMPROMPTU_FACILITATOR_LOGINS with it."""
    token, token_sha256 = new_api_token()
    logins = {"ana": {"password_hash": hash_password("ana's long password"), "token_sha256": token_sha256}}
    return token, json.dumps(logins)


def test_a_runaway_template_is_refused_within_its_bound_and_the_pipeline_stays_responsive(tmp_path: Path, run) -> None:  # type: ignore[no-untyped-def]
    templates = tmp_path / "templates"
    (templates / "x").mkdir(parents=True)
    (templates / "x" / "scheduled.j2").write_text(NESTED_RANGES)
    token, logins = api_login()
    process, env, log_file, base_url = run(
        IMPROMPTU_OUTREACH_TEMPLATES_DIR=str(templates), IMPROMPTU_FACILITATOR_LOGINS=logins
    )
    proposal_id = proposal_from_a_share(env)

    # the preview of one proposal (GET /api/proposals/ID renders each channel): x's template runs away
    with Probe(base_url) as probe, httpx.Client(base_url=base_url, timeout=60) as http:
        started = time.monotonic()
        detail = http.get(f"/api/proposals/{proposal_id}", headers={"Authorization": f"Bearer {token}"})
        took = time.monotonic() - started
    assert detail.status_code == 200, detail.text
    previews = {p["channel"]: p for p in detail.json()["previews"]}
    assert previews["x"]["problem"] == "template_timeout: x/scheduled.j2:2: rendering took over 2 s"
    assert previews["linkedin"]["text"] and previews["facebook"]["text"]
    assert took < 2 + 2.5  # the bound, plus a worker's first start on a busy machine
    assert probe.slowest < PROBE_LIMIT, probe.took

    # the outreach stage: x's post is refused with the same reason, to the dead letters; the others are posted
    assert cli(env, "proposals", "approve", proposal_id, "--by", "ana").strip() == f"{proposal_id} approved by ana"
    with Probe(base_url) as probe:
        dead = wait(event(log_file, "stage.dead_letter", stage="outreach"), what="x's post refused")
        outbox = Path(env["IMPROMPTU_DATA_DIR"]) / "outbox"
        wait(lambda: {p.parent.name for p in outbox.rglob("*.txt")} >= {"linkedin", "facebook"}, what="the others")
    assert dead["reason"].startswith("template_timeout: x/scheduled.j2:2: rendering took over 2 s"), dead
    assert not any(p.parent.name == "x" for p in outbox.rglob("*.txt"))
    assert probe.slowest < PROBE_LIMIT, probe.took

    # SIGTERM while a runaway render is under way stops everything promptly, nothing left behind
    below = descendants(process.pid)
    assert below
    with httpx.Client(base_url=base_url, timeout=30) as http:
        request = threading.Thread(
            target=lambda: _ignore_errors(
                lambda: http.get(f"/api/proposals/{proposal_id}", headers={"Authorization": f"Bearer {token}"})
            )
        )
        request.start()
        time.sleep(0.5)  # into the render
        stopping = time.monotonic()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0
        request.join()
    assert time.monotonic() - stopping < 10
    wait(lambda: not any(alive(pid) for pid in below), timeout=10, what="every child process gone")


def _ignore_errors(call: Callable[[], object]) -> None:
    try:
        call()
    except httpx.HTTPError:
        pass


def many_people(count: int) -> str:
    people = "".join(f'  - name: Person {i}\n    x: "@p{i}"\n    trust: 0.5\n' for i in range(count))
    return DEFAULT_RULES.replace("people:\n", "people:\n" + people, 1)


def rewrite(path: Path, text: str) -> None:
    before = path.stat().st_mtime_ns
    path.write_text(text)
    stat = path.stat()
    if stat.st_mtime_ns <= before:  # coarse file-system clocks
        os.utime(path, ns=(stat.st_atime_ns, before + 1_000_000_000))


def test_rules_files_too_deep_or_too_large_are_refused_by_the_live_pipeline(tmp_path: Path, run) -> None:  # type: ignore[no-untyped-def]
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(DEFAULT_RULES)
    token, logins = api_login()
    process, env, log_file, base_url = run(
        IMPROMPTU_RULES_FILE=str(rules_file), IMPROMPTU_RULES_RELOAD_SECONDS="0.2", IMPROMPTU_FACILITATOR_LOGINS=logins
    )
    (nats,) = [e for e in events(log_file) if e["event"] == "nats.embedded_started"]

    # 50,000 brackets deep: libyaml's composer crashed the whole process on this
    with Probe(base_url) as probe:
        rewrite(rules_file, "people: " + "[" * 50_000 + "]" * 50_000 + "\n")
        deep = wait(event(log_file, "rules.refused"), what="the deep file refused")
    assert deep["errors"] == [f"{rules_file}:1:72: <yaml>: nested deeper than 64 levels"]
    assert deep["kept"] == "last good rules"
    assert process.poll() is None and alive(int(nats["pid"]))
    assert probe.slowest < PROBE_LIMIT, probe.took

    # the old rules still judge shares: @britz sharing Bersin's article on leadership fires the shipped rule
    def listed() -> str:
        answer = httpx.get(f"{base_url}/api/proposals", headers={"Authorization": f"Bearer {token}"}, timeout=10)
        return " ".join(record["proposal"]["id"] for record in answer.json())

    assert proposal_from_a_share(env, listed)

    # 9 MB of valid rules: refused by its size, unread, while HTTP answers
    with Probe(base_url) as probe:
        rewrite(rules_file, many_people(170_000))
        assert rules_file.stat().st_size > 9_000_000
        wait(lambda: len([e for e in events(log_file) if e["event"] == "rules.refused"]) == 2, what="the 9 MB file")
    large = [e for e in events(log_file) if e["event"] == "rules.refused"][-1]
    assert large["errors"] == [f"{rules_file}:1:1: <file>: larger than 1048576 bytes: refused unread"]
    assert probe.slowest < PROBE_LIMIT, probe.took

    # just under the bound, valid: seconds of parsing, in a child process, while HTTP answers
    with Probe(base_url) as probe:
        rewrite(rules_file, many_people(9_000))
        assert 400_000 < rules_file.stat().st_size < 1_048_576
        reloaded = wait(event(log_file, "rules.reloaded"), what="the valid edit")
    assert reloaded["people"] == 9_001
    assert probe.slowest < PROBE_LIMIT, probe.took
    assert process.poll() is None and alive(int(nats["pid"]))
    assert len([e for e in events(log_file) if e["event"] == "rules.refused"]) == 2  # each refusal logged once
