"""What a person types into the library's search box, turned into an SQLite FTS5 query that cannot be a syntax error.

Words, "a phrase" and -excluded words (or -"an excluded phrase"); every other character is text. Each term is
quoted for FTS5, so `AND`, `*`, `:`, `(`, `NEAR` or `{title}` in the box are words to look for, never operators
or column filters. A term with no letter or digit (`-`, `€`, `...`) finds nothing, so it is dropped. The input is
bounded: MAX_QUERY_CHARS characters, MAX_TERMS terms.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

MAX_QUERY_CHARS = 500
MAX_TERMS = 32


@dataclass(frozen=True)
class ParsedQuery:
    include: tuple[str, ...] = ()  # FTS5 strings: one quoted word or phrase each, all required
    exclude: tuple[str, ...] = ()  # FTS5 strings: none of them may match

    @property
    def empty(self) -> bool:
        return not self.include and not self.exclude

    def match(self) -> str | None:
        """The FTS5 expression of the whole query; None when it has no required term (only exclusions, or nothing)."""
        if not self.include:
            return None
        required = " AND ".join(self.include)
        if not self.exclude:
            return required
        return f"({required}) NOT ({self.excluded()})"

    def excluded(self) -> str | None:
        return " OR ".join(self.exclude) if self.exclude else None

    def any_term(self) -> str | None:
        """Any one required term: which line of a transcript matched best (the terms may be on different lines)."""
        return " OR ".join(self.include) if self.include else None


def parse(text: str) -> ParsedQuery:
    include: list[str] = []
    exclude: list[str] = []
    for negated, term in _terms(text[:MAX_QUERY_CHARS]):
        if len(include) + len(exclude) >= MAX_TERMS:
            break
        if not _has_token(term):
            continue
        quoted = '"' + term.replace('"', '""') + '"'
        target = exclude if negated else include
        if quoted not in target:
            target.append(quoted)
    return ParsedQuery(tuple(include), tuple(exclude))


def _terms(text: str) -> list[tuple[bool, str]]:
    """(negated, term) in order: a term is a run of non-space characters, or what stands between double quotes when
    a term starts with one (an unclosed quote runs to the end); a leading `-` excludes it."""
    terms: list[tuple[bool, str]] = []
    i, n = 0, len(text)
    while i < n:
        if text[i].isspace():
            i += 1
            continue
        negated = text[i] == "-" and i + 1 < n and not text[i + 1].isspace()
        if negated:
            i += 1
        if text[i] == '"':
            end = text.find('"', i + 1)
            end = n if end < 0 else end
            terms.append((negated, text[i + 1 : end]))
            i = end + 1
        else:
            start = i
            while i < n and not text[i].isspace():
                i += 1
            terms.append((negated, text[start:i]))
    return terms


def _has_token(term: str) -> bool:
    """Whether FTS5's unicode61 tokenizer finds a token in it: its token characters are letters, numbers and
    private-use characters (categories L*, N*, Co); everything else separates tokens."""
    return any(unicodedata.category(ch)[0] in "LN" or unicodedata.category(ch) == "Co" for ch in term)
