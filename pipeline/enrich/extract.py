"""Turn a fetched page into an Article (extraction only: fetching is ours).

trafilatura finds the main text and the page's metadata (OpenGraph, JSON-LD, bylines). A page with too little text
to read (a login wall, a paywall teaser, a JavaScript shell) is described from its OpenGraph / Twitter-card tags
instead, with `from_metadata=True`. The summary and key phrases come from `pipeline.domain.summary`.
Bytes are decoded as browsers decode them (`pipeline.net.charset`), and the markup is normalised to NFC before it is
read, so the text, title, summary and key phrases are in one Unicode form ("geprüft" with a combining mark and with
a precomposed ü match the same topics and searches).
Anything that cannot become an Article raises PermanentError("<reason>: <detail>"); nothing else escapes.
"""

from __future__ import annotations

import json
import re
import unicodedata
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import urljoin, urlsplit

import justext.core
import trafilatura
import trafilatura.external
from justext.utils import get_stoplist, get_stoplists
from lxml import etree
from lxml.html import HtmlElement, HTMLParser, document_fromstring
from trafilatura.settings import Document

from pipeline.domain.summary import count_words, detect_language, is_unspaced, key_phrases, summarize
from pipeline.errors import PermanentError
from pipeline.messages import Article
from pipeline.net.charset import decode_html

WORDS_PER_MINUTE = 230
# Below this many readable words a page is a wall or a stub: describe it from its metadata instead.
MIN_TEXT_WORDS = 50
# A declared language is overruled only by a long text the detector is sure about (templates say lang="en-US").
LANGUAGE_OVERRULE_WORDS = 50
LANGUAGE_OVERRULE_CONFIDENCE = 0.95
# trafilatura spends ~40 µs per element; beyond this a page is a generated dump, not an article.
MAX_ELEMENTS = 150_000
# Share of control characters / U+FFFD above which the input is binary data, not a web page.
MAX_JUNK_SHARE = 0.05
MAX_TITLE_CHARS = 200
MAX_SUMMARY_CHARS = 1000
MAX_LIST_ITEMS = 20

# Depth past 256 is cut by libxml2's default limit, losing the article; huge_tree lifts it (input size is capped
# by the fetcher). Comments and processing instructions never carry article text.
PARSER = HTMLParser(
    encoding="utf-8", huge_tree=True, remove_comments=True, remove_pis=True, collect_ids=False, default_doctype=False
)
# Control characters (Unicode category Cc) but tab, newline, carriage return and form feed; and U+FFFD.
JUNK_CHAR = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f-\x9f\ufffd]")
NOT_XML_CHARS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]|[\ud800-\udfff]")
# No page-wide date guessing: it reads copyright lines ("© 2024") as publication dates.
DATE_PARAMS = {"extensive_search": False, "original_date": True}

# trafilatura's last fallback, justext (short or login-walled pages: most posts shared from X or LinkedIn), reads
# with the stop words of all of justext's 100 languages when the page's language is not given. trafilatura keeps
# them as a tuple and justext's define_stoplist() caches a lower-cased copy of it: 28 MB per process for good, after
# the first such page. Built once as the lower-cased set justext would make, and handed to it as it is, the same
# words take 15.5 MB (and justext no longer hashes a 154,000-word tuple to look its copy up on every page).
_ALL_STOPWORDS: frozenset[str] | None = None
_define_stoplist = justext.core.define_stoplist


def all_stopwords() -> frozenset[str]:
    global _ALL_STOPWORDS
    if _ALL_STOPWORDS is None:
        _ALL_STOPWORDS = frozenset(word.lower() for language in get_stoplists() for word in get_stoplist(language))
        trafilatura.external.JT_STOPLIST = _ALL_STOPWORDS  # type: ignore[assignment]
    return _ALL_STOPWORDS


def _define_stoplist_once(stoplist: Iterable[str]) -> frozenset[str]:
    if stoplist is _ALL_STOPWORDS:
        return _ALL_STOPWORDS
    return _define_stoplist(stoplist)  # type: ignore[no-any-return]


_define_stoplist_once.cache_clear = _define_stoplist.cache_clear  # type: ignore[attr-defined]  # trafilatura.meta
trafilatura.external.jt_stoplist_init = all_stopwords  # type: ignore[assignment]
justext.core.define_stoplist = _define_stoplist_once

