"""Tracing (pipeline/tracing.py): one share's spans form one trace, from the trigger stage through enrich, the
proposal and, after a facilitator's approval, outreach; off, nothing of OpenTelemetry's SDK is set up."""

from __future__ import annotations

import http.server
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from faststream.nats import NatsBroker
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from pydantic import SecretStr

from pipeline import bus, tracing
from pipeline.actions.service import Approvals
from pipeline.app import connected
from pipeline.connect import new_broker
from pipeline.demo import seed_share
from pipeline.domain.approval import decide
from pipeline.domain.live_rules import LiveRules
from pipeline.settings import Settings
from pipeline.web.server import create_web_app
from tests.integration.bus_helpers import running_stages, seed_proposal, wait_drained, wait_for_count

pytestmark = pytest.mark.nats

CHECKOUT = Path(__file__).resolve().parents[2]


@contextmanager
def _traced_into(exporter: InMemorySpanExporter) -> Iterator[None]:
    """Tracing on, its spans kept in `exporter` (the process-wide provider is never set: see tracing.start)."""
    tracing.start(exporter=exporter)
    try:
        yield
    finally:
        tracing.stop()


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    with _traced_into(exporter):
        yield exporter


def _named(spans: list[ReadableSpan], name: str, kind: SpanKind) -> ReadableSpan:
    found = [span for span in spans if span.name == name and span.kind == kind]
    assert found, f"no {kind.name} span {name!r} among {sorted({span.name for span in spans})}"
    return found[0]


def _parent(spans: list[ReadableSpan], child: ReadableSpan) -> ReadableSpan | None:
    return next((span for span in spans if child.parent and span.context.span_id == child.parent.span_id), None)


def _ancestors(spans: list[ReadableSpan], span: ReadableSpan) -> list[ReadableSpan]:
    found = []
    while (parent := _parent(spans, span)) is not None:
        found.append(parent)
        span = parent
    return found


async def test_one_share_is_one_trace_from_trigger_to_outreach(spans: InMemorySpanExporter, settings: Settings) -> None:
    async with running_stages(settings), connected(settings) as client:
        proposal = await seed_proposal(client)
        # the approval comes later, from outside any handler, while a web request is traced (as FastAPI does)
        active = tracing.active()
        assert active is not None
        with active.provider.get_tracer("test").start_as_current_span("POST /proposals/{proposal_id}/approve"):
            request = trace.get_current_span().get_span_context()
            await decide(client, proposal.id, "approved", by="ana")
        await wait_for_count(client, bus.OUTREACH_RESULTS.subject, 3, timeout=60)  # the template workers start first
        await wait_drained(client, "outreach-post")
    finished = list(spans.get_finished_spans())

    share_trace = tracing.trace_id_of(proposal.correlation_id)
    assert {span.context.trace_id for span in finished if span.name != "POST /proposals/{proposal_id}/approve"} == {
        share_trace
    }
    # the decision stays in the share's trace, linked to the request that made it
    (sent,) = [span for span in finished if span.name == f"{bus.DECISIONS.subject} send"]
    assert [link.context.span_id for link in sent.links] == [request.span_id] and request.trace_id != share_trace
    trigger = _named(finished, f"{bus.SHARES.subject} process", SpanKind.CONSUMER)
    enrich = _named(finished, f"{bus.TRIGGERS_FIRED.subject} process", SpanKind.CONSUMER)
    propose = _named(finished, f"{bus.CONTENT_ENRICHED.subject} process", SpanKind.CONSUMER)
    decision = _named(finished, f"{bus.DECISIONS.subject} process", SpanKind.CONSUMER)
    outreach_due = _named(finished, f"{bus.OUTREACH_DUE.subject} publish", SpanKind.PRODUCER)
    posted = _named(finished, f"{bus.OUTREACH_DUE.subject} process", SpanKind.CONSUMER)
    _named(finished, f"{bus.SESSIONS_SCHEDULED.subject} process", SpanKind.CONSUMER)
    _named(finished, f"{bus.PROPOSALS_CREATED.subject} publish", SpanKind.PRODUCER)
    _named(finished, f"{bus.OUTREACH_RESULTS.subject} publish", SpanKind.PRODUCER)
    # each stage's span descends from the one before it, through the trace context in the message's headers
    assert enrich.parent is not None and enrich.parent.is_remote
    assert trigger in _ancestors(finished, enrich) and enrich in _ancestors(finished, propose)
    assert decision in _ancestors(finished, outreach_due) and decision in _ancestors(finished, posted)
    assert sent in _ancestors(finished, decision)

    # the article fetch, a client span inside the enrich stage's, its URL cut to the origin
    (fetch,) = [span for span in finished if span.kind == SpanKind.CLIENT]
    assert _parent(finished, fetch) is enrich
    urls = {value for key, value in (fetch.attributes or {}).items() if key in tracing.URL_ATTRIBUTES}
    assert urls and all(str(url).startswith("http://127.0.0.1:") and str(url).count("/") == 2 for url in urls)


