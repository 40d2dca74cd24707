"""Facilitators' logins as the CLI handles them: a password's hash, a new API token, a --by name checked against the
logins. Reads the settings' logins; writes nothing. Apart from pipeline/web/auth.py (which re-exports these),
so that `impromptu facilitators add` and a command's --by check load no web framework and no stage.
"""

from __future__ import annotations

import functools
import hashlib
import secrets
from typing import TYPE_CHECKING

from pipeline.errors import ImpromptuError

if TYPE_CHECKING:
    from argon2 import PasswordHasher

    from pipeline.settings import Settings

TOKEN_PREFIX = "imp_"


@functools.cache
def password_hasher() -> PasswordHasher:
    """argon2id with the library's defaults, made at first use."""
    from argon2 import PasswordHasher

    return PasswordHasher()


def hash_password(password: str) -> str:
    """An argon2id hash of `password`, for FacilitatorLogin.password_hash."""
    return password_hasher().hash(password)


def token_sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_api_token() -> tuple[str, str]:
    """A new bearer token and its hex SHA-256 (keep only the hash in the settings; show the token once)."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    return token, token_sha256(token)


class UnknownLogin(ImpromptuError):
    """--by names no login: said with the logins there are, and exit 1."""


def known_login(settings: Settings, name: str) -> str:
    """`name` when it is one of the logins (`impromptu facilitators add`), else UnknownLogin listing them: what a
    command records as who decided or edited (--by) is a real login, never an invented name."""
    logins = sorted(settings.current_logins())
    if name in logins:
        return name
    if not logins:
        raise UnknownLogin(
            f"--by {name!r}: there are no logins yet; `impromptu facilitators add NAME` adds one (decisions and "
            "edits are recorded under a login's name)"
        )
    raise UnknownLogin(f"--by {name!r} is not a login; the logins are: {', '.join(logins)}")
