"""A secured nats-server for tests: a throwaway PKI (openssl CLI) for TLS and mutual TLS, and decentralized auth
(operator -> account -> user JWTs, a `.creds` file) minted with nkeys when that package is installed."""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from pipeline.embedded import free_port, nats_server_binary


def _openssl(*args: str | Path) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True)


def _new_key(path: Path) -> None:
    _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", path)


def _new_ca(directory: Path, name: str) -> tuple[Path, Path]:
    key, cert = directory / f"{name}.key", directory / f"{name}.pem"
    _new_key(key)
    _openssl(
        "req", "-x509", "-new", "-key", key, "-out", cert, "-days", "1", "-subj", f"/CN={name}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        "-addext", "subjectKeyIdentifier=hash",
    )  # fmt: skip
    return cert, key


def _new_leaf(directory: Path, name: str, ca: tuple[Path, Path], extensions: str) -> tuple[Path, Path]:
    key, cert, csr, ext = (directory / f"{name}{suffix}" for suffix in (".key", ".pem", ".csr", ".ext"))
    _new_key(key)
    _openssl("req", "-new", "-key", key, "-out", csr, "-subj", f"/CN={name}")
    ext.write_text(
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
        f"subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid,issuer\n{extensions}\n"
    )
    _openssl(
        "x509", "-req", "-in", csr, "-CA", ca[0], "-CAkey", ca[1], "-CAcreateserial", "-days", "1",
        "-out", cert, "-extfile", ext,
    )  # fmt: skip
    return cert, key


@dataclass(frozen=True)
class Pki:
    """A CA, a server certificate for 127.0.0.1 and a client certificate it signed; and an unrelated CA."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path

    @classmethod
    def create(cls, directory: Path) -> Pki:
        directory.mkdir(parents=True, exist_ok=True)
        ca = _new_ca(directory, "test-ca")
        server = _new_leaf(directory, "server", ca, "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth")
        client = _new_leaf(directory, "client", ca, "extendedKeyUsage=clientAuth")
        other_ca, _ = _new_ca(directory, "other-ca")
        return cls(ca[0], server[0], server[1], client[0], client[1], other_ca)


# --- decentralized auth: NATS JWT v2 (operator -> account -> user), each signed by its issuer's nkey -----------


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def new_nkey(kind: str) -> Any:
    """A fresh key pair: kind is "operator", "account" or "user"."""
    import nkeys

    prefix = {
        "operator": nkeys.PREFIX_BYTE_OPERATOR,
        "account": nkeys.PREFIX_BYTE_ACCOUNT,
        "user": nkeys.PREFIX_BYTE_USER,
    }[kind]
    return nkeys.from_seed(bytearray(nkeys.encode_seed(os.urandom(32), prefix)))


def public(key: Any) -> str:
    return str(key.public_key.decode())


def encode_jwt(issuer: Any, subject: str, name: str, nats: dict[str, Any], *, expires: int | None = None) -> str:
    """A NATS JWT: base64url header and claims, signed with the issuer's ed25519 nkey."""
    claims: dict[str, Any] = {
        "jti": uuid.uuid4().hex.upper(),
        "iat": int(time.time()) - 60,
        "iss": public(issuer),
        "sub": subject,
        "name": name,
        "nats": {**nats, "version": 2},
    }
    if expires is not None:
        claims["exp"] = expires
    header = _b64url(json.dumps({"typ": "JWT", "alg": "ed25519-nkey"}).encode())
    body = _b64url(json.dumps(claims).encode())
    signature = _b64url(issuer.sign(f"{header}.{body}".encode()))
    return f"{header}.{body}.{signature}"


UNLIMITED_ACCOUNT = {
    "subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1, "wildcards": True, "conn": -1, "leaf": -1,
    # JetStream is on for the account only when it has JetStream limits.
    "mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1,
}  # fmt: skip


