"""Relevance suite of the library's search: 240 generated recordings (en, de, fr, es) with transcripts, their reading
list, and planted items with known answers. Built without NATS (LibraryIndex.add); tests/integration/
test_library_index.py proves the same index follows the real bucket."""

from __future__ import annotations

import asyncio
import math
import re
import unicodedata
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from pipeline.archive.search import FACETS, LibraryIndex, SearchPage, SearchQuery, facet_slug
from pipeline.domain.catalog import ArticleItem, Cue, LibraryRecord, SearchText
from tests.library_corpus import Corpus, article, cues, generate, record

ONBOARDING_LINE = 37
FILLER = ("we talked about the team and what it did for people in the network " * 8).split()


def planted() -> Corpus:
    """Items whose answers are known, each with one purpose."""
    corpus = Corpus()

    def add(item: LibraryRecord | ArticleItem, text: SearchText | None = None) -> None:
        if isinstance(item, LibraryRecord):
            corpus.records.append(item)
            item_id = item.entry.entry_id
        else:
            corpus.articles.append(item)
            item_id = item.article_id
        if text is not None:
            corpus.texts[item_id] = text

    day = datetime(2026, 2, 1, 17, 0, tzinfo=UTC)
    add(record("p-leader", title="What a good leader does on a Monday", started_at=day))
    add(record("p-leads", title="Monday notes", description="She leads the group by example.", started_at=day))
    add(
        record("p-geneve", title="Rencontre à Genève", language="fr", tags=("Café Zürich",), started_at=day),
        SearchText(cues=cues("nous parlons de la ville de Genève et du lac".split())),
    )
    add(record("p-phrase", title="Monday call"), SearchText(cues=cues([*FILLER[:30], "soft", "skills", *FILLER])))
    add(
        record("p-apart", title="Tuesday call"),
        SearchText(cues=cues([*FILLER[:30], "soft", "voices", "and", "hard", "skills", *FILLER])),
    )
    words = FILLER * 5
    words[ONBOARDING_LINE * 12 + 5] = "onboarding"  # line 37 of 12 words a line: starts at 37 * 4.0 s
    add(record("p-transcript", title="A quiet Wednesday"), SearchText(cues=cues(words)))
    add(
        record("p-scaffold", title="Thursday talk"),
        SearchText(cues=cues(FILLER), article_text="Instructional scaffolding fades as the learner grows."),
    )
    add(
        article("a-scaffold", title="Building blocks", summary="A piece on support."),
        SearchText(article_text="On scaffolding in workplace learning."),
    )
    # field weighting: 'wayfinding' once, in one field each (and the credits, for the order of every column)
    add(record("w-title", title="Wayfinding at work", tagline="notes from a call"))
    add(record("w-tagline", title="Notes from a call", tagline="wayfinding at work"))
    add(record("w-tags", title="Notes from a call", tags=("Wayfinding",)))
    add(record("w-description", title="Notes from a call", description="The call was about wayfinding at work."))
    add(record("w-transcript", title="Notes from a call"), SearchText(cues=cues([*FILLER, "wayfinding"])))
    add(record("w-article", title="Notes from a call"), SearchText(article_text=" ".join([*FILLER, "wayfinding"])))
    # visibility
    add(record("v-unpublished", title="Taken down: kaleidoscope session", published=False))
    add(record("v-internal", title="Internal kaleidoscope session", visibility="internal"))
    add(article("v-unlisted", title="Unlisted kaleidoscope article", listed=False))
    add(article("v-public", title="Public kaleidoscope article"))
    return corpus


CORPUS = generate(240)
CORPUS.extend(planted())


@pytest.fixture(scope="module")
def index() -> Iterator[LibraryIndex]:
    library = LibraryIndex()
    asyncio.run(library.add(*CORPUS.records, *CORPUS.articles, texts=CORPUS.texts))
    yield library
    asyncio.run(library.stop())


async def ids(index: LibraryIndex, q: str, **options: object) -> list[str]:
    page = await index.search(SearchQuery(q=q, per_page=100, **options))  # type: ignore[arg-type]
    assert page.total <= 100, "use a narrower query"
    return [hit.item_id for hit in page.hits]


