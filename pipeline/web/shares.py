"""`POST /shares`: any system that can sign a small JSON body can hand the pipeline a share.

The body (`ShareBody`: `{"url": ..., "by": ..., ...}`) is signed with the shared secret IMPROMPTU_WEBHOOK_SECRET as
every signed webhook of ours is (pipeline/signing.py): `X-Impromptu-Timestamp: <Unix seconds>` and
`X-Impromptu-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>." + raw body)>`, refused once more than 5
minutes from now. The older body-only signature (no timestamp; replayable whenever the 24 h duplicate window has
passed) is taken only with IMPROMPTU_WEBHOOK_ALLOW_UNTIMED=true. Checks run in this order and the first that fails
answers:

- 503 `webhook_disabled`: no secret is configured, so nothing can be verified;
- 413 `body_too_large`: more than 64 KiB (refused from Content-Length, or while reading);
- 401 `bad_signature`: missing, malformed, not matching, or too old (or too far ahead: a clock to set right);
- 422 `invalid_body`: not JSON, or not a share; `detail` lists each problem as {field, message};
- 503 `bus_unavailable`: NATS did not acknowledge the share; the sender should retry.

Only a share that passed every check is published on `impromptu.shares`: 202 `{"id", "duplicate", "seq"}`. Its id
comes from the body's `id` (or url + sharer), so a retried POST is acknowledged as a duplicate, never a second share.
Neither the secret nor a signature is ever logged or echoed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping

import structlog
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from faststream.nats import NatsBroker

from pipeline import bus, signing
from pipeline.messages import Share
from pipeline.settings import Settings
from pipeline.triggers.share_body import InvalidShare, ShareBody, body_from_json

log = structlog.get_logger("pipeline.webhook")

SOURCE = "webhook"
PATH = "/shares"
SIGNATURE_HEADER = signing.SIGNATURE_HEADER
TIMESTAMP_HEADER = signing.TIMESTAMP_HEADER
SECRET_ENV = "IMPROMPTU_WEBHOOK_SECRET"
UNTIMED_ENV = "IMPROMPTU_WEBHOOK_ALLOW_UNTIMED"
MAX_BODY_BYTES = 64 * 1024
PUBLISH_TIMEOUT_SECONDS = 5.0
# What a JetStream publish raises when NATS is down, restarting or unreachable, or the broker is stopping.
BUS_ERRORS = bus.NOT_ANSWERING


def signature_problem(
    secret: bytes, body: bytes, headers: Mapping[str, str], now: float, *, allow_untimed: bool = False
) -> str | None:
    """Why the request (`headers` with lowercase names) does not sign `body` now (None when it does)."""
    if TIMESTAMP_HEADER.lower() in headers:
        return signing.signature_problem(secret, headers, body, now)
    if allow_untimed:
        return signing.untimed_signature_problem(secret, body, headers.get(SIGNATURE_HEADER.lower()))
    problem = signing.signature_problem(secret, headers, body, now)  # names what is missing
    return f"{problem} (a body-only signature is taken only with {UNTIMED_ENV}=true)"


Detail = str | list[dict[str, str]]


def refusal(status: int, error: str, detail: Detail) -> JSONResponse:
    return JSONResponse({"error": error, "detail": detail}, status_code=status)


async def read_at_most(request: Request, limit: int) -> bytes | None:
    """The raw body, or None as soon as it is known to be longer than `limit` (nothing more is read)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return None
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)


async def admit(request: Request, secret: bytes, allow_untimed: bool = False) -> Share | JSONResponse:
    """The share the request carries, or the refusal of the first check it fails (size, signature, body)."""
    raw = await read_at_most(request, MAX_BODY_BYTES)
    if raw is None:
        log.warning("webhook.refused", reason="body_too_large", client=_client(request))
        return refusal(413, "body_too_large", f"the body must be at most {MAX_BODY_BYTES} bytes")
    headers = {name.lower(): value for name, value in request.headers.items()}
    problem = signature_problem(secret, raw, headers, time.time(), allow_untimed=allow_untimed)
    if problem is not None:
        log.warning("webhook.refused", reason="bad_signature", detail=problem, client=_client(request))
        return refusal(401, "bad_signature", problem)
    if TIMESTAMP_HEADER.lower() not in headers:
        log.warning("webhook.untimed", client=_client(request), hint=f"have the sender sign a {TIMESTAMP_HEADER}")
    try:
        return body_from_json(raw).to_share(SOURCE)
    except InvalidShare as invalid:
        problems = [{"field": p.field, "message": p.message} for p in invalid.problems]
        log.info("webhook.refused", reason="invalid_body", problems=problems, client=_client(request))
        return refusal(422, "invalid_body", problems)


async def publish_share(broker: NatsBroker, share: Share) -> JSONResponse:
    """202 once JetStream has the share (or already had it); 503 when NATS cannot take it now."""
    log_share = log.bind(share_id=share.id, correlation_id=share.correlation_id)
    if not broker.config.connection_state:  # before the pipeline has connected, or after it stopped
        log_share.warning("webhook.bus_unavailable", error="the broker is not connected")
        return refusal(503, "bus_unavailable", "not connected to NATS; retry later")
    try:
        ack = await asyncio.wait_for(bus.publish(broker, bus.SHARES, share), PUBLISH_TIMEOUT_SECONDS)
    except BUS_ERRORS as error:
        log_share.warning("webhook.bus_unavailable", error=f"{type(error).__name__}: {error}")
        return refusal(503, "bus_unavailable", "NATS did not take the share; retry later")
    duplicate = bool(ack.duplicate)  # JetStream leaves it unset, not False, for a new message
    log_share.info("webhook.accepted", duplicate=duplicate, seq=ack.seq, sharer=share.sharer, url=share.url)
    return JSONResponse({"id": share.id, "duplicate": duplicate, "seq": ack.seq}, status_code=202)


def webhook_router(settings: Settings, broker: NatsBroker) -> APIRouter:
    """The `POST /shares` route, publishing through `broker` (connected by the app that runs the stages)."""
    secret = settings.webhook_secret.get_secret_value().encode() if settings.webhook_secret else None
    if secret is None:
        log.warning("webhook.disabled", reason=f"{SECRET_ENV} is not set: POST {PATH} refuses every share (503)")
    router = APIRouter(tags=["sources"])

    @router.post(
        PATH,
        status_code=202,
        summary="Hand the pipeline a share (HMAC-signed)",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": ShareBody.model_json_schema()}},
            }
        },
    )
    async def receive_share(request: Request) -> JSONResponse:
        if secret is None:
            return refusal(503, "webhook_disabled", f"the webhook is off: set {SECRET_ENV} to accept shares")
        admitted = await admit(request, secret, settings.webhook_allow_untimed)
        if isinstance(admitted, JSONResponse):
            return admitted
        return await publish_share(broker, admitted)

    return router


def _client(request: Request) -> str | None:
    return request.client.host if request.client else None