@dataclass(frozen=True)
class Operator:
    """An operator, its system account (JetStream needs one), and one JetStream-enabled account; `user_creds`
    mints users of that account."""

    operator_key: Any
    operator_jwt: str
    system_key: Any
    system_jwt: str
    account_key: Any
    account_jwt: str

    @classmethod
    def create(cls) -> Operator:
        operator = new_nkey("operator")
        system = new_nkey("account")
        account = new_nkey("account")
        return cls(
            operator,
            encode_jwt(
                operator,
                public(operator),
                "test-operator",
                {"type": "operator", "system_account": public(system)},
            ),
            system,
            encode_jwt(operator, public(system), "SYS", {"type": "account"}),
            account,
            encode_jwt(
                operator,
                public(account),
                "impromptu",
                {"type": "account", "limits": UNLIMITED_ACCOUNT, "default_permissions": {"pub": {}, "sub": {}}},
            ),
        )

    def user_creds(self, path: Path, *, signer: Any = None, expires: int | None = None) -> Path:
        """A `.creds` file for a new user of the account; `signer`: another account's key issues it instead (a user
        of an account the server does not know); `expires`: the JWT's `exp`, seconds since the epoch."""
        user = new_nkey("user")
        token = encode_jwt(
            signer or self.account_key,
            public(user),
            "impromptu-worker",
            {"type": "user", "pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1},
            expires=expires,
        )
        path.write_text(
            "-----BEGIN NATS USER JWT-----\n"
            f"{token}\n"
            "------END NATS USER JWT------\n\n"
            "************************* IMPORTANT *************************\n"
            "NKEY Seed printed below can be used to sign and prove identity.\n\n"
            "-----BEGIN USER NKEY SEED-----\n"
            f"{bytes(user.seed).decode()}\n"
            "------END USER NKEY SEED------\n"
        )
        path.chmod(0o600)
        return path

    def server_config(self, directory: Path) -> str:
        operator_file = directory / "operator.jwt"
        operator_file.write_text(self.operator_jwt)
        return (
            f'operator: "{operator_file}"\n'
            f"system_account: {public(self.system_key)}\n"
            "resolver: MEMORY\n"
            "resolver_preload: {\n"
            f"  {public(self.system_key)}: {self.system_jwt}\n"
            f"  {public(self.account_key)}: {self.account_jwt}\n"
            "}\n"
        )


# --- the server ---------------------------------------------------------------------------------------------------


def _accepts_connections(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


class ConfiguredNats:
    """`nats-server -c <config>` with JetStream on a free loopback port; `extra` is appended to the config
    (a `tls { }` block, operator settings, a `cluster { }` block). Stopped on exit; its log is in
    `directory / "nats-server.log"`."""

    def __init__(self, directory: Path, extra: str, *, scheme: str = "nats", port: int | None = None) -> None:
        self.directory = directory
        self.extra = extra
        self.scheme = scheme
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    @property
    def log_file(self) -> Path:
        return self.directory / "nats-server.log"

    def start(self, timeout: float = 10.0) -> ConfiguredNats:
        self.directory.mkdir(parents=True, exist_ok=True)
        config = self.directory / "nats-server.conf"
        config.write_text(
            f"listen: 127.0.0.1:{self.port}\n"
            f'jetstream {{\n  store_dir: "{self.directory / "store"}"\n}}\n'
            f"{self.extra}\n"
        )
        with self.log_file.open("ab") as log:
            self.process = subprocess.Popen(
                [str(nats_server_binary()), "-c", str(config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while not _accepts_connections(self.port):
            if self.process.poll() is not None:
                raise RuntimeError(f"nats-server exited at start:\n{self.log_file.read_text()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"nats-server did not listen within {timeout}s:\n{self.log_file.read_text()}")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> ConfiguredNats:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def tls_block(pki: Pki, *, verify: bool) -> str:
    """The server's `tls { }`: its certificate; with `verify`, clients must present one signed by the CA."""
    return (
        "tls {\n"
        f'  cert_file: "{pki.server_cert}"\n'
        f'  key_file: "{pki.server_key}"\n'
        f'  ca_file: "{pki.ca}"\n'
        f"  verify: {'true' if verify else 'false'}\n"
        "  timeout: 5\n"
        "}\n"
    )
