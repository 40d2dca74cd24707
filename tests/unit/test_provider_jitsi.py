"""The Jitsi adapter (no account, no API: an unguessable room name) and choosing the adapter from settings."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from pipeline.providers import CreatedSession, SessionRequest, provider_from_settings
from pipeline.providers.jitsi import JitsiProvider
from pipeline.providers.youtube import YouTubeProvider
from pipeline.providers.zoom import ZoomProvider
from pipeline.settings import Settings

REQUEST = SessionRequest(
    session_id="s-1",
    title="Why eLearning Isn't Working: Leadership & Soft Skills!",
    description="A discussion.",
    starts_at=datetime(2025, 3, 4, 10, 45, tzinfo=UTC),
    duration_minutes=60,
)


async def test_create_makes_an_unguessable_room_under_the_configured_server() -> None:
    provider = JitsiProvider("https://jitsi.example.org/")

    first = await provider.create(REQUEST)
    second = await provider.create(REQUEST)

    assert first.provider == "jitsi"
    assert first.join_url == f"https://jitsi.example.org/{first.provider_id}"
    assert re.fullmatch(r"Impromptu-Why-eLearning-Isn-t-Working-Leadership-S-[A-Za-z0-9]{22}", first.provider_id)
    assert first.provider_id != second.provider_id  # the name is the only lock on the room


async def test_a_title_without_letters_still_gives_a_room_name() -> None:
    created = await JitsiProvider().create(REQUEST.model_copy(update={"title": "!!! ???"}))

    assert created.provider_id.startswith("Impromptu-Session-")
    assert created.join_url.startswith("https://meet.jit.si/Impromptu-Session-")


async def test_find_and_cancel_have_nothing_to_do() -> None:
    provider = JitsiProvider()
    created = CreatedSession(provider="jitsi", provider_id="Impromptu-x", join_url="https://meet.jit.si/Impromptu-x")

    assert await provider.find(REQUEST) is None
    assert await provider.cancel(created) is None


def test_preview_names_the_server() -> None:
    preview = JitsiProvider("https://meet.jit.si").preview(REQUEST)

    assert preview.provider == "jitsi"
    assert "https://meet.jit.si" in preview.summary
    assert preview.details == {"server": "https://meet.jit.si"}


def test_provider_from_settings_picks_the_configured_adapter() -> None:
    jitsi = provider_from_settings(Settings(session_provider="jitsi", jitsi_base_url="https://jitsi.example.org"))
    zoom = provider_from_settings(Settings(session_provider="zoom", zoom_access_token="t0ken"))
    youtube = provider_from_settings(Settings(session_provider="youtube", youtube_access_token="t0ken"))

    assert isinstance(jitsi, JitsiProvider) and jitsi.base_url == "https://jitsi.example.org"
    assert isinstance(zoom, ZoomProvider) and zoom.name == "zoom"
    assert isinstance(youtube, YouTubeProvider) and youtube.name == "youtube"
