"""Rendering announcements: per-channel templates, a sandbox, and each channel's length limit."""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from pipeline.channels.base import KINDS
from pipeline.channels.email import email_parts
from pipeline.channels.registry import CHANNELS, LIMITS
from pipeline.channels.render import (
    TemplateRefused,
    available_channels,
    check,
    environment,
    render,
    shorten,
    weighted_length,
)
from pipeline.messages import ScheduledSession

BuildSession = Callable[..., ScheduledSession]
LIBRARY = "https://impromptu.example/library/session-1"


@pytest.fixture
def session(build_session: BuildSession) -> ScheduledSession:
    return build_session()


def custom(tmp_path: Path, source: str, channel: str = "x", kind: str = "scheduled") -> Path:
    (tmp_path / channel).mkdir(parents=True, exist_ok=True)
    (tmp_path / channel / f"{kind}.j2").write_text(source, encoding="utf-8")
    return tmp_path


def refusal(folder: Path, session: ScheduledSession, channel: str = "x", kind: str = "scheduled") -> str:
    with pytest.raises(TemplateRefused) as caught:
        render(environment(folder), channel, kind, session, library_url=LIBRARY)
    return str(caught.value)


# --- the shipped templates --------------------------------------------------------------------------------


@pytest.mark.parametrize("channel", ["x", "linkedin", "facebook"])
def test_shipped_templates_render_within_limits(session: ScheduledSession, channel: str) -> None:
    text = render(environment(), channel, "scheduled", session)
    assert session.join_url in text
    assert session.proposal.content.article.title in text
    assert weighted_length(channel, text) <= LIMITS[channel]
    assert "{{" not in text and "{%" not in text


def test_x_post_fits_280_weighted(session: ScheduledSession) -> None:
    text = render(environment(), "x", "scheduled", session)
    assert weighted_length("x", text) <= 280
    assert text.endswith(session.join_url)
    assert "10:46 UTC" in text  # NOW 10:15:30 + 30 min, rounded up to the minute


def test_linkedin_lists_topics_as_hashtags(session: ScheduledSession) -> None:
    text = render(environment(), "linkedin", "scheduled", session)
    assert text.splitlines()[-1] == "#leadership #learning"


def test_long_article_title_is_shortened_at_a_word(build_session: BuildSession) -> None:
    title = " ".join(f"word{i}" for i in range(80))[:400]
    assert len(title) == 400
    session = build_session(title=title)
    text = render(environment(), "x", "scheduled", session)
    quoted = re.search(r'"([^"]*)"', text)
    assert quoted is not None
    short = quoted.group(1)
    assert short.endswith("…")
    assert len(short) <= 90
    kept = short[:-1]
    assert title.startswith(kept)
    assert title[len(kept)] == " "  # the next character of the title is a space: whole words only
    assert weighted_length("x", text) <= 280
    assert session.join_url in text


def test_user_text_is_rendered_literally(build_session: BuildSession) -> None:
    session = build_session(title="Leadership {{ 7*7 }} {% raw %}", summary="{{ join_url.__class__ }}")
    for channel in ("x", "facebook"):
        text = render(environment(), channel, "scheduled", session)
        assert "Leadership {{ 7*7 }} {% raw %}" in text
        assert "49" not in text
    assert "{{ join_url.__class__ }}" in render(environment(), "facebook", "scheduled", session)


# --- weighted length and shorten ----------------------------------------------------------------------------


def test_x_counts_each_link_as_23() -> None:
    url = "https://meet.jit.si/" + "a" * 100
    assert weighted_length("x", f"go {url} now") == len("go ") + 23 + len(" now")
    assert weighted_length("linkedin", f"go {url} now") == len(f"go {url} now")


def test_shorten_leaves_short_text_alone() -> None:
    assert shorten("short enough", 12) == "short enough"


def test_shorten_examples() -> None:
    assert shorten("hello, wonderful world", 12) == "hello…"
    assert shorten("abcdefghij klmnop", 12) == "abcdefghij…"


