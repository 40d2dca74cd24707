"""The one `shorten` (pipeline/text.py): what the four former copies (provider titles, notices, posts, feed texts)
now share, and where they used to disagree."""

from __future__ import annotations

import random

import pytest

from pipeline.text import shorten


@pytest.mark.parametrize(
    ("text", "limit", "expected"),
    [
        ("short enough", 12, "short enough"),
        ("one two three", 9, "one two…"),
        ("one two three", 8, "one two…"),  # a word that fits exactly is kept
        ("hello, wonderful world", 12, "hello…"),  # no comma left before the ellipsis
        ("a " + "x" * 40, 12, "a xxxxxxxxx…"),  # a boundary keeping under half: cut inside the word
        ("https://example.org/" + "x" * 300, 30, "https://example.org/xxxxxxxxx…"),  # a URL keeps its start
        ("anything", 1, "…"),
        ("anything", 0, ""),
    ],
)
def test_shorten(text: str, limit: int, expected: str) -> None:
    assert shorten(text, limit) == expected


def test_whole_words_never_cut_inside_a_word() -> None:
    assert shorten("a " + "x" * 40, 12, whole_words=True) == "a…"
    assert shorten("Supercalifragilisticexpialidocious leadership", 10, whole_words=True) == "…"


def test_shorten_always_fits_and_keeps_a_prefix() -> None:
    rng = random.Random(18)
    words = ["a", "leadership", "soft-skills", "e-learning,", "isn't", "—", "x" * 30, "日本語"]
    for _ in range(500):
        text = " ".join(rng.choice(words) for _ in range(rng.randrange(1, 30)))
        limit = rng.randrange(2, 120)
        for whole_words in (False, True):
            result = shorten(text, limit, whole_words=whole_words)
            assert len(result) <= limit, (text, limit, result)
            assert result == text or (result.endswith("…") and text.startswith(result[:-1])), (text, result)
            assert result == text or not result[:-1].endswith((" ", ",", "-")), (text, limit, result)
