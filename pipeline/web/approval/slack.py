"""`POST /slack/actions`: Approve / Reject clicked in a Slack notice (Slack's interactivity request URL).

Checks, in this order, the first that fails answering:
- 413: a body larger than MAX_BODY_BYTES (from Content-Length, or while reading);
- 401: IMPROMPTU_SLACK_SIGNING_SECRET unset, or the request not signed with it as Slack signs:
  `X-Slack-Signature: v0=<hex HMAC-SHA256(secret, "v0:" + X-Slack-Request-Timestamp + ":" + raw body)>`, the
  timestamp within 5 minutes of now, compared in constant time. Nothing is parsed before this;
- 400: not a form-encoded `payload=<json>` of an interaction.
A signed `block_actions` click is answered 200 at once (Slack waits 3 s); the clicking Slack member (`user.id`) must
be a facilitator login's `slack_user_id`, else they get an ephemeral reply saying how to be linked. The decision goes
through `Approvals` (the same state machine and audit trail as the pages): approve, or reject with the reason
"rejected from Slack by <login>". Then the notice is replaced through the payload's `response_url` with the outcome,
or the clicker is told (ephemerally) why it was refused. A replayed click is the same decision again, which the
state machine takes as already done: nothing is decided twice. The secret and signatures are never logged.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import time
from collections.abc import Mapping
from datetime import UTC
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import structlog
from fastapi import APIRouter, BackgroundTasks, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pipeline.actions.service import Approvals
from pipeline.domain.approval import DecisionRefused, ProposalRecord, who_decided
from pipeline.domain.notify import APPROVE_ACTION, REJECT_ACTION, SIGNING_ENV, proposal_link, slack_outcome
from pipeline.redaction import printable
from pipeline.settings import Settings
from pipeline.web.shares import read_at_most

log = structlog.get_logger("pipeline.actions.slack")

PATH = "/slack/actions"
SIGNATURE_HEADER = "X-Slack-Signature"
TIMESTAMP_HEADER = "X-Slack-Request-Timestamp"
VERSION = "v0"
WINDOW_SECONDS = 300
MAX_BODY_BYTES = 64 * 1024  # a click on our notice is a few KiB (it carries the message's blocks)
RESPONSE_TIMEOUT_SECONDS = 10.0


class SlackUser(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    id: str = Field(max_length=64)
    username: str | None = Field(default=None, max_length=256)


class SlackAction(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    action_id: str = Field(max_length=255)
    value: str | None = Field(default=None, max_length=2000)


class BlockActions(BaseModel):
    """The parts of Slack's block_actions payload this route reads."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    type: str = Field(max_length=64)
    user: SlackUser
    actions: list[SlackAction] = Field(default_factory=list, max_length=25)
    response_url: str | None = Field(default=None, max_length=2000)


def signature_problem(secret: bytes, headers: Mapping[str, str], body: bytes, now: float) -> str | None:
    """Why the request (`headers` with lowercase names) is not signed by Slack with `secret` now; None when it is."""
    timestamp = headers.get(TIMESTAMP_HEADER.lower(), "")
    signature = headers.get(SIGNATURE_HEADER.lower(), "")
    if not timestamp.isdigit() or len(timestamp) > 12:
        return f"missing or malformed {TIMESTAMP_HEADER}"
    if abs(now - int(timestamp)) > WINDOW_SECONDS:
        return f"{TIMESTAMP_HEADER} is more than {WINDOW_SECONDS} s from now: a replay, or a clock to set right"
    if not signature.startswith(f"{VERSION}="):
        return f"missing {SIGNATURE_HEADER}: {VERSION}=<hex HMAC-SHA256>"
    expected = VERSION + "=" + hmac.new(secret, f"{VERSION}:{timestamp}:".encode() + body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected.encode(), signature.encode("latin-1")):
        return "signature does not match the timestamp and body"
    return None


def slack_headers(secret: bytes, body: bytes, timestamp: str) -> dict[str, str]:
    """The headers Slack puts on `body` at `timestamp` (for tests and local tools)."""
    digest = hmac.new(secret, f"{VERSION}:{timestamp}:".encode() + body, hashlib.sha256).hexdigest()
    return {TIMESTAMP_HEADER: timestamp, SIGNATURE_HEADER: f"{VERSION}={digest}"}


def parse_payload(body: bytes) -> BlockActions | str:
    """The interaction, or why the body is not one."""
    try:
        form = parse_qs(body.decode("utf-8"), max_num_fields=10, strict_parsing=True)
        (raw,) = form["payload"]
        data = json.loads(raw)
        return BlockActions.model_validate(data)
    except (UnicodeDecodeError, ValueError, KeyError):
        return "the body must be form-encoded payload=<JSON of a Slack interaction>"
    except ValidationError as error:
        fields = ", ".join(".".join(map(str, e["loc"])) for e in error.errors(include_url=False))
        return f"not a Slack interaction payload ({fields})"