def test_shorten_never_cuts_mid_word() -> None:
    rng = random.Random(7)
    vocabulary = ["a", "leadership", "soft-skills", "e-learning,", "why", "isn't", "working.", "L&D", "—", "x" * 12]
    for _ in range(500):
        text = " ".join(rng.choice(vocabulary) for _ in range(rng.randrange(1, 30)))
        limit = rng.randrange(14, 120)  # the longest word fits, so there is always a word to cut at
        result = shorten(text, limit)
        assert len(result) <= limit, (text, limit, result)
        if result == text:
            continue
        assert result.endswith("…")
        kept = result[:-1]
        assert text.startswith(kept), (text, limit, result)
        rest = text[len(kept) :]
        assert rest[0] in " ,;:.-–—", (text, limit, result)  # the cut is at a word's end
        assert not kept.endswith((" ", ",", ".", "-")), (text, limit, result)


def test_shorten_single_long_word_is_not_cut_mid_word() -> None:
    text = "Supercalifragilisticexpialidocious leadership"
    kept = shorten(text, 10).removesuffix("…")
    assert text.startswith(kept)
    assert kept == "" or not text[len(kept)].isalnum()  # currently "Supercali…"


# --- custom templates: refused, never crashing --------------------------------------------------------------


def test_unknown_variable_is_refused(tmp_path: Path, session: ScheduledSession) -> None:
    message = refusal(custom(tmp_path, "Join {{ nope }}"), session)
    assert message.startswith("template_variable: x/scheduled.j2")
    assert "nope" in message


def test_syntax_error_is_refused_with_line(tmp_path: Path, session: ScheduledSession) -> None:
    message = refusal(custom(tmp_path, "line one\n{{ join_url }\n"), session)
    assert message.startswith("template_syntax: x/scheduled.j2:2: ")


@pytest.mark.parametrize(
    "source",
    [
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ join_url.__class__.__base__.__subclasses__() }}",
        "{{ starts_at.__class__.__init__.__globals__ }}",
    ],
)
def test_sandbox_escape_is_refused(tmp_path: Path, session: ScheduledSession, source: str) -> None:
    message = refusal(custom(tmp_path, source), session)
    assert message.startswith("template_unsafe: x/scheduled.j2")


def test_missing_channel_template(tmp_path: Path, session: ScheduledSession) -> None:
    message = refusal(tmp_path, session, "myspace")
    assert message.startswith("template_missing: ")
    assert "myspace/scheduled.j2" in message


def test_x_template_over_280_weighted_is_too_long(tmp_path: Path, session: ScheduledSession) -> None:
    message = refusal(custom(tmp_path, "{{ join_url }} " + "a" * 257), session)  # 23 + 1 + 257 = 281
    assert message.startswith("too_long: x/scheduled.j2 renders 281 characters, x allows 280")


def test_x_limit_is_weighted_not_raw(tmp_path: Path, session: ScheduledSession) -> None:
    text = render(environment(custom(tmp_path, "{{ join_url }} " + "a" * 256)), "x", "scheduled", session)
    assert len(text) > 280  # the raw join URL is long...
    assert weighted_length("x", text) == 280  # ...but counts as 23


@pytest.mark.parametrize("source", ["{{ 1 / 0 }}", "{{ range(10**7) | length }}", "{{ join_url + 1 }}"])
def test_template_runtime_error_is_refused(tmp_path: Path, session: ScheduledSession, source: str) -> None:
    assert refusal(custom(tmp_path, source), session).startswith("template_error: x/scheduled.j2:1: ")


# --- every channel, every kind ------------------------------------------------------------------------------------

LONG_TITLE = " ".join(f"leadership{i}" for i in range(40))[:400]
SHORT_TITLE = "Why eLearning fails"
LINKS = {
    "scheduled": lambda session: session.join_url,
    "starting": lambda session: session.join_url,
    "recording": lambda session: LIBRARY,
    "cancelled": lambda session: session.proposal.content.article.url,
}


def test_every_channel_has_a_template_for_every_kind() -> None:
    for kind in KINDS:
        assert available_channels(kind) == sorted(CHANNELS)


