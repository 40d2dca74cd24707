"""The provider registry and the bus contract name the same shipped providers, and every place that picks a provider
by name asks the registry: the settings, the actions stage, the previews' stand-in join links."""

from __future__ import annotations

from typing import get_args

import pytest
from pydantic import ValidationError

from pipeline.domain.sessions import preview_session
from pipeline.messages import Provider
from pipeline.providers import provider_from_settings
from pipeline.providers.jitsi import JitsiProvider
from pipeline.providers.registry import ADAPTERS, PROVIDERS, provider_class, provider_named
from pipeline.settings import Settings
from tests.unit.conftest import make_session


def test_the_shipped_providers_are_the_bus_contracts() -> None:
    assert PROVIDERS == get_args(Provider) == ("jitsi", "zoom", "youtube")
    assert {adapter.name for adapter in ADAPTERS} == set(PROVIDERS)


def test_the_settings_accept_the_shipped_names_only() -> None:
    for name in PROVIDERS:
        assert isinstance(provider_from_settings(Settings(session_provider=name)), provider_class(name))
    with pytest.raises(ValidationError):
        Settings(session_provider="pigeon")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="no session provider named 'pigeon'"):
        provider_named("pigeon", Settings())


@pytest.mark.parametrize(
    ("name", "stand_in"),
    [
        ("jitsi", "https://jitsi.example.org/Impromptu-Live-Why-eLearning-Isn-t-Working-for-Lea-" + "x" * 22),
        ("zoom", "https://us06web.zoom.us/j/81234567890?pwd=" + "x" * 32),
        ("youtube", "https://www.youtube.com/watch?v=" + "x" * 11),
    ],
)
def test_a_preview_carries_its_providers_stand_in_link_until_the_session_is_made(name: str, stand_in: str) -> None:
    settings = Settings(jitsi_base_url="https://jitsi.example.org/")
    proposal = make_session().proposal.model_copy(update={"provider": name})
    assert preview_session(proposal, settings).join_url == stand_in
    assert preview_session(proposal, settings, "https://meet.example/made").join_url == "https://meet.example/made"


def test_a_provider_is_given_its_section_only() -> None:
    jitsi = JitsiProvider.from_settings(Settings(jitsi_base_url="https://jitsi.example.org/"))
    assert jitsi.base_url == "https://jitsi.example.org"
    assert "zoom_user" not in JitsiProvider.Section.model_fields
