"""CSRF protection of the pages' forms: a signed token in a cookie that every form posts back (double submit).

Any page asks `request.scope["csrftoken"]()` for the token to put in its forms (the logout button is on every
page); a browser without the cookie gets one with that page. Every POST (any method but GET/HEAD/OPTIONS/TRACE)
to a form path must carry the token as the field `csrftoken`, URL-encoded or multipart (read with Starlette's own
form parser; no form here takes a file, so a file part is refused), equal to the cookie, whose signature (HMAC
with a key derived from the web secret) shows this site made it: a cookie planted by a neighbouring host does not
pass. Without it: 403. A body that is not a form this site sends (not UTF-8, a broken multipart, a file): 400.
The body is read whole, at most what BodyLimit (the outer middleware) allows, then handed to the route unchanged.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable

import structlog
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.requests import ClientDisconnect, Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pipeline.web.limits import SAFE_METHODS
from pipeline.web.templating import SECURITY_HEADERS, render_plain

log = structlog.get_logger("pipeline.web.csrf")

CSRF_COOKIE = "impromptu_csrf"
CSRF_FIELD = "csrftoken"
FORM_FIELDS_MAX = 200  # our largest form has a dozen fields
FORM_FILES_MAX = 0  # and none takes a file: a file part is refused (400), never spooled to disk
TOKEN_SCOPE_KEY = "csrftoken"  # what pages call for the token


class FormUnreadable(Exception):
    pass


class CsrfProtection:
    def __init__(self, app: ASGIApp, *, signing_secret: str, secure: bool, protects: Callable[[Scope], bool]) -> None:
        self.app = app
        self.key = signing_secret.encode()
        self.secure = secure
        self.protects = protects

    def sign(self, nonce: str) -> str:
        return f"{nonce}.{hmac.new(self.key, nonce.encode(), hashlib.sha256).hexdigest()}"

    def verified(self, token: str | None) -> str | None:
        """The token when this site signed it, else None."""
        if not token or token.count(".") != 1:
            return None
        nonce, _ = token.split(".")
        return token if hmac.compare_digest(self.sign(nonce).encode(), token.encode()) else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        cookies = Request(scope).cookies
        known = self.verified(cookies.get(CSRF_COOKIE))
        issued: list[str] = []

        def token() -> str:
            if known is not None:
                return known
            if not issued:
                issued.append(self.sign(secrets.token_urlsafe(24)))
            return issued[0]

        scope[TOKEN_SCOPE_KEY] = token
        if scope["method"] not in SAFE_METHODS and self.protects(scope):
            try:
                body = await _whole_body(receive)
                submitted = await _submitted_token(scope, body)
            except ClientDisconnect:
                return
            except FormUnreadable as error:
                await _unreadable_form(send, error)
                return
            if known is None or submitted is None or not hmac.compare_digest(submitted.encode(), known.encode()):
                why = "no token cookie" if known is None else "no token in the form" if submitted is None else "other"
                await _refused(scope, send, why)
                return
            receive = _replay(body)

        async def send_with_cookie(message: Message) -> None:
            if message["type"] == "http.response.start" and issued:
                cookie = f"{CSRF_COOKIE}={issued[0]}; Path=/; HttpOnly; SameSite=Lax{'; Secure' if self.secure else ''}"
                message = {**message, "headers": [*message.get("headers", []), (b"set-cookie", cookie.encode())]}
            await send(message)

        await self.app(scope, receive, send_with_cookie)


async def _whole_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes) -> Receive:
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return receive


async def _submitted_token(scope: Scope, body: bytes) -> str | None:
    content_type = Headers(scope=scope).get("content-type", "").split(";")[0].strip().lower()
    if content_type == "application/x-www-form-urlencoded":
        try:
            body.decode("utf-8")
        except UnicodeDecodeError as error:
            raise FormUnreadable(f"not UTF-8 at byte {error.start}") from None
    elif content_type != "multipart/form-data":
        return None  # no form at all: nothing that could carry the token
    request = Request(scope, _replay(body))
    try:
        form = await request.form(max_files=FORM_FILES_MAX, max_fields=FORM_FIELDS_MAX)
    except MultiPartException as error:
        raise FormUnreadable(error.message) from None
    except HTTPException as error:  # Starlette's form() turns a MultiPartException into a 400 of its own
        raise FormUnreadable(str(error.detail)) from None
    try:
        value = form.get(CSRF_FIELD)
        return value if isinstance(value, str) and value else None
    finally:
        await form.close()


def _html_headers() -> list[tuple[bytes, bytes]]:
    headers = [(b"content-type", b"text/html; charset=utf-8"), (b"cache-control", b"no-store")]
    return headers + [(k.lower().encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]


async def _refused(scope: Scope, send: Send, why: str) -> None:
    log.warning("web.csrf_refused", path=scope.get("path"), method=scope.get("method"), why=why)
    body = render_plain(
        "This form has expired or did not come from this site.",
        "Go back, reload the page and try again.",
    ).encode()
    await send({"type": "http.response.start", "status": 403, "headers": _html_headers()})
    await send({"type": "http.response.body", "body": body})


async def _unreadable_form(send: Send, error: Exception) -> None:
    log.warning("web.form_unreadable", error=f"{type(error).__name__}: {error}")
    body = render_plain(
        "This form could not be read.",
        "Its body is not a form this site sends (URL-encoded UTF-8 or multipart). Go back, reload the page and "
        "try again.",
    ).encode()
    await send({"type": "http.response.start", "status": 400, "headers": _html_headers()})
    await send({"type": "http.response.body", "body": body})