@pytest.mark.parametrize("title", [SHORT_TITLE, LONG_TITLE], ids=["short-title", "long-title"])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("channel", CHANNELS)
def test_shipped_template_renders_within_the_channel_rules(
    build_session: BuildSession, channel: str, kind: str, title: str
) -> None:
    session = build_session(title=title, summary="A summary. " * 400)  # 4400 characters: past LinkedIn's 3000
    text = render(
        environment(), channel, kind, session, library_url=LIBRARY, tagline="Impromptu: learn live", reason="ill"
    )
    assert check(channel, text)[1] is None  # the same rules render enforces: length, structure
    if (limit := LIMITS.get(channel)) is not None:
        assert weighted_length(channel, text) <= limit
    assert LINKS[kind](session) in text  # the link is never shortened away
    assert title.split()[0] in text
    assert "{{" not in text and "{%" not in text
    assert "None" not in text.replace('"spacing": "None"', "")  # no unset variable shown as "None"


def test_mastodon_counts_links_as_23(build_session: BuildSession) -> None:
    session = build_session(summary="word " * 300)
    text = render(environment(), "mastodon", "scheduled", session)
    assert "…" in text  # the summary was shortened to fit...
    assert len(text) > weighted_length("mastodon", text)  # ...where the links count 23, not their length
    assert weighted_length("mastodon", text) <= 500
    assert session.join_url in text


def test_mastodon_limit_can_be_passed(session: ScheduledSession) -> None:
    default = render(environment(), "mastodon", "scheduled", session)
    assert weighted_length("mastodon", default) > 200
    tight = render(environment(), "mastodon", "scheduled", session, limit=200)
    assert weighted_length("mastodon", tight) <= 200
    assert session.join_url in tight
    with pytest.raises(TemplateRefused, match=r"^too_long: mastodon/scheduled.j2 renders \d+ characters"):
        render(environment(), "mastodon", "scheduled", session, limit=60)


def test_recording_needs_a_library_url(session: ScheduledSession) -> None:
    with pytest.raises(TemplateRefused, match="^template_variable: x/recording.j2: .*library_url"):
        render(environment(), "x", "recording", session)


def test_cancelled_says_why(session: ScheduledSession) -> None:
    for channel in ("x", "linkedin", "facebook", "mastodon", "email"):
        text = render(environment(), channel, "cancelled", session, reason="the facilitator is ill.")
        assert "the facilitator is ill" in text and "ill.." not in text and "ill.)" not in text
        assert "cancelled" in text.lower()


# --- graceful shortening ------------------------------------------------------------------------------------------


def test_custom_x_template_with_a_400_character_title_is_shortened(tmp_path: Path, build_session: BuildSession) -> None:
    session = build_session(title=LONG_TITLE)
    text = render(environment(custom(tmp_path, "{{ article_title }}: {{ join_url }}")), "x", "scheduled", session)
    assert weighted_length("x", text) <= 280
    assert text.endswith(f": {session.join_url}")  # the complete join URL, never cut
    kept = text.removesuffix(f": {session.join_url}").removesuffix("…")
    assert LONG_TITLE.startswith(kept) and LONG_TITLE[len(kept)] == " "  # whole words only
    assert len(kept) > 150  # shortened step by step, not emptied


def test_x_weighs_cjk_titles_double(tmp_path: Path, build_session: BuildSession) -> None:
    title = " ".join(["日本語の記事"] * 40)  # 279 characters, 520 weighted
    session = build_session(title=title)
    text = render(environment(custom(tmp_path, "{{ article_title }} {{ join_url }}")), "x", "scheduled", session)
    assert weighted_length("x", text) <= 280
    assert len(text.removesuffix(session.join_url)) < 140
    assert text.endswith(session.join_url)


def test_linkedin_long_summary_is_shortened_at_a_word(build_session: BuildSession) -> None:
    summary = " ".join(f"sentence{i}" for i in range(600))  # ~6000 characters
    session = build_session(summary=summary)
    text = render(environment(), "linkedin", "scheduled", session)
    assert len(text) <= 3000
    assert session.join_url in text and text.splitlines()[-1] == "#leadership #learning"
    shown = next(line for line in text.splitlines() if line.startswith("sentence0 "))
    assert shown.endswith("…") and summary.startswith(shown[:-1]) and summary[len(shown) - 1] == " "