def visible(item: LibraryRecord | ArticleItem) -> bool:
    if isinstance(item, LibraryRecord):
        return item.published and item.entry.visibility == "public"
    return item.listed and item.visibility == "public"


def fold(text: str) -> set[str]:
    """A reference tokenizer: words, lower case, without accents (no stemming: used for unstemmed words only)."""
    plain = "".join(c for c in unicodedata.normalize("NFD", text.casefold()) if unicodedata.category(c) != "Mn")
    return set(re.findall(r"\w+", plain))


def searchable_text(item: LibraryRecord | ArticleItem) -> str:
    text = CORPUS.texts.get(item.entry.entry_id if isinstance(item, LibraryRecord) else item.article_id, SearchText())
    body = " ".join(cue.text for cue in text.cues) + " " + text.article_text
    if isinstance(item, LibraryRecord):
        e = item.entry
        p = e.provenance
        return " ".join([e.title, e.tagline, e.description, *e.tags, *e.topics, p.article_title, p.article_author or "",
                         p.site_name or "", p.shared_by, body])  # fmt: skip
    return " ".join([item.title, item.tagline, item.summary, *item.key_phrases, *item.topics, item.author or "",
                     item.site_name or "", item.shared_by, body])  # fmt: skip


def test_the_suite_has_at_least_200_entries_in_four_languages_with_transcripts() -> None:
    assert len(CORPUS.records) >= 200
    assert {r.entry.language for r in CORPUS.records} >= {"en", "de", "fr", "es"}
    assert sum(1 for r in CORPUS.records if CORPUS.texts.get(r.entry.entry_id, SearchText()).cues) >= 200
    assert len(CORPUS.articles) >= 50


async def test_stemmed_forms_find_each_other(index: LibraryIndex) -> None:
    assert await ids(index, "leaders") == ["p-leader"]
    assert await ids(index, "leader") == ["p-leader"]
    assert await ids(index, "leading") == ["p-leads"]  # lead, leads, leading: one stem


async def test_accents_both_ways(index: LibraryIndex) -> None:
    for q in ("Geneve", "Genève", "GENÈVE", "genéve"):
        assert await ids(index, q) == ["p-geneve"], q
    expected = {r.entry.entry_id for r in CORPUS.records if visible(r) and "Café Zürich" in r.entry.tags}
    for q in ("Zurich", "Zürich", "café zurich", '"Cafe Zürich"'):
        page = await index.search(SearchQuery(q=q, per_page=100))
        assert {hit.item_id for hit in page.hits} == expected, q


LANGUAGE_WORDS = [
    ("Zusammenarbeit", "zusammenarbeit"),
    ("réflexion", "reflexion"),
    ("conversación", "conversacion"),
    ("curiosity", "Curiosity"),
]


@pytest.mark.parametrize(("word", "query"), LANGUAGE_WORDS)
async def test_a_word_of_each_language_finds_exactly_the_items_that_contain_it(
    index: LibraryIndex, word: str, query: str
) -> None:
    expected = {
        item.entry.entry_id if isinstance(item, LibraryRecord) else item.article_id
        for item in [*CORPUS.records, *CORPUS.articles]
        if visible(item) and fold(word) <= fold(searchable_text(item))
    }
    page = await index.search(SearchQuery(q=query, per_page=100))
    assert 0 < len(expected) <= 100
    assert page.total == len(expected)
    assert {hit.item_id for hit in page.hits} == expected


async def test_a_phrase_matches_the_words_together_not_apart(index: LibraryIndex) -> None:
    assert await ids(index, '"soft skills"') == ["p-phrase"]
    assert sorted(await ids(index, "soft skills")) == ["p-apart", "p-phrase"]
    assert await ids(index, 'soft skills -"soft skills"') == ["p-apart"]


