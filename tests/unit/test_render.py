"""Rendering announcements: per-channel templates, a sandbox, and each channel's length limit."""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from pipeline.messages import ScheduledSession
from pipeline.outreach.render import (
    LIMITS,
    TemplateRefused,
    environment,
    render,
    shorten,
    weighted_length,
)

BuildSession = Callable[..., ScheduledSession]


@pytest.fixture
def session(build_session: BuildSession) -> ScheduledSession:
    return build_session()


def custom(tmp_path: Path, source: str, channel: str = "x") -> Path:
    (tmp_path / channel).mkdir(parents=True, exist_ok=True)
    (tmp_path / channel / "scheduled.j2").write_text(source, encoding="utf-8")
    return tmp_path


def refusal(folder: Path, session: ScheduledSession, channel: str = "x") -> str:
    with pytest.raises(TemplateRefused) as caught:
        render(environment(folder), channel, "scheduled", session)
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


def test_missing_channel_template(session: ScheduledSession) -> None:
    message = refusal(Path(__file__).resolve().parents[2] / "pipeline" / "outreach" / "templates", session, "mastodon")
    assert message.startswith("template_missing: ")
    assert "mastodon/scheduled.j2" in message


def test_x_template_over_280_weighted_is_too_long(tmp_path: Path, session: ScheduledSession) -> None:
    message = refusal(custom(tmp_path, "{{ join_url }} " + "a" * 257), session)  # 23 + 1 + 257 = 281
    assert message.startswith("too_long: x/scheduled.j2 renders 281 characters, x allows 280")


def test_x_limit_is_weighted_not_raw(tmp_path: Path, session: ScheduledSession) -> None:
    text = render(environment(custom(tmp_path, "{{ join_url }} " + "a" * 256)), "x", "scheduled", session)
    assert len(text) > 280  # the raw join URL is long...
    assert weighted_length("x", text) == 280  # ...but counts as 23


@pytest.mark.parametrize("source", ["{{ 1 / 0 }}", "{{ range(10**7) | length }}", "{{ join_url + 1 }}"])
def test_template_runtime_error_is_refused(tmp_path: Path, session: ScheduledSession, source: str) -> None:
    assert refusal(custom(tmp_path, source), session).startswith("template_error: x/scheduled.j2: ")