def test_email_subject_is_shortened_to_200(build_session: BuildSession) -> None:
    session = build_session(title=LONG_TITLE)
    subject, body = email_parts(render(environment(), "email", "scheduled", session))
    assert subject.startswith("Live on Tue 4 Mar, 10:46 UTC: leadership0 leadership1")
    assert len(subject) <= 200 and subject.endswith("…")
    assert session.join_url in body


def test_a_template_too_long_without_user_text_is_refused(tmp_path: Path, session: ScheduledSession) -> None:
    message = refusal(custom(tmp_path, "x" * 3001, "linkedin"), session, "linkedin")
    assert message == (
        "too_long: linkedin/scheduled.j2 renders 3001 characters, linkedin allows 3000 "
        "(even with the title and summary shortened)"
    )


# --- user text inside JSON and mrkdwn -----------------------------------------------------------------------------

HOSTILE = 'Quote" }, {"type": "divider"}, {"x": "\n<!channel> & <https://evil.example|click> *bold*'


def test_slack_user_text_cannot_break_the_json_or_mrkdwn(build_session: BuildSession) -> None:
    session = build_session(title=HOSTILE, author="<@U123>")
    for kind in KINDS:
        payload = json.loads(render(environment(), "slack", kind, session, library_url=LIBRARY))
        types = [block["type"] for block in payload["blocks"]]
        assert "divider" not in types
        header = payload["blocks"][0]["text"]["text"]
        assert 'Quote" }, {"type": "divider"}' in header  # plain_text: shown as is, newline collapsed
        assert "\n" not in header
        section = payload["blocks"][1]["text"]["text"]
        assert "&lt;!channel&gt; &amp; &lt;https://evil.example|click&gt;" in section
        assert "<!channel>" not in section and "<@U123>" not in section
        assert "<!channel>" not in payload["text"]


def test_teams_user_text_cannot_break_the_card(build_session: BuildSession) -> None:
    session = build_session(
        title=HOSTILE, summary='"}], "actions": [{"type": "Action.OpenUrl", "url": "https://evil"}]'
    )
    for kind in KINDS:
        card = json.loads(render(environment(), "teams", kind, session, library_url=LIBRARY))
        assert card["type"] == "AdaptiveCard" and card["version"] == "1.4"
        assert all(action["url"] != "https://evil" for action in card["actions"])
        assert HOSTILE.replace("\n", " ") in card["body"][0]["text"]  # all there, as text


def test_email_title_with_newlines_cannot_add_headers(build_session: BuildSession) -> None:
    session = build_session(title="Nice\nBcc: victim@example.org\n\nbody")
    subject, _ = email_parts(render(environment(), "email", "scheduled", session))
    assert subject == "Live on Tue 4 Mar, 10:46 UTC: Nice Bcc: victim@example.org body"


# --- custom templates: structure checked --------------------------------------------------------------------------

