"""Every page of tests/fixtures/articles against its expectations (expected.yaml), properties that hold for all of
them, and random or broken input never raising anything but PermanentError."""

from __future__ import annotations

import math
import statistics
import time
from collections import Counter
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.domain.summary import KEY_PHRASES, split_sentences
from pipeline.enrich.extract import WORDS_PER_MINUTE, Extraction, extract
from pipeline.errors import PermanentError

CORPUS = Path(__file__).resolve().parents[1] / "fixtures" / "articles"
EXPECTED: dict[str, dict[str, Any]] = yaml.safe_load((CORPUS / "expected.yaml").read_text(encoding="utf-8"))
ARTICLES = sorted(name for name, expected in EXPECTED.items() if "error" not in expected)
NOT_ARTICLES = sorted(name for name, expected in EXPECTED.items() if "error" in expected)
FROM_TEXT = [name for name in ARTICLES if not EXPECTED[name]["from_metadata"]]
WITH_COMMENTS = [name for name in ARTICLES if EXPECTED[name].get("comments")]
SECONDS: dict[str, float] = {}


def page(name: str) -> str:
    return (CORPUS / name).read_text(encoding="utf-8")


@cache
def extracted(name: str) -> Extraction:
    """Each page is read once per test run; the many checks below share the result."""
    url = EXPECTED[name]["url"]
    started = time.perf_counter()
    extraction = extract(page(name), url=url, final_url=url)
    SECONDS[name] = time.perf_counter() - started
    return extraction


def folded(text: str) -> str:
    return " ".join(text.split()).casefold()


# -- the corpus itself ------------------------------------------------------------------------------------------------


def test_every_page_has_expectations_and_every_expectation_a_page() -> None:
    assert {p.name for p in CORPUS.glob("*.html")} == set(EXPECTED)


def test_the_corpus_is_varied() -> None:
    languages = Counter(EXPECTED[name]["language"] for name in ARTICLES)
    assert len(EXPECTED) >= 40
    assert {"en", "de", "fr", "es", "pt", "ja"} <= set(languages)
    assert sum(EXPECTED[name]["from_metadata"] for name in ARTICLES) >= 5
    assert len(WITH_COMMENTS) >= 8
    assert sum(EXPECTED[name].get("author", "") is None for name in ARTICLES) >= 4
    assert sum(len(EXPECTED[name].get("authors", [])) > 1 for name in ARTICLES) >= 2


# -- each page as expected --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ARTICLES)
def test_page_meets_its_expectations(name: str) -> None:
    expected = EXPECTED[name]
    article = extracted(name).article
    if "title" in expected:
        assert article.title == expected["title"]
    else:
        assert expected["title_contains"] in article.title
    if "author" in expected:
        assert article.author == expected["author"]
    assert article.authors == expected.get("authors", [article.author] if article.author else [])
    assert article.language == expected["language"]
    assert article.from_metadata is expected["from_metadata"]
    assert article.word_count >= expected.get("min_words", 0)
    for field in ("published", "site_name", "image", "tags", "categories"):
        if field in expected:
            assert getattr(article, field) == expected[field], field


@pytest.mark.parametrize("name", ARTICLES)
def test_summary_says_what_it_should_and_none_of_the_boilerplate(name: str) -> None:
    expected = EXPECTED[name]
    summary = folded(extracted(name).article.summary)
    for wanted in expected.get("summary_has", []):
        assert wanted.casefold() in summary, wanted
    for unwanted in expected.get("summary_lacks", []):
        assert unwanted.casefold() not in summary, unwanted


@pytest.mark.parametrize("name", [name for name in ARTICLES if "key_phrases_any" in EXPECTED[name]])
def test_key_phrases_name_the_subject(name: str) -> None:
    phrases = {p.casefold() for p in extracted(name).article.key_phrases}
    assert phrases & {p.casefold() for p in EXPECTED[name]["key_phrases_any"]}, phrases


@pytest.mark.parametrize("name", NOT_ARTICLES)
def test_pages_that_are_no_article_are_permanent_errors(name: str) -> None:
    url = EXPECTED[name]["url"]
    with pytest.raises(PermanentError, match=f"^{EXPECTED[name]['error']}:"):
        extract(page(name), url=url, final_url=url)


# -- properties of every page -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", FROM_TEXT)
def test_summary_is_one_to_five_whole_sentences_of_the_main_text(name: str) -> None:
    extraction = extracted(name)
    sentences = split_sentences(extraction.article.summary, extraction.article.language)
    assert 1 <= len(sentences) <= 5
    text = " ".join(extraction.text.split())
    for sentence in sentences:
        assert sentence in text


