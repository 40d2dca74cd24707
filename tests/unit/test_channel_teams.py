"""The Teams channel against a local Workflows webhook (tests.channel_fakes.FakeTeams): 202 with an empty body for
any JSON, the card posted afterwards by the flow; 401 for a wrong signature, 404 for a deleted flow.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from markdown_it import MarkdownIt

from pipeline.channels.base import ChannelBroken, Kind, NotSent, Post, Posted, PostRefused, RateLimited
from pipeline.channels.render import environment, render
from pipeline.channels.teams import MAX_BYTES, WORD_JOINER, TeamsChannel, envelope, from_settings, unlinked
from pipeline.embedded import free_port
from pipeline.errors import PermanentError
from pipeline.messages import ScheduledSession
from pipeline.settings import Settings
from tests.channel_fakes import (
    EVIL,
    HOSTILE_NAME,
    HOSTILE_TITLE,
    FakeTeams,
    assert_hidden,
    hanging,
    hostile_session,
    make_post,
    outcome_unknown,
    running,
    unreachable,
)

CARD: dict[str, Any] = {
    "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
    "type": "AdaptiveCard",
    "version": "1.4",
    "body": [
        {"type": "TextBlock", "size": "Large", "weight": "Bolder", "text": "Live: Why eLearning Isn't Working"},
        {"type": "TextBlock", "text": "Starts 10:45 UTC — 60 minutes", "wrap": True},
    ],
    "actions": [{"type": "Action.OpenUrl", "title": "Join", "url": "https://meet.jit.si/Impromptu-Live-1"}],
}
RECREATE = "create the workflow again and set IMPROMPTU_TEAMS_WEBHOOK"


@pytest.fixture
def teams() -> Iterator[tuple[FakeTeams, str]]:
    for fake, base in running(FakeTeams()):
        yield fake, fake.webhook(base)


@pytest.fixture
def card_post(build_session: Callable[..., ScheduledSession]) -> Callable[[str], Post]:
    session = build_session()
    return lambda text: make_post(session, "teams", text)


@pytest.fixture
def post(card_post: Callable[[str], Post]) -> Post:
    return card_post(json.dumps(CARD))


def assert_no_secret(error: BaseException, fake: FakeTeams, webhook: str) -> None:
    assert_hidden(error, webhook, fake.sig, "sig=")


async def test_post_wraps_the_card_in_the_workflows_envelope(teams: tuple[FakeTeams, str], post: Post) -> None:
    fake, webhook = teams

    posted = await TeamsChannel(webhook, timeout=2).post(post)

    assert posted == Posted()
    [seen] = fake.received
    assert seen.method == "POST"
    assert seen.path == f"/powerautomate/automations/direct/workflows/{fake.workflow_id}/triggers/manual/paths/invoke"
    assert seen.params() == {"api-version": "1", "sp": "/triggers/manual/run", "sv": "1.0", "sig": fake.sig}
    assert seen.headers["content-type"] == "application/json; charset=utf-8"
    assert seen.json() == {
        "type": "message",
        "attachments": [
            {"contentType": "application/vnd.microsoft.card.adaptive", "contentUrl": None, "content": CARD}
        ],
    }
    assert "—" in seen.text  # UTF-8 as it is, not \u escapes that make the card larger
    assert fake.cards == [CARD]


async def test_a_card_larger_than_teams_takes_is_refused_before_sending(
    teams: tuple[FakeTeams, str], card_post: Callable[[str], Post]
) -> None:
    fake, webhook = teams
    big = CARD | {"body": [{"type": "TextBlock", "text": "é" * (MAX_BYTES // 2), "wrap": True}]}

    with pytest.raises(PostRefused, match=f"bytes, over the {MAX_BYTES} Teams takes"):
        await TeamsChannel(webhook, timeout=2).post(card_post(json.dumps(big)))

    assert fake.received == []


def test_the_size_limit_counts_the_whole_utf8_message() -> None:
    text_bytes = MAX_BYTES - len(envelope(json.dumps(CARD | {"body": []})))
    fits = CARD | {"body": [{"type": "TextBlock", "text": "x" * (text_bytes - 100)}]}
    assert len(envelope(json.dumps(fits))) <= MAX_BYTES
    with pytest.raises(PostRefused):
        envelope(json.dumps(CARD | {"body": [{"type": "TextBlock", "text": "€" * (text_bytes // 3 + 10)}]}))


@pytest.mark.parametrize(
    ("text", "why"),
    [("not json", "is not JSON"), ('{"type": "message"}', '"type": "AdaptiveCard"'), ("[1]", "AdaptiveCard")],
)
async def test_a_rendered_text_that_is_no_adaptive_card_is_refused(
    teams: tuple[FakeTeams, str], card_post: Callable[[str], Post], text: str, why: str
) -> None:
    fake, webhook = teams

    with pytest.raises(PostRefused, match=why):
        await TeamsChannel(webhook, timeout=2).post(card_post(text))

    assert fake.received == []


async def test_throttling_gives_the_retry_after(teams: tuple[FakeTeams, str], post: Post) -> None:
    fake, webhook = teams
    fake.fail(429, FakeTeams.error("TooManyRequests", "Rate limit is exceeded."), {"Retry-After": "45"})

    with pytest.raises(RateLimited) as raised:
        await TeamsChannel(webhook, timeout=2).post(post)

    assert raised.value.retry_after == 45
    assert "TooManyRequests: Rate limit is exceeded." in str(raised.value)
    assert fake.cards == []


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_server_errors_are_not_sent(teams: tuple[FakeTeams, str], post: Post, status: int) -> None:
    fake, webhook = teams
    fake.fail(status, "<html><body>Bad Gateway</body></html>", content_type="text/html")

    with pytest.raises(NotSent, match=f"HTTP {status}, <html><body>Bad Gateway") as raised:
        await TeamsChannel(webhook, timeout=2).post(post)

    assert not isinstance(raised.value, RateLimited)


async def test_a_wrong_signature_breaks_the_channel(teams: tuple[FakeTeams, str], post: Post) -> None:
    fake, webhook = teams
    forged = webhook.replace(fake.sig, "fOrGeDsIg")

    with pytest.raises(ChannelBroken, match="HTTP 401") as raised:
        await TeamsChannel(forged, timeout=2).post(post)

    assert RECREATE in str(raised.value)
    assert_hidden(raised.value, "fOrGeDsIg")
    assert fake.cards == []


async def test_a_deleted_flow_breaks_the_channel(teams: tuple[FakeTeams, str], post: Post) -> None:
    fake, webhook = teams
    gone = webhook.replace(fake.workflow_id, "0" * 32)

    with pytest.raises(ChannelBroken, match="HTTP 404, WorkflowNotFound") as raised:
        await TeamsChannel(gone, timeout=2).post(post)

    assert RECREATE in str(raised.value)
    assert_hidden(raised.value, fake.sig)


async def test_forbidden_breaks_the_channel(teams: tuple[FakeTeams, str], post: Post) -> None:
    fake, webhook = teams
    fake.fail(403, FakeTeams.error("AuthorizationFailed", "The flow is turned off."))

    with pytest.raises(ChannelBroken, match=RECREATE) as raised:
        await TeamsChannel(webhook, timeout=2).post(post)

    assert_no_secret(raised.value, fake, webhook)


async def test_bad_request_refuses_the_post_and_hides_an_echoed_url(teams: tuple[FakeTeams, str], post: Post) -> None:
    fake, webhook = teams
    fake.fail(400, FakeTeams.error("InvalidRequestContent", f"Could not read the body sent to {webhook}"))

    with pytest.raises(PostRefused, match="InvalidRequestContent: Could not read the body") as raised:
        await TeamsChannel(webhook, timeout=2).post(post)

    assert "[redacted]" in str(raised.value)
    assert_no_secret(raised.value, fake, webhook)


async def test_too_large_answer_refuses_the_post(teams: tuple[FakeTeams, str], post: Post) -> None:
    fake, webhook = teams
    fake.fail(413, "Request Entity Too Large")

    with pytest.raises(PostRefused, match="the card is too large"):
        await TeamsChannel(webhook, timeout=2).post(post)


async def test_a_redirect_breaks_the_channel(teams: tuple[FakeTeams, str], post: Post) -> None:
    fake, webhook = teams
    fake.fail(302, None, {"Location": "https://login.microsoftonline.com/"})

    with pytest.raises(ChannelBroken, match="redirects elsewhere"):
        await TeamsChannel(webhook, timeout=2).post(post)


async def test_a_read_timeout_leaves_the_outcome_unknown(post: Post) -> None:
    webhook = "https://prod.westus.logic.azure.com/workflows/abc/triggers/manual/paths/invoke?sig=tImEoUtSiG"

    assert_hidden(await outcome_unknown(TeamsChannel(webhook, transport=hanging()).post(post)), "tImEoUtSiG")


async def test_a_refused_connection_is_not_sent(post: Post) -> None:
    webhook = f"http://127.0.0.1:{free_port()}/workflows/abc/triggers/manual/paths/invoke?sig=cLoSeDsIg"

    assert_hidden(await unreachable(TeamsChannel(webhook, timeout=2).post(post)), "cLoSeDsIg")


def test_from_settings_without_a_webhook_reports_what_is_missing() -> None:
    assert from_settings(Settings(teams_webhook=None)).missing() == ["IMPROMPTU_TEAMS_WEBHOOK"]
    channel = from_settings(Settings(teams_webhook="https://prod.logic.azure.com/workflows/x?sig=y"))
    assert channel.missing() == []
    assert (channel.name, channel.can_find, channel.can_delete) == ("teams", False, False)


async def test_post_without_a_webhook_breaks_the_channel(post: Post) -> None:
    with pytest.raises(ChannelBroken, match="set IMPROMPTU_TEAMS_WEBHOOK"):
        await TeamsChannel("").post(post)


async def test_a_workflow_can_neither_find_nor_delete(post: Post) -> None:
    channel = TeamsChannel("https://prod.logic.azure.com/workflows/x?sig=y")
    with pytest.raises(PermanentError, match="cannot delete"):
        await channel.delete(Posted())
    with pytest.raises(NotImplementedError):
        await channel.find(post)


# --- text strangers wrote -------------------------------------------------------------------------------------------

LIBRARY_URL = "https://impromptu.example.org/library/entry-1"


def markdown_links(text: str) -> list[tuple[str, str]]:
    """(href, visible text) of every link a CommonMark renderer makes of `text`."""
    links: list[tuple[str, str]] = []
    href: str | None = None
    label: list[str] = []
    for block in MarkdownIt("commonmark").parse(text):
        for token in block.children or []:
            if token.type == "link_open":
                href, label = str(token.attrGet("href")), []
            elif token.type == "link_close" and href is not None:
                links.append((href, "".join(label)))
                href = None
            elif href is not None:
                label.append(token.content)
    return links


def markdown_texts(node: Any) -> list[str]:
    """What Teams renders as markdown in a card: TextBlock texts, Fact titles and values."""
    if isinstance(node, list):
        return [text for item in node for text in markdown_texts(item)]
    if not isinstance(node, dict):
        return []
    texts = [text for value in node.values() for text in markdown_texts(value)]
    if node.get("type") == "TextBlock":
        texts.append(node["text"])
    for fact in node.get("facts", []) if node.get("type") == "FactSet" else []:
        texts += [fact["title"], fact["value"]]
    return texts


@pytest.mark.parametrize("kind", ["scheduled", "starting", "recording", "cancelled"])
async def test_links_in_stranger_text_reach_teams_as_text(
    teams: tuple[FakeTeams, str], build_session: Callable[..., ScheduledSession], kind: Kind
) -> None:
    fake, webhook = teams
    session = hostile_session(build_session)
    library_url = LIBRARY_URL if kind == "recording" else None
    text = render(environment(), "teams", kind, session, library_url=library_url, reason=HOSTILE_NAME)
    post = make_post(session, "teams", text, kind=kind, link=library_url)
    assert EVIL in text  # the template let the stranger's markdown through

    await TeamsChannel(webhook, timeout=2).post(post)

    [card] = fake.cards
    texts = markdown_texts(card)
    links = [link for text in texts for link in markdown_links(text)]
    ours = {session.join_url, LIBRARY_URL, session.proposal.content.article.url}
    assert [(href, label) for href, label in links if href not in ours and href != label] == []
    shown = " ".join(texts).replace(WORD_JOINER, "")
    assert HOSTILE_TITLE in shown  # shown as the text it is, not dropped
    assert HOSTILE_NAME in shown  # the author, or the cancellation's reason
    buttons = {action["url"] for action in card["actions"] if action["type"] == "Action.OpenUrl"}
    assert buttons <= ours and buttons  # our own links stay real buttons


def test_our_own_markdown_links_stay_links() -> None:
    join = "https://meet.jit.si/Impromptu-Live-1"
    text = f"[Join the session]({join}), not [Join here]({EVIL}/join) or [x]({join}.evil.example)"

    assert markdown_links(unlinked(text, {join})) == [(join, "Join the session")]
    assert markdown_links(unlinked(text)) == []
    assert unlinked(text, {join}).replace(WORD_JOINER, "") == text


def test_facts_and_nested_text_blocks_are_unlinked_too() -> None:
    card = CARD | {
        "body": [
            {"type": "Container", "items": [{"type": "TextBlock", "text": HOSTILE_NAME}]},
            {"type": "FactSet", "facts": [{"title": HOSTILE_NAME, "value": HOSTILE_TITLE}]},
            {
                "type": "ColumnSet",
                "columns": [{"type": "Column", "items": [{"type": "TextBlock", "text": HOSTILE_TITLE}]}],
            },
        ]
    }

    sent = json.loads(envelope(json.dumps(card)))["attachments"][0]["content"]

    texts = markdown_texts(sent)
    assert len(texts) == 4
    assert [link for text in texts for link in markdown_links(text)] == []
    assert sent["actions"] == CARD["actions"]
