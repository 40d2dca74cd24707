"""Turning a fetched page into an Article."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from pipeline.enrich.extract import extract_article, key_sentences
from pipeline.errors import PermanentError
from pipeline.messages import Article

DEMO = Path(__file__).resolve().parents[2] / "pipeline" / "demo_assets" / "bersin-article.html"
URL = "https://www.linkedin.com/pulse/why-elearning-isnt-working"


@pytest.fixture(scope="module")
def article() -> Article:
    return extract_article(DEMO.read_text(encoding="utf-8"), url=URL, final_url=URL)


def test_title_and_author(article: Article) -> None:
    assert article.title == "Why eLearning Isn't Working for Leadership and Soft Skills"
    assert article.author == "Josh Bersin"


def test_urls_are_kept(article: Article) -> None:
    assert article.url == URL
    assert article.final_url == URL


def test_summary_is_main_text_not_comments(article: Article) -> None:
    assert article.summary
    assert "Great data" not in article.summary
    assert "Our managers skip the modules" not in article.summary


def test_word_count_and_reading_time(article: Article) -> None:
    assert article.word_count > 100
    assert article.reading_minutes >= 1


def junk_bytes() -> str:
    rng = random.Random(1234)
    return bytes(rng.randrange(256) for _ in range(4096)).decode("latin-1")


@pytest.mark.parametrize(
    "html",
    ["", "   \n ", "<html></html>", "<html><body></body></html>", "\x00\x01\x02\xff garbage", junk_bytes()],
    ids=["empty", "blank", "empty-html", "empty-body", "control-chars", "random-bytes"],
)
def test_nothing_readable_is_a_permanent_no_content(html: str) -> None:
    with pytest.raises(PermanentError, match="^no_content"):
        extract_article(html, url="https://example.com/a", final_url="https://example.com/a")


TEXT = (
    "First sentence has more than six words in it. Second sentence also has plenty of words. "
    "Third sentence keeps going with more words. Fourth sentence is the last one here.\n"
    "Short line.\n"
)


@pytest.mark.parametrize("count", [0, 1, 2, 3, 10])
def test_key_sentences_picks_at_most_count(count: int) -> None:
    picked = key_sentences(TEXT, count)
    sentences = [s for s in picked.split(". ") if s] if picked else []
    assert len(sentences) == min(count, 4)


def test_key_sentences_are_the_opening_ones_in_order() -> None:
    assert key_sentences(TEXT, 2) == (
        "First sentence has more than six words in it. Second sentence also has plenty of words."
    )


def test_key_sentences_skip_short_lines() -> None:
    assert key_sentences("Menu\nHome | About\nShort line.\n", 3) == ""
