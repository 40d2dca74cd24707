"""Turning a fetched page into an Article: the seed page, metadata fallbacks, sentences, key phrases, and input that
is no page at all. The corpus of real-world-style pages is in test_corpus.py."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from pipeline.domain.summary import count_words, key_phrases, split_sentences, summarize
from pipeline.enrich.extract import GATE_TITLE, MAX_ELEMENTS, clean_title, extract, extract_article, language_code
from pipeline.errors import PermanentError
from pipeline.messages import Article

DEMO = Path(__file__).resolve().parents[2] / "pipeline" / "demo_assets" / "bersin-article.html"
URL = "https://www.linkedin.com/pulse/why-elearning-isnt-working"


@pytest.fixture(scope="module")
def article() -> Article:
    return extract_article(DEMO.read_text(encoding="utf-8"), url=URL, final_url=URL)


def test_title_and_author(article: Article) -> None:
    assert article.title == "Why eLearning Isn't Working for Leadership and Soft Skills"
    assert article.author == "Josh Bersin"
    assert article.authors == ["Josh Bersin"]


def test_urls_are_kept(article: Article) -> None:
    assert article.url == URL
    assert article.final_url == URL


def test_metadata_of_the_seed(article: Article) -> None:
    assert article.published == "2016-02-08"
    assert article.site_name == "LinkedIn"
    assert article.language == "en"
    assert not article.from_metadata


def test_summary_is_main_text_not_comments(article: Article) -> None:
    assert article.summary
    assert "Great data" not in article.summary
    assert "Our managers skip the modules" not in article.summary
    assert "leadership" in article.summary


def test_key_phrases_of_the_seed(article: Article) -> None:
    assert {"leadership", "soft skills"} & {p.casefold() for p in article.key_phrases}


def test_word_count_and_reading_time(article: Article) -> None:
    assert article.word_count > 100
    assert article.reading_minutes >= 1


def test_extract_returns_the_main_text_too() -> None:
    extraction = extract(DEMO.read_text(encoding="utf-8"), url=URL, final_url=URL)
    assert extraction.text.startswith("Companies spend more than fourteen billion dollars")
    assert "Great data" not in extraction.text


# -- pages with little text: OpenGraph / Twitter card ----------------------------------------------------------------

WALL = """<html lang="en"><head><title>{title}</title>{meta}</head>
<body><h2>Sign in to view more content</h2><form><label>Email or phone</label><input><label>Password</label>
<input type="password"><button>Sign in</button></form><p>New to LinkedIn? Join now</p></body></html>"""


def wall(title: str, **meta: str) -> str:
    tags = "".join(f'<meta property="{k.replace("_", ":")}" content="{v}">' for k, v in meta.items())
    return WALL.format(title=title, meta=tags)


def test_a_login_wall_is_described_by_its_opengraph_tags() -> None:
    html = wall(
        "Sign in | LinkedIn",
        og_title="Coaching Is a Habit",
        og_description="Managers who coach ask before they tell.",
        og_image="/cover.png",
        article_author="Kwame Mensah",
    )
    extraction = extract(html, url=URL, final_url=URL)
    article = extraction.article
    assert article.from_metadata
    assert article.title == "Coaching Is a Habit"
    assert article.summary == article.description == "Managers who coach ask before they tell."
    assert article.author == "Kwame Mensah"
    assert article.image == "https://www.linkedin.com/cover.png"
    assert article.word_count == article.reading_minutes == 0
    assert extraction.text == ""  # the wall's "Sign in" is not the article's text


def test_a_social_post_title_names_the_author_and_the_post() -> None:
    html = wall("x", og_title="Ana Ruiz on LinkedIn: Live sessions beat courses", og_description="Long post text.")
    article = extract_article(html, url=URL, final_url=URL)
    assert (article.author, article.title) == ("Ana Ruiz", "Live sessions beat courses")


def test_a_wall_with_no_title_at_all_is_no_content() -> None:
    with pytest.raises(PermanentError, match="^no_content"):
        extract_article(wall("Sign Up | LinkedIn"), url=URL, final_url=URL)


def test_a_short_post_without_metadata_is_its_own_summary() -> None:
    html = (
        "<html><head><title>Note</title></head><body><p>Short notes are fine to share with the team.</p></body></html>"
    )
    article = extract_article(html, url=URL, final_url=URL)
    assert article.from_metadata
    assert article.summary == "Short notes are fine to share with the team."
    assert article.word_count == 9


# -- titles and languages ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "cleaned"),
    [
        ("Data Literacy Is a Team Sport | by Lena Hofmann | Medium", "Data Literacy Is a Team Sport"),
        ("Why eLearning Isn't Working | LinkedIn", "Why eLearning Isn't Working"),
        ("社内勉強会の話｜佐藤健太", "社内勉強会の話"),
        ("Zero-downtime deployment¶", "Zero-downtime deployment"),
        ("Weiterbildung im Job: Warum Firmen setzen", "Weiterbildung im Job: Warum Firmen setzen"),
        ("Rock - Paper - Scissors", "Rock - Paper - Scissors"),
    ],
)
def test_titles_lose_site_and_author_suffixes_only(raw: str, cleaned: str) -> None:
    assert clean_title(raw, "Medium", ["Lena Hofmann", "佐藤健太"]) == cleaned


@pytest.mark.parametrize(
    "title",
    ["Sign Up", "Log In or Sign Up", "Join LinkedIn", "Sign in to view more content", "Just a moment...", "Loading…"]
    + ["Attention Required! | Cloudflare", "404 Not Found", "Error 404 - Site", "Subscribe to read"],
)
def test_gate_and_error_titles_are_no_titles(title: str) -> None:
    assert GATE_TITLE.fullmatch(title)


@pytest.mark.parametrize("title", ["Error budgets explained", "Join the movement", "Register of historic places"])
def test_titles_that_merely_start_like_a_gate_are_titles(title: str) -> None:
    assert not GATE_TITLE.fullmatch(title)


@pytest.mark.parametrize(("tag", "code"), [("en-US", "en"), ("de_DE", "de"), ("PT-br", "pt"), ("ja", "ja")])
def test_language_tags_become_language_codes(tag: str, code: str) -> None:
    assert language_code(tag) == code


@pytest.mark.parametrize("tag", [None, "", "english", "x", "12-34"])
def test_odd_language_tags_are_ignored(tag: str | None) -> None:
    assert language_code(tag) is None


def test_a_template_language_gives_way_to_a_clearly_different_text() -> None:
    paragraph = (
        "Seit einem Jahr veröffentliche ich jede Woche eine kurze Notiz über etwas, das ich gerade lerne. "
        "Die Notizen sind nicht perfekt, und genau darum geht es. Wer für andere schreibt, merkt schnell, "
        "wo das eigene Verständnis Lücken hat, und muss seine Gedanken wirklich ordnen. "
    )
    html = f'<html lang="en-US"><head><title>Notizen</title></head><body><article><p>{paragraph * 2}</p></article>'
    assert extract_article(html, url=URL, final_url=URL).language == "de"


# -- sentences --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("paragraph", "language", "sentences"),
    [
        ("Dr. Okafor met Ms. Lee. They talked.", "en", ["Dr. Okafor met Ms. Lee.", "They talked."]),
        ("It was 3 p.m. on Sept. 24, 2024. Nobody came.", "en", ["It was 3 p.m. on Sept. 24, 2024.", "Nobody came."]),
        (
            "Kurze Formate, z. B. Videos, helfen. Am 7. Oktober startet es.",
            "de",
            ["Kurze Formate, z. B. Videos, helfen.", "Am 7. Oktober startet es."],
        ),  # noqa: E501
        (
            "¿Sirven los deberes? ¡Por fin cenamos! Élodie rit.",
            "es",
            ["¿Sirven los deberes?", "¡Por fin cenamos!", "Élodie rit."],
        ),  # noqa: E501
        (
            "« C'est une conversation », dit-elle. Évidemment.",
            "fr",
            ["« C'est une conversation », dit-elle.", "Évidemment."],
        ),  # noqa: E501
        ("勉強会を開きました。参加者は増えた！本当？", "ja", ["勉強会を開きました。", "参加者は増えた！", "本当？"]),
        ("no end mark at all", None, ["no end mark at all"]),
    ],
)
def test_sentences_split_without_assuming_english_capitals(
    paragraph: str, language: str | None, sentences: list[str]
) -> None:
    assert split_sentences(paragraph, language) == sentences


def test_japanese_words_are_counted_by_characters() -> None:
    assert count_words("勉強会を開きました") == 5  # nine characters, two to a word
    assert count_words("Hello world 勉強") == 3


# -- summary and key phrases ------------------------------------------------------------------------------------------

TEXT = "\n".join(
    [
        "Live sessions",
        "Live sessions help teams learn from each other when a colleague shares an article.",
        "The weather was pleasant on the day we started the pilot programme.",
        "Teams that hold live sessions every week report that learning spreads across departments.",
        "| Week | Sessions | People |",
        "for attempt in range(5): retry(request)",
        "Recordings of live sessions let colleagues who missed them learn later.",
        "Our cafeteria serves soup on Tuesdays and salad on Thursdays.",
        "Subscribe to our newsletter and never miss a session.",
    ]
)


def test_summary_picks_sentences_about_the_subject_in_their_order() -> None:
    sentences = summarize(TEXT, key_phrases(TEXT, "en"), "en")
    assert len(sentences) == 3
    assert all("sessions" in s for s in sentences)
    assert sentences == sorted(sentences, key=TEXT.index)


def test_summary_skips_headings_tables_code_and_calls_to_action() -> None:
    summary = " ".join(summarize(TEXT, key_phrases(TEXT, "en"), "en"))
    for unwanted in ("Live sessions\n", "|", "range(", "Subscribe"):
        assert unwanted not in summary


def test_summary_does_not_say_the_same_thing_twice() -> None:
    text = (
        "Several public schools dropped homework in primary classes three years ago.\n"
        "Three years ago, a group of public schools in Seville dropped homework in primary classes.\n"
        "Teachers now spend more class time on guided practice and correct mistakes at once.\n"
        "Families say their evenings are calmer and there is more time for reading together."
    )
    sentences = summarize(text, key_phrases(text, "en"), "en")
    assert len(sentences) == 3
    assert sum("dropped homework" in s for s in sentences) == 1


def test_a_text_without_sentences_has_no_summary() -> None:
    assert summarize("Menu\nHome | About\nShort line", [], "en") == []


def test_key_phrases_prefer_what_the_text_repeats_and_drop_near_duplicates() -> None:
    phrases = [p.casefold() for p in key_phrases(TEXT, "en")]
    assert phrases[0] == "live sessions"
    assert "live session" not in phrases  # the singular repeats a kept phrase
    assert len(phrases) == len(set(phrases)) <= 8


def test_key_phrases_of_japanese_are_character_runs() -> None:
    text = "社内勉強会を開きました。勉強会の参加者は増えました。参加者の声を聞きました。"
    assert key_phrases(text, "ja")[:2] == ["勉強会", "参加者"]


# -- input that is no page --------------------------------------------------------------------------------------------


def junk_bytes() -> str:
    rng = random.Random(1234)
    return bytes(rng.randrange(256) for _ in range(4096)).decode("latin-1")


@pytest.mark.parametrize(
    "html",
    [
        "",
        "   \n ",
        "<html></html>",
        "<html><body></body></html>",
        "\x00\x01\x02\xff garbage",
        junk_bytes(),
        b"\x89PNG\r\n",
    ],
    ids=["empty", "blank", "empty-html", "empty-body", "control-chars", "random-bytes", "png-bytes"],
)
def test_nothing_readable_is_a_permanent_no_content(html: str | bytes) -> None:
    with pytest.raises(PermanentError, match="^no_content"):
        extract_article(html, url="https://example.com/a", final_url="https://example.com/a")


def test_a_page_with_too_many_elements_is_too_large() -> None:
    with pytest.raises(PermanentError, match="^too_large"):
        extract_article("<p>a</p>" * (MAX_ELEMENTS + 1), url=URL, final_url=URL)


def test_deeply_nested_markup_is_still_read() -> None:
    depth = 600  # past libxml2's default limit of 256, which would silently drop the text
    sentence = "Nested pages still carry sentences worth reading about learning. "
    html = f"<html><head><title>Deep</title></head><body>{'<div>' * depth}<p>{sentence * 10}</p>{'</div>' * depth}"
    article = extract_article(html, url=URL, final_url=URL)
    assert not article.from_metadata
    assert "Nested pages" in article.summary


def test_a_huge_single_line_is_read_and_clipped() -> None:
    html = "<html><head><title>Huge</title></head><body><p>" + "word " * 200_000 + "</p></body></html>"
    article = extract_article(html, url=URL, final_url=URL)
    assert article.word_count == 200_000
    assert len(article.summary) <= 1000


def test_bytes_are_decoded_by_their_declared_charset() -> None:
    body = "Le café est très bon ici, et les croissants aussi. " * 12
    html = f'<html><head><meta charset="iso-8859-1"><title>Café</title></head><body><p>{body}</p></body></html>'
    article = extract_article(html.encode("latin-1"), url=URL, final_url=URL)
    assert article.title == "Café"
    assert article.language == "fr"
