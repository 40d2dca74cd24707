"""The facilitator's approval pages (HTML, login cookie, CSRF-checked forms) and JSON API (Bearer token).

`install_approval_web(app, settings, approvals)` adds both to the pipeline's HTTP app, with the two middlewares they
need: Starlette's signed session cookie (the login) and asgi-csrf (a signed token in a cookie that every form must
echo). CSRF is checked only on the approval pages' forms; the JSON API authenticates by an Authorization header a
browser never sends by itself, and `POST /shares` is HMAC-signed, so neither needs (or gets) a CSRF token.
The ops page's forms (under /ops, pipeline/ops/web.py) and the library's facilitator forms (under /library/,
pipeline/archive/web.py) rely on the same login cookie and CSRF check. A logged-in
person without a page's role gets a 403 page (RoleMissing).

Every action goes through `Approvals` (pipeline/actions/service.py), the same service the CLI uses.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from asgi_csrf import asgi_csrf
from fastapi import APIRouter, FastAPI
from starlette.middleware.sessions import SessionMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from pipeline.actions.service import Approvals
from pipeline.actions.web.api import api_router
from pipeline.actions.web.auth import SESSION_COOKIE, RoleMissing, derived_key, web_secret
from pipeline.actions.web.pages import FORM_PATHS, SECURITY_HEADERS, pages_router, render_plain, role_missing_page
from pipeline.settings import Settings

log = structlog.get_logger("pipeline.web.csrf")

CSRF_COOKIE = "impromptu_csrf"
CSRF_FIELD = "csrftoken"  # asgi-csrf's form field name (fixed by the library)

__all__ = ["approval_router", "install_approval_web"]


def approval_router(settings: Settings, approvals: Approvals) -> APIRouter:
    """The pages and the JSON API; they need the middlewares `install_approval_web` adds."""
    router = APIRouter()
    router.include_router(pages_router(settings, approvals))
    router.include_router(api_router(settings, approvals))
    return router


def install_approval_web(app: FastAPI, settings: Settings, approvals: Approvals) -> None:
    """Add the approval pages and API to `app`, with the login cookie and CSRF protection they rely on."""
    secret = web_secret(settings)
    secure = settings.base_url.startswith("https://")
    app.include_router(approval_router(settings, approvals))
    app.add_exception_handler(RoleMissing, role_missing_page)
    # add_middleware puts each one outside the previous: the session cookie is read first, then CSRF is checked.
    app.add_middleware(CsrfProtection, signing_secret=derived_key(secret, "csrf"), secure=secure)
    app.add_middleware(
        SessionMiddleware,
        secret_key=derived_key(secret, "session"),
        session_cookie=SESSION_COOKIE,
        max_age=settings.login_max_age_seconds,
        same_site="lax",
        https_only=secure,
    )


def is_form_path(scope: Scope) -> bool:
    path: str = scope["path"]
    root = scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root) :]
    return path in FORM_PATHS or path == "/ops" or path.startswith(("/proposals/", "/ops/", "/library/"))


class _FormPaths:
    """asgi-csrf's `always_protect` is tested with `scope["path"] in ...`: every approval form, even without cookies
    (a login form posted from another site must fail too)."""

    def __contains__(self, path: object) -> bool:
        return isinstance(path, str) and is_form_path({"path": path})


async def _refused(scope: Scope, send: Callable[[Any], Awaitable[None]], message_id: object) -> None:
    log.warning("web.csrf_refused", path=scope.get("path"), method=scope.get("method"), why=str(message_id))
    body = render_plain(
        "This form has expired or did not come from this site.",
        "Go back, reload the page and try again.",
    ).encode()
    headers = [(b"content-type", b"text/html; charset=utf-8"), (b"cache-control", b"no-store")]
    headers += [(k.lower().encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]
    await send({"type": "http.response.start", "status": 403, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _unreadable_form(send: Send, error: Exception) -> None:
    log.warning("web.form_unreadable", error=f"{type(error).__name__}: {error}")
    body = render_plain(
        "This form could not be read.",
        "Its body is not a form this site sends (URL-encoded UTF-8). Go back, reload the page and try again.",
    ).encode()
    headers = [(b"content-type", b"text/html; charset=utf-8"), (b"cache-control", b"no-store")]
    headers += [(k.lower().encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]
    await send({"type": "http.response.start", "status": 400, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class CsrfProtection:
    """asgi-csrf around the app, checking only the approval pages' form posts.

    asgi-csrf reads a form's body itself before the app sees it, and raises on one it cannot parse (bytes that are
    not UTF-8, a multipart body: its parser does not fit the python-multipart we have): that is a 400, not a 500.
    An error raised once the app has the request is the app's and passes through."""

    REACHED = "impromptu.csrf_reached"  # a dict in the scope: copies of the scope share it

    def __init__(self, app: ASGIApp, *, signing_secret: str, secure: bool) -> None:
        async def checked(scope: Scope, receive: Receive, send: Send) -> None:
            scope[self.REACHED]["app"] = True
            await app(scope, receive, send)

        self.app = asgi_csrf(
            checked,
            cookie_name=CSRF_COOKIE,
            signing_secret=signing_secret,
            always_protect=_FormPaths(),
            skip_if_scope=lambda scope: not is_form_path(scope),
            cookie_secure=secure,
            cookie_samesite="Lax",
            send_csrf_failed=_refused,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        reached = {"app": False}
        try:
            await self.app({**scope, self.REACHED: reached}, receive, send)
        except Exception as error:
            if reached["app"] or scope["type"] != "http":
                raise
            await _unreadable_form(send, error)
