"""The pipeline's HTTP server: one FastAPI app composed of each feature's router, served by uvicorn.

`create_web_app` only includes routers; each feature (the share webhook; the approval pages and API in
pipeline/web/approval/; the ops page in pipeline/web/ops.py) keeps its routes beside its own code. The operator's
machine-readable routes live here: /metrics (Prometheus), /healthz, /readyz, /docs, /openapi.json and
/docs/asyncapi; the last four and /readyz's details only to logins unless IMPROMPTU_OPS_ENDPOINTS=public (the
default on loopback). The pages' stylesheets and script are served from pipeline/web/static/ at /static/, to anyone
(design assets only), with an ETag and Last-Modified so a browser revalidates them with a 304. Every request passes
BodyLimit (413 past a route's limit) and BearerFirst (the JSON API's token checked before its body is read),
pipeline/web/limits.py.
`serve_http` runs the app inside the pipeline's event loop, next to the stages; it believes X-Forwarded-For only
from IMPROMPTU_TRUSTED_PROXIES.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import socket
from collections.abc import Callable, Iterator, MutableMapping
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

import structlog
import uvicorn
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request, Response
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.security import HTTPAuthorizationCredentials
from faststream.nats import NatsBroker
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from pipeline import bus
from pipeline.actions.service import Approvals
from pipeline.domain.decision_links import PATH as ONE_CLICK_PATH
from pipeline.errors import ConfigError
from pipeline.ops.metrics import METRICS_CONTENT_TYPE, PipelineMetrics, metrics_of
from pipeline.schema_export import asyncapi_document
from pipeline.settings import LoginRole, Settings
from pipeline.web.approval import install_approval_web
from pipeline.web.approval.links import links_router
from pipeline.web.approval.slack import slack_router
from pipeline.web.auth import bearer, has_role, login_url, role_refused, session_facilitator, token_user
from pipeline.web.library import LibraryServices, library_router
from pipeline.web.library_api import library_api_router
from pipeline.web.limits import BearerFirst, BodyLimit
from pipeline.web.ops import install_ops_pages
from pipeline.web.recordings import recordings_router
from pipeline.web.shares import webhook_router
from pipeline.web.templating import SECURITY_HEADERS, render_plain

log = structlog.get_logger("pipeline.web")

GRACEFUL_SHUTDOWN_SECONDS = 5
READINESS_TIMEOUT_SECONDS = 2.0
STATIC = Path(__file__).parent / "static"
STATIC_MAX_AGE_SECONDS = 300  # then revalidated: an unchanged file costs a 304, a changed one arrives within 5 min


class DesignAssets(StaticFiles):
    """/static/: the pages' stylesheets and script, with starlette's ETag, Last-Modified and 304; kept in a
    browser a few minutes, and never sniffed as another type."""

    def file_response(
        self, full_path: str | os.PathLike[str], stat_result: os.stat_result, scope: Scope, status_code: int = 200
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        response.headers["Cache-Control"] = f"max-age={STATIC_MAX_AGE_SECONDS}"
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response


def _one_click_link(scope: MutableMapping[str, Any]) -> bool:
    return str(scope.get("path", "")).startswith(ONE_CLICK_PATH + "/")


def create_web_app(
    settings: Settings,
    broker: NatsBroker,
    approvals: Approvals | None = None,
    library: LibraryServices | None = None,
) -> FastAPI:
    """The HTTP app; `broker` is the pipeline's own, connected by whoever runs the stages.

    With `approvals`, also the facilitators' approval pages and JSON API (login cookie, CSRF-checked forms), and
    the ops page (/ops, for logins with the ops role), which relies on the same login cookie and CSRF check.
    The learning library (pages, media, feeds, /api/library) reads `library` (default: its search index and media
    store started on first use, stopped by serve_http; app.state.library).
    """
    app = FastAPI(
        title="Impromptu",
        summary="Shares in; metrics, health and the bus's AsyncAPI.",
        version="0.1.0",
        docs_url=None,  # served by ops_router, behind IMPROMPTU_OPS_ENDPOINTS
        redoc_url=None,
        openapi_url=None,
        # FastAPI traces each request when tracing is on (pipeline/tracing.py), but never a one-click link: its path
        # is its credential, and a span keeps the path
        telemetry={"exclude": _one_click_link},
    )
    for error_type in bus.NOT_ANSWERING:
        app.add_exception_handler(error_type, nats_not_answering)
    app.mount("/static", DesignAssets(directory=STATIC), name="static")
    app.include_router(webhook_router(settings, broker))
    app.include_router(recordings_router(settings, broker))  # Zoom's events, Jibri/JaaS/any signed recording
    app.include_router(ops_router(settings, broker, app))
    library = library or LibraryServices(settings, broker)
    app.state.library = library
    # public unless IMPROMPTU_LIBRARY_PUBLIC=false: "recording available" announcements link here
    app.include_router(library_router(settings, library))
    app.include_router(library_api_router(settings, library))
    if approvals is not None:
        install_ops_pages(app, settings, broker)
        app.include_router(slack_router(settings, approvals))  # Approve / Reject clicked in a Slack notice
        app.include_router(links_router(settings, approvals))  # one-click links of an e-mail notice
        install_approval_web(app, settings, approvals)
    app.add_middleware(BearerFirst, settings=settings)
    app.add_middleware(BodyLimit)  # outermost: no body passes its limit, whoever reads it
    return app


def wants_json(request: Request) -> bool:
    """The JSON API and the .json routes answer JSON; every other route is a page a person reads."""
    path = request.url.path
    return path.startswith("/api/") or path.endswith(".json")


async def nats_not_answering(request: Request, error: Exception) -> Response:
    """Any route whose NATS call timed out or was refused: 503 with the reason and Retry-After, logged as one
    warning, never a 500 with a traceback (a route with a better answer of its own catches bus.NOT_ANSWERING)."""
    reason = bus.not_answering_reason(error)
    log.warning("web.nats_unavailable", method=request.method, path=request.url.path, reason=reason)
    headers = {"Retry-After": str(bus.RETRY_AFTER_SECONDS), "Cache-Control": "no-store"}
    if wants_json(request):
        body = {"error": "unavailable", "detail": f"{reason}; try again shortly", "problems": {}}
        return JSONResponse(body, status_code=503, headers=headers)
    message = (
        f"The bus that keeps the proposals cannot be used just now: {reason}. Reload this page in a few "
        "seconds; if you had approved, rejected, cancelled or edited something, look at the proposal first: it "
        "shows whether that went through."
    )
    return HTMLResponse(
        render_plain("Try again in a moment", message), status_code=503, headers={**headers, **SECURITY_HEADERS}
    )


async def missing_for_readiness(broker: NatsBroker) -> list[str]:
    """What keeps the pipeline from handling messages: NATS, a stopped stage, or a durable consumer not bound."""
    if not await broker.ping(timeout=READINESS_TIMEOUT_SECONDS):
        return ["nats: not connected"]
    js = bus.jetstream(broker)
    missing = []
    for subscriber in bus.subscribers(broker):
        durable = subscriber.config.durable_name
        if not durable:
            continue
        if not subscriber.running:
            missing.append(f"consumer {durable}: stage not running")
            continue
        try:
            await js.consumer_info(bus.STREAM, durable, timeout=READINESS_TIMEOUT_SECONDS)
        except Exception as error:  # not found, timeout, no JetStream: all mean "not bound"
            missing.append(f"consumer {durable}: {type(error).__name__} {error}".strip())
    return sorted(missing)


def is_loopback(host: str | None) -> bool:
    if host in ("localhost", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address((host or "").strip("[]")).is_loopback
    except ValueError:
        return False


def ops_endpoints_public(settings: Settings) -> bool:
    """IMPROMPTU_OPS_ENDPOINTS, else public only while nobody but this machine can reach the server."""
    if settings.ops_endpoints is not None:
        return settings.ops_endpoints == "public"
    public_host = urlsplit(settings.public_url).hostname if settings.public_url else None
    return is_loopback(settings.http_host) and (settings.public_url is None or is_loopback(public_host))


def who_asks(request: Request, settings: Settings, credentials: HTTPAuthorizationCredentials | None) -> str | None:
    """The login behind a Bearer token (401 when unknown), else behind the login cookie, else None."""
    if credentials is not None:
        return token_user(settings, credentials, request.url.path)
    return session_facilitator(request, settings) if "session" in request.scope else None


def ops_viewer(settings: Settings, roles: tuple[LoginRole, ...], page: bool = False) -> Callable[..., str | None]:
    """Dependency of the ops endpoints: nothing when they are public; else a login with one of `roles` (401
    without one, 403 without the role; a page asked for by a browser goes to the login page instead)."""
    public = ops_endpoints_public(settings)

    def dependency(
        request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
    ) -> str | None:
        if public:
            return None
        name = who_asks(request, settings, credentials)
        if name is None:
            if page:
                raise HTTPException(status_code=303, detail="log in first", headers={"Location": login_url(request)})
            detail = f"send Authorization: Bearer <token> of a login with the {' or '.join(roles)} role"
            raise HTTPException(status_code=401, detail=detail, headers={"WWW-Authenticate": "Bearer"})
        if not any(has_role(settings, name, role) for role in roles):
            raise role_refused(name, roles[0], request.url.path)
        return name

    return dependency


def ops_router(settings: Settings, broker: NatsBroker, app: FastAPI) -> APIRouter:
    router = APIRouter(tags=["ops"])
    metrics = metrics_of(broker) or PipelineMetrics()  # a broker without metrics serves an empty registry
    asyncapi: dict[str, object] = {}  # built on first request: the broker's routers are all included by then
    public = ops_endpoints_public(settings)
    operator = [Depends(ops_viewer(settings, ("ops",)))]
    reader = [Depends(ops_viewer(settings, ("facilitator", "ops")))]
    page_reader = [Depends(ops_viewer(settings, ("facilitator", "ops"), page=True))]

    @router.get("/metrics", summary="Prometheus metrics of this pipeline process.", dependencies=operator)
    async def prometheus_metrics() -> Response:
        return Response(metrics.exposition(), media_type=METRICS_CONTENT_TYPE)

    @router.get("/healthz", summary="The process is up.")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @router.get(
        "/readyz",
        summary="Connected to NATS and every stage's durable consumer bound (else 503); what is missing is named "
        "only to ops logins unless the ops endpoints are public.",
    )
    async def readyz(
        request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
    ) -> JSONResponse:
        missing = await missing_for_readiness(broker)
        if missing and not public:
            try:
                name = who_asks(request, settings, credentials)
            except HTTPException:
                name = None
            if name is None or not has_role(settings, name, "ops"):
                missing = sorted({"nats: not connected" if m.startswith("nats:") else "a stage" for m in missing})
        if missing:
            return JSONResponse({"status": "not ready", "missing": missing}, status_code=503)
        return JSONResponse({"status": "ready", "missing": []})

    @router.get("/docs/asyncapi", summary="AsyncAPI 3.0 document of every subject and message.", dependencies=operator)
    async def asyncapi_json() -> dict[str, object]:
        if not asyncapi:
            asyncapi.update(asyncapi_document(broker))
        return asyncapi

    @router.get("/openapi.json", include_in_schema=False, dependencies=reader)
    async def openapi_json() -> dict[str, object]:
        return app.openapi()

    @router.get("/docs", include_in_schema=False, dependencies=page_reader)
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title=f"{app.title} - API")

    return router


class _SignalFreeServer(uvicorn.Server):
    """uvicorn without its SIGINT/SIGTERM handlers: FastStream owns them and stops the HTTP server with the rest."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def listen(host: str, port: int) -> socket.socket:
    """A listening socket, bound here so that a taken port is a clear error rather than uvicorn's sys.exit."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family)
    except OSError as error:
        raise ConfigError(
            f"cannot listen for HTTP on {host}:{port}: {error.strerror}; set IMPROMPTU_HTTP_PORT (0: any free port)"
        ) from error


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


async def serve_http(settings: Settings, app: FastAPI, ready: asyncio.Event | None = None) -> None:
    """Serve `app` on settings.http_host:http_port until cancelled; then finish in-flight requests and return.

    Logs `http.listening` with the real URL (the real port when http_port is 0) and sets `ready` once accepting.
    Raises ConfigError at once when the address cannot be bound.
    """
    config = uvicorn.Config(
        app,
        host=settings.http_host,
        port=settings.http_port,
        log_config=None,
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
        # X-Forwarded-For decides the client address the login throttle counts: believed only from the proxies
        # named (uvicorn's own default believes any loopback peer, so anyone on this machine could pose as many)
        proxy_headers=bool(settings.trusted_proxies),
        forwarded_allow_ips=list(settings.trusted_proxies) or None,
    )
    sock = listen(settings.http_host, settings.http_port)
    server = _SignalFreeServer(config)
    serving = asyncio.create_task(server.serve(sockets=[sock]), name="http-server")
    try:
        while not server.started:
            if serving.done():
                serving.result()  # startup failed: raise its error
                return
            await asyncio.sleep(0.01)
        log.info("http.listening", url=url_of(server.servers[0].sockets[0]))
        if ready is not None:
            ready.set()
        await asyncio.shield(serving)
    finally:
        server.should_exit = True
        await serving  # uvicorn stops accepting, lets in-flight requests finish, closes the socket
        sock.close()
        library = getattr(app.state, "library", None)
        if isinstance(library, LibraryServices):
            await library.close()  # the search index's consumer and the media store's connections go with it
        log.info("http.stopped")
