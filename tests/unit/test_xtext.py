"""X's weighted length (twitter-text v3 rules) and Mastodon's count, against the counts twitter-text gives."""

from __future__ import annotations

import unicodedata

import pytest

from pipeline.channels.xtext import graphemes, mastodon_length, url_spans, weighted_length


@pytest.mark.parametrize(
    ("text", "expected"),
    [  # verified with twitter-text-parser 3.0.0 (research notes, section 2)
        ("hello", 5),
        ("a" * 280, 280),
        ("a" * 281, 281),
        ("x https://example.com/" + "p" * 100, 25),
        ("日本語", 6),
        ("😷", 2),
        ("👩🏽‍💻", 2),
        ("Read more: example.com ok", 37),
    ],
)
def test_twitter_text_counts(text: str, expected: int) -> None:
    assert weighted_length(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", 0),
        ("“quotes” – dashes…", 17 + 2),  # curly quotes and dashes (U+2010-U+201F) weigh 1; … (U+2026) weighs 2
        ("naïve café", 10),  # Latin-1 and Latin Extended: 1 each
        ("cafe\u0301", 4),  # NFC first: e + combining acute is one é
        ("Привет", 6),  # Cyrillic is below U+10FF
        ("한국어", 6),  # Hangul syllables weigh 2
        ("🇫🇷🇩🇪", 4),  # two flags, each a pair of regional indicators
        ("1️⃣", 2),  # keycap sequence
        ("👨‍👩‍👧‍👦 family", 2 + 7),  # one ZWJ family
        ("👍🏿👍", 4),  # skin tone joins its emoji
        ("❤️", 2),  # heart + variation selector
    ],
)
def test_weights(text: str, expected: int) -> None:
    assert weighted_length(text) == expected


@pytest.mark.parametrize(
    ("text", "links"),
    [
        ("go to https://meet.jit.si/Room-abc now", ["https://meet.jit.si/Room-abc"]),
        ("(see https://example.org/a_b)", ["https://example.org/a_b"]),  # closing punctuation is not the link
        ("Join: https://x.org/abc.", ["https://x.org/abc"]),
        ("HTTP://EXAMPLE.ORG", ["HTTP://EXAMPLE.ORG"]),
        ("read example.com today", ["example.com"]),
        ("on www.bbc.co.uk", ["www.bbc.co.uk"]),  # ccTLD with a subdomain
        ("at t.co", ["t.co"]),  # special ccTLD
        ("see example.de/path", ["example.de/path"]),  # ccTLD with a path
        ("edit render.py then", []),  # a bare name.ccTLD reads like a file name: not a link
        ("mail ada@example.org", []),  # an e-mail address is not a link
        ("e.g. this, i.e. that", []),
        ("version 3.14 or v1.2.3", []),
    ],
)
def test_url_detection(text: str, links: list[str]) -> None:
    assert [text[start:end] for start, end in url_spans(text)] == links


def test_every_link_weighs_23_whatever_its_length() -> None:
    short, long = "https://a.io", "https://meet.jit.si/" + "x" * 200
    assert weighted_length(f"{short} {long}") == 23 + 1 + 23
    assert weighted_length("日本 https://example.org") == 4 + 1 + 23


def test_graphemes() -> None:
    assert graphemes("ab👩🏽‍💻c") == ["a", "b", "👩🏽‍💻", "c"]
    assert graphemes("🇫🇷🇩🇪🇮") == ["🇫🇷", "🇩🇪", "🇮"]
    assert graphemes("e\u0301x") == ["e\u0301", "x"]


def test_mastodon_counts_graphemes_scheme_links_and_local_mentions() -> None:
    assert mastodon_length("hello") == 5
    assert mastodon_length("日本語") == 3  # no double weight on Mastodon
    assert mastodon_length("👩🏽‍💻") == 1
    assert mastodon_length("https://example.org/" + "a" * 100) == 23
    assert mastodon_length("example.com") == 11  # bare domains count literally
    assert mastodon_length("hi @ada@mastodon.social") == len("hi @ada")
    assert mastodon_length("x https://a.io", url_weight=10) == 12


@pytest.mark.parametrize(
    ("text", "clusters"),
    [
        (unicodedata.normalize("NFD", "한국어"), 3),  # decomposed Hangul: leading, vowel and trailing jamo join
        ("one\r\ntwo", 7),  # CRLF is one grapheme
        ("नमस्ते", 3),  # Devanagari: न, म, and the conjunct स्ते
        ("क्षि", 1),  # the conjunct क्ष with its vowel sign
    ],
)
def test_graphemes_follow_unicode_clusters(text: str, clusters: int) -> None:
    assert len(graphemes(text)) == clusters
    assert mastodon_length(text) == clusters
