"""Revocable logins: the login cookie holds the login's epoch, kept in NATS KV (`impromptu-signins`) and checked on
every request, so a copied cookie dies when its person logs out.

The cookie itself is signed but lives in the browser (Starlette's SessionMiddleware); without a server-side
check it would keep working for its whole life (IMPROMPTU_LOGIN_MAX_AGE_SECONDS, 12 h). Logging out gives the
login a new epoch: every cookie of that login, on any device and any worker, stops working at its next request.
A password reset (`impromptu facilitators add NAME` again) ends them too, without the bus: the cookie also holds a
digest of the password hash it logged in with (auth.session_facilitator compares it).
Keys are `login.<SHA-256 of the name>`: one small read by key per request, never a scan.
"""

from __future__ import annotations

import hashlib
import secrets

import structlog
from faststream.nats import NatsBroker
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from starlette.types import ASGIApp, Receive, Scope, Send

from pipeline import bus, stores
from pipeline.web.auth import EPOCH_KEY, SESSION_KEY
from pipeline.web.limits import path_of, send_json
from pipeline.web.templating import SECURITY_HEADERS, render_plain

log = structlog.get_logger("pipeline.web.sessions")


def epoch_key(name: str) -> str:
    return f"login.{hashlib.sha256(name.encode()).hexdigest()[:40]}"


class LoginEpochs:
    """Each login's current epoch, shared by every worker through the bucket `impromptu-signins`."""

    def __init__(self, broker: NatsBroker) -> None:
        self.broker = broker

    async def current(self, name: str) -> str | None:
        kv = await stores.bucket(self.broker, stores.SIGNINS)
        try:
            entry = await kv.get(epoch_key(name))
        except KeyNotFoundError:
            return None
        return (entry.value or b"").decode() or None

    async def for_login(self, name: str) -> str:
        """The epoch a new login cookie carries: the current one, made when the login has none yet."""
        kv = await stores.bucket(self.broker, stores.SIGNINS)
        fresh = secrets.token_urlsafe(16)
        try:
            await kv.create(epoch_key(name), fresh.encode())
            return fresh
        except KeyWrongLastSequenceError:  # one exists (or another worker made it just now): that one holds
            found = await self.current(name)
            if found is None:
                raise
            return found

    async def revoke(self, name: str) -> None:
        """Every cookie `name` logged in with stops working (a new epoch; any worker sees it at once)."""
        kv = await stores.bucket(self.broker, stores.SIGNINS)
        await kv.put(epoch_key(name), secrets.token_urlsafe(16).encode())
        log.info("web.logins_revoked", name=name)


class SessionCheck:
    """Inside SessionMiddleware: a login cookie whose epoch is not the login's current one is emptied (the person
    is logged out) before any route sees it. When the bus does not answer, 503: never a revoked cookie let in."""

    def __init__(self, app: ASGIApp, *, epochs: LoginEpochs) -> None:
        self.app = app
        self.epochs = epochs

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        session = scope.get("session") if scope["type"] == "http" else None
        if session and isinstance(name := session.get(SESSION_KEY), str):
            try:
                current = await self.epochs.current(name)
            except bus.NOT_ANSWERING as error:
                reason = bus.not_answering_reason(error)
                log.warning("web.nats_unavailable", path=scope.get("path"), reason=reason, checking="login")
                await _unavailable(scope, send, reason)
                return
            if current is None or session.get(EPOCH_KEY) != current:
                log.info("web.session_revoked", name=name, path=scope.get("path"))
                session.clear()
        await self.app(scope, receive, send)


async def _unavailable(scope: Scope, send: Send, reason: str) -> None:
    headers = {"Retry-After": str(bus.RETRY_AFTER_SECONDS)}
    path = path_of(scope)
    if path.startswith("/api/") or path.endswith(".json"):
        detail = f"{reason}: your login cannot be checked now; try again shortly"
        await send_json(send, 503, {"error": "unavailable", "detail": detail, "problems": {}}, headers)
        return
    page = render_plain(
        "Try again in a moment", f"The bus that keeps logins cannot be used now: {reason}. Reload in a few seconds."
    ).encode()
    raw = [(b"content-type", b"text/html; charset=utf-8"), (b"cache-control", b"no-store")]
    raw += [(k.lower().encode(), v.encode()) for k, v in {**SECURITY_HEADERS, **headers}.items()]
    await send({"type": "http.response.start", "status": 503, "headers": raw})
    await send({"type": "http.response.body", "body": page})