async def test_a_share_published_untraced_joins_its_trace_at_the_first_stage(settings: Settings) -> None:
    """A share from a command run without tracing carries no trace context: the trigger stage's span starts the
    trace, under the id of the share's correlation id, as every later span of that share will have."""
    settings = settings.model_copy(update={"stages": ("trigger",)})
    exporter = InMemorySpanExporter()
    async with connected(settings) as untraced:  # built before tracing is on: no middleware
        share = seed_share("https://example.com/article")
        with _traced_into(exporter):
            async with running_stages(settings):
                await bus.publish(untraced, bus.SHARES, share)
                await wait_drained(untraced, "trigger")
    process = _named(list(exporter.get_finished_spans()), f"{bus.SHARES.subject} process", SpanKind.CONSUMER)
    assert process.context.trace_id == tracing.trace_id_of(share.correlation_id)


async def test_a_one_click_link_never_reaches_a_span(
    spans: InMemorySpanExporter, settings: Settings, client: NatsBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """FastAPI traces requests on the global tracer provider (tracing.start sets it when on); the path of an
    e-mail's one-click link is its credential, so that request is never traced."""
    active = tracing.active()
    assert active is not None
    monkeypatch.setattr(trace, "get_tracer_provider", lambda: active.provider)  # as tracing.start makes it
    web_settings = settings.model_copy(
        update={"public_url": "https://impromptu.example.org", "web_secret": SecretStr("s" * 40)}
    )
    app = create_web_app(web_settings, client, Approvals(client, web_settings, LiveRules.of(web_settings)))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as http:
        assert (await http.get("/decide/the-link-token.its-signature")).status_code == 400
        assert (await http.get("/healthz")).status_code == 200
    finished = spans.get_finished_spans()
    assert any(span.name == "GET /healthz" for span in finished)  # FastAPI does trace requests
    assert not [span for span in finished if "the-link-token" in str(dict(span.attributes or {}))]


@pytest.mark.parametrize(
    "environment",
    [{}, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318", "OTEL_SDK_DISABLED": "true"}],
    ids=["no endpoint", "sdk disabled"],
)
async def test_off_nothing_is_set_up(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, environment: dict[str, str]
) -> None:
    for name in tracing.ENDPOINT_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    with tracing.traced(settings.stages) as on:
        assert on is None and tracing.active() is None
        assert isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)  # the API's, never the SDK's
        assert tuple(new_broker(settings.nats_url or "", settings).config.broker_middlewares) == ()
        assert not _httpx_instrumented()


def test_off_the_sdk_is_not_even_imported(tmp_path: Path) -> None:
    """Off costs no import either: a worker builds its broker and its web app without loading the SDK (a process of
    its own: this one has it loaded by the other tests)."""
    script = (
        "import sys\n"
        "from pipeline import tracing\n"
        "from pipeline.app import create_broker\n"
        "from pipeline.settings import Settings\n"
        "with tracing.traced() as on:\n"
        "    assert on is None\n"
        f"    create_broker(Settings(nats_url='nats://127.0.0.1:1', data_dir={str(tmp_path)!r}))\n"
        "loaded = ('opentelemetry.sdk', 'opentelemetry.instrumentation')\n"
        "print(sorted(m for m in sys.modules if m.startswith(loaded)))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")} | {"PYTHONPATH": str(CHECKOUT)}
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"


def _httpx_instrumented() -> bool:
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

    return bool(HTTPXClientInstrumentor().is_instrumented_by_opentelemetry)


class _Collector(http.server.BaseHTTPRequestHandler):
    received: list[tuple[str, bytes]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append((self.path, body))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_with_an_endpoint_spans_go_out_by_otlp_http() -> None:
    """In a process of its own (the global provider is set once per process): OTEL_EXPORTER_OTLP_ENDPOINT set, the
    pipeline's provider becomes the global one and its spans reach the collector when tracing stops."""
    _Collector.received = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Collector)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    script = (
        "import asyncio\n"
        "from opentelemetry import trace\n"
        "from pipeline import tracing\n"
        "assert tracing.start(('trigger',)) is not None\n"
        "assert type(trace.get_tracer_provider()).__module__.startswith('opentelemetry.sdk')\n"
        "with trace.get_tracer('test').start_as_current_span('one share'): pass\n"
        "tracing.stop()\n"
    )
    env = os.environ | {
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{server.server_port}",
        "OTEL_SERVICE_NAME": "impromptu-test",
        "PYTHONPATH": str(CHECKOUT),
    }
    try:
        done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    finally:
        server.shutdown()
        server.server_close()
    assert done.returncode == 0, done.stderr
    ((path, body),) = _Collector.received
    assert path == "/v1/traces"
    assert b"one share" in body and b"impromptu-test" in body and b"trigger" in body
