"""What people type into the library's search box: words, phrases, exclusions; everything else is text."""

from __future__ import annotations

import sqlite3

from hypothesis import given
from hypothesis import strategies as st

from pipeline.archive.query import MAX_QUERY_CHARS, MAX_TERMS, ParsedQuery, parse


def test_words_phrases_and_exclusions() -> None:
    parsed = parse('soft skills "working out loud" -email -"status meeting"')
    assert parsed.include == ('"soft"', '"skills"', '"working out loud"')
    assert parsed.exclude == ('"email"', '"status meeting"')
    assert parsed.match() == '("soft" AND "skills" AND "working out loud") NOT ("email" OR "status meeting")'
    assert parsed.any_term() == '"soft" OR "skills" OR "working out loud"'


def test_operators_and_syntax_are_words() -> None:
    parsed = parse('a AND b OR NOT c* {title}: NEAR(x) e-learning don"t')
    assert parsed.include == ('"a"', '"AND"', '"b"', '"OR"', '"NOT"', '"c*"', '"{title}:"', '"NEAR(x)"',
                              '"e-learning"', '"don""t"')  # fmt: skip
    assert parsed.exclude == ()


def test_terms_without_a_letter_or_digit_are_dropped() -> None:
    assert parse('- -- "" " " € ... ***').empty
    assert parse("-").match() is None
    assert parse("-only").match() is None and parse("-only").excluded() == '"only"'


def test_an_unclosed_quote_runs_to_the_end() -> None:
    assert parse('"soft skills').include == ('"soft skills"',)


def test_repeats_are_one_term() -> None:
    assert parse("team team Team").include == ('"team"', '"Team"')


def test_bounded_in_length_and_terms() -> None:
    assert len(parse(" ".join(f"w{i}" for i in range(100))).include) == MAX_TERMS
    parsed = parse("x" * (MAX_QUERY_CHARS + 100))
    assert parsed.include == ('"' + "x" * MAX_QUERY_CHARS + '"',)


def fts() -> sqlite3.Connection:
    db = sqlite3.connect(":memory:")
    db.execute("CREATE VIRTUAL TABLE t USING fts5(a, b, tokenize='porter unicode61 remove_diacritics 2')")
    db.execute("INSERT INTO t VALUES ('soft skills in Genève', 'the working out loud circle')")
    return db


DB = fts()


def assert_valid(text: str) -> None:
    parsed = parse(text)
    for expression in (parsed.match(), parsed.excluded(), parsed.any_term()):
        if expression is not None:
            DB.execute("SELECT rowid FROM t WHERE t MATCH ?", (expression,)).fetchall()


@given(st.text(max_size=200))
def test_any_text_is_a_valid_fts5_query(text: str) -> None:
    assert_valid(text)


SYNTAX = ['"', "-", "(", ")", "*", ":", "^", "{", "}", "AND", "OR", "NOT", "NEAR", "a", "b", " "]


@given(st.lists(st.sampled_from(SYNTAX), max_size=40))
def test_fts5_syntax_pieces_never_break_the_query(pieces: list[str]) -> None:
    assert_valid("".join(pieces))


def test_the_match_finds_what_the_words_say() -> None:
    def hits(q: str) -> int:
        expression = parse(q).match()
        return len(DB.execute("SELECT rowid FROM t WHERE t MATCH ?", (expression,)).fetchall()) if expression else -1

    assert hits('"soft skills"') == 1
    assert hits('"skills soft"') == 0
    assert hits("geneve") == 1
    assert hits("soft -geneve") == 0
    assert hits("b:loud") == 0  # not a column filter: the words b and loud together
    assert isinstance(parse(""), ParsedQuery) and parse("").empty


def test_stop_words_beside_other_words_neither_constrain_nor_rank() -> None:
    parsed = parse("the culture OF feedback -the")
    assert parsed.include == ('"the"', '"culture"', '"OF"', '"feedback"')  # as typed
    assert parsed.words == ('"culture"', '"feedback"')
    assert parsed.match() == '("culture" AND "feedback") NOT ("the")'  # an exclusion is kept as typed
    assert parsed.literal() == '("the" AND "culture" AND "OF" AND "feedback") NOT ("the")'
    assert parsed.any_term() == '"culture" OR "feedback"'
    assert not parsed.short_only


def test_a_query_of_stop_words_only_is_for_the_short_fields() -> None:
    for q in ("the", "to be or not to be", "der die das", "le la", "el y"):
        parsed = parse(q)
        assert parsed.short_only, q
        assert parsed.words == parsed.include and parsed.match() == parsed.literal(), q
    assert not parse("").short_only and not parse("-the").short_only


def test_quoted_stop_words_are_kept() -> None:
    assert parse('"the art of war"').words == ('"the art of war"',)
    assert not parse('"the art of war"').short_only
    assert parse('"the" culture').words == ('"the"', '"culture"')
    assert not parse('"the"').short_only
    assert not parse('the "the"').short_only  # typed both ways: the quoted one counts


def test_stop_words_come_from_the_projects_lists_without_words_another_language_means() -> None:
    from pipeline.archive.query import STOP_WORDS
    from pipeline.domain.summary import stopwords

    assert STOP_WORDS <= set().union(*(stopwords(language) for language in ("en", "de", "fr", "es")))
    assert {"the", "of", "der", "die", "und", "le", "de", "et", "el", "y", "que"} <= STOP_WORDS
    assert not {"war", "man", "hat", "son", "sin", "era", "red", "plus"} & STOP_WORDS
    assert parse("war").words == ('"war"',) and not parse("war").short_only
