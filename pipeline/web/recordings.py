"""Recordings handed in over HTTP: Zoom's event webhook and a signed webhook for everything else.

`recordings_router(settings, broker)` serves

- `POST /webhooks/zoom` (secret: IMPROMPTU_ZOOM_WEBHOOK_SECRET, the Zoom app's secret token; the checks are in
  pipeline/archive/zoom.py). Zoom retries anything that is not a 2xx, so every event that is signed and well
  formed is answered 200, also when it is not for us (logged `recording.unmatched`); only a bad signature, a stale
  timestamp, an oversized body (401/413) and NATS being away (503: Zoom tries again later) are not.
- `POST /webhooks/recordings` (secret: IMPROMPTU_RECORDINGS_WEBHOOK_SECRET), body either
  {"session_id", "media_url", "transcript_url"?, "chat_url"?, "by"?} (Jibri's finalize script, any system) signed
  with `X-Impromptu-Timestamp: <unix seconds>` and `X-Impromptu-Signature: sha256=<hex HMAC-SHA256(secret,
  timestamp + "." + raw body)>`, or 8x8 JaaS's RECORDING_UPLOADED event signed as JaaS signs it (`X-Jaas-Signature:
  t=<unix seconds>,v1=<base64 HMAC-SHA256(secret, t + "." + raw body)>`), matched to our Jitsi session by its room.
  A request more than 5 minutes old is refused (replay). Answers: 202 {"id", "duplicate"}; 401 bad signature or
  stale; 404 no such session; 409 the session has not started; 413 too large; 422 invalid, with each problem as
  {field, message}; 503 webhook off (no secret) or NATS away (retry).

Every accepted request ends as one Recording on `impromptu.recordings`, whose id names the session and the files,
so a retried request is acknowledged as a duplicate. A Zoom download_token is kept in the KV bucket
impromptu-downloads (its 24 h), never on the bus or in a log. Sessions are found by the key `<provider>.<id>` the
actions stage keeps in impromptu-sessions, else among the sessions awaiting their recording.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from datetime import UTC, datetime
from typing import Any

import structlog
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from faststream.nats import NatsBroker
from nats.js.errors import KeyNotFoundError
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pipeline import bus, signing, stores
from pipeline.archive import zoom
from pipeline.archive.sources import IMPORT_PREFIX, SourceRefused, relative_parts
from pipeline.domain import catalog
from pipeline.domain.sessions import provider_key
from pipeline.messages import Recording, RecordingFile, RecordingFileKind, ScheduledSession, utc_now
from pipeline.net.fetch import FetchPolicy, FetchRefused, check_url_form, parse_url
from pipeline.settings import Settings
from pipeline.web.shares import read_at_most, refusal

log = structlog.get_logger("pipeline.archive")

ZOOM_PATH = "/webhooks/zoom"
RECORDINGS_PATH = "/webhooks/recordings"
ZOOM_SECRET_ENV = "IMPROMPTU_ZOOM_WEBHOOK_SECRET"
RECORDINGS_SECRET_ENV = "IMPROMPTU_RECORDINGS_WEBHOOK_SECRET"
JAAS_SIGNATURE_HEADER = "X-Jaas-Signature"
ZOOM_MAX_BODY_BYTES = 512 * 1024  # a long meeting lists many files (one per participant's audio)
MAX_BODY_BYTES = 64 * 1024
PUBLISH_TIMEOUT_SECONDS = 5.0  # Zoom waits 3 s for an answer; NATS away is answered 503 and Zoom retries


# --- finding our session --------------------------------------------------------------------------------------------


async def session_held_at(broker: NatsBroker, provider: str, provider_id: str) -> ScheduledSession | None:
    """Our session held at `provider` as `provider_id` (a Zoom meeting id, a Jitsi room), or None."""
    kv = await stores.bucket(broker, stores.SESSIONS)
    try:
        entry = await kv.get(provider_key(provider, provider_id))
        session_id: str | None = (entry.value or b"").decode()
    except KeyNotFoundError:
        session_id = await _awaiting_session(broker, provider, provider_id)
    return await stores.stored_session(broker, session_id) if session_id else None


async def _awaiting_session(broker: NatsBroker, provider: str, provider_id: str) -> str | None:
    """A session created before the actions stage kept `<provider>.<id>` keys: the sessions that ended and wait for
    their recording are a bounded set, read by one ranged scan."""
    library = await catalog.library_bucket(broker)
    for entry in await stores.scan(library, catalog.AWAITING + ">"):
        try:
            awaiting = catalog.AwaitingRecording.model_validate_json(entry.value or b"")
        except ValidationError:
            continue
        if awaiting.provider == provider and awaiting.provider_id == provider_id:
            return awaiting.session_id
    return None


# --- publishing -----------------------------------------------------------------------------------------------------


async def publish_recording(broker: NatsBroker, recording: Recording, status: int) -> JSONResponse:
    logged = log.bind(recording_id=recording.id, session_id=recording.session.id, source=recording.source)
    try:
        ack = await asyncio.wait_for(bus.publish(broker, bus.RECORDINGS, recording), PUBLISH_TIMEOUT_SECONDS)
    except bus.NOT_ANSWERING as error:
        logged.warning("recording.bus_unavailable", reason=bus.not_answering_reason(error))
        return refusal(503, "bus_unavailable", "NATS did not take the recording; retry later")
    duplicate = bool(ack.duplicate)
    logged.info("recording.received", duplicate=duplicate, kinds=[f.kind for f in recording.files])
    return JSONResponse({"id": recording.id, "duplicate": duplicate}, status_code=status)


def _secret(value: Any) -> bytes | None:
    text = value.get_secret_value().strip() if value is not None else ""
    return text.encode() if text else None


# --- Zoom -----------------------------------------------------------------------------------------------------------


async def receive_zoom_event(request: Request, broker: NatsBroker, secret: bytes) -> JSONResponse:
    raw = await read_at_most(request, ZOOM_MAX_BODY_BYTES)
    if raw is None:
        log.warning("zoom.refused", reason="body_too_large")
        return refusal(413, "body_too_large", f"the body must be at most {ZOOM_MAX_BODY_BYTES} bytes")
    try:
        zoom.check_request(secret, {k.lower(): v for k, v in request.headers.items()}, raw)
        event = zoom.parse_event(raw)
        if event.event == zoom.URL_VALIDATION:
            log.info("zoom.url_validated")
            return JSONResponse(zoom.url_validation_answer(secret, event))
        if event.event not in zoom.RECORDING_EVENTS:
            log.info("zoom.ignored", zoom_event=event.event)
            return JSONResponse({"status": "ignored", "reason": f"{event.event} is not a recording event"})
        meeting = event.meeting()
    except zoom.WebhookRefused as refused:
        log.warning("zoom.refused", reason=refused.error, detail=refused.detail)
        return refusal(refused.status, refused.error, refused.detail)
    except ValidationError:
        log.warning("zoom.refused", reason="invalid_body", detail="payload.object is not a Zoom meeting")
        return refusal(422, "invalid_body", "payload.object is not a Zoom meeting (id, recording_files)")
    try:
        return await _zoom_recording(broker, event, meeting)
    except bus.NOT_ANSWERING as error:
        log.warning("recording.bus_unavailable", reason=bus.not_answering_reason(error), zoom_event=event.event)
        return refusal(503, "bus_unavailable", "NATS is not answering; retry later")


async def _zoom_recording(broker: NatsBroker, event: zoom.ZoomEvent, meeting: zoom.ZoomMeeting) -> JSONResponse:
    session = await session_held_at(broker, "zoom", str(meeting.id))
    if session is None:
        log.info("recording.unmatched", provider="zoom", meeting_id=str(meeting.id), zoom_event=event.event)
        return JSONResponse({"status": "ignored", "reason": "not a meeting of ours"})
    if session.starts_at > utc_now():
        # held before its time (a host who opened early): the poller asks Zoom again once the session has ended
        log.info("recording.too_early", session_id=session.id, starts_at=session.starts_at.isoformat())
        return JSONResponse({"status": "ignored", "reason": "the session has not started; it is looked up later"})
    kinds: tuple[RecordingFileKind, ...] | None = (
        ("transcript",) if event.event == "recording.transcript_completed" else None
    )
    key = zoom.download_key(event) if event.download_token else None
    recording = zoom.recording_from(session, meeting, kinds=kinds, download_key=key, submitted_by=event.event)
    if recording is None:
        log.info("recording.no_files", session_id=session.id, zoom_event=event.event)
        return JSONResponse({"status": "ignored", "reason": "no completed MP4, M4A, TRANSCRIPT or CHAT file"})
    if key and event.download_token:
        downloads = await stores.bucket(broker, stores.DOWNLOADS)
        await downloads.put(key, event.download_token.encode())
    return await publish_recording(broker, recording, 200)


# --- everything else: our own body, or 8x8 JaaS -----------------------------------------------------------------------


class RecordingBody(BaseModel):
    """What Jibri's finalize script (or any system) sends."""

    model_config = ConfigDict(extra="forbid")

    session_id: str = Field(min_length=1, max_length=200)
    media_url: str = Field(min_length=1, max_length=4096, description="http(s) URL, or import:<path>.")
    transcript_url: str | None = Field(default=None, max_length=4096, description="A WebVTT transcript.")
    chat_url: str | None = Field(default=None, max_length=4096, description="The chat, as text.")
    by: str = Field(default="", max_length=200, description="Who or what hands it in.")


