"""What a person types into the library's search box, turned into an SQLite FTS5 query that cannot be a syntax error.

Words, "a phrase" and -excluded words (or -"an excluded phrase"); every other character is text. Each term is
quoted for FTS5, so `AND`, `*`, `:`, `(`, `NEAR` or `{title}` in the box are words to look for, never operators
or column filters. A term with no letter or digit (`-`, `€`, `...`) finds nothing, so it is dropped. The input is
bounded: MAX_QUERY_CHARS characters, MAX_TERMS terms.

Stop words (STOP_WORDS: articles, prepositions, conjunctions, pronouns and auxiliaries of the library's four languages),
as search engines treat them: in a query with another word, an unquoted stop word neither constrains nor ranks (`the
culture of feedback` looks for *culture* and *feedback*); a query of stop words only (`the`, `to be or not to be`)
looks for them in the short fields only (`short_only`: title, tagline, tags, description, credits), not in transcripts
and article texts, where they are everywhere. A quoted phrase keeps its stop words (`"the art of war"`), and so does a
quoted word (`"the"` looks everywhere). Exclusions are kept as typed.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

MAX_QUERY_CHARS = 500
MAX_TERMS = 32

# Function words of English, German, French and Spanish (each one is in the project's own per-language lists,
# pipeline.domain.summary.stopwords). Left out on purpose: words that are content words in another of the four
# languages (German war, man, hat; French son, plus; Spanish sin, era, red), which a person may well look for.
STOP_WORDS = frozenset(
    (
        "a an and are as at be been but by can did do does for from had has have he her him his i if in into is it "
        "its me my no not of on or our she so such than that the their them then there these they this to us was we "
        "were what when which who will with would you your "
        "der die das den dem des ein eine einer eines einem einen und oder aber in im an am auf aus bei mit nach von "
        "vom zu zum zur für über unter vor ist sind sein wird werden wurde haben habe es er sie ich wir ihr du sich "
        "nicht auch als wie so dass noch nur "
        "le la les l un une des du de d au aux et ou mais en dans par pour sur avec sans sous ce cet cette ces qui que "
        "qu quoi dont il ils elle elles je tu nous vous on se sa ses leur leurs mon ma mes ne pas est sont être avoir "
        "ont été y à lui "
        "el la los las lo un una unos unas de del al a y o e ni pero en por para con sobre entre que qué como cuando "
        "donde se su sus le les me nos mi es ser estar está haber ha han no sí muy más ya este esta estos esto ese "
        "esa yo él ella ellos también"
    ).split()
)


@dataclass(frozen=True)
class ParsedQuery:
    include: tuple[str, ...] = ()  # FTS5 strings: one quoted word or phrase each, as typed (stop words too)
    exclude: tuple[str, ...] = ()  # FTS5 strings: none of them may match
    stop: tuple[bool, ...] = ()  # per include term: an unquoted stop word

    @property
    def empty(self) -> bool:
        return not self.include and not self.exclude

    @property
    def short_only(self) -> bool:
        """Only stop words: they are looked for in the short fields (title .. credits), not in the long texts."""
        return bool(self.include) and all(self.stop)

    @property
    def words(self) -> tuple[str, ...]:
        """The required terms that select and rank: stop words left out when another term is there."""
        if self.short_only or not any(self.stop):
            return self.include
        return tuple(term for term, stop in zip(self.include, self.stop, strict=True) if not stop)

    def match(self) -> str | None:
        """The FTS5 expression of the whole query; None when it has no required term (only exclusions, or nothing)."""
        return self._expression(self.words)

    def literal(self) -> str | None:
        """The FTS5 expression of every word as typed, stop words required too (what a plain FTS5 query would do)."""
        return self._expression(self.include)

    def _expression(self, words: tuple[str, ...]) -> str | None:
        if not words:
            return None
        required = " AND ".join(words)
        if not self.exclude:
            return required
        return f"({required}) NOT ({self.excluded()})"

    def excluded(self) -> str | None:
        return " OR ".join(self.exclude) if self.exclude else None

    def any_term(self) -> str | None:
        """Any one required term: which line of a transcript matched best (the terms may be on different lines)."""
        return " OR ".join(self.words) if self.words else None


def parse(text: str) -> ParsedQuery:
    include: list[str] = []
    exclude: list[str] = []
    stop: list[bool] = []
    for negated, phrase, term in _terms(text[:MAX_QUERY_CHARS]):
        if len(include) + len(exclude) >= MAX_TERMS:
            break
        if not _has_token(term):
            continue
        quoted = '"' + term.replace('"', '""') + '"'
        if negated:
            if quoted not in exclude:
                exclude.append(quoted)
        elif quoted not in include:
            include.append(quoted)
            stop.append(not phrase and term.casefold() in STOP_WORDS)
        elif phrase:  # typed both ways (`the "the"`): the quoted one counts
            stop[include.index(quoted)] = False
    return ParsedQuery(tuple(include), tuple(exclude), tuple(stop))


def _terms(text: str) -> list[tuple[bool, bool, str]]:
    """(negated, quoted, term) in order: a term is a run of non-space characters, or what stands between double quotes
    when a term starts with one (an unclosed quote runs to the end); a leading `-` excludes it."""
    terms: list[tuple[bool, bool, str]] = []
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
            terms.append((negated, True, text[i + 1 : end]))
            i = end + 1
        else:
            start = i
            while i < n and not text[i].isspace():
                i += 1
            terms.append((negated, False, text[start:i]))
    return terms


def _has_token(term: str) -> bool:
    """Whether FTS5's unicode61 tokenizer finds a token in it: its token characters are letters, numbers and
    private-use characters (categories L*, N*, Co); everything else separates tokens."""
    return any(unicodedata.category(ch)[0] in "LN" or unicodedata.category(ch) == "Co" for ch in term)
