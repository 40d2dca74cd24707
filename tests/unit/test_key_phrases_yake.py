"""Key phrases by YAKE's formulas over plain dicts (`summary.yake_ranked`) instead of the yake package: the same
phrases on the corpus, with the package as the oracle; and phrase counting by str.find equal to the regex it
replaced."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import pytest
import yake
import yaml
from hypothesis import given
from hypothesis import strategies as st

from pipeline.domain.summary import (
    EDGE_PUNCTUATION,
    KEY_PHRASES,
    _distinct,
    _occurrences,
    _rerank_by_repetition,
    is_unspaced,
    key_phrases,
    keyword_sample,
)
from pipeline.enrich.extract import extract
from pipeline.errors import PermanentError

ARTICLES = Path(__file__).parents[1] / "fixtures" / "articles"
EXPECTED = yaml.safe_load((ARTICLES / "expected.yaml").read_text())


def with_the_yake_package(text: str, language: str | None, title: str) -> list[str]:
    """key_phrases as it was before: the yake package's candidates, then our re-ranking and de-duplication."""
    sample = keyword_sample(text, title)
    extractor = yake.KeywordExtractor(lan=language or "noLang", n=3, dedup_lim=0.8, top=KEY_PHRASES * 5)
    candidates = [phrase.strip(EDGE_PUNCTUATION) for phrase, _score in extractor.extract_keywords(sample)]
    return _distinct(_rerank_by_repetition(candidates, sample), KEY_PHRASES)


def spaced_pages() -> list[str]:
    return [name for name, expected in EXPECTED.items() if "error" not in expected and expected["language"] != "ja"]


@pytest.mark.parametrize("name", spaced_pages())
def test_key_phrases_are_those_the_yake_package_gives(name: str) -> None:
    url = EXPECTED[name]["url"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            extraction = extract((ARTICLES / name).read_text(errors="replace"), url=url, final_url=url)
        except PermanentError:
            pytest.skip("no article")
    article = extraction.article
    if not extraction.text or is_unspaced(extraction.text, article.language):
        pytest.skip("described from its metadata, or keyed by character runs (no yake)")
    ours = [p.casefold() for p in key_phrases(extraction.text, article.language, title=article.title)]
    package = [p.casefold() for p in with_the_yake_package(extraction.text, article.language, article.title)]
    assert ours[0] == package[0]
    assert len(set(ours[:5]) & set(package[:5])) >= 3, (ours, package)


TEXT = st.text(alphabet="aAbB_1 .-'İißSsK\u212a", max_size=40)


@given(text=TEXT, start=st.integers(0, 40), length=st.integers(0, 6))
def test_occurrences_are_what_the_regex_found(text: str, start: int, length: int) -> None:
    phrase = text[start : start + length] or "a"
    expected = re.findall(rf"(?<!\w){re.escape(phrase)}(?!\w)", text, re.IGNORECASE)
    assert _occurrences(phrase, text, text.lower()) == expected