class JaasEvent(BaseModel):
    model_config = ConfigDict(extra="ignore")

    eventType: str
    fqn: str = ""
    idempotencyKey: str = ""
    data: dict[str, Any] = {}


class Invalid(Exception):
    def __init__(self, problems: list[dict[str, str]]) -> None:
        super().__init__("; ".join(f"{p['field']}: {p['message']}" for p in problems))
        self.problems = problems


def checked_location(field: str, value: str, settings: Settings) -> str:
    """An http(s) URL the guarded fetcher would try (no literal private address), or import:<path inside the
    import folder>; Invalid naming `field` otherwise."""
    value = value.strip()
    try:
        if value.startswith(IMPORT_PREFIX):
            relative_parts(value.removeprefix(IMPORT_PREFIX))
            return value
        if not value.startswith(("http://", "https://")):
            raise Invalid([{"field": field, "message": "must be an http(s) URL or import:<path>"}])
        check_url_form(parse_url(value), FetchPolicy(allow=tuple(settings.fetch_allow)))
    except (FetchRefused, SourceRefused) as refused:
        raise Invalid([{"field": field, "message": str(refused)}]) from None
    return value


def signature_problem(secret: bytes, headers: dict[str, str], body: bytes, now: float) -> str | None:
    """Why the request is not signed now with `secret` (ours or JaaS's scheme); None when it is."""
    jaas = headers.get(JAAS_SIGNATURE_HEADER.lower())
    if not jaas:
        return signing.signature_problem(secret, headers, body, now)
    parts = dict(p.strip().split("=", 1) for p in jaas.split(",") if "=" in p)
    timestamp, given = parts.get("t", ""), parts.get("v1", "")
    if problem := signing.timestamp_problem(timestamp, now):
        return problem
    if not signing.same(base64.b64encode(signing.digest(secret, timestamp, body)), given):
        return "signature does not match the timestamp and body"
    return None


