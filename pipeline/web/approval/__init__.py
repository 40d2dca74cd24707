"""The facilitator's approval pages (HTML, login cookie, CSRF-checked forms) and JSON API (Bearer token).

`install_approval_web(app, settings, approvals)` adds both to the pipeline's HTTP app, with the middlewares they
need: Starlette's signed session cookie (the login), SessionCheck (a cookie of a login that logged out since is
emptied: sessions.py) and our CSRF check (a signed token in a cookie that every form must echo: csrf.py).
CSRF is checked only on the pages' forms; the JSON API authenticates by an Authorization header a browser never
sends by itself, and `POST /shares` is HMAC-signed, so neither needs (or gets) a CSRF token.
The ops page's forms (under /ops, pipeline/web/ops.py) and the library's facilitator forms (under /library/,
pipeline/web/library.py) rely on the same login cookie and CSRF check. A logged-in
person without a page's role gets a 403 page (RoleMissing).

Every action goes through `Approvals` (pipeline/actions/service.py), the same service the CLI uses.
"""

from __future__ import annotations

from fastapi import APIRouter, FastAPI
from starlette.middleware.sessions import SessionMiddleware
from starlette.types import Scope

from pipeline.actions.service import Approvals
from pipeline.keys import derived_key, web_secret
from pipeline.settings import Settings
from pipeline.web.approval.api import api_router
from pipeline.web.approval.pages import FORM_PATHS, pages_router, role_missing_page
from pipeline.web.auth import SESSION_COOKIE, RoleMissing
from pipeline.web.csrf import CSRF_COOKIE, CSRF_FIELD, CsrfProtection
from pipeline.web.limits import path_of
from pipeline.web.sessions import LoginEpochs, SessionCheck

__all__ = ["CSRF_COOKIE", "CSRF_FIELD", "approval_router", "install_approval_web", "is_form_path"]


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
    # add_middleware puts each one outside the previous: the session cookie is read first, then checked against
    # its login's epoch, then CSRF is checked.
    app.add_middleware(CsrfProtection, signing_secret=derived_key(secret, "csrf"), secure=secure, protects=is_form_path)
    app.add_middleware(SessionCheck, epochs=LoginEpochs(approvals.broker))
    app.add_middleware(
        SessionMiddleware,
        secret_key=derived_key(secret, "session"),
        session_cookie=SESSION_COOKIE,
        max_age=settings.login_max_age_seconds,
        same_site="lax",
        https_only=secure,
    )


def is_form_path(scope: Scope) -> bool:
    """Every form of the pages, even without cookies (a login form posted from another site must fail too)."""
    path = path_of(scope)
    return path in FORM_PATHS or path == "/ops" or path.startswith(("/proposals/", "/ops/", "/library/"))
