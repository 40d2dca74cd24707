"""The channel registry: each shipped adapter says its name, rules and templates, and agrees with the bus contract."""

from __future__ import annotations

import pytest

from pipeline.channels.base import KINDS, ChannelAdapter
from pipeline.channels.mastodon import MastodonChannel
from pipeline.channels.registry import (
    ADAPTERS,
    LIMITS,
    channel_names,
    register,
    rules_for,
    text_limit,
    unregister,
)
from pipeline.channels.render import TEMPLATES, check
from pipeline.messages import CHANNEL_NAMES
from pipeline.settings import Settings


def test_the_shipped_adapters_are_the_channels_the_contract_names() -> None:
    # messages.ChannelName is the rules file's schema and the bus contract: a shipped channel is named in both
    assert tuple(adapter.name for adapter in ADAPTERS) == CHANNEL_NAMES == channel_names()


@pytest.mark.parametrize("adapter", ADAPTERS, ids=lambda adapter: adapter.name)
def test_every_shipped_channel_has_a_template_of_every_kind(adapter: type[ChannelAdapter]) -> None:
    assert sorted(path.stem for path in (TEMPLATES / adapter.name).glob("*.j2")) == sorted(KINDS)


def test_each_limit_is_its_adapters_and_mastodons_follows_the_instance() -> None:
    assert LIMITS == {"x": 280, "linkedin": 3000, "facebook": 63206, "mastodon": 500, "teams": 28_000}
    assert text_limit("mastodon", Settings(mastodon_max_characters=11_000)) == 11_000
    assert text_limit("x", Settings(mastodon_max_characters=11_000)) == 280
    assert text_limit("myspace", Settings()) is None


def test_a_name_without_an_adapter_is_plain_text_without_a_limit() -> None:
    assert check("myspace", "x" * 100_000) == ("x" * 100_000, None)  # a custom template folder, never posted
    assert rules_for("myspace").name == "myspace"


def test_a_name_is_registered_once_and_the_shipped_ones_stay() -> None:
    class Impostor(MastodonChannel):
        pass

    with pytest.raises(ValueError, match="registered already"):
        register(Impostor)
    with pytest.raises(ValueError, match="shipped"):
        unregister("mastodon")
    assert rules_for("mastodon") is MastodonChannel
