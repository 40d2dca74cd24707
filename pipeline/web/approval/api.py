"""The approval JSON API under /api: the same actions as the pages, for scripts and chat bots, by Bearer token.

No cookie is honoured here, so no CSRF token is needed: a browser never sends an Authorization header on its own.
Refusals are JSON `{"error", "detail", "problems"}`: 404 `not_found`, 409 `refused` (already decided, by whom and
when; lapsed; not in a state that allows it), 422 `invalid_edit` (`problems`: field -> message). A missing or unknown
token is 401 `{"detail"}` with WWW-Authenticate: Bearer; a body that is not even JSON of the right shape is FastAPI's
own 422 `{"detail": [...]}`. When NATS times out or refuses, 503 `unavailable` with Retry-After (web/server.py).
"""

from collections.abc import Awaitable, Callable
from typing import Annotated

import structlog
from fastapi import APIRouter, Depends, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator

from pipeline.actions.service import RECENT, Announcement, Approvals, ChannelPreview, EditRefused, ProposalEdit
from pipeline.domain.approval import DecisionRefused, ProposalRecord
from pipeline.messages import ProposalState
from pipeline.settings import Settings
from pipeline.web.auth import api_facilitator

log = structlog.get_logger("pipeline.web.api")

REASON_MAX = 2000


class Refusal(BaseModel):
    error: str = Field(description="not_found, refused, invalid_edit or unavailable")
    detail: str = Field(description="What is wrong, for people (e.g. who decided first, and when).")
    problems: dict[str, str] = Field(default_factory=dict, description="invalid_edit: field -> message.")


class ProposalDetail(BaseModel):
    record: ProposalRecord
    previews: list[ChannelPreview] = Field(description="Each channel's announcement as it would be posted.")
    channels_available: list[str] = Field(description="Channels an edit may choose from.")
    announcements: list[Announcement] = Field(
        default_factory=list, description="Once scheduled: what each channel posted (with a link) or why it failed."
    )


class Reason(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=1, max_length=REASON_MAX, description="Why; kept in the audit history.")

    @field_validator("reason")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        value = " ".join(value.split())
        if not value:
            raise ValueError("must not be blank")
        return value


REFUSALS: dict[int | str, dict[str, object]] = {
    401: {"description": 'No or an unknown Bearer token: `{"detail"}` with WWW-Authenticate: Bearer.'},
    404: {"model": Refusal, "description": "No such proposal."},
    409: {"model": Refusal, "description": "Refused: already decided (by whom, when), lapsed, or not allowed now."},
    503: {"model": Refusal, "description": "NATS did not answer or refused (the reason); retry after Retry-After."},
}


def refusal(status: int, error: str, detail: str, problems: dict[str, str] | None = None) -> JSONResponse:
    body = Refusal(error=error, detail=detail, problems=problems or {})
    return JSONResponse(body.model_dump(), status_code=status)


def api_router(settings: Settings, approvals: Approvals) -> APIRouter:
    router = APIRouter(prefix="/api", tags=["approval"], responses=REFUSALS)
    Facilitator = Annotated[str, Depends(api_facilitator(settings))]

    async def known(proposal_id: str) -> ProposalRecord | JSONResponse:
        try:
            return await approvals.get(proposal_id)
        except DecisionRefused as error:
            return refusal(404, "not_found", str(error))

    def refused(proposal_id: str, who: str, error: DecisionRefused) -> JSONResponse:
        log.info("api.action_refused", proposal_id=proposal_id, by=who, reason=str(error))
        return refusal(409, "refused", str(error))

    async def decided(
        proposal_id: str, who: str, step: Callable[[], Awaitable[ProposalRecord]]
    ) -> ProposalRecord | JSONResponse:
        """404 for an unknown proposal, 409 with the reason when the service refuses, else the new record."""
        if isinstance(found := await known(proposal_id), JSONResponse):
            return found
        try:
            return await step()
        except DecisionRefused as error:
            return refused(proposal_id, who, error)

    @router.get(
        "/proposals",
        summary="Proposals, newest first: all of those in play in `state` (proposed, approved, scheduled, live), "
        "else those among the newest `limit`.",
    )
    async def list_proposals(
        who: Facilitator, state: ProposalState | None = None, limit: Annotated[int, Query(ge=1, le=1000)] = RECENT
    ) -> list[ProposalRecord]:
        return await approvals.listed(state, limit)

    @router.get(
        "/proposals/{proposal_id}",
        response_model=ProposalDetail,
        summary="One proposal with each channel's announcement preview.",
    )
    async def get_proposal(who: Facilitator, proposal_id: str) -> ProposalDetail | JSONResponse:
        record = await known(proposal_id)
        if isinstance(record, JSONResponse):
            return record
        return ProposalDetail(
            record=record,
            previews=await approvals.previews(record),
            channels_available=approvals.channels_available(),
            announcements=await approvals.announcements(record),
        )

    @router.patch(
        "/proposals/{proposal_id}",
        response_model=ProposalRecord,
        summary="Edit a proposal still awaiting a decision; fields left out stay as they are.",
        responses={422: {"model": Refusal, "description": "The edit does not validate: problems per field."}},
    )
    async def edit_proposal(who: Facilitator, proposal_id: str, edit: ProposalEdit) -> ProposalRecord | JSONResponse:
        if isinstance(found := await known(proposal_id), JSONResponse):
            return found
        try:
            return await approvals.edit(proposal_id, edit, by=who)
        except EditRefused as error:
            return refusal(422, "invalid_edit", str(error), error.problems)
        except DecisionRefused as error:
            return refused(proposal_id, who, error)

    @router.post(
        "/proposals/{proposal_id}/approve",
        response_model=ProposalRecord,
        summary="Approve: the session is created and announced.",
    )
    async def approve_proposal(
        who: Facilitator,
        proposal_id: str,
        version: Annotated[
            int | None,
            Query(
                ge=0, description="The record's version you looked at (len(history)): refused (409) if edited since."
            ),
        ] = None,
    ) -> ProposalRecord | JSONResponse:
        return await decided(proposal_id, who, lambda: approvals.approve(proposal_id, by=who, seen_version=version))

    @router.post(
        "/proposals/{proposal_id}/reject",
        response_model=ProposalRecord,
        summary="Reject, with the reason; nothing is created.",
    )
    async def reject_proposal(who: Facilitator, proposal_id: str, body: Reason) -> ProposalRecord | JSONResponse:
        return await decided(proposal_id, who, lambda: approvals.reject(proposal_id, by=who, reason=body.reason))

    @router.post(
        "/proposals/{proposal_id}/cancel",
        response_model=ProposalRecord,
        summary="Cancel an approved or scheduled session, with the reason.",
    )
    async def cancel_proposal(who: Facilitator, proposal_id: str, body: Reason) -> ProposalRecord | JSONResponse:
        return await decided(proposal_id, who, lambda: approvals.cancel(proposal_id, by=who, reason=body.reason))

    return router
