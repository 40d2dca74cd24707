"""A channel is one adapter class plus one template folder: a made-up "pigeon" channel, defined here and nowhere
else, is rendered from its own template, held to its own length rule and structure check, previewed, and posted by
the outreach stage on the real bus, with its settings read from its own IMPROMPTU_ variable."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from faststream.nats import NatsBroker
from pydantic import Field

from pipeline import bus
from pipeline.actions.service import channel_previews
from pipeline.app import create_broker, start_stages
from pipeline.channels.base import ChannelAdapter, ChannelSettings, Post, Posted, Problem, unset
from pipeline.channels.registry import register, unregister
from pipeline.channels.render import check
from pipeline.messages import OutreachResult, ScheduledSession
from pipeline.settings import Settings
from tests.integration.bus_helpers import models_on, wait_until
from tests.unit.conftest import make_session

pytestmark = pytest.mark.nats

LOFT: dict[str, str] = {}  # what the pigeons carried, by post key


class PigeonSettings(ChannelSettings):
    pigeon_loft: str | None = Field(default=None, description="Where the pigeons fly from.")


class PigeonChannel(ChannelAdapter):
    """Each character weighs two grains; a pigeon carries 220 grains on one strip of paper (one line)."""

    name = "pigeon"
    Section = PigeonSettings
    limit = 220
    unit = "grains"
    can_find = True
    can_delete = True

    @staticmethod
    def length(text: str) -> int:
        return 2 * len(text)

    @classmethod
    def shaped(cls, text: str) -> tuple[str, Problem | None]:
        return text, Problem("bad_structure", "must fit on one strip (one line)") if "\n" in text else None

    @classmethod
    def from_settings(cls, settings: Settings) -> PigeonChannel:
        return cls(PigeonSettings.of(settings).pigeon_loft)

    def __init__(self, loft: str | None) -> None:
        self.loft = loft or ""

    def missing(self) -> list[str]:
        return unset({"IMPROMPTU_PIGEON_LOFT": self.loft})

    async def post(self, post: Post) -> Posted:
        LOFT[post.key] = post.text
        return Posted(remote_id=post.key, url=f"pigeon://{self.loft}/{post.key}")

    async def find(self, post: Post) -> Posted | None:
        return Posted(remote_id=post.key, url=f"pigeon://{self.loft}/{post.key}") if post.key in LOFT else None

    async def delete(self, posted: Posted) -> None:
        LOFT.pop(posted.remote_id or "", None)


@pytest.fixture
def pigeon(settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    """The pigeon channel registered, its template in a folder of its own, its loft set in the environment."""
    folder = tmp_path / "templates" / "pigeon"
    folder.mkdir(parents=True)
    (folder / "scheduled.j2").write_text("{{ article_title }} ({{ sharer }}) {{ join_url }}\n", encoding="utf-8")
    monkeypatch.setenv("IMPROMPTU_PIGEON_LOFT", "rooftop")
    register(PigeonChannel)
    LOFT.clear()
    try:
        yield settings.model_copy(update={"outreach_dry_run": False, "outreach_templates_dir": folder.parent})
    finally:
        unregister("pigeon")


def session_on_pigeon() -> ScheduledSession:
    session = make_session(now=datetime.now(UTC))
    return session.model_copy(update={"proposal": session.proposal.model_copy(update={"channels": ["pigeon"]})})


async def test_a_registered_channel_is_rendered_within_its_rule_and_posted_by_the_stage(
    pigeon: Settings, client: NatsBroker
) -> None:
    broker = create_broker(pigeon)
    await start_stages(broker, pigeon)
    session = session_on_pigeon()
    try:
        await bus.publish(client, bus.SESSIONS_SCHEDULED, session)

        async def posted() -> bool:
            return bool(await models_on(client, bus.OUTREACH_RESULTS, OutreachResult))

        await wait_until(posted, timeout=20, what="the pigeon's result")
    finally:
        await broker.stop()
    (result,) = await models_on(client, bus.OUTREACH_RESULTS, OutreachResult)
    assert (result.channel, result.status, result.location) == (
        "pigeon",
        "posted",
        f"pigeon://rooftop/{session.id}.pigeon.scheduled",
    )
    carried = LOFT[f"{session.id}.pigeon.scheduled"]
    assert carried == result.text
    # the whole title would weigh 256 grains: it was shortened until the pigeon's own count fit its own limit
    title = session.proposal.content.article.title
    assert title not in carried and "…" in carried and carried.endswith(f"(@britz) {session.join_url}")
    assert 2 * len(carried) <= 220


async def test_a_registered_channel_is_previewed_and_checked_by_its_own_rules(pigeon: Settings) -> None:
    (preview,) = await channel_previews(session_on_pigeon().proposal, pigeon)
    assert (preview.channel, preview.problem, preview.limit) == ("pigeon", None, 220)
    assert preview.text is not None and preview.length == 2 * len(preview.text)
    assert check("pigeon", "two\nlines")[1] == Problem("bad_structure", "must fit on one strip (one line)")
    assert check("pigeon", "x" * 111)[1] == Problem("too_long", "renders 222 grains, pigeon allows 220")