sign = signing.sign  # the headers a sender puts on a body (tests; the README's finalize script does it with openssl)


async def receive_recording(request: Request, broker: NatsBroker, settings: Settings, secret: bytes) -> JSONResponse:
    raw = await read_at_most(request, MAX_BODY_BYTES)
    if raw is None:
        return refusal(413, "body_too_large", f"the body must be at most {MAX_BODY_BYTES} bytes")
    headers = {k.lower(): v for k, v in request.headers.items()}
    if problem := signature_problem(secret, headers, raw, time.time()):
        log.warning("recordings_webhook.refused", reason="bad_signature", detail=problem)
        return refusal(401, "bad_signature", problem)
    try:
        wanted = _wanted(raw, settings)
    except Invalid as invalid:
        log.info("recordings_webhook.refused", reason="invalid_body", problems=invalid.problems)
        return refusal(422, "invalid_body", invalid.problems)
    if isinstance(wanted, JSONResponse):
        return wanted
    by_room, key, files, extra = wanted
    try:
        if by_room:
            session = await session_held_at(broker, "jitsi", key)
            missing = f"no Jitsi session of ours in room {key!r}"
        else:
            session = await stores.stored_session(broker, key)
            missing = f"no scheduled session {key!r}"
        if session is None:
            log.info("recording.unmatched", provider="jitsi" if by_room else "webhook", key=key)
            return refusal(404, "unknown_session", missing)
        if session.starts_at > utc_now():
            detail = f"session {session.id} starts at {session.starts_at.isoformat()}; send its recording once held"
            return refusal(409, "not_started", detail)
        recording = Recording.arrived(session, source="webhook", files=files, **extra)
        return await publish_recording(broker, recording, 202)
    except bus.NOT_ANSWERING as error:
        log.warning("recording.bus_unavailable", reason=bus.not_answering_reason(error))
        return refusal(503, "bus_unavailable", "NATS is not answering; retry later")


Wanted = tuple[bool, str, list[RecordingFile], dict[str, Any]]


