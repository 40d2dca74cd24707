"""Jitsi Meet: no account and no API. The room exists once someone joins, so its name must be unguessable."""

from __future__ import annotations

from pipeline.domain.sessions import jitsi_room_url
from pipeline.messages import Provider
from pipeline.providers import CreatedSession, ProviderPreview, SessionRequest


class JitsiProvider:
    name: Provider = "jitsi"

    def __init__(self, base_url: str = "https://meet.jit.si") -> None:
        self.base_url = base_url.rstrip("/")

    def preview(self, request: SessionRequest) -> ProviderPreview:
        return ProviderPreview(
            provider=self.name,
            summary=f"Jitsi room on {self.base_url} (no account; the link is made on approval)",
            details={"server": self.base_url},
        )

    async def create(self, request: SessionRequest) -> CreatedSession:
        join_url = jitsi_room_url(self.base_url, request.title)
        return CreatedSession(provider=self.name, provider_id=join_url.rsplit("/", 1)[1], join_url=join_url)

    async def find(self, request: SessionRequest) -> CreatedSession | None:
        return None  # nothing exists at Jitsi until someone joins: a fresh room is as good as a lost one

    async def cancel(self, created: CreatedSession) -> None:
        return None
