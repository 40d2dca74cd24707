"""One-click decisions from an e-mail notice: `GET /decide/{token}` shows a confirm page, `POST /decide/{token}`
decides.

A token names the proposal, the decision, the login it was issued to and when it expires (the proposal's decision
deadline), signed with a key derived from the web secret (itsdangerous, HMAC-SHA256; a forged or altered token does
not verify). A GET never decides: mail scanners and link previews open links. The POST first claims the token on the
bus (create-only key `notify.link.<digest>` in the outreach bucket), so two clicks, two tabs or two workers decide
once, then decides through `Approvals`, the same state machine and audit trail as the approval pages. An expired,
used, forged or withdrawn link gets a page saying so (never JSON, never a traceback). Reads: the proposals bucket;
writes: the claim, and the decision (through the state machine).
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any, Literal

import structlog
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from itsdangerous import BadSignature
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from pydantic import BaseModel, ConfigDict, ValidationError

from pipeline import stores
from pipeline.actions.service import Approvals
from pipeline.domain.approval import DecisionRefused, who_decided
from pipeline.domain.decision_links import PATH, DecisionToken, token_serializer
from pipeline.domain.notify import timeout_said
from pipeline.messages import SessionProposal, utc_now
from pipeline.settings import Settings
from pipeline.web.auth import has_role
from pipeline.web.templating import render_page, secured

log = structlog.get_logger("pipeline.actions.links")

TOKEN_MAX = 1000  # a token is ~200 characters; anything longer is not one of ours
REASON_MAX = 2000
VERBS = {"approved": "Approve", "rejected": "Reject"}


class LinkClaim(BaseModel):
    """Kept on the bus once a link is used: a second click finds it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    state: Literal["deciding", "used"]
    at: datetime
    outcome: str = ""


class LinkRefused(Exception):
    def __init__(self, status: int, title: str, message: str) -> None:
        super().__init__(message)
        self.status, self.title, self.message = status, title, message


def read_token(settings: Settings, token: str, now: datetime) -> DecisionToken:
    """The token's content, or LinkRefused saying why it cannot be used (forged, expired, login withdrawn)."""
    forged = LinkRefused(
        400,
        "This link is not valid",
        "The link is incomplete or was altered (a mail program may have cut it). Open the proposal from the "
        "approval pages instead.",
    )
    if len(token) > TOKEN_MAX:
        raise forged
    try:
        decided = DecisionToken.model_validate(token_serializer(settings).loads(token))
    except (BadSignature, ValidationError, ValueError, TypeError):
        raise forged from None
    if now.timestamp() >= decided.x:
        expired = datetime.fromtimestamp(decided.x, UTC)
        raise LinkRefused(
            410,
            "This link has expired",
            f"It worked until {expired:%a %d %b %H:%M} UTC, the proposal's decision deadline. Open the proposal "
            "from the approval pages to see what became of it.",
        )
    if not has_role(settings, decided.f, "facilitator"):
        raise LinkRefused(
            403,
            "This link no longer works",
            f"It was issued to the login {decided.f!r}, which is no longer a facilitator.",
        )
    return decided


def claim_key(token: str) -> str:
    return "notify.link." + hashlib.sha256(token.encode()).hexdigest()[:48]


def _page(status: int, **context: Any) -> Response:
    values = {"title": "", "message": "", "proposal": None, "form": None, **context}
    html = render_page("approval/decide.html", values)
    return secured(HTMLResponse(html, status_code=status))


def _refused(refusal: LinkRefused) -> Response:
    return _page(refusal.status, title=refusal.title, message=refusal.message)


def _facts(proposal: SessionProposal) -> dict[str, str]:
    return {
        "title": proposal.title,
        "starts": f"{proposal.starts_at.astimezone(UTC):%a %d %b %Y, %H:%M} UTC",
        "duration": f"{proposal.duration_minutes} minutes",
        "channels": ", ".join(proposal.channels) or "none",
        "deadline": f"{proposal.expires_at.astimezone(UTC):%a %d %b %H:%M} UTC, {timeout_said(proposal)}",
        "url": proposal.content.article.final_url,
    }