def _wanted(raw: bytes, settings: Settings) -> Wanted | JSONResponse:
    """(by room?, session id or room, files, other Recording fields) from either body, or Invalid."""
    try:
        body = json.loads(raw)
    except ValueError as error:
        raise Invalid([{"field": "body", "message": f"not JSON ({error})"}]) from None
    if not isinstance(body, dict):
        raise Invalid([{"field": "body", "message": "must be a JSON object"}])
    if "eventType" in body:
        return _jaas(body, settings)
    try:
        ours = RecordingBody.model_validate(body)
    except ValidationError as error:
        raise Invalid(
            [
                {"field": ".".join(str(p) for p in e["loc"]) or "body", "message": e["msg"]}
                for e in error.errors(include_input=False, include_url=False)
            ]
        ) from None
    files = []
    problems: list[dict[str, str]] = []
    linked: tuple[tuple[RecordingFileKind, str, str | None], ...] = (
        ("video", "media_url", ours.media_url),
        ("transcript", "transcript_url", ours.transcript_url),
        ("chat", "chat_url", ours.chat_url),
    )
    for kind, field, value in linked:
        if value is None:
            continue
        try:
            files.append(RecordingFile(kind=kind, location=checked_location(field, value, settings)))
        except Invalid as invalid:
            problems += invalid.problems
    if problems:
        raise Invalid(problems)
    return False, ours.session_id, files, {"submitted_by": ours.by or "webhook"}


def _jaas(body: dict[str, Any], settings: Settings) -> Wanted | JSONResponse:
    try:
        event = JaasEvent.model_validate(body)
    except ValidationError:
        raise Invalid([{"field": "eventType", "message": "must be a string"}]) from None
    if event.eventType != "RECORDING_UPLOADED":
        # JaaS sends every event to one endpoint and retries a non-2xx: say it was seen
        return JSONResponse({"status": "ignored", "reason": f"{event.eventType} is not a recording"}, status_code=200)
    room = event.fqn.split("/", 1)[1] if "/" in event.fqn else ""
    if not room:
        raise Invalid([{"field": "fqn", "message": "must be <AppID>/<room name>"}])
    link = event.data.get("preAuthenticatedLink")
    if not isinstance(link, str) or not link:
        raise Invalid([{"field": "data.preAuthenticatedLink", "message": "is required"}])
    files = [RecordingFile(kind="video", location=checked_location("data.preAuthenticatedLink", link, settings))]
    extra: dict[str, Any] = {"submitted_by": "8x8 JaaS"}
    start, seconds = event.data.get("startTimestamp"), event.data.get("durationSec")
    if isinstance(start, int) and start > 0:
        extra["started_at"] = datetime.fromtimestamp(start / 1000, UTC)
    if isinstance(seconds, int) and seconds >= 0:
        extra["duration_seconds"] = seconds
    return True, room, files, extra


# --- the routes -----------------------------------------------------------------------------------------------------


def recordings_router(settings: Settings, broker: NatsBroker) -> APIRouter:
    """`POST /webhooks/zoom` and `POST /webhooks/recordings`, publishing through `broker`."""
    zoom_secret = _secret(settings.zoom_webhook_secret)
    recordings_secret = _secret(settings.recordings_webhook_secret)
    if zoom_secret is None:
        log.info("zoom.webhook_disabled", reason=f"{ZOOM_SECRET_ENV} is not set: POST {ZOOM_PATH} answers 503")
    if recordings_secret is None:
        log.info(
            "recordings_webhook.disabled",
            reason=f"{RECORDINGS_SECRET_ENV} is not set: POST {RECORDINGS_PATH} answers 503",
        )
    router = APIRouter(tags=["recordings"])

    @router.post(ZOOM_PATH, summary="Zoom's event webhook (recording.completed, recording.transcript_completed)")
    async def zoom_webhook(request: Request) -> JSONResponse:
        if zoom_secret is None:
            return refusal(503, "webhook_disabled", f"the Zoom webhook is off: set {ZOOM_SECRET_ENV}")
        return await receive_zoom_event(request, broker, zoom_secret)

    @router.post(
        RECORDINGS_PATH,
        status_code=202,
        summary="Hand in a session's recording (HMAC-signed; our body or 8x8 JaaS RECORDING_UPLOADED)",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": RecordingBody.model_json_schema()}},
            }
        },
    )
    async def recordings_webhook(request: Request) -> JSONResponse:
        if recordings_secret is None:
            return refusal(503, "webhook_disabled", f"the recordings webhook is off: set {RECORDINGS_SECRET_ENV}")
        return await receive_recording(request, broker, settings, recordings_secret)

    return router
