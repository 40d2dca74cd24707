"""Tracing with OpenTelemetry, on only when OTEL_EXPORTER_OTLP_ENDPOINT (or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) is set.

When on: a span for every message published and consumed (FastStream's NatsTelemetryMiddleware, the trace context
carried in the messages' NATS headers), and a client span for every outbound HTTP call made with httpx (article
fetches, channel posts, providers, notices), exported in batches by OTLP/HTTP. Everything else is the SDK's own
environment: OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES, OTEL_EXPORTER_OTLP_HEADERS, OTEL_TRACES_SAMPLER, OTEL_BSP_*,
OTEL_SDK_DISABLED.

The provider is also the API's global one, so FastAPI traces the HTTP requests it serves (web/server.py keeps the
one-click links out).

When off: neither the SDK nor the instrumentation is imported. No SDK tracer provider (the API's global stays its
no-op proxy), no broker middleware, httpx untouched.

One share, one trace: a span with no parent (a share from a source or the webhook, a facilitator's decision from the
web page, the clock's approval, a message some untraced command published) takes its trace id from the message's
correlation id (`trace_id_of`), so the approval, which comes minutes later from outside any handler, continues the
share's trace instead of starting one of its own.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

import structlog
from faststream import BaseMiddleware

if TYPE_CHECKING:
    from faststream.message import StreamMessage
    from faststream.response import PublishCommand
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.sdk.trace.id_generator import IdGenerator
    from opentelemetry.trace import Tracer

log = structlog.get_logger("pipeline.tracing")

SERVICE_NAME = "impromptu"
ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
# URL attributes an HTTP client span carries (the old and the stable semantic conventions)
URL_ATTRIBUTES = ("http.url", "url.full")

# The correlation id of the message being published or consumed, for a span that starts a trace.
_correlation: ContextVar[str | None] = ContextVar("impromptu_trace_correlation", default=None)


def wanted() -> bool:
    """Whether the environment asks for traces: an OTLP endpoint is set and the SDK is not disabled."""
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    return any(os.environ.get(name, "").strip() for name in ENDPOINT_VARIABLES)


def trace_id_of(correlation_id: str) -> int:
    """The trace id of every span of the share with `correlation_id` (the first 128 bits of its SHA-256)."""
    return int.from_bytes(hashlib.sha256(correlation_id.encode()).digest()[:16], "big") or 1


class Tracing:
    """Tracing turned on: its provider, the broker middlewares that use it, and its end (which flushes)."""

    def __init__(self, provider: TracerProvider) -> None:
        from faststream.nats.opentelemetry import NatsTelemetryMiddleware

        self.provider = provider
        tracer = provider.get_tracer(__name__)

        def correlated(msg: Any, /, *, context: Any) -> _CorrelatedMiddleware:  # FastStream's middleware factory
            return _CorrelatedMiddleware(msg, context=context, tracer=tracer)

        # outside the telemetry middleware, so that its spans see the correlation id; counters off: metrics are
        # Prometheus' (GET /metrics), and its histograms go to the API's no-op meter
        self.middlewares = (
            correlated,
            NatsTelemetryMiddleware(tracer_provider=provider, include_messages_counters=False),
        )

    def stop(self) -> None:
        from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

        HTTPXClientInstrumentor().uninstrument()
        self.provider.shutdown()  # exports the spans still in the batch


_active: Tracing | None = None


def active() -> Tracing | None:
    return _active


def broker_middlewares() -> tuple[Any, ...]:
    """What every broker gets (pipeline/connect.py builds them all): nothing unless tracing is on."""
    return _active.middlewares if _active is not None else ()


def start(stages: Sequence[str] = (), exporter: SpanExporter | None = None) -> Tracing | None:
    """Turn tracing on if the environment asks for it (`wanted`), before any broker is built; None when off.

    Given an `exporter` (tests: the SDK's InMemorySpanExporter), on regardless, each span exported as it ends, and
    the provider stays this module's: the API's global provider can be set only once per process."""
    global _active
    if _active is not None:
        raise RuntimeError("tracing is on already")
    if exporter is None and not wanted():
        return None
    from opentelemetry import trace
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
    from opentelemetry.sdk.resources import OTELResourceDetector, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    defaults = {"service.name": SERVICE_NAME, "service.version": _version()}
    if stages:
        defaults["impromptu.stages"] = ",".join(stages)
    resource = Resource.create(defaults).merge(OTELResourceDetector().detect())  # OTEL_SERVICE_NAME etc. win
    provider = TracerProvider(resource=resource, id_generator=_correlated_ids(), shutdown_on_exit=False)
    if exporter is None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))  # its endpoint, headers: from the env
        trace.set_tracer_provider(provider)
    else:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    HTTPXClientInstrumentor().instrument(
        tracer_provider=provider, request_hook=_origin_only, async_request_hook=_origin_only_async
    )
    _active = Tracing(provider)
    if exporter is None:
        log.info("tracing.on", service=resource.attributes.get("service.name"))
    return _active


def stop() -> None:
    """Flush and end tracing (a no-op when it is off)."""
    global _active
    if _active is not None:
        _active.stop()
        _active = None


@contextmanager
def traced(stages: Sequence[str] = ()) -> Iterator[Tracing | None]:
    """Tracing for the life of a process (`impromptu run`): on if wanted, flushed at the end."""
    tracing = start(stages)
    try:
        yield tracing
    finally:
        stop()


def _version() -> str:
    try:
        return version("impromptu")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown"


def _correlated_ids() -> IdGenerator:
    """The SDK's random ids, except a new trace's id: the correlation id's (`trace_id_of`) when one is known."""
    from opentelemetry.sdk.trace.id_generator import RandomIdGenerator

    class CorrelatedIds(RandomIdGenerator):
        def generate_trace_id(self) -> int:
            correlation = _correlation.get()
            return trace_id_of(correlation) if correlation else super().generate_trace_id()

    return CorrelatedIds()


class _CorrelatedMiddleware(BaseMiddleware):
    """Names the correlation id of what is consumed or published while the telemetry middleware starts its spans,
    and keeps a message published while serving something else (a web request) in its share's trace."""

    def __init__(self, msg: Any, /, *, context: Any, tracer: Tracer) -> None:
        super().__init__(msg, context=context)
        self.tracer = tracer

    async def consume_scope(self, call_next: Callable[[Any], Awaitable[Any]], msg: StreamMessage[Any]) -> Any:
        token = _correlation.set(msg.correlation_id)
        try:
            return await call_next(msg)
        finally:
            _correlation.reset(token)

    async def publish_scope(self, call_next: Callable[[Any], Awaitable[Any]], cmd: PublishCommand) -> Any:
        from opentelemetry import trace
        from opentelemetry.context import Context

        token = _correlation.set(cmd.correlation_id)
        try:
            publisher = trace.get_current_span().get_span_context()
            if not publisher.is_valid or publisher.trace_id == trace_id_of(cmd.correlation_id or ""):
                return await call_next(cmd)
            # e.g. an approval clicked on a page, whose request FastAPI traces: the decision starts anew in its
            # share's trace (a fresh context), its first span linked to the request that published it
            with self.tracer.start_as_current_span(
                f"{cmd.destination} send", context=Context(), links=[trace.Link(publisher)]
            ):
                return await call_next(cmd)
        finally:
            _correlation.reset(token)


def _origin_only(span: Any, request: Any) -> None:
    """A client span keeps only the URL's origin: a Slack or Teams webhook URL is its secret, an API's query may
    carry a token. (A hook that raised would fail the request itself: it cannot.)"""
    import httpx  # loaded already: the hook runs inside its request

    attributes = getattr(span, "attributes", None) or {}
    url = request.url
    origin = f"{url.scheme}://{url.netloc.decode()}" if isinstance(url, httpx.URL) else "(not shown)"
    for key in URL_ATTRIBUTES:
        if key in attributes:
            span.set_attribute(key, origin)


async def _origin_only_async(span: Any, request: Any) -> None:
    _origin_only(span, request)