# Lines of login walls, paywalls, consent and JavaScript prompts: they do not count as readable text.
WALL_LINE = re.compile(
    r"\b(sign[ -]?in|sign[ -]?up|log[ -]?in|join now|create (?:a |an |your )?(?:free )?account|password"
    r"|subscribe (?:now|to continue|to read)|already a subscriber|continue reading|enable javascript"
    r"|javascript is disabled|user agreement|cookie policy|privacy policy|email or phone|anmelden|registrieren"
    r"|se connecter|s'inscrire|iniciar sesi[oó]n|reg[ií]strate|entrar)\b|ログイン|会員登録",
    re.IGNORECASE,
)
# Whole titles that name a gate, a challenge or an error page, not an article ("Sign Up", "Just a moment...").
GATE_TITLE = re.compile(
    r"(sign[ -]?(in|up)|log[ -]?in( or sign[ -]?up)?|login|join( now| \w+)?|register|create an? account|subscribe"
    r"|access denied|forbidden|just a moment|attention required!?( \S+)?|are you a robot|captcha|loading"
    r"|(40[34] )?(page )?not found|error( \d+)?|\d{3} error)( to [^|]{0,40})?\W*(\s[|·–—-]\s.{0,40})?",
    re.IGNORECASE,
)
# "María López on LinkedIn: We replaced…", 'Ines on X: "Ran our first…" / X': a post's author and its text.
SOCIAL_POST_TITLE = re.compile(
    r"^(?P<author>[^:|]{2,80}?) on (?:LinkedIn|X|Twitter|Threads|Mastodon)(?:\s*:\s*(?P<text>.+?))?(?:\s*/\s*X)?$"
)
TITLE_SEPARATOR = re.compile(r"\s+[|·•–—-]\s+|\s*｜\s*")
QUOTES = "\"'“”‘’«»「」『』"
BYLINE_PREFIX = re.compile(r"^(by|von|par|por|di|door|av|af)\s+", re.IGNORECASE)
LANGUAGE_TAG = re.compile(r"^([a-zA-Z]{2,3})(?:[-_][a-zA-Z0-9]+)*$")


@dataclass(frozen=True)
class Extraction:
    """The Article, and the main text it was made from ("" for a login wall: the wall's words are not the article)."""

    article: Article
    text: str


def extract_article(html: str | bytes, *, url: str, final_url: str) -> Article:
    return extract(html, url=url, final_url=final_url).article


def extract(html: str | bytes, *, url: str, final_url: str) -> Extraction:
    """Read a page: its main text and metadata, or (for login walls and stubs) its metadata alone."""
    tree = parse_html(html)
    tags = MetaTags.read(tree)
    document = run_trafilatura(tree, final_url)
    text = normalize_text(document.text if document else "")
    if document is not None and readable_words(text) >= MIN_TEXT_WORDS:
        return from_text(document, tags, text, url=url, final_url=final_url)
    return from_metadata(document, tags, text, url=url, final_url=final_url)


# -- parsing ----------------------------------------------------------------------------------------------------------


def parse_html(html: str | bytes) -> HtmlElement:
    """A document tree from any input, or PermanentError: binary data, nothing parseable, too many elements."""
    markup = unicodedata.normalize("NFC", decode_html(html).text if isinstance(html, bytes) else html)
    if not markup.strip():
        raise PermanentError("no_content: the page is empty")
    if junk_share(markup) > MAX_JUNK_SHARE:
        raise PermanentError("no_content: binary or garbled data, not a web page")
    try:
        tree = document_fromstring(NOT_XML_CHARS.sub("", markup).encode("utf-8", "replace"), parser=PARSER)
    except (etree.ParserError, ValueError) as error:
        raise PermanentError(f"no_content: the page cannot be parsed ({error})") from None
    for useless in tree.xpath("//script[not(@type='application/ld+json')]|//style|//svg|//template"):
        useless.drop_tree()
    elements = sum(1 for _ in tree.iter())
    if elements > MAX_ELEMENTS:
        raise PermanentError(f"too_large: the page has {elements} elements (at most {MAX_ELEMENTS} are read)")
    return tree


def junk_share(markup: str) -> float:
    sample = markup[:65536]
    return len(JUNK_CHAR.findall(sample)) / len(sample)