SLACK_BAD = "bad_structure: slack/scheduled.j2"
SLACK_OK = '{"text": "hi", "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "hi"}}]}'


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ('{"text": "hi", "blocks": [', "bad_structure: slack/scheduled.j2 is not valid JSON"),
        ('["text"]', "bad_structure: slack/scheduled.j2 must render a JSON object"),
        ('{"blocks": []}', 'bad_structure: slack/scheduled.j2 needs a non-empty "text"'),
        ('{"text": "hi"}', 'bad_structure: slack/scheduled.j2 needs "blocks", a list'),
        (
            '{"text": "hi", "blocks": [{"type": "carousel"}]}',
            "bad_structure: slack/scheduled.j2 block 0 has an unknown",
        ),
        (
            '{"text": "hi", "blocks": [{"type": "header", "text": {"type": "mrkdwn", "text": "hi"}}]}',
            "bad_structure: slack/scheduled.j2 block 0 (header) text must be a text object of type plain_text",
        ),
        (
            '{"text": "hi", "blocks": [{"type": "header", "text": {"type": "plain_text", "text": "{{ "h" * 151 }}"}}]}',
            "too_long: slack/scheduled.j2 block 0 (header) text has 151 characters, Slack allows 150",
        ),
        (
            '{"text": "hi", "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "{{ "s" * 3001 }}"}}]}',
            "too_long: slack/scheduled.j2 block 0 (section) text has 3001 characters, Slack allows 3000",
        ),
        (
            '{"text": "hi", "blocks": [{"type": "section"}]}',
            "bad_structure: slack/scheduled.j2 block 0 (section) needs",
        ),
        (
            '{"text": "hi", "blocks": [{"type": "actions", "elements": []}]}',
            "bad_structure: slack/scheduled.j2 block 0",
        ),
        (
            '{"text": "hi", "blocks": [{% for i in range(51) %}{"type": "divider"}{{ "," if not loop.last }}'
            "{% endfor %}]}",
            "bad_structure: slack/scheduled.j2 has 51 blocks, Slack allows 50",
        ),
    ],
)
def test_broken_custom_slack_template_is_refused(
    tmp_path: Path, session: ScheduledSession, source: str, expected: str
) -> None:
    assert refusal(custom(tmp_path, source, "slack"), session, "slack").startswith(expected)


def test_valid_custom_slack_template_is_compacted(tmp_path: Path, session: ScheduledSession) -> None:
    folder = custom(tmp_path, SLACK_OK.replace(", ", ",\n    "), "slack")
    assert json.loads(render(environment(folder), "slack", "scheduled", session)) == json.loads(SLACK_OK)


CARD = '{"type": "AdaptiveCard", "version": "1.4", "body": %s, "actions": %s}'


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("not json", "bad_structure: teams/scheduled.j2 is not valid JSON"),
        ('{"type": "MessageCard", "body": []}', "bad_structure: teams/scheduled.j2 must be an Adaptive Card"),
        ('{"type": "AdaptiveCard", "body": [{"type": "TextBlock", "text": "x"}]}', 'needs a "version"'),
        (CARD % ("[]", "[]"), 'bad_structure: teams/scheduled.j2 needs a non-empty "body"'),
        (CARD % ('[{"text": "no type"}]', "[]"), "bad_structure: teams/scheduled.j2 body[0] has no type"),
        (
            CARD % ('[{"type": "Container", "items": [{"text": "x"}]}]', "[]"),
            "bad_structure: teams/scheduled.j2 body[0].items[0] has no type",
        ),
        (
            CARD % ('[{"type": "TextBlock", "text": "x"}]', '[{"type": "Action.OpenUrl", "title": "go"}]'),
            "bad_structure: teams/scheduled.j2 actions[0] (Action.OpenUrl) needs an http(s) url",
        ),
        (
            CARD % ('[{"type": "TextBlock", "text": "{{ "x" * 30000 }}"}]', "[]"),
            "too_long: teams/scheduled.j2 renders 30",
        ),
    ],
)
def test_broken_custom_teams_template_is_refused(
    tmp_path: Path, session: ScheduledSession, source: str, expected: str
) -> None:
    message = refusal(custom(tmp_path, source, "teams"), session, "teams")
    assert message.startswith(expected) or expected in message


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("Hello {{ join_url }}", 'the first line must be "Subject: ..."'),
        ("Subject:   \n\nbody", "the subject is empty"),
        ("Subject: hi\nbody", "a blank line must follow the subject"),
        ("Subject: hi\n\n   ", "the body is empty"),
    ],
)
def test_broken_custom_email_template_is_refused(
    tmp_path: Path, session: ScheduledSession, source: str, expected: str
) -> None:
    message = refusal(custom(tmp_path, source, "email"), session, "email")
    assert message == f"bad_structure: email/scheduled.j2 is not an e-mail: {expected}"


# --- custom templates: the folder, the variables, the sandbox -----------------------------------------------------


