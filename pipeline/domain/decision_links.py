"""Signed one-click decision links for a facilitator's e-mail notice (the web's `/decide/{token}` checks them).

A token names the proposal, the decision, the login it was issued to and when it expires (the proposal's decision
deadline), signed with a key derived from the web secret (itsdangerous, HMAC-SHA256)."""

from __future__ import annotations

from datetime import UTC
from typing import Literal

from itsdangerous import URLSafeSerializer
from pydantic import BaseModel, ConfigDict

from pipeline.domain.notify import DecisionLinks
from pipeline.keys import derived_key, web_secret
from pipeline.messages import SessionProposal
from pipeline.settings import Settings

PATH = "/decide"
SALT = "impromptu.email-decision"


class DecisionToken(BaseModel):
    """What a link's token carries (signed, readable: nothing secret in it)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    p: str  # proposal id
    d: Literal["approved", "rejected"]
    f: str  # the login it was issued to
    x: int  # expires, Unix seconds


def token_serializer(settings: Settings) -> URLSafeSerializer:
    return URLSafeSerializer(derived_key(web_secret(settings), "email-decision-links"), salt=SALT)


def decision_links(settings: Settings, proposal: SessionProposal, login: str) -> DecisionLinks:
    """`login`'s Approve and Reject links for `proposal`, valid until its decision deadline."""
    serializer = token_serializer(settings)
    expires = int(proposal.expires_at.timestamp())

    def url(decision: str) -> str:
        token = serializer.dumps(DecisionToken(p=proposal.id, d=decision, f=login, x=expires).model_dump())  # type: ignore[arg-type]
        return f"{settings.base_url}{PATH}/{token}"

    return DecisionLinks(
        login=login,
        approve=url("approved"),
        reject=url("rejected"),
        expires_human=f"{proposal.expires_at.astimezone(UTC):%a %d %b %H:%M} UTC",
    )