def run_trafilatura(tree: HtmlElement, final_url: str) -> Document | None:
    """trafilatura's reading of the page; a failure inside it is a property of the page, hence permanent."""
    try:
        with warnings.catch_warnings():
            # A warning from inside trafilatura (lxml, htmldate) is about their code, not the page; where warnings
            # are errors (the tests) it would turn a readable page into a failure. None is raised by the corpus.
            warnings.simplefilter("ignore")
            document = trafilatura.bare_extraction(
                tree,
                url=final_url,
                with_metadata=True,
                include_comments=False,
                include_tables=True,
                date_extraction_params=DATE_PARAMS,
            )
            # typed for both forms; without as_dict=True it is a Document (or None)
            return cast("Document | None", document)
    except RecursionError:
        raise PermanentError("no_content: the page is nested too deeply to read") from None
    except Exception as error:  # noqa: BLE001 - a bug on one page must not become a retry loop
        raise PermanentError(f"no_content: the page could not be read ({type(error).__name__}: {error})") from None


def normalize_text(text: str | None) -> str:
    lines = (" ".join(line.split()) for line in (text or "").splitlines())
    return "\n".join(line for line in lines if line)


def readable_words(text: str) -> int:
    """Words of the text outside login, paywall, consent and JavaScript prompts."""
    return sum(count_words(line) for line in text.splitlines() if not WALL_LINE.search(line))


# -- meta tags --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MetaTags:
    """The page's own <meta> tags (OpenGraph, Twitter card, name=...), its <title> and declared language."""

    values: dict[str, str]
    title: str | None
    language: str | None

    @classmethod
    def read(cls, tree: HtmlElement) -> MetaTags:
        values: dict[str, str] = {}
        for meta in tree.iter("meta"):
            key = (meta.get("property") or meta.get("name") or meta.get("itemprop") or "").strip().lower()
            content = " ".join((meta.get("content") or "").split())
            if key and content:
                values.setdefault(key, content)  # the first of repeated tags wins, as in browsers' previews
            if (meta.get("http-equiv") or "").lower() == "content-language" and content:
                values.setdefault("content-language", content)
        for key, value in json_ld_fields(tree).items():
            values.setdefault(f"ld:{key}", value)
        title = next((" ".join(t.text_content().split()) for t in tree.iter("title")), None)
        declared = [tree.get("lang"), tree.get("xml:lang"), values.get("content-language"), values.get("og:locale")]
        declared.append(values.get("ld:inlanguage"))
        language = next(filter(None, map(language_code, declared)), None)
        return cls(values, title or None, language)

    def first(self, *keys: str) -> str | None:
        return next((self.values[k] for k in keys if self.values.get(k)), None)


def json_ld_fields(tree: HtmlElement) -> dict[str, str]:
    """headline, description and inLanguage of the page's first JSON-LD article (trafilatura reads the rest)."""
    for script in tree.xpath("//script[@type='application/ld+json']"):
        try:
            data = json.loads(script.text_content())
        except ValueError:
            continue
        for item in json_ld_items(data):
            kind = item.get("@type")
            kinds = kind if isinstance(kind, list) else [kind]
            if any(isinstance(k, str) and (k.endswith("Article") or k == "BlogPosting") for k in kinds):
                fields = {k.lower(): " ".join(v.split()) for k, v in item.items() if isinstance(v, str)}
                return {k: fields[k] for k in ("headline", "description", "inlanguage") if fields.get(k)}
    return {}


def json_ld_items(data: object) -> Iterator[dict[str, Any]]:
    """Every object of a JSON-LD document, through lists and @graph."""
    if isinstance(data, list):
        for element in data:
            yield from json_ld_items(element)
    elif isinstance(data, dict):
        yield data
        yield from json_ld_items(data.get("@graph", []))


def language_code(tag: str | None) -> str | None:
    """ "en-US", "de_DE", "PT-br" -> "en", "de", "pt"; anything else -> None."""
    match = LANGUAGE_TAG.match((tag or "").strip())
    return match.group(1).lower() if match else None


# -- the article ------------------------------------------------------------------------------------------------------