def links_router(settings: Settings, approvals: Approvals) -> APIRouter:
    router = APIRouter(include_in_schema=False)

    async def used(token: str) -> LinkClaim | None:
        kv = await stores.bucket(approvals.broker, stores.OUTREACH)
        try:
            entry = await kv.get(claim_key(token))
        except KeyNotFoundError:
            return None
        return LinkClaim.model_validate_json(entry.value) if entry.value else None

    def used_page(claim: LinkClaim) -> Response:
        said = f" ({claim.outcome})" if claim.outcome else ""
        return _page(
            409,
            title="This link was already used",
            message=f"It was used at {claim.at.astimezone(UTC):%H:%M:%S} UTC{said}; each link decides once.",
        )

    @router.get(PATH + "/{token}")
    async def confirm_page(token: str) -> Response:
        try:
            decided = read_token(settings, token, utc_now())
        except LinkRefused as refusal:
            return _refused(refusal)
        if (claim := await used(token)) is not None:
            return used_page(claim)
        try:
            record = await approvals.get(decided.p)
        except DecisionRefused:
            return _page(404, title="No such proposal", message="The proposal this link was for is gone.")
        if record.state != "proposed":
            return _page(409, title="Already decided", message=who_decided(record), proposal=_facts(record.proposal))
        verb = VERBS[decided.d]
        return _page(
            200,
            title=f"{verb} this session?",
            message=f"You are about to {verb.lower()} it as {decided.f}. Nothing happens until you press the button.",
            proposal=_facts(record.proposal),
            form={"verb": verb, "action": f"{PATH}/{token}", "reason": decided.d == "rejected"},
        )

    @router.post(PATH + "/{token}")
    async def decide(token: str, request: Request) -> Response:
        try:
            decided = read_token(settings, token, utc_now())
        except LinkRefused as refusal:
            return _refused(refusal)
        reason = ""
        if decided.d == "rejected":
            form = await request.form()
            given = form.get("reason")
            reason = " ".join(given.split())[:REASON_MAX] if isinstance(given, str) else ""
            reason = reason or f"rejected by e-mail link by {decided.f}"
        kv = await stores.bucket(approvals.broker, stores.OUTREACH)
        key = claim_key(token)
        try:
            revision = await kv.create(key, LinkClaim(state="deciding", at=utc_now()).model_dump_json().encode())
        except KeyWrongLastSequenceError:
            claim = await used(token)
            return used_page(claim or LinkClaim(state="used", at=utc_now()))
        try:
            if decided.d == "approved":
                record = await approvals.approve(decided.p, by=decided.f)
            else:
                record = await approvals.reject(decided.p, by=decided.f, reason=reason)
        except DecisionRefused as error:
            claim = LinkClaim(state="used", at=utc_now(), outcome=f"refused: {error}")
            await kv.update(key, claim.model_dump_json().encode(), revision)
            log.info("proposal.link_refused", proposal_id=decided.p, by=decided.f, reason=str(error))
            return _page(409, title="Not done", message=str(error))
        except BaseException:
            await kv.delete(key, last=revision)  # nothing was decided (NATS away): the link may be used again
            raise
        outcome = f"{record.state} by {decided.f}"
        await kv.update(
            key, LinkClaim(state="used", at=utc_now(), outcome=outcome).model_dump_json().encode(), revision
        )
        log.info("proposal.decided_by_link", proposal_id=decided.p, by=decided.f, decision=decided.d)
        done = "Approved" if decided.d == "approved" else "Rejected"
        return _page(
            200,
            title=f"{done}, thank you",
            message=f"{done} as {decided.f}; recorded in the proposal's history."
            + (" The session is being created and announced." if decided.d == "approved" else f" Reason: {reason}"),
            proposal=_facts(record.proposal),
        )

    return router