def login_for(settings: Settings, user: SlackUser) -> str | None:
    """The facilitator login linked to this Slack member id (not the username: members may change that)."""
    for name, login in sorted(settings.current_logins().items()):
        if login.slack_user_id and login.slack_user_id == user.id and "facilitator" in login.roles:
            return name
    return None


def response_url_allowed(url: str) -> bool:
    """Slack's response_url is https (hooks.slack.com); plain http only to this machine (a local stand-in)."""
    try:
        parts = urlsplit(url)
        if parts.scheme == "https" and parts.hostname:
            return True
        if parts.scheme == "http" and parts.hostname:
            host = parts.hostname
            return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
    return False


async def respond(url: str, body: dict[str, Any]) -> None:
    """Post to the click's response_url; a failure is logged (with the host only: the URL is a capability)."""
    host = urlsplit(url).hostname
    try:
        async with httpx.AsyncClient(timeout=RESPONSE_TIMEOUT_SECONDS, follow_redirects=False) as client:
            answer = await client.post(url, json=body)
    except httpx.HTTPError as error:
        log.warning("slack.response_failed", host=host, reason=type(error).__name__)
        return
    if answer.status_code >= 300:
        log.warning("slack.response_failed", host=host, status=answer.status_code, body=printable(answer.text, 200))


def ephemeral(text: str) -> dict[str, Any]:
    return {"response_type": "ephemeral", "replace_original": False, "text": text}


def outcome_of(record: ProposalRecord) -> str:
    entry = next((e for e in reversed(record.history) if e.to_state in ("approved", "rejected")), record.last)
    if entry is None:
        return record.state.capitalize()
    said = f"{entry.to_state.capitalize()} by {entry.by} at {entry.at.astimezone(UTC):%H:%M} UTC"
    return f"{said}: {entry.reason}" if entry.to_state == "rejected" and entry.reason else said


def slack_router(settings: Settings, approvals: Approvals) -> APIRouter:
    router = APIRouter(include_in_schema=False)

    def refuse(status: int, error: str, detail: str) -> JSONResponse:
        log.warning("slack.refused", status=status, error=error, detail=detail)
        return JSONResponse({"error": error, "detail": detail}, status_code=status)

    @router.post(PATH)
    async def slack_actions(request: Request, background: BackgroundTasks) -> Response:
        body = await read_at_most(request, MAX_BODY_BYTES)
        if body is None:
            return refuse(413, "body_too_large", f"the body must be at most {MAX_BODY_BYTES} bytes")
        secret = settings.slack_signing_secret.get_secret_value() if settings.slack_signing_secret else ""
        if not secret.strip():
            return refuse(401, "slack_disabled", f"{SIGNING_ENV} is not set: no click can be verified")
        headers = {key.lower(): value for key, value in request.headers.items()}
        if (problem := signature_problem(secret.encode(), headers, body, time.time())) is not None:
            return refuse(401, "bad_signature", problem)
        payload = parse_payload(body)
        if isinstance(payload, str):
            return refuse(400, "invalid_payload", payload)
        action = payload.actions[0] if payload.actions else None
        if payload.type != "block_actions" or action is None or action.action_id not in (APPROVE_ACTION, REJECT_ACTION):
            return Response(status_code=200)  # e.g. the "Review proposal" link button: Slack wants an ack only
        reply_to = payload.response_url if payload.response_url and response_url_allowed(payload.response_url) else None

        def reply(body: dict[str, Any]) -> None:
            if reply_to is not None:
                background.add_task(respond, reply_to, body)

        proposal_id = (action.value or "").strip()
        login = login_for(settings, payload.user)
        if login is None:
            log.warning("slack.unknown_user", slack_user=payload.user.id, proposal_id=proposal_id)
            reply(
                ephemeral(
                    f"Your Slack account ({payload.user.id}) is not linked to a facilitator login, so nothing was "
                    f"decided. An admin links it with `impromptu facilitators link NAME --slack-user {payload.user.id}`"
                    f"; or decide on the page: {proposal_link(settings, proposal_id)}"
                )
            )
            return Response(status_code=200)
        try:
            if action.action_id == APPROVE_ACTION:
                record = await approvals.approve(proposal_id, by=login)
            else:
                record = await approvals.reject(proposal_id, by=login, reason=f"rejected from Slack by {login}")
        except DecisionRefused as error:
            log.info("slack.decision_refused", proposal_id=proposal_id, by=login, reason=str(error))
            reply(ephemeral(f"Not done: {error}"))
            try:
                current = await approvals.get(proposal_id)
            except DecisionRefused:
                return Response(status_code=200)
            if current.state != "proposed":  # decided elsewhere: the notice stops offering buttons
                link = proposal_link(settings, proposal_id)
                reply(slack_outcome(current.proposal, link, who_decided(current)))
            return Response(status_code=200)
        log.info("proposal.decided_in_slack", proposal_id=proposal_id, by=login, state=record.state)
        reply(slack_outcome(record.proposal, proposal_link(settings, proposal_id), outcome_of(record)))
        return Response(status_code=200)

    return router
