"""Two ASGI guards every request passes before any route reads its body.

`BodyLimit` refuses a body larger than its route allows with 413 and the reason: at once when Content-Length says
so (nothing is read), else as soon as the bytes streamed past the limit (a chunked body). No route takes more than
a few hundred KiB; a larger limit is given only to the routes that need one (Zoom's webhook lists many files).
`BearerFirst` checks the Bearer token of a state-changing JSON API call (/api/…) before the body is read: FastAPI
parses a route's body before it resolves its dependencies, so without it an anonymous caller could make every
worker parse megabytes of JSON it then refuses.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

import structlog
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pipeline.settings import Settings
from pipeline.web.auth import facilitator_for_token

log = structlog.get_logger("pipeline.web.limits")

DEFAULT_MAX_BODY_BYTES = 256 * 1024  # a form or a JSON edit: a few KiB; a signed share or recording: < 64 KiB
ROUTE_MAX_BODY_BYTES = {"/webhooks/zoom": 512 * 1024}  # that route's own check says why (many files)
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})


class BodyTooLarge(Exception):
    """Raised from `receive` once a streamed body passes its limit; BodyLimit answers it with 413."""


async def send_json(send: Send, status: int, body: dict[str, object], headers: Mapping[str, str] = {}) -> None:
    encoded = json.dumps(body).encode()
    raw = [(b"content-type", b"application/json"), (b"cache-control", b"no-store")]
    raw += [(key.lower().encode(), value.encode()) for key, value in headers.items()]
    raw.append((b"content-length", str(len(encoded)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": encoded})


def path_of(scope: Scope) -> str:
    path: str = scope["path"]
    root = scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


class BodyLimit:
    def __init__(
        self,
        app: ASGIApp,
        *,
        default_bytes: int = DEFAULT_MAX_BODY_BYTES,
        routes: Mapping[str, int] = ROUTE_MAX_BODY_BYTES,
    ) -> None:
        self.app = app
        self.default_bytes = default_bytes
        self.routes = dict(routes)

    def limit_for(self, scope: Scope) -> int:
        return self.routes.get(path_of(scope), self.default_bytes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope)
        declared = Headers(scope=scope).get("content-length", "")
        if declared.strip().isdigit() and int(declared) > limit:
            await self._refuse(scope, send, limit, f"Content-Length {int(declared)}")
            return
        received = 0
        started = False

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge
            return message

        async def watched_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, watched_send)
        except BodyTooLarge:
            if started:  # the route answered before reading it all, then read on: the answer stands
                raise
            await self._refuse(scope, send, limit, f"more than {limit} bytes streamed")

    async def _refuse(self, scope: Scope, send: Send, limit: int, seen: str) -> None:
        client = scope.get("client")
        log.warning(
            "web.body_too_large",
            method=scope.get("method"),
            path=path_of(scope),
            limit=limit,
            seen=seen,
            client=client[0] if client else None,
        )
        detail = f"the body of {scope.get('method')} {path_of(scope)} must be at most {limit} bytes"
        # the unread rest of the body is not wanted: the connection is closed after this answer
        await send_json(send, 413, {"error": "body_too_large", "detail": detail}, {"Connection": "close"})


class BearerFirst:
    """A POST/PATCH/PUT/DELETE under /api/ without a known Bearer token is a 401 before its body is read.

    Roles are still checked by the route's own dependency; this only keeps anonymous bodies out."""

    def __init__(self, app: ASGIApp, *, settings: Settings, prefix: str = "/api/") -> None:
        self.app = app
        self.settings = settings
        self.prefix = prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] not in SAFE_METHODS and path_of(scope).startswith(self.prefix):
            problem = self.problem(Headers(scope=scope).get("authorization", ""))
            if problem is not None:
                log.warning("web.token_refused", path=path_of(scope), method=scope["method"], before_body=True)
                await send_json(send, 401, {"detail": problem}, {"WWW-Authenticate": "Bearer", "Connection": "close"})
                return
        await self.app(scope, receive, send)

    def problem(self, authorization: str) -> str | None:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return "send Authorization: Bearer <token> (`impromptu facilitators add NAME` makes one)"
        if facilitator_for_token(self.settings.current_logins(), token.strip()) is None:
            return "unknown API token"
        return None
