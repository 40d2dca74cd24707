"""The web secret and the keys derived from it (login cookies, CSRF tokens, e-mail decision links): one secret
for every worker, from IMPROMPTU_WEB_SECRET or a file made once in the data folder."""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import tempfile
from pathlib import Path

import structlog

from pipeline.errors import ConfigError
from pipeline.settings import Settings

log = structlog.get_logger("pipeline.web.auth")

SECRET_FILE = "web-secret"
MIN_SECRET_CHARS = 32


def web_secret(settings: Settings) -> str:
    """The key that signs login cookies: IMPROMPTU_WEB_SECRET, else DATA_DIR/web-secret (created once, mode 0600).

    The file is written whole under a temporary name and then linked into place, so that several workers starting at
    once agree on one secret and none reads a half-written file; a restart keeps everyone logged in.
    """
    if settings.web_secret is not None:
        secret = settings.web_secret.get_secret_value()
        if len(secret) < MIN_SECRET_CHARS:
            raise ConfigError(f"IMPROMPTU_WEB_SECRET must be at least {MIN_SECRET_CHARS} characters")
        return secret
    path = settings.data_dir / SECRET_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        content = secrets.token_urlsafe(48) + "\n"
        fd, scratch = tempfile.mkstemp(dir=path.parent, prefix=f".{SECRET_FILE}.")  # mkstemp: mode 0600
        try:
            with os.fdopen(fd, "w") as file:
                file.write(content)
            try:
                os.link(scratch, path)  # atomic; fails if another worker made it first, whose secret then stands
                log.info("web.secret_created", path=str(path))
            except FileExistsError:
                pass
            except OSError:  # a file system without hard links: create-exclusive instead
                _create_private(path, content)
        finally:
            os.unlink(scratch)
    if path.stat().st_mode & 0o077:
        log.warning("web.secret_readable_by_others", path=str(path), hint=f"chmod 600 {path}")
    secret = path.read_text().strip()
    if len(secret) < MIN_SECRET_CHARS:
        raise ConfigError(f"{path} holds no usable secret; delete it and a new one is made (everyone logs in again)")
    return secret


def _create_private(path: Path, content: str) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    with os.fdopen(fd, "w") as file:
        file.write(content)
    log.info("web.secret_created", path=str(path))


def derived_key(secret: str, purpose: str) -> str:
    """A separate key per use (session cookie, CSRF token) from the one web secret."""
    return hmac.new(secret.encode(), purpose.encode(), hashlib.sha256).hexdigest()
