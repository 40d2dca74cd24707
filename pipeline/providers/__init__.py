"""Where a live session is held: what every session provider adapter shares, and one adapter file per provider
(Jitsi, Zoom, YouTube Live), listed in `pipeline.providers.registry`.

An adapter is created from its section of the Settings; nothing is created at the provider before a facilitator
approves. The proposal carries `preview()` (what would be created); the actions stage calls `create()` once per session,
and after a crash mid-create calls `find()` first, so a redelivered approval never makes a second meeting.
Provider errors surface as PermanentError (bad or expired token, quota exceeded: a person must act) or
RetryableError (5xx, timeouts, rate limits that reset soon), each with a reason an operator can act on.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, ClassVar, Protocol, Self

from pydantic import BaseModel, ConfigDict, Field

from pipeline.errors import PermanentError
from pipeline.messages import ProviderPreview
from pipeline.settings import SettingsSection

if TYPE_CHECKING:  # the type only: settings are passed in at run time
    from pipeline.settings import Settings

__all__ = [
    "CreatedSession",
    "ProviderAdapter",
    "ProviderPreview",
    "ProviderRefused",
    "ProviderSettings",
    "SessionProvider",
    "SessionRequest",
]


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
    @property
    def name(self) -> str: ...

    def preview(self, request: SessionRequest) -> ProviderPreview: ...

    async def create(self, request: SessionRequest) -> CreatedSession: ...

    async def find(self, request: SessionRequest) -> CreatedSession | None:
        """The session created earlier for `request.session_id` (a crash between create and record), else None."""
        ...

    async def cancel(self, created: CreatedSession) -> None: ...


class ProviderSettings(SettingsSection):
    """A provider's section of the settings, declared in its adapter's file (see `SettingsSection`)."""

    provider_timeout_seconds: float = 15.0  # every provider's: how long one API call may take


class ProviderAdapter(ABC):
    """Everything about one session provider, in its adapter's file: the adapter classes derive from this and are
    listed in `pipeline.providers.registry.ADAPTERS` (a test or a plugin adds one with `register`).

    The class attributes and class methods are the provider's rules, used without an instance (the approval page's
    stand-in link); an instance, made by `from_settings` from its section only, previews, creates, finds and
    cancels sessions (the `SessionProvider` protocol)."""

    name: ClassVar[str]  # IMPROMPTU_SESSION_PROVIDER's value, the proposal's and the session's `provider`
    Section: ClassVar[type[ProviderSettings]] = ProviderSettings  # its section of the settings

    @classmethod
    @abstractmethod
    def stand_in_join_url(cls, settings: Settings, title: str) -> str:
        """A join link of realistic length for previews of a session not yet made (the announcements' length)."""

    @classmethod
    @abstractmethod
    def from_settings(cls, settings: Settings) -> Self:
        """The adapter, configured from its section of `settings` (`Section.of(settings)`)."""

    # --- what an instance does: the `SessionProvider` protocol ---

    @abstractmethod
    def preview(self, request: SessionRequest) -> ProviderPreview:
        """What approving will create, shown on the proposal (nothing is created before approval)."""

    @abstractmethod
    async def create(self, request: SessionRequest) -> CreatedSession: ...

    @abstractmethod
    async def find(self, request: SessionRequest) -> CreatedSession | None:
        """The session created earlier for `request.session_id` (a crash between create and record), else None."""

    @abstractmethod
    async def cancel(self, created: CreatedSession) -> None: ...


def provider_from_settings(settings: Settings) -> ProviderAdapter:
    """The adapter `settings.session_provider` names (the registry is imported here: it imports the adapters, which
    import this module)."""
    from pipeline.providers.registry import provider_from_settings as from_registry

    return from_registry(settings)
