"""How long a post is, the way X and Mastodon count it.

X (twitter-text v3 rules, docs.x.com "counting characters"): the text is NFC-normalised; a code point weighs 1 in
U+0000-U+10FF, U+2000-U+200D, U+2010-U+201F and U+2032-U+2037, else 2; every URL weighs 23 (t.co), with a scheme or
a bare domain such as example.com; each emoji grapheme (ZWJ sequences, skin tones, flags, keycaps) weighs 2.

Mastodon: grapheme clusters; each URL with a scheme counts 23, bare domains count literally; `@user@domain` counts
as `@user`.

Grapheme clusters come from the `regex` module's `\\X` (Unicode UAX #29); the weights are ours on purpose:
`twitter-text-parser` (the maintained port of twitter-text) imports `pkg_resources` at import time, which
setuptools 82 removed, so it breaks in a fresh environment; and its emoji table stops at Unicode 12.
This counter is exact for the common cases; bare-domain detection uses a short TLD list, not IANA's full one.
"""

from __future__ import annotations

import re
import unicodedata

import regex

URL_WEIGHT = 23  # X: every link becomes a 23-character t.co link
MASTODON_URL_WEIGHT = 23  # Mastodon: characters_reserved_per_url

_LIGHT = ((0x0000, 0x10FF), (0x2000, 0x200D), (0x2010, 0x201F), (0x2032, 0x2037))

# common generic TLDs: a bare domain ending in one of these is a link ("example.com")
_GENERIC_TLDS = (
    "com|org|net|edu|gov|mil|int|info|biz|io|ai|app|dev|xyz|online|site|tech|news|blog|social|page|cloud|"
    "shop|store|live|media|network|academy|training|education|school|company|agency|digital|world|today"
)
# ccTLDs that twitter-text links even as a bare "name.tld" without a path
_SPECIAL_CCTLDS = {"co", "tv"}
_TRAILING = ".,;:!?'\")]}>"  # punctuation after a link is not part of it

_SCHEME_URL = re.compile(r"\bhttps?://[^\s<>\"]+", re.IGNORECASE)
_BARE_DOMAIN = re.compile(
    r"(?<![\w@./:-])"  # not inside an e-mail address, a path, or another word
    r"((?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+)"  # the labels, each followed by a dot
    r"([a-z]{2,24})"  # the TLD
    r"(?![\w-])"
    r"((?::\d{1,5})?(?:/[^\s<>\"]*)?)",  # an optional port and path
    re.IGNORECASE,
)
_GENERIC = re.compile(rf"(?:{_GENERIC_TLDS})", re.IGNORECASE)
_MENTION = re.compile(r"(?<![\w/])@(\w+)@[\w.-]+\w", re.UNICODE)

_ZWJ = 0x200D
_KEYCAP = 0x20E3
_GRAPHEME = regex.compile(r"\X")


def _strip_trailing(start: int, url: str) -> tuple[int, int]:
    end = start + len(url.rstrip(_TRAILING))
    return start, end


def _is_bare_link(labels: str, tld: str, rest: str) -> bool:
    tld = tld.lower()
    if _GENERIC.fullmatch(tld):
        return True
    if len(tld) != 2:
        return False
    # twitter-text: "name.cc" alone is not a link (it reads like a file name: render.py); with a path, a subdomain
    # (bbc.co.uk) or a special ccTLD (t.co) it is
    return bool(rest) or labels.count(".") > 1 or tld in _SPECIAL_CCTLDS


def url_spans(text: str, *, bare: bool = True) -> list[tuple[int, int]]:
    """Where the links are, as (start, end): scheme URLs, and bare domains when `bare`."""
    spans = [_strip_trailing(m.start(), m.group()) for m in _SCHEME_URL.finditer(text)]
    if bare:
        for match in _BARE_DOMAIN.finditer(text):
            if any(start <= match.start() < end for start, end in spans):
                continue
            labels, tld, rest = match.groups()
            if _is_bare_link(labels, tld, rest):
                spans.append(_strip_trailing(match.start(), match.group()))
    return sorted(spans)


def graphemes(text: str) -> list[str]:
    """Extended grapheme clusters (Unicode UAX #29, as the `regex` module's \\X implements it): what a reader sees
    as one character, such as decomposed Hangul, CRLF, Devanagari conjuncts, flags and ZWJ emoji sequences."""
    clusters: list[str] = _GRAPHEME.findall(text)  # `regex` has no type information
    return clusters


def _is_emoji(cluster: str) -> bool:
    codes = [ord(char) for char in cluster]
    first = codes[0]
    if len(codes) > 1 and any(code in (0xFE0F, _ZWJ, _KEYCAP) or 0x1F3FB <= code <= 0x1F3FF for code in codes):
        return True
    return (
        0x1F000 <= first <= 0x1FAFF  # pictographs, emoticons, transport, symbols and pictographs extended
        or 0x2600 <= first <= 0x27BF  # miscellaneous symbols, dingbats
        or 0x2B00 <= first <= 0x2BFF
    )


def _code_point_weight(char: str) -> int:
    code = ord(char)
    return 1 if any(low <= code <= high for low, high in _LIGHT) else 2


def _text_weight(text: str) -> int:
    total = 0
    for cluster in graphemes(text):
        total += 2 if _is_emoji(cluster) else sum(_code_point_weight(char) for char in cluster)
    return total


def weighted_length(text: str) -> int:
    """The length X counts against its 280 limit."""
    text = unicodedata.normalize("NFC", text)
    total, position = 0, 0
    for start, end in url_spans(text):
        total += _text_weight(text[position:start]) + URL_WEIGHT
        position = end
    return total + _text_weight(text[position:])


def mastodon_length(text: str, url_weight: int = MASTODON_URL_WEIGHT) -> int:
    """The length Mastodon counts against the instance's limit (500 by default)."""
    text = _MENTION.sub(r"@\1", text)
    total, position = 0, 0
    for start, end in url_spans(text, bare=False):
        total += len(graphemes(text[position:start])) + url_weight
        position = end
    return total + len(graphemes(text[position:]))
