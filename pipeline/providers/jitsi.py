"""Jitsi Meet: no account and no API. The room exists once someone joins, so its name must be unguessable."""

from __future__ import annotations

import re
import secrets
from typing import ClassVar

from pipeline.messages import Provider
from pipeline.providers import CreatedSession, ProviderAdapter, ProviderPreview, ProviderSettings, SessionRequest
from pipeline.settings import Settings


class JitsiSettings(ProviderSettings):
    jitsi_base_url: str = "https://meet.jit.si"


def jitsi_room_url(base_url: str, title: str, token: str | None = None) -> str:
    """Jitsi has no API: the room exists once someone joins, so the name itself must be unguessable. `token` is
    for previews only (a stand-in of the real length); by default 22 random URL-safe characters."""
    slug = re.sub(r"[^A-Za-z0-9]+", "-", title)[:40].strip("-") or "Session"
    token = token or secrets.token_urlsafe(16).replace("_", "x").replace("-", "y")
    return f"{base_url.rstrip('/')}/Impromptu-{slug}-{token}"


class JitsiProvider(ProviderAdapter):
    name: ClassVar[Provider] = "jitsi"
    Section = JitsiSettings

    @classmethod
    def stand_in_join_url(cls, settings: Settings, title: str) -> str:
        return jitsi_room_url(JitsiSettings.of(settings).jitsi_base_url, title, token="x" * 22)

    @classmethod
    def from_settings(cls, settings: Settings) -> JitsiProvider:
        return cls(JitsiSettings.of(settings).jitsi_base_url)

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