async def test_a_word_only_in_a_transcript_finds_its_moment(index: LibraryIndex) -> None:
    page = await index.search(SearchQuery(q="onboarding"))
    assert [hit.item_id for hit in page.hits] == ["p-transcript"]
    hit = page.hits[0]
    assert hit.moment == ONBOARDING_LINE * 4.0
    assert "\x02onboarding\x03" in hit.snippet
    assert hit.record is not None and hit.record.entry.title == "A quiet Wednesday"


async def test_no_moment_when_the_transcript_did_not_match(index: LibraryIndex) -> None:
    page = await index.search(SearchQuery(q="leader"))
    assert page.hits[0].moment is None


async def test_words_of_the_article_find_the_recording_and_the_reading_list_item(index: LibraryIndex) -> None:
    page = await index.search(SearchQuery(q="scaffolding"))
    assert {(hit.kind, hit.item_id) for hit in page.hits} == {("recording", "p-scaffold"), ("article", "a-scaffold")}
    article_hit = next(hit for hit in page.hits if hit.kind == "article")
    assert article_hit.article is not None and article_hit.record is None and article_hit.moment is None
    assert "\x02scaffolding\x03" in article_hit.snippet
    assert await ids(index, "scaffolding", kinds=("article",)) == ["a-scaffold"]


async def test_fields_are_weighted_title_tagline_tags_description_transcript_article(index: LibraryIndex) -> None:
    assert await ids(index, "wayfinding") == [
        "w-title",
        "w-tagline",
        "w-tags",
        "w-description",
        "w-transcript",
        "w-article",
    ]


async def test_a_title_match_ranks_above_a_transcript_only_one_that_says_it_often(index: LibraryIndex) -> None:
    noisy = record("w-noisy", title="Notes from a call")
    library = LibraryIndex()
    try:
        await library.add(
            record("w-title", title="Wayfinding at work"),
            noisy,
            texts={"w-noisy": SearchText(cues=cues(["wayfinding"] * 40 + FILLER))},
        )
        page = await library.search(SearchQuery(q="wayfinding"))
        assert [hit.item_id for hit in page.hits] == ["w-title", "w-noisy"]
        assert page.hits[0].score > page.hits[1].score > 0
    finally:
        await library.stop()


@pytest.mark.parametrize(
    "q",
    [
        "provenance",
        "tagline",
        "description",
        "title",
        "entry_id",
        "127.0.0.1",
        "http://127.0.0.1:8000",
        "localhost",
        "trusted-share-on-leadership-or-learning",
        "session-rec-00001",
        "rec-00001",
        "facilitator@example.com",
        "Ana Ruiz",
        "Okafor",
        "jitsi",
        "slack",
    ],
)
async def test_nothing_internal_is_searchable(index: LibraryIndex, q: str) -> None:
    page = await index.search(SearchQuery(q=q, include_internal=True, include_unlisted=True))
    assert page.total == 0 and page.hits == [] and page.pages == 0


async def test_a_correlation_id_matches_nothing(index: LibraryIndex) -> None:
    correlation = CORPUS.records[3].entry.correlation_id
    page = await index.search(SearchQuery(q=correlation, include_internal=True, include_unlisted=True))
    assert page.total == 0


async def test_public_readers_see_neither_unpublished_nor_internal_nor_unlisted(index: LibraryIndex) -> None:
    assert await ids(index, "kaleidoscope") == ["v-public"]
    assert sorted(await ids(index, "kaleidoscope", include_internal=True)) == ["v-internal", "v-public"]
    assert sorted(await ids(index, "kaleidoscope", include_unlisted=True)) == [
        "v-public",
        "v-unlisted",
        "v-unpublished",
    ]
    everything = await ids(index, "kaleidoscope", include_unlisted=True, include_internal=True)
    assert sorted(everything) == ["v-internal", "v-public", "v-unlisted", "v-unpublished"]