def from_text(document: Document, tags: MetaTags, text: str, *, url: str, final_url: str) -> Extraction:
    post_author, post_text = social_post(tags)
    authors = page_authors(document, tags, social_only=False) or ([post_author] if post_author else [])
    site_name = clean(document.sitename) or tags.first("og:site_name", "application-name")
    title = (
        post_text
        or first_title((document.title, tags.first("og:title", "twitter:title"), tags.title), site_name, authors)
        or title_from_text(text)
    )
    body = without_bylines(text, authors)
    language = page_language(tags, document, body)
    phrases = key_phrases(body, language, title=title)
    sentences = summarize(body, phrases, language)
    description = clip_or_none(
        clean(document.description)
        or tags.first("og:description", "description", "twitter:description", "ld:description")
    )
    words = count_words(text)
    article = Article(
        url=url,
        final_url=final_url,
        title=title,
        author=authors[0] if authors else None,
        authors=authors,
        site_name=site_name,
        published=document.date,
        description=description,
        summary=join_sentences(sentences) or clip(description or text, MAX_SUMMARY_CHARS),
        key_phrases=phrases,
        categories=list_items(document.categories),
        tags=list_items(document.tags),
        language=language,
        image=page_image(document, tags, final_url),
        word_count=words,
        reading_minutes=reading_minutes(words),
    )
    return Extraction(article, text)


def from_metadata(document: Document | None, tags: MetaTags, text: str, *, url: str, final_url: str) -> Extraction:
    """A page with too little text: title, description, summary and author from its OpenGraph / Twitter tags."""
    authors = page_authors(document, tags, social_only=True)
    site_name = clean(document.sitename if document else None) or tags.first("og:site_name", "application-name")
    post_author, post_text = social_post(tags)
    title = post_text or first_title(
        (tags.first("og:title", "twitter:title", "ld:headline"), document.title if document else None, tags.title),
        site_name,
        authors,
    )
    if not title:
        raise PermanentError(f"no_content: no readable text and no title at {final_url}")
    description = clip(
        unquote(
            tags.first("og:description", "twitter:description", "description", "ld:description")
            or (document.description if document else None)
            or ""
        ),
        MAX_SUMMARY_CHARS,
    )
    # The page's own few words say more than nothing, unless they are the wall's "Sign in to continue".
    short_text = text if text and readable_words(text) == count_words(text) else ""
    summary = clip(description or short_text, MAX_SUMMARY_CHARS)
    language = page_language(tags, document, summary or title)
    words = 0 if description else count_words(short_text)  # the article itself was not read
    article = Article(
        url=url,
        final_url=final_url,
        title=title,
        author=post_author or (authors[0] if authors else None),
        authors=list(dict.fromkeys([post_author, *authors])) if post_author else authors,
        site_name=site_name,
        published=(document.date if document else None) or date_of(tags.first("article:published_time")),
        description=description or None,
        summary=summary,
        key_phrases=key_phrases(summary, language, title=title),
        categories=list_items(document.categories if document else None),
        tags=list_items(document.tags if document else None),
        language=language,
        image=page_image(document, tags, final_url),
        word_count=words,
        reading_minutes=reading_minutes(words),
        from_metadata=True,
    )
    return Extraction(article, short_text)


# -- fields -----------------------------------------------------------------------------------------------------------


def first_title(candidates: Iterable[str | None], site_name: str | None, authors: list[str]) -> str | None:
    """The first candidate that names an article (not a sign-in gate), without the site's or author's suffix."""
    for candidate in candidates:
        title = clean_title(candidate, site_name, authors)
        if title and not GATE_TITLE.fullmatch(title):
            return title
    return None


def clean_title(title: str | None, site_name: str | None, authors: list[str]) -> str | None:
    """ "Why X | by Lena | Medium" -> "Why X": trailing parts naming the site or an author go; "¶" anchors go."""
    title = " ".join((title or "").replace("¶", "").split()).strip(" #")
    noise = {n.casefold() for n in [site_name or "", *authors, "LinkedIn", "Medium", "X"] if n}
    while separators := list(TITLE_SEPARATOR.finditer(title)):
        last = separators[-1]
        if BYLINE_PREFIX.sub("", title[last.end() :]).casefold() not in noise:
            break
        title = title[: last.start()]
    return clip(title, MAX_TITLE_CHARS) or None


