"""Who is asking: facilitators' passwords (argon2), API tokens (SHA-256), the login cookie's secret, the session.

Only hashes are kept in the settings (`impromptu facilitators add NAME` makes them). Every comparison of a secret is
constant-time, a wrong name costs as much as a wrong password, and nothing here ever logs a password or a token.
Each login has roles: `facilitator` for the approval pages and API, `ops` for the ops page; a page asked for
without its role is a 403 (`RoleMissing`), never a redirect to the login page (which would loop).
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import secrets
from collections.abc import Callable, Mapping
from typing import Annotated
from urllib.parse import quote, urlsplit

import structlog
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from pipeline.domain.logins import (  # noqa: F401  re-exported: the CLI imports them from logins.py, light
    TOKEN_PREFIX,
    UnknownLogin,
    hash_password,
    known_login,
    new_api_token,
    password_hasher,
    token_sha256,
)
from pipeline.settings import FacilitatorLogin, LoginRole, Settings

log = structlog.get_logger("pipeline.web.auth")

SESSION_COOKIE = "impromptu_session"
SESSION_KEY = "facilitator"
EPOCH_KEY = "epoch"  # the login's epoch when this cookie was made (sessions.py): logging out changes it
CREDENTIAL_KEY = "credential"  # digest of the password hash logged in with: a reset ends the cookie

_hasher = password_hasher()


@functools.cache
def _dummy_hash() -> str:
    """Verified when the name is unknown or has no password, so that a wrong name takes as long as a wrong one."""
    return _hasher.hash(secrets.token_urlsafe(16))


bearer = HTTPBearer(
    auto_error=False,
    scheme_name="FacilitatorToken",
    description="A facilitator's API token, printed once by `impromptu facilitators add NAME`.",
)

Logins = Mapping[str, FacilitatorLogin]


def verify_password(logins: Logins, name: str, password: str) -> bool:
    """True when `name` has a password and it is `password`; the same work whether or not the name exists.

    Takes tens of milliseconds on purpose (argon2): call it from a thread in async code."""
    login = logins.get(name)
    stored = login.password_hash if login is not None and login.password_hash else None
    try:
        return _hasher.verify(stored or _dummy_hash(), password) and stored is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def facilitator_for_token(logins: Logins, token: str) -> str | None:
    """The facilitator whose API token this is, or None; compares with every stored hash in constant time."""
    offered = token_sha256(token).encode()
    found = None
    for name, login in logins.items():
        if login.token_sha256 and hmac.compare_digest(offered, login.token_sha256.lower().encode()):
            found = name
    return found


class RoleMissing(Exception):
    """A logged-in person without the role a page needs (the approval pages answer it with a 403 page)."""

    def __init__(self, name: str, role: LoginRole) -> None:
        super().__init__(f"{name} has no {role} role")
        self.name = name
        self.role = role


def has_role(settings: Settings, name: str, role: LoginRole) -> bool:
    login = settings.current_logins().get(name)
    return login is not None and role in login.roles


def credential_digest(password_hash: str) -> str:
    """What a login cookie keeps of the password hash it was made with (argon2 salts every hash anew, so any
    reset changes it); a digest, since the cookie is signed but readable."""
    return hashlib.sha256(password_hash.encode()).hexdigest()[:32]


def session_facilitator(request: Request, settings: Settings) -> str | None:
    """The facilitator logged in with this request's cookie, if their login still exists in the settings with the
    password it logged in with (the cookie's epoch is checked by sessions.SessionCheck before the route runs)."""
    name = request.session.get(SESSION_KEY)
    if isinstance(name, str):
        login = settings.current_logins().get(name)
        if login is not None and login.password_hash:
            offered = str(request.session.get(CREDENTIAL_KEY, ""))
            if hmac.compare_digest(offered.encode(), credential_digest(login.password_hash).encode()):
                return name
    return None


def safe_next(target: str | None) -> str:
    """Where to go after logging in: a path on this site only (never another host), default the queue."""
    if not target or not target.startswith("/") or target.startswith(("//", "/\\")):
        return "/proposals"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return "/proposals"
    return target


def login_url(request: Request) -> str:
    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return "/login?next=" + quote(here, safe="/")


def page_user(settings: Settings, role: LoginRole) -> Callable[[Request], str]:
    """Dependency for HTML pages: the logged-in person, else a 303 to the login page (and back afterwards);
    RoleMissing when they lack `role`."""

    def dependency(request: Request) -> str:
        name = session_facilitator(request, settings)
        if name is None:
            raise HTTPException(status_code=303, detail="log in first", headers={"Location": login_url(request)})
        if not has_role(settings, name, role):
            log.warning("web.role_refused", name=name, role=role, path=request.url.path)
            raise RoleMissing(name, role)
        return name

    return dependency


def page_facilitator(settings: Settings) -> Callable[[Request], str]:
    """Dependency for the approval pages: a logged-in facilitator (see page_user)."""
    return page_user(settings, "facilitator")


def role_refused(name: str, role: LoginRole, path: str) -> HTTPException:
    log.warning("web.role_refused", name=name, role=role, path=path)
    return HTTPException(
        status_code=403,
        detail=f"{name} has no {role} role (`impromptu facilitators add {name} --role {role}` gives it)",
    )


def token_user(settings: Settings, credentials: HTTPAuthorizationCredentials | None, path: str) -> str:
    """The person whose Bearer token this is, else 401."""
    if credentials is None:
        detail = "send Authorization: Bearer <token> (`impromptu facilitators add NAME` makes one)"
    else:
        name = facilitator_for_token(settings.current_logins(), credentials.credentials)
        if name is not None:
            return name
        log.warning("web.token_refused", path=path)
        detail = "unknown API token"
    raise HTTPException(status_code=401, detail=detail, headers={"WWW-Authenticate": "Bearer"})


def api_facilitator(settings: Settings) -> Callable[..., str]:
    """Dependency for the JSON API: the facilitator whose Bearer token this is, else 401 (no cookie is honoured);
    403 when that login has no facilitator role."""

    def dependency(
        request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
    ) -> str:
        name = token_user(settings, credentials, request.url.path)
        if not has_role(settings, name, "facilitator"):
            raise role_refused(name, "facilitator", request.url.path)
        return name

    return dependency
