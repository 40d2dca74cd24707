"""Shortening user-written text to a limit: the one `shorten` (titles for providers, notices, posts, feed texts).

Pure functions, no I/O.
"""

from __future__ import annotations

ELLIPSIS = "…"
_TRAILING = " ,;:.-–—"  # not left dangling before the ellipsis


def shorten(text: str, limit: int, *, whole_words: bool = False) -> str:
    """At most `limit` characters, ending in an ellipsis when cut. The cut falls at a word's end when that keeps at
    least half the room, else inside the word (a long URL keeps its start). With `whole_words` (posts people read)
    never inside a word: a first word too long is dropped whole, leaving the ellipsis."""
    if len(text) <= limit:
        return text
    if limit <= 1:
        return ELLIPSIS if limit == 1 else ""
    head = text[:limit]  # one char more than is kept: tells whether the cut falls on a boundary
    cut = head[:-1] if head[-1] == " " else head.rsplit(" ", 1)[0] if " " in head else ""
    if not whole_words and len(cut) < limit // 2:
        cut = head[:-1]
    return cut.rstrip(_TRAILING) + ELLIPSIS
