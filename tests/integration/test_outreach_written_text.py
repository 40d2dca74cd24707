"""A channel's announcement written by hand on the approval page is what the outreach stage posts to that channel.

The whole pipeline on a real nats-server, posting to the local Mastodon stand-in (tests/channel_fakes.py): the text
is checked against the channel's limit again when posted, with the session's join link in place of `{join_url}`.
"""

from __future__ import annotations

import html

import pytest
from faststream.nats import NatsBroker

from pipeline import bus
from pipeline.actions.service import Approvals, EditRefused, ProposalEdit
from pipeline.domain.approval import get_record
from pipeline.domain.live_rules import LiveRules
from pipeline.messages import OutreachResult
from pipeline.settings import Settings
from tests.integration.bus_helpers import seed_proposal, wait_until
from tests.integration.test_outreach_channels import (  # noqa: F401  (fixtures)
    Fakes,
    fakes,
    live_pipeline,
    live_settings,
    results,
    session_on,
)

pytestmark = pytest.mark.nats

MINE = "Tonight, live: the Bersin piece on why eLearning is not working.\n\nCome along: {join_url}"


async def test_the_text_a_facilitator_wrote_is_what_mastodon_gets(
    live_pipeline: NatsBroker,  # noqa: F811
    client: NatsBroker,
    live_settings: Settings,  # noqa: F811
    fakes: tuple[Fakes, dict[str, object]],  # noqa: F811
) -> None:
    made = fakes[0]
    proposal = await seed_proposal(client)
    approvals = Approvals(client, live_settings, LiveRules.load(live_settings.rules_file))
    await approvals.edit(proposal.id, ProposalEdit(channels=["mastodon", "slack"]), by="ana")
    with pytest.raises(EditRefused) as refused:  # over the instance's 500: refused before anything is stored
        await approvals.edit(proposal.id, ProposalEdit(texts={"mastodon": "x" * 490 + " {join_url}"}), by="ana")
    assert "mastodon allows 500" in refused.value.problems["text.mastodon"]
    await approvals.edit(proposal.id, ProposalEdit(texts={"mastodon": MINE}), by="ana")
    await approvals.approve(proposal.id, by="ana")

    await wait_until(lambda: len(made.mastodon.statuses) == 1 and len(made.slack.messages) == 1, timeout=30)
    record = await get_record(client, proposal.id)
    assert record.session is not None
    (status,) = made.mastodon.statuses.values()
    paragraphs = MINE.replace("{join_url}", record.session.join_url).split("\n\n")
    assert html.unescape(status["content"]) == "".join(f"<p>{p}</p>" for p in paragraphs)  # as the instance shows it
    assert "Tonight, live" not in str(made.slack.messages[0])  # the other channel keeps its template


async def test_a_written_text_over_the_limit_when_posted_fails_with_the_reason(
    live_pipeline: NatsBroker,  # noqa: F811
    client: NatsBroker,
    fakes: tuple[Fakes, dict[str, object]],  # noqa: F811
) -> None:
    """A session published by hand (no approval page checked it) with a text too long for Mastodon: not posted."""
    session = session_on(["mastodon"])
    written = session.proposal.model_copy(update={"texts": {"mastodon": "y" * 600 + " {join_url}"}})
    await bus.publish(client, bus.SESSIONS_SCHEDULED, session.model_copy(update={"proposal": written}))
    (result,) = await results(client, 1)
    assert isinstance(result, OutreachResult) and result.status == "failed"
    assert "mastodon text written by hand" in (result.reason or "") and "mastodon allows 500" in (result.reason or "")
    assert fakes[0].mastodon.statuses == {}
