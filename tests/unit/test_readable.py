"""Previews of structured posts read as a person sees them in Slack or Teams, not as JSON."""

from __future__ import annotations

from collections.abc import Callable

from pipeline.channels.readable import readable
from pipeline.channels.render import environment, render
from pipeline.messages import ScheduledSession

TITLE = 'Fish & <Chips> "quoted"'


def test_slack_blocks_read_as_text_with_links_and_slacks_escapes_undone(
    build_session: Callable[..., ScheduledSession],
) -> None:
    session = build_session(title=TITLE)
    shown = readable("slack", render(environment(), "slack", "scheduled", session))
    lines = shown.splitlines()
    assert lines[0] == f"Live on Tue 4 Mar, 10:46 UTC: {TITLE}"  # the header, as Slack shows it
    assert f"*{TITLE} ({session.proposal.content.article.url})*" in shown  # <url|label> read as label (url)
    assert f"[Join the session] {session.join_url}" in lines
    assert "{" not in shown and "&amp;" not in shown and "&lt;" not in shown


def test_a_teams_card_reads_as_text_facts_and_buttons(build_session: Callable[..., ScheduledSession]) -> None:
    session = build_session(title=TITLE)
    shown = readable("teams", render(environment(), "teams", "starting", session))
    assert TITLE in shown and f"{session.join_url}" in shown
    assert any(line.startswith("[") and line.endswith(session.join_url) for line in shown.splitlines())
    assert '"type"' not in shown


def test_text_channels_and_unreadable_payloads_are_shown_as_they_are() -> None:
    assert readable("x", "Live at 10:46 {not json}") == "Live at 10:46 {not json}"
    assert readable("slack", "not json at all") == "not json at all"