def test_custom_folder_overrides_file_by_file(tmp_path: Path, session: ScheduledSession) -> None:
    env = environment(custom(tmp_path, "Ours: {{ join_url }}"))
    assert render(env, "x", "scheduled", session) == f"Ours: {session.join_url}"
    assert render(env, "x", "starting", session).startswith("Starting now")  # shipped fills the gap
    assert render(env, "linkedin", "scheduled", session).startswith("Spontaneous learning session")


def test_available_channels_include_custom_ones(tmp_path: Path) -> None:
    folder = custom(tmp_path, "Hi {{ join_url }}", "bluesky")
    assert available_channels("scheduled", folder) == sorted([*CHANNELS, "bluesky"])
    assert "bluesky" not in available_channels("starting", folder)
    assert available_channels("nonsense") == []


def test_optional_variables_are_always_defined(tmp_path: Path, session: ScheduledSession) -> None:
    source = "{{ library_url is none }} {{ tagline is none }} {{ reason == '' }} {{ link == join_url }}"
    assert render(environment(custom(tmp_path, source)), "x", "scheduled", session) == "True True True True"
    assert (
        render(environment(custom(tmp_path, source)), "x", "scheduled", session, reason=None) == "True True True True"
    )
    given = render(
        environment(custom(tmp_path, "{{ link }} {{ tagline }} {{ reason }}")),
        "x",
        "scheduled",
        session,
        library_url=LIBRARY,
        tagline="Learn\nlive",
        reason="ill",
    )
    assert given == f"{LIBRARY} Learn live ill"


def test_unknown_variable_names_the_line(tmp_path: Path, session: ScheduledSession) -> None:
    message = refusal(custom(tmp_path, "line one\n{{ join_url }}\n{{ nope }}"), session)
    assert message == "template_variable: x/scheduled.j2:3: 'nope' is undefined"


def test_runtime_error_names_the_line(tmp_path: Path, session: ScheduledSession) -> None:
    message = refusal(custom(tmp_path, "one\ntwo\n{{ 1 / 0 }}"), session)
    assert message == "template_error: x/scheduled.j2:3: ZeroDivisionError: division by zero"


def test_syntax_error_in_a_json_template_names_the_line(tmp_path: Path, session: ScheduledSession) -> None:
    message = refusal(custom(tmp_path, '{\n"text": {{ join_url | tojson }},\n{% if %}\n}', "slack"), session, "slack")
    assert message.startswith("template_syntax: slack/scheduled.j2:3: ")


@pytest.mark.parametrize(
    "source",
    [
        "{{ cycler.__init__.__globals__ }}",
        "{{ joiner.__init__.__globals__['os'] }}",
        "{{ ''.__class__.__mro__ }}",
        "{{ '{0.__class__}'.format(join_url) }}",
        "{{ topics.__class__.__subclasses__() }}",
        "{% set x = namespace() %}{{ x.__init__.__globals__ }}",
        "{{ 'a' * 10**9 }}",
        "{{ 2 ** 100000 }}",
    ],
)
def test_more_sandbox_escapes_are_refused(tmp_path: Path, session: ScheduledSession, source: str) -> None:
    for channel in ("x", "slack"):
        assert refusal(custom(tmp_path, source, channel), session, channel).startswith(
            f"template_unsafe: {channel}/scheduled.j2"
        )


def test_user_text_is_never_template_source(build_session: BuildSession) -> None:
    session = build_session(title="{{ cycler.__init__.__globals__ }}", summary="{% for x in range(9) %}{% endfor %}")
    for channel in CHANNELS:
        text = render(environment(), channel, "scheduled", session)
        assert "cycler.__init__.__globals__" in text  # shown literally, never run: no template_unsafe either


def test_weighted_length_per_channel() -> None:
    assert weighted_length("teams", "é") == 2  # bytes
    assert weighted_length("mastodon", "👩🏽‍💻 https://example.org/" + "a" * 50) == 1 + 1 + 23
    assert weighted_length("x", "👩🏽‍💻 example.com") == 2 + 1 + 23
    assert weighted_length("slack", "abc") == 3
