"""The Slack channel against a local incoming webhook (tests.channel_fakes.FakeSlack) that answers as Slack does:
200 "ok", 429 with Retry-After, or an error string in a plain-text body with its documented status.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from pipeline.channels.base import ChannelBroken, Kind, NotSent, Post, Posted, PostRefused, RateLimited
from pipeline.channels.render import environment, render
from pipeline.channels.slack import SlackChannel, from_settings
from pipeline.embedded import free_port
from pipeline.errors import PermanentError
from pipeline.messages import ScheduledSession
from pipeline.settings import Settings
from tests.channel_fakes import (
    HOSTILE_NAME,
    HOSTILE_TITLE,
    FakeSlack,
    assert_hidden,
    hanging,
    hostile_session,
    make_post,
    outcome_unknown,
    running,
    unreachable,
)

PAYLOAD = {
    "text": "Live session at 10:45 UTC: Why eLearning Isn't Working",
    "blocks": [
        {"type": "header", "text": {"type": "plain_text", "text": "Why eLearning Isn't Working"}},
        {"type": "section", "text": {"type": "mrkdwn", "text": "Join: <https://meet.jit.si/Impromptu-Live-1|Jitsi>"}},
    ],
}


@pytest.fixture
def slack() -> Iterator[tuple[FakeSlack, str]]:
    for fake, base in running(FakeSlack()):
        yield fake, fake.webhook(base)


@pytest.fixture
def post(build_session: Callable[..., ScheduledSession]) -> Post:
    return make_post(build_session(), "slack", json.dumps(PAYLOAD))


def assert_no_secret(error: BaseException, fake: FakeSlack, webhook: str) -> None:
    assert_hidden(error, webhook, fake.path, fake.path.rsplit("/", 1)[1])  # the last: the webhook's secret part


async def test_post_sends_the_rendered_payload_as_is(slack: tuple[FakeSlack, str], post: Post) -> None:
    fake, webhook = slack

    posted = await SlackChannel(webhook, timeout=2).post(post)

    assert posted == Posted(remote_id=None, url=None)
    [seen] = fake.received
    assert (seen.method, seen.path, seen.query) == ("POST", fake.path, "")
    assert seen.headers["content-type"] == "application/json; charset=utf-8"
    assert seen.body == post.text.encode()
    assert fake.messages == [PAYLOAD]


async def test_rate_limit_gives_slacks_retry_after(slack: tuple[FakeSlack, str], post: Post) -> None:
    fake, webhook = slack
    fake.fail_with("rate_limited", retry_after=30)

    with pytest.raises(RateLimited) as raised:
        await SlackChannel(webhook, timeout=2).post(post)

    assert raised.value.retry_after == 30
    assert "HTTP 429" in str(raised.value)
    assert_no_secret(raised.value, fake, webhook)
    assert fake.messages == []


async def test_server_error_is_not_sent(slack: tuple[FakeSlack, str], post: Post) -> None:
    fake, webhook = slack
    fake.fail_with("rollup_error")

    with pytest.raises(NotSent) as raised:
        await SlackChannel(webhook, timeout=2).post(post)

    assert not isinstance(raised.value, RateLimited)
    assert "HTTP 500, rollup_error" in str(raised.value)


@pytest.mark.parametrize(
    ("code", "hint"),
    [
        ("no_service", "the webhook URL was revoked; set IMPROMPTU_SLACK_WEBHOOK to a new one"),
        ("invalid_token", "token is invalid; set IMPROMPTU_SLACK_WEBHOOK to a new one"),
        ("channel_is_archived", "unarchive it or set IMPROMPTU_SLACK_WEBHOOK to a webhook for another channel"),
        ("channel_not_found", "channel was deleted; set IMPROMPTU_SLACK_WEBHOOK"),
        ("action_prohibited", "a Slack admin restricted posting"),
        ("team_disabled", "workspace is disabled; set IMPROMPTU_SLACK_WEBHOOK to a new one"),
    ],
)
async def test_webhook_errors_break_the_channel_with_a_hint(
    slack: tuple[FakeSlack, str], post: Post, code: str, hint: str
) -> None:
    fake, webhook = slack
    fake.fail_with(code)

    with pytest.raises(ChannelBroken) as raised:
        await SlackChannel(webhook, timeout=2).post(post)

    assert f" {code}: " in str(raised.value)
    assert hint in str(raised.value)
    assert "NOTIFY" not in str(raised.value)  # the facilitators' webhook is another setting
    assert_no_secret(raised.value, fake, webhook)


async def test_unauthorized_answer_breaks_the_channel(slack: tuple[FakeSlack, str], post: Post) -> None:
    fake, webhook = slack
    fake.fail(401, "invalid_auth", content_type="text/html")

    with pytest.raises(ChannelBroken, match="HTTP 401.*invalid_auth.*IMPROMPTU_SLACK_WEBHOOK"):
        await SlackChannel(webhook, timeout=2).post(post)


async def test_a_revoked_webhook_is_no_service(slack: tuple[FakeSlack, str], post: Post) -> None:
    fake, webhook = slack
    revoked = webhook.replace(fake.path, "/services/T0A1B2C3D/B0E4F5G6H/rEvOkEdSeCrEt")

    with pytest.raises(ChannelBroken, match="no_service") as raised:
        await SlackChannel(revoked, timeout=2).post(post)

    assert_hidden(raised.value, "rEvOkEdSeCrEt")
    assert "127.0.0.1" in str(raised.value)  # the host is named, the path is not


@pytest.mark.parametrize("code", ["invalid_payload", "invalid_blocks", "no_text"])
async def test_payload_errors_refuse_only_this_post(slack: tuple[FakeSlack, str], post: Post, code: str) -> None:
    fake, webhook = slack
    fake.fail_with(code)

    with pytest.raises(PostRefused, match=f"HTTP 400\\) {code}: .*Slack announcement templates"):
        await SlackChannel(webhook, timeout=2).post(post)


async def test_slack_refuses_a_message_without_text(
    slack: tuple[FakeSlack, str], build_session: Callable[..., ScheduledSession]
) -> None:
    fake, webhook = slack

    with pytest.raises(PostRefused, match="no_text"):
        await SlackChannel(webhook, timeout=2).post(make_post(build_session(), "slack", '{"text": ""}'))

    assert len(fake.received) == 1
    assert fake.messages == []


@pytest.mark.parametrize("text", ["Live now: not JSON", '["a", "list"]'])
async def test_a_rendered_text_that_is_no_json_object_is_refused_before_sending(
    slack: tuple[FakeSlack, str], build_session: Callable[..., ScheduledSession], text: str
) -> None:
    fake, webhook = slack

    with pytest.raises(PostRefused, match="Slack: the rendered announcement is not"):
        await SlackChannel(webhook, timeout=2).post(make_post(build_session(), "slack", text))

    assert fake.received == []


async def test_a_200_that_is_not_ok_leaves_the_outcome_unknown(slack: tuple[FakeSlack, str], post: Post) -> None:
    fake, webhook = slack
    fake.fail(200, "<html><body>Sign in to the network</body></html>", content_type="text/html")

    await outcome_unknown(SlackChannel(webhook, timeout=2).post(post), "not 'ok'; it may have posted")


async def test_a_read_timeout_leaves_the_outcome_unknown(post: Post) -> None:
    webhook = "https://hooks.slack.com/services/T0/B0/tImEoUtSeCrEt"

    assert_hidden(await outcome_unknown(SlackChannel(webhook, transport=hanging()).post(post)), "tImEoUtSeCrEt")


async def test_a_refused_connection_is_not_sent(post: Post) -> None:
    webhook = f"http://127.0.0.1:{free_port()}/services/T0/B0/cLoSeDsEcReT"

    assert_hidden(await unreachable(SlackChannel(webhook, timeout=2).post(post)), "cLoSeDsEcReT")


def test_from_settings_without_a_webhook_reports_what_is_missing() -> None:
    assert from_settings(Settings(slack_webhook=None)).missing() == ["IMPROMPTU_SLACK_WEBHOOK"]
    channel = from_settings(
        Settings(slack_webhook="https://hooks.slack.com/services/T/B/x", outreach_timeout_seconds=3)
    )
    assert channel.missing() == []
    assert (channel.name, channel.can_find, channel.can_delete) == ("slack", False, False)


async def test_post_without_a_webhook_breaks_the_channel(post: Post) -> None:
    with pytest.raises(ChannelBroken, match="set IMPROMPTU_SLACK_WEBHOOK"):
        await SlackChannel(None).post(post)


async def test_a_webhook_can_neither_find_nor_delete(post: Post) -> None:
    channel = SlackChannel("https://hooks.slack.com/services/T/B/x")
    with pytest.raises(PermanentError, match="Slack incoming webhooks cannot delete"):
        await channel.delete(Posted())
    with pytest.raises(NotImplementedError):
        await channel.find(post)


# --- text strangers wrote -------------------------------------------------------------------------------------------

LIBRARY_URL = "https://impromptu.example.org/library/entry-1"
SLACK_LINK = re.compile(r"<([^<>]*)>")  # <url>, <url|label>, <!channel>, <@U123>: all Slack's markup


def mrkdwn_texts(node: Any) -> list[str]:
    """Every text Slack reads as mrkdwn: the fallback `text` and the text objects of type mrkdwn."""
    if isinstance(node, list):
        return [text for item in node for text in mrkdwn_texts(item)]
    if not isinstance(node, dict):
        return []
    texts = [text for value in node.values() for text in mrkdwn_texts(value)]
    if node.get("type") == "mrkdwn" or ("blocks" in node and isinstance(node.get("text"), str)):
        texts.append(node["text"])
    return texts


@pytest.mark.parametrize("kind", ["scheduled", "starting", "recording", "cancelled"])
async def test_links_in_stranger_text_reach_slack_as_text(
    slack: tuple[FakeSlack, str], build_session: Callable[..., ScheduledSession], kind: Kind
) -> None:
    fake, webhook = slack
    session = hostile_session(build_session)
    library_url = LIBRARY_URL if kind == "recording" else None
    text = render(environment(), "slack", kind, session, library_url=library_url, reason=HOSTILE_NAME)
    post = make_post(session, "slack", text, kind=kind, link=library_url)

    await SlackChannel(webhook, timeout=2).post(post)

    payload = fake.received[-1].json()
    texts = mrkdwn_texts(payload)
    markup = [inner for text in texts for inner in SLACK_LINK.findall(text)]
    ours = {session.join_url, LIBRARY_URL, session.proposal.content.article.url}
    assert markup and all(inner.split("|", 1)[0] in ours for inner in markup), markup  # no <!channel>, no <evil|…>
    shown = html.unescape(" ".join(texts))
    assert HOSTILE_TITLE in shown  # as the text it is (Slack's mrkdwn has no [label](url) links)
    assert HOSTILE_NAME in shown
