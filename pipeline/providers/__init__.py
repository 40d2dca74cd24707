"""Where a live session is held: a small interface and one adapter per provider (Jitsi, Zoom, YouTube Live).

An adapter is created from Settings; nothing is created at the provider before a facilitator approves. The
proposal carries `preview()` (what would be created); the actions stage calls `create()` once per session,
and after a crash mid-create calls `find()` first, so a redelivered approval never makes a second meeting.
Provider errors surface as PermanentError (bad or expired token, quota exceeded: a person must act) or
RetryableError (5xx, timeouts, rate limits that reset soon), each with a reason an operator can act on.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Protocol

from pydantic import BaseModel, ConfigDict, Field

from pipeline.errors import PermanentError

if TYPE_CHECKING:  # the type only: settings are passed in at run time
    from pipeline.settings import Settings
from pipeline.messages import Provider, ProviderPreview

__all__ = ["CreatedSession", "ProviderPreview", "ProviderRefused", "SessionProvider", "SessionRequest"]


class SessionRequest(BaseModel):
    """What to create: the approved proposal's fields, plus the session id used to find it again."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    session_id: str
    title: str
    description: str
    starts_at: datetime
    duration_minutes: int = Field(gt=0)
    timezone: str = "UTC"

    @property
    def ends_at(self) -> datetime:
        return self.starts_at + timedelta(minutes=self.duration_minutes)

    @property
    def marker(self) -> str:
        """Written into the meeting's agenda/description so `find()` can recognise our own meeting."""
        return f"impromptu-session: {self.session_id}"


class CreatedSession(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    provider: str
    provider_id: str = Field(description="The provider's id of the meeting or broadcast (Jitsi: the room name).")
    join_url: str
    details: dict[str, str] = Field(default_factory=dict, description="Non-secret extras (e.g. stream key name).")


class ProviderRefused(PermanentError):
    """The provider said no in a way retrying will not fix (bad/expired token, quota, invalid request)."""


class SessionProvider(Protocol):
    name: Provider

    def preview(self, request: SessionRequest) -> ProviderPreview: ...

    async def create(self, request: SessionRequest) -> CreatedSession: ...

    async def find(self, request: SessionRequest) -> CreatedSession | None:
        """The session created earlier for `request.session_id` (a crash between create and record), else None."""
        ...

    async def cancel(self, created: CreatedSession) -> None: ...


def provider_from_settings(settings: Settings) -> SessionProvider:
    """The adapter `settings.session_provider` names (imported here: the adapters import this module)."""
    if settings.session_provider == "zoom":
        from pipeline.providers.zoom import ZoomProvider

        return ZoomProvider(settings)
    if settings.session_provider == "youtube":
        from pipeline.providers.youtube import YouTubeProvider

        return YouTubeProvider(settings)
    from pipeline.providers.jitsi import JitsiProvider

    return JitsiProvider(settings.jitsi_base_url)
