"""A real S3-compatible server for tests: moto in server mode, in a subprocess on a free loopback port."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from pipeline.embedded import free_port

ACCESS_KEY_ID = "testing"
SECRET_ACCESS_KEY = "testing-secret"  # moto accepts any credentials; these are only sent to loopback


@contextmanager
def moto_server(log_dir: Path, timeout: float = 30.0) -> Iterator[str]:
    """Start `moto.server` on 127.0.0.1 and yield its endpoint URL; stop it (its whole process group) at the end."""
    port = free_port()
    log_dir.mkdir(parents=True, exist_ok=True)
    with (log_dir / "moto.log").open("ab") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "PYTHONWARNINGS": "ignore"},
        )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"moto server exited with {process.returncode}; see {log_dir / 'moto.log'}")
            try:
                httpx.get(f"{endpoint}/moto-api/", timeout=1.0)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"moto server did not listen on {endpoint} within {timeout}s") from None
                time.sleep(0.1)
        yield endpoint
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