def expected_facets(items: list[LibraryRecord | ArticleItem]) -> dict[str, Counter[str]]:
    counts: dict[str, Counter[str]] = {facet: Counter() for facet in FACETS}
    for item in items:
        if isinstance(item, LibraryRecord):
            e, p = item.entry, item.entry.provenance
            values = {("tag", t) for t in e.tags} | {("topic", t) for t in e.topics}
            values |= {("author", p.article_author or ""), ("sharer", p.shared_by), ("year", str(e.started_at.year))}
            values |= {("facilitator", p.host or ""), ("facilitator", p.approved_by or ""), ("kind", "recording")}
        else:
            values = {("topic", t) for t in item.topics} | {("author", item.author or ""), ("sharer", item.shared_by)}
            values |= {("year", str(item.first_shared_at.year)), ("kind", "article")}
        for facet, value in values:
            if value:
                counts[facet][value] += 1
    return counts


def as_counters(page: SearchPage) -> dict[str, Counter[str]]:
    return {facet: Counter(dict(values)) for facet, values in page.facets.items()}


async def test_facet_counts_cover_every_match_not_only_the_page(index: LibraryIndex) -> None:
    everything = [item for item in [*CORPUS.records, *CORPUS.articles] if visible(item)]
    page = await index.search(SearchQuery(per_page=5))
    assert page.total == len(everything) and len(page.hits) == 5
    assert as_counters(page) == expected_facets(everything)
    for values in page.facets.values():
        assert [count for _, count in values] == sorted((count for _, count in values), reverse=True)


async def test_filters_and_across_facets_or_within_one_with_counts_that_show_what_or_adds(index: LibraryIndex) -> None:
    def chosen(item: LibraryRecord | ArticleItem, tags: set[str], years: set[str]) -> bool:
        if not isinstance(item, LibraryRecord) or not visible(item):
            return False
        return bool(tags & set(item.entry.tags)) and str(item.entry.started_at.year) in years

    records: list[LibraryRecord | ArticleItem] = list(CORPUS.records)
    tags, years = {"Café Zürich", "Mentoring"}, {"2023"}
    page = await index.search(SearchQuery(filters={"tag": sorted(tags), "year": sorted(years)}, per_page=100))
    assert {hit.item_id for hit in page.hits} == {r.entry.entry_id for r in records if chosen(r, tags, years)}  # type: ignore[union-attr]
    # the tag facet counts as if no tag were chosen (within 2023); the year facet as if no year were (within the tags)
    in_2023 = [r for r in records if visible(r) and r.entry.started_at.year == 2023]  # type: ignore[union-attr]
    assert as_counters(page)["tag"] == expected_facets(in_2023)["tag"]
    with_tags = [r for r in records if visible(r) and tags & set(r.entry.tags)]  # type: ignore[union-attr]
    assert as_counters(page)["year"] == expected_facets(with_tags)["year"]
    by_slug = await index.search(
        SearchQuery(filters={"tag": ["cafe-zurich", "mentoring"], "year": ["2023"]}, per_page=100)
    )
    assert [hit.item_id for hit in by_slug.hits] == [hit.item_id for hit in page.hits]
    assert facet_slug("Café Zürich") == "cafe-zurich"


async def test_a_facilitator_is_a_filter_though_never_text(index: LibraryIndex) -> None:
    page = await index.search(SearchQuery(filters={"facilitator": ["Tom Okafor"]}, per_page=100, include_internal=True))
    expected = {r.entry.entry_id for r in CORPUS.records if r.published and r.entry.provenance.host == "Tom Okafor"}
    assert page.total == len(expected) > 0
    assert {hit.item_id for hit in page.hits} <= expected


async def test_paging_is_stable_and_complete(index: LibraryIndex) -> None:
    whole = await index.search(SearchQuery(q="team", per_page=100))
    assert 20 < whole.total <= 100
    seen: list[str] = []
    for number in range(1, math.ceil(whole.total / 7) + 1):
        page = await index.search(SearchQuery(q="team", page=number, per_page=7))
        assert page.total == whole.total and page.pages == math.ceil(whole.total / 7) and page.page == number
        seen += [hit.item_id for hit in page.hits]
    assert seen == [hit.item_id for hit in whole.hits]
    assert len(set(seen)) == whole.total
    beyond = await index.search(SearchQuery(q="team", page=math.ceil(whole.total / 7) + 1, per_page=7))
    assert beyond.hits == [] and beyond.total == whole.total
    scores = [hit.score for hit in whole.hits]
    assert scores == sorted(scores, reverse=True)