@pytest.mark.parametrize("name", WITH_COMMENTS)
def test_comments_are_neither_in_the_text_nor_in_the_summary(name: str) -> None:
    extraction = extracted(name)
    for comment in EXPECTED[name]["comments"]:
        assert comment.casefold() not in folded(extraction.text)
        assert comment.casefold() not in folded(extraction.article.summary)


@pytest.mark.parametrize("name", ARTICLES)
def test_key_phrases_are_few_distinct_and_taken_from_the_page(name: str) -> None:
    extraction = extracted(name)
    article = extraction.article
    phrases = [p.casefold() for p in article.key_phrases]
    if article.word_count > 100:
        assert phrases
    assert len(phrases) <= KEY_PHRASES
    assert len(set(phrases)) == len(phrases)
    source = folded(f"{article.title} {extraction.text} {article.summary}")
    for phrase in phrases:
        assert phrase in source


@pytest.mark.parametrize("name", ARTICLES)
def test_reading_time_follows_the_word_count(name: str) -> None:
    article = extracted(name).article
    if article.word_count:
        assert article.reading_minutes == max(1, round(article.word_count / WORDS_PER_MINUTE))
    else:
        assert article.reading_minutes == 0


@pytest.mark.parametrize("name", [name for name in ARTICLES if EXPECTED[name]["from_metadata"]])
def test_metadata_articles_still_have_a_summary_but_no_wall_text(name: str) -> None:
    extraction = extracted(name)
    assert extraction.article.summary
    assert "sign in" not in folded(extraction.text)


def test_the_whole_corpus_reads_quickly() -> None:
    for name in ARTICLES:
        extracted(name)
    # Generous bounds (shared CI machines): a typical page takes a few tens of milliseconds.
    assert statistics.median(SECONDS.values()) < 0.25
    assert math.fsum(SECONDS.values()) < 15


# -- anything at all: an Article or PermanentError --------------------------------------------------------------------

TAGS = ["html", "head", "body", "title", "meta", "p", "div", "article", "main", "span", "a", "h1", "h2", "table", "tr"]
TAGS += ["td", "ul", "li", "script", "style", "pre", "code", "section", "aside", "nav", "footer", "br", "img", "svg"]
ATTRIBUTES = st.dictionaries(
    st.sampled_from(["class", "id", "lang", "property", "name", "content", "href", "src", "charset", "itemprop"]),
    st.text(max_size=30),
    max_size=3,
)
WORDS = st.sampled_from(["learning", "Sign in", "ログイン", "Über", "¿qué?", "z. B.", "Dr.", "og:title", "。", "&amp;"])


def element(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    def render(tag: str, attributes: dict[str, str], inner: list[str], closed: bool) -> str:
        rendered = "".join(f' {k}="{v}"' for k, v in attributes.items())
        return f"<{tag}{rendered}>{''.join(inner)}" + (f"</{tag}>" if closed else "")

    return st.builds(render, st.sampled_from(TAGS), ATTRIBUTES, st.lists(children, max_size=5), st.booleans())


FRAGMENTS = st.recursive(st.one_of(st.text(max_size=80), WORDS), element, max_leaves=40)
URL = "https://example.com/a"


def extracts_or_refuses(html: str | bytes) -> None:
    try:
        article = extract(html, url=URL, final_url=URL).article
    except PermanentError as error:
        assert str(error).split(":", 1)[0] in {"no_content", "too_large"}
    else:
        assert article.title
        assert len(article.key_phrases) <= KEY_PHRASES


@settings(max_examples=60)
@given(st.binary(max_size=4096))
def test_random_bytes_never_raise_anything_but_permanent_error(data: bytes) -> None:
    extracts_or_refuses(data)


@settings(max_examples=60)
@given(st.text(max_size=4096))
def test_random_strings_never_raise_anything_but_permanent_error(text: str) -> None:
    extracts_or_refuses(text)


@settings(max_examples=80)
@given(st.lists(FRAGMENTS, min_size=1, max_size=6).map("".join))
def test_random_html_fragments_never_raise_anything_but_permanent_error(html: str) -> None:
    extracts_or_refuses(html)


@settings(max_examples=60)
@given(st.sampled_from(sorted(EXPECTED)), st.integers(0, 100), st.integers(0, 100), st.text(max_size=50))
def test_cut_and_spliced_corpus_pages_never_raise_anything_but_permanent_error(
    name: str, start: int, end: int, junk: str
) -> None:
    html = page(name)
    cut_from, cut_to = sorted((len(html) * start // 100, len(html) * end // 100))
    extracts_or_refuses(html[:cut_from] + junk + html[cut_to:])
