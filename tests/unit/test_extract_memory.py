"""What reading pages keeps in memory for good: each cache once, and bounded."""

from __future__ import annotations

import sys
from pathlib import Path

import justext.core
import trafilatura.external

from pipeline.enrich.extract import extract

ARTICLES = Path(__file__).parents[1] / "fixtures" / "articles"
MB = 1024 * 1024


def _held_bytes(*containers: object) -> int:
    """Bytes of the containers and of every distinct string in them (a string shared by two counts once)."""
    held: dict[int, object] = {}
    for container in containers:
        held[id(container)] = container
        for word in container:  # type: ignore[attr-defined]
            held[id(word)] = word
    return sum(sys.getsizeof(thing) for thing in held.values())


def test_the_justext_fallback_keeps_the_stop_words_of_every_language_once() -> None:
    # a login wall: too little text for trafilatura's own extraction, so it falls back to justext with no language
    extract(
        (ARTICLES / "linkedin-login-wall-post.html").read_bytes(),
        url="https://x.invalid/",
        final_url="https://x.invalid/",
    )

    kept_by_trafilatura = trafilatura.external.JT_STOPLIST
    assert kept_by_trafilatura is not None, "the page no longer reaches justext: pick one that does"
    used_by_justext = justext.core.define_stoplist(kept_by_trafilatura)
    assert used_by_justext is kept_by_trafilatura  # one copy, not a tuple and a lower-cased frozenset of it
    assert len(used_by_justext) > 100_000 and all(word == word.lower() for word in used_by_justext)
    # the old tuple and its lower-cased copy held 28 MB; one set of the same words 15.5 MB
    assert _held_bytes(kept_by_trafilatura, used_by_justext) < 20 * MB