async def test_newest_first_when_asked_or_when_there_are_no_words(index: LibraryIndex) -> None:
    def when(hit_id: str) -> datetime:
        for r in CORPUS.records:
            if r.entry.entry_id == hit_id:
                return r.entry.started_at
        return next(a.first_shared_at for a in CORPUS.articles if a.article_id == hit_id)

    for query in (SearchQuery(q="team", sort="newest", per_page=100), SearchQuery(per_page=100)):
        page = await index.search(query)
        times = [when(hit.item_id) for hit in page.hits]
        assert times == sorted(times, reverse=True) and len(times) > 20
    browse = await index.search(SearchQuery(per_page=3))
    assert all("\x02" not in hit.snippet and hit.moment is None for hit in browse.hits)


async def test_excluding_a_word_alone_leaves_everything_else(index: LibraryIndex) -> None:
    everything = await index.search(SearchQuery())
    without = await index.search(SearchQuery(q="-scaffolding"))
    assert without.total == everything.total - 2


@pytest.mark.parametrize(
    "q",
    [
        '"',
        '""',
        "-",
        "- -",
        "AND",
        "OR NOT",
        "(",
        "*",
        "NEAR(a b)",
        "{title}: x",
        "^",
        "a" * 600,
        "€ $ % ...",
        "\x00\x02",
        '"unclosed phrase',
        "x " * 200,
        "ſ ﬁ ℌ",
    ],  # fmt: skip
)
async def test_any_input_is_text_never_an_error(index: LibraryIndex, q: str) -> None:
    page = await index.search(SearchQuery(q=q))
    assert page.total >= 0 and page.pages == math.ceil(page.total / 20)


async def test_unknown_facets_and_odd_paging_are_bounded(index: LibraryIndex) -> None:
    page = await index.search(SearchQuery(filters={"rule": ["x"], "tag": []}, page=-3, per_page=10_000))
    everything = await index.search(SearchQuery(per_page=100))
    assert page.page == 1 and len(page.hits) == 100 and page.total == everything.total


async def test_updated_at_is_the_newest_change(index: LibraryIndex) -> None:
    newest = max([r.history[-1].at for r in CORPUS.records] + [a.first_shared_at for a in CORPUS.articles])
    assert index.updated_at() == newest


async def test_an_edit_deletion_and_a_late_transcript_are_applied() -> None:
    library = LibraryIndex()
    try:
        first = record("e-1", title="Monday notes")
        await library.add(first)
        assert [h.item_id for h in (await library.search(SearchQuery(q="monday"))).hits] == ["e-1"]
        edited = first.model_copy(update={"entry": first.entry.model_copy(update={"title": "Tuesday notes"})})
        await library.add(edited, texts={"e-1": SearchText(cues=[Cue(start=12.5, text="the onboarding plan")])})
        assert (await library.search(SearchQuery(q="monday"))).total == 0
        hit = (await library.search(SearchQuery(q="onboarding"))).hits[0]
        assert hit.moment == 12.5 and hit.record is not None and hit.record.entry.title == "Tuesday notes"
        await library.add(texts={"e-1": SearchText(cues=[Cue(start=3.0, text="a new plan")])})
        assert (await library.search(SearchQuery(q="onboarding"))).total == 0
        assert (await library.search(SearchQuery(q="new plan"))).hits[0].moment == 3.0
        from pipeline.archive.search import KeyChange

        await library.apply([KeyChange("entry.e-1", None, 0)])
        assert (await library.search(SearchQuery())).total == 0
        assert (await library.search(SearchQuery(q="plan"))).total == 0
    finally:
        await library.stop()


