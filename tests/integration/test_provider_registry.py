"""A session provider is one adapter class: a made-up "pigeon" provider, defined here and nowhere else, is the one
IMPROMPTU_SESSION_PROVIDER picks (as the actions stage asks `provider_from_settings`), configured from its own
IMPROMPTU_ variable, and creates each session once through the actions stage's `create_once`.

Its name cannot cross the bus: `messages.Provider`, the contract of proposals and sessions, names the shipped
providers, so a shipped provider's name is one word there too (tests/unit/test_provider_registry.py)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import ClassVar

import pytest
from faststream.nats import NatsBroker
from pydantic import Field

from pipeline import stores
from pipeline.actions import create_once
from pipeline.domain.sessions import session_id_for
from pipeline.messages import utc_now
from pipeline.providers import (
    CreatedSession,
    ProviderAdapter,
    ProviderPreview,
    ProviderSettings,
    SessionRequest,
    provider_from_settings,
)
from pipeline.providers.registry import register, unregister
from pipeline.settings import Settings

pytestmark = pytest.mark.nats

LOFT: dict[str, CreatedSession] = {}  # the sessions the pigeons carried invitations for, by session id


class PigeonSettings(ProviderSettings):
    pigeon_loft: str = Field(default="", description="Where the pigeons fly from.")


class PigeonProvider(ProviderAdapter):
    name: ClassVar[str] = "pigeon"
    Section = PigeonSettings

    @classmethod
    def stand_in_join_url(cls, settings: Settings, title: str) -> str:
        return f"pigeon://{PigeonSettings.of(settings).pigeon_loft}/" + "x" * 12

    @classmethod
    def from_settings(cls, settings: Settings) -> PigeonProvider:
        return cls(PigeonSettings.of(settings))

    def __init__(self, section: PigeonSettings) -> None:
        self.loft = section.pigeon_loft
        self.creates = 0

    def preview(self, request: SessionRequest) -> ProviderPreview:
        # messages.Provider, the bus contract, names the shipped providers only: built without validation
        return ProviderPreview.model_construct(provider=self.name, summary=f"Pigeons from {self.loft}", details={})

    async def create(self, request: SessionRequest) -> CreatedSession:
        self.creates += 1
        made = CreatedSession(
            provider=self.name, provider_id=request.session_id, join_url=f"pigeon://{self.loft}/{request.session_id}"
        )
        LOFT[request.session_id] = made
        return made

    async def find(self, request: SessionRequest) -> CreatedSession | None:
        return LOFT.get(request.session_id)

    async def cancel(self, created: CreatedSession) -> None:
        LOFT.pop(created.provider_id, None)


@pytest.fixture
def pigeon(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    """The pigeon provider registered and chosen, its loft set in the environment only."""
    monkeypatch.setenv("IMPROMPTU_PIGEON_LOFT", "rooftop")
    register(PigeonProvider)
    LOFT.clear()
    try:
        yield settings.model_copy(update={"session_provider": "pigeon"})
    finally:
        unregister("pigeon")


async def test_a_registered_provider_is_chosen_by_its_name_and_creates_each_session_once(
    pigeon: Settings, client: NatsBroker
) -> None:
    provider = provider_from_settings(pigeon)
    assert isinstance(provider, PigeonProvider) and provider.loft == "rooftop"
    request = SessionRequest(
        session_id=session_id_for("proposal-pigeon"),
        title="Live",
        description="",
        starts_at=utc_now(),
        duration_minutes=30,
    )
    kv = await stores.bucket(client, stores.SESSIONS)
    first = await create_once(kv, provider, request)
    assert await create_once(kv, provider, request) == first
    assert (first.provider, first.join_url, provider.creates) == ("pigeon", f"pigeon://rooftop/{request.session_id}", 1)
