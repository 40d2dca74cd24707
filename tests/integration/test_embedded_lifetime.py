"""The embedded nats-server never outlives `impromptu run`: a real `impromptu run` (its own process, as `make run`
starts it; its server refuses a client without credentials) is killed with SIGKILL, and its nats-server is gone
within seconds, also on the next start on that data dir. Linux only (PR_SET_PDEATHSIG)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from nats.aio.client import Client as NATS

from pipeline.embedded import free_port

pytestmark = [
    pytest.mark.nats,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the server dies with its parent on Linux only"),
]

IMPROMPTU = str(Path(sys.executable).parent / "impromptu")


def _running(pid: int) -> bool:
    """Alive and not a zombie waiting for a reaper (PID 1 of a container may never reap it)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def _events(log_file: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in log_file.read_text().splitlines() if line.startswith("{")]


async def _connects_without_credentials(url: str) -> bool:
    raw = NATS()
    try:
        await raw.connect(url, allow_reconnect=False, max_reconnect_attempts=0, connect_timeout=2)
    except Exception:
        return False
    finally:
        await raw.close()
    return True


def _start(env: dict[str, str], log_file: Path) -> subprocess.Popen[bytes]:
    """`impromptu run`, waited for until its stages are ready."""
    with log_file.open("wb") as log:
        run = subprocess.Popen([IMPROMPTU, "run"], env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while not any(e["event"] == "pipeline.ready" for e in _events(log_file)):
        if run.poll() is not None or time.monotonic() > deadline:
            run.kill()
            run.wait()
            raise AssertionError(f"impromptu run did not get ready:\n{log_file.read_text()}")
        time.sleep(0.1)
    return run


def test_a_pipeline_killed_with_sigkill_leaves_no_nats_server_behind(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "NATS_URL"}
    env.update(
        IMPROMPTU_DATA_DIR=str(tmp_path / "data"),
        IMPROMPTU_EMBEDDED_NATS_PORT=str(free_port()),
        IMPROMPTU_HTTP_PORT="0",
        IMPROMPTU_LOG_JSON="true",
    )
    # the second start, on the data dir the first one's kill left, finds its port, store and users free
    for attempt in ("first", "second"):
        log_file = tmp_path / f"{attempt}.log"
        run = _start(env, log_file)
        server_pid: int | None = None
        try:
            (started,) = [e for e in _events(log_file) if e["event"] == "nats.embedded_started"]
            server_pid = int(started["pid"])  # type: ignore[call-overload]
            assert started["authenticated"] is True and _running(server_pid)
            assert not asyncio.run(_connects_without_credentials(str(started["url"])))

            run.send_signal(signal.SIGKILL)  # no handler runs: only the kernel can stop the server now
            run.wait(10)
            gone_by = time.monotonic() + 5
            while _running(server_pid) and time.monotonic() < gone_by:
                time.sleep(0.05)
            assert not _running(server_pid), f"nats-server outlived the {attempt} pipeline killed with SIGKILL"
        finally:
            if run.poll() is None:
                run.kill()
                run.wait()
            if server_pid is not None and _running(server_pid):  # the server this test's pipeline started, by pid
                os.kill(server_pid, signal.SIGKILL)
