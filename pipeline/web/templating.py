"""What every HTML page of the web interface shares: one Jinja environment over pipeline/web/templates/ (one
layout, base.html, that the approval pages, the library and the ops page extend), its common filters, the security
headers, and the helpers that render a page, flash a message and redirect after a form.

Templates are named from that folder: "approval/queue.html", "library/entry.html", "ops/ops.html". A feature's
own filters and globals are registered once, at import, by its module (`register`); a name two features would give
different meanings is refused rather than silently replaced. The pages' stylesheets and script are files under
pipeline/web/static/, served at /static/ (server.py).
"""

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import jinja2
from fastapi import Request
from fastapi.responses import RedirectResponse, Response
from starlette.templating import Jinja2Templates

from pipeline.messages import utc_now

TEMPLATES = Path(__file__).parent / "templates"
# No script runs on these pages; nothing may frame them (the approve button must not be clickjacked).
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self' https:; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}
# What base.html reads on every page: a page without a login, a session or a CSRF token still names them.
LAYOUT_DEFAULTS: dict[str, Any] = {"facilitator": None, "csrftoken": "", "flashes": [], "errors": []}


def utc(moment: datetime | None, fmt: str = "%a %d %b %H:%M UTC") -> str:
    return "" if moment is None else moment.astimezone(UTC).strftime(fmt)


def relative(moment: datetime | None) -> str:
    if moment is None:
        return ""
    minutes = round((moment - utc_now()).total_seconds() / 60)
    if minutes == 0:
        return "now"
    span = abs(minutes)
    if span < 120:
        text = f"{span} min"
    elif span < 48 * 60:
        text = f"{span // 60} h {span % 60:02d} min"
    else:
        text = f"{span // 1440} days"
    return f"in {text}" if minutes > 0 else f"{text} ago"


def safe_href(url: object) -> str:
    """Links to shared pages and join URLs: http(s) only, never javascript: or data:."""
    text = str(url or "")
    return text if text.lower().startswith(("https://", "http://")) else "#"


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,  # every template, whatever its extension
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(utc=utc, relative=relative, href=safe_href)
    return env


templates = Jinja2Templates(env=_environment())


def register(*, filters: dict[str, Callable[..., Any]] | None = None, globals: dict[str, Any] | None = None) -> None:
    """Add a feature's filters and globals to the one environment; a name already taken by another value is an
    error (two features would each see the other's meaning)."""
    for kind, table, added in (("filter", templates.env.filters, filters), ("global", templates.env.globals, globals)):
        for name, value in (added or {}).items():
            if name in table and table[name] != value:
                raise ValueError(f"the template {kind} {name!r} is already registered as {table[name]!r}")
            table[name] = value


def render_page(name: str, context: dict[str, Any]) -> str:
    """A page with no request behind it (sent by a middleware, or a page that needs no login): the layout's
    defaults, then `context`."""
    return templates.get_template(name).render({**LAYOUT_DEFAULTS, **context})


def render_plain(title: str, message: str) -> str:
    """A title and a message in the layout (the CSRF refusal, the bus not answering, ...)."""
    return render_page("approval/message.html", {"title": title, "message": message})


def secured(response: Response) -> Response:
    response.headers.update(SECURITY_HEADERS)
    response.headers["Cache-Control"] = "no-store"
    return response


def flash(request: Request, text: str, kind: Literal["ok", "error"] = "ok") -> None:
    request.session["flash"] = [*request.session.get("flash", []), {"kind": kind, "text": text}]


def see_other(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


def page(request: Request, name: str, context: dict[str, Any], status: int = 200) -> Response:
    """A page of a logged-in area (approval, ops): its forms carry the CSRF token, the flashes are shown once."""
    token = request.scope.get("csrftoken")
    if token is None:
        raise RuntimeError("the pages need the CSRF middleware: use install_approval_web(app, ...)")
    values = {
        **LAYOUT_DEFAULTS,
        "csrftoken": token(),
        "flashes": request.session.pop("flash", []),
        **context,
    }
    return secured(templates.TemplateResponse(request, name, values, status_code=status))