async def test_the_moment_is_the_line_with_all_the_words_even_far_past_one_with_some() -> None:
    """Moments are looked for in the opening lines first (MOMENT_WINDOW_CHARS): a line there with only some of the
    words must not win over a later line with all of them."""
    filler = [f"{FILLER[n % len(FILLER)]}" for n in range(12 * 80)]
    words = ["compass", *filler[:11], *filler, "compass", "harbour", *filler[:10]]
    library = LibraryIndex()
    try:
        await library.add(record("m-1", title="A long walk"), texts={"m-1": SearchText(cues=cues(words))})
        both = (await library.search(SearchQuery(q="compass harbour"))).hits[0]
        assert both.moment == 81 * 4.0 and "\x02harbour\x03" in both.snippet
        one = (await library.search(SearchQuery(q="compass"))).hits[0]
        assert one.moment == 0.0
    finally:
        await library.stop()


async def test_facet_counts_follow_edits_and_deletions() -> None:
    library = LibraryIndex()
    try:
        first, second = record("f-1", title="One", tags=("Mentoring",)), record("f-2", title="Two", tags=("Mentoring",))
        await library.add(first, second)
        assert (await library.search(SearchQuery())).facets["tag"] == [("Mentoring", 2)]
        retagged = first.model_copy(update={"entry": first.entry.model_copy(update={"tags": ["Café Zürich"]})})
        await library.add(retagged)
        page = await library.search(SearchQuery(filters={"tag": ["cafe zurich"]}))
        assert [hit.item_id for hit in page.hits] == ["f-1"] and page.total == 1
        assert sorted(page.facets["tag"]) == [("Café Zürich", 1), ("Mentoring", 1)]
        from pipeline.archive.search import KeyChange

        await library.apply([KeyChange("entry.f-2", None, 0)])
        assert (await library.search(SearchQuery())).facets["tag"] == [("Café Zürich", 1)]
        assert (await library.search(SearchQuery(filters={"tag": ["Mentoring"]}))).total == 0
    finally:
        await library.stop()


async def test_stop_words_beside_other_words_neither_constrain_nor_rank() -> None:
    library = LibraryIndex()
    try:
        await library.add(record("s-1", title="Notes"), texts={"s-1": SearchText(cues=cues("harbour compass".split()))})
        page = await library.search(SearchQuery(q="The harbour OF compass"))
        assert [hit.item_id for hit in page.hits] == ["s-1"]
        assert page.hits[0].moment == 0.0 and "\x02harbour\x03" in page.hits[0].snippet
    finally:
        await library.stop()


async def test_a_query_of_stop_words_only_looks_in_the_short_fields_quoted_everywhere() -> None:
    library = LibraryIndex()
    try:
        spoken = SearchText(cues=cues("we sailed to the harbour".split()))
        await library.add(
            record("s-title", title="The harbour"),
            record("s-tag", title="Notes", tags=("To be or not to be",)),
            record("s-spoken", title="Notes"),
            texts={"s-spoken": spoken, "s-title": spoken},
        )
        page = await library.search(SearchQuery(q="THE"))
        assert [hit.item_id for hit in page.hits] == ["s-title"]
        assert page.hits[0].moment is None and page.hits[0].snippet == "\x02The\x03 harbour"
        assert [hit.item_id for hit in (await library.search(SearchQuery(q="to be or not to be"))).hits] == ["s-tag"]
        assert (await library.search(SearchQuery(q="the -harbour"))).total == 0  # exclusions look everywhere
        quoted = await library.search(SearchQuery(q='"the"'))
        assert sorted(hit.item_id for hit in quoted.hits) == ["s-spoken", "s-title"]
        assert {hit.moment for hit in quoted.hits} == {0.0}
    finally:
        await library.stop()


async def test_a_phrase_keeps_its_stop_words() -> None:
    library = LibraryIndex()
    try:
        await library.add(
            record("s-war", title="Notes"),
            record("s-apart", title="Notes"),
            texts={
                "s-war": SearchText(cues=cues("on the art of war today".split())),
                "s-apart": SearchText(cues=cues("the war of art today".split())),
            },
        )
        assert [hit.item_id for hit in (await library.search(SearchQuery(q='"the art of war"'))).hits] == ["s-war"]
        assert {hit.item_id for hit in (await library.search(SearchQuery(q="the art of war"))).hits} == {
            "s-war",
            "s-apart",
        }
        assert (await library.search(SearchQuery(q="war"))).total == 2  # a word in English: never a stop word
    finally:
        await library.stop()