def social_post(tags: MetaTags) -> tuple[str | None, str | None]:
    """The author and text of a social post page ("Name on LinkedIn: text"), from og:title or <title>."""
    for candidate in (tags.first("og:title", "twitter:title"), tags.title):
        match = SOCIAL_POST_TITLE.match(candidate or "")
        if match:
            text = unquote(match.group("text") or "")
            if not text:  # og:title is just "Name on X": the post is in <title> or the description
                other = SOCIAL_POST_TITLE.match(tags.title or "")
                text = unquote((other.group("text") if other else None) or tags.first("og:description") or "")
            return match.group("author").strip(), clip(text, 120) or None
    return None, None


def without_bylines(text: str, authors: list[str]) -> str:
    """The text without its byline lines ("By Jane Doe · 3 May 2024"): names and dates are not what it is about."""
    names = [a.casefold() for a in authors]
    lines = text.splitlines()
    return "\n".join(line for line in lines if count_words(line) > 15 or not any(n in line.casefold() for n in names))


def title_from_text(text: str) -> str:
    first_line = text.splitlines()[0] if text else ""
    return clip(first_line, 100)


def page_authors(document: Document | None, tags: MetaTags, *, social_only: bool) -> list[str]:
    """Every author the page names: trafilatura's "A; B", else the author meta tags (for walls, twitter:creator)."""
    found = document.author if document and document.author else None
    fallback = ["article:author", "author", "parsely-author", "sailthru.author", "dc.creator"]
    if social_only:
        fallback.append("twitter:creator")
    raw = found or tags.first(*fallback) or ""
    names = [
        BYLINE_PREFIX.sub("", " ".join(n.split())) for n in re.split(r"\s*[;,]\s*|\s+(?:and|&|und|et|y|e)\s+", raw)
    ]
    return list(dict.fromkeys(n for n in names if is_person_name(n)))


def is_person_name(name: str) -> bool:
    return 1 < len(name) <= 80 and "://" not in name and not name.startswith("www.") and any(c.isalpha() for c in name)


def page_language(tags: MetaTags, document: Document | None, text: str) -> str | None:
    """The declared language, unless a long text is clearly in another; else what the text looks like."""
    declared = tags.language or language_code(document.language if document else None)
    detected, confidence = detect_language(text)
    if declared is None:
        return detected
    long_enough = count_words(text) >= LANGUAGE_OVERRULE_WORDS
    if detected and detected != declared and long_enough and confidence >= LANGUAGE_OVERRULE_CONFIDENCE:
        return detected
    return declared


def page_image(document: Document | None, tags: MetaTags, final_url: str) -> str | None:
    image = (document.image if document else None) or tags.first(
        "og:image", "og:image:url", "og:image:secure_url", "twitter:image", "twitter:image:src"
    )
    if not image:
        return None
    absolute = urljoin(final_url, image.strip())
    parts = urlsplit(absolute)
    return absolute if parts.scheme in {"http", "https"} and parts.netloc and " " not in absolute else None


def list_items(values: Iterable[str] | str | None) -> list[str]:
    """Categories / tags, one item each: trafilatura sometimes hands over "a, b, c" as one."""
    if isinstance(values, str):
        values = [values]
    items = (clip(" ".join(part.split()), 100) for value in values or [] for part in re.split(r"[,;]", value))
    return list(dict.fromkeys(i for i in items if i))[:MAX_LIST_ITEMS]


def date_of(timestamp: str | None) -> str | None:
    match = re.match(r"\d{4}-\d{2}-\d{2}", timestamp or "")
    return match.group(0) if match else None


def join_sentences(sentences: list[str]) -> str:
    # Japanese and Chinese sentences follow each other without a space.
    return "".join(sentences) if sentences and is_unspaced(sentences[0]) else " ".join(sentences)


def reading_minutes(words: int) -> int:
    return max(1, round(words / WORDS_PER_MINUTE)) if words else 0


def clean(value: str | None) -> str | None:
    return (" ".join(value.split()) or None) if value else None


def clip_or_none(text: str | None) -> str | None:
    return clip(text, MAX_SUMMARY_CHARS) if text else None


def unquote(text: str) -> str:
    text = " ".join(text.split())
    return text[1:-1].strip() if len(text) > 1 and text[0] in QUOTES and text[-1] in QUOTES else text


def clip(text: str, limit: int) -> str:
    """At most `limit` characters, cut at a word boundary with an ellipsis."""
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    return (cut.rsplit(" ", 1)[0] if " " in cut else cut).rstrip(" ,;:") + "…"
