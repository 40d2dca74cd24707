"""Generated library items for tests and benchmarks: recordings (LibraryRecord) with transcripts, reading-list articles
(ArticleItem) and their search texts, in English, German, French and Spanish, deterministic for a seed.

`generate(n)` gives n recordings (every third with its article on the reading list); `record(...)` and `article(...)`
build one item with chosen words, for known-answer tests. Filler words come from small per-language lists plus
pseudo-words drawn with a Zipf-like frequency (as real text has), and never contain the words in RESERVED, which
tests plant on purpose. Internal fields are filled with what must never be searchable (a rule name, ids, URLs on
127.0.0.1, facilitators' logins).
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import accumulate

from pipeline.domain.catalog import ArticleItem, Cue, EntryChange, LibraryRecord, SearchText
from pipeline.messages import LibraryEntry, Provenance, Visibility

LANGUAGES = ("en", "de", "fr", "es")

WORDS: dict[str, tuple[str, ...]] = {
    "en": (
        "the of and to in is that it for was on are with as they be at this have from or one had by but not what all "
        "were we when your can said there use an each which she do how their if will up other about out many then "
        "them these so some her would make like him into time has look two more write go see number no way could "
        "people my than first water been call who oil its now find long down day did get come made may part team "
        "learning practice feedback coaching workplace network sharing reflection culture community knowledge "
        "mentor conversation curiosity habit experiment"
    ).split(),
    "de": (
        "der die und in den von zu das mit sich des auf für ist im dem nicht ein eine als auch es an werden aus er "
        "hat dass sie nach wird bei einer um am sind noch wie einem über einen so zum war haben nur oder aber vor "
        "zur bis mehr durch man sein wurde sei Lernen Arbeit Wissen Austausch Gespräch Gemeinschaft Erfahrung "
        "Übung Rückmeldung Neugier Fähigkeit Mitarbeiter Unternehmen Wandel Zusammenarbeit"
    ).split(),
    "fr": (
        "le de un être et à il avoir ne je son que se qui ce dans en du elle au pour pas que vous par sur faire "
        "plus dire me on mon lui nous comme mais pouvoir avec tout y aller voir bien où sans tu ou leur homme si "
        "deux mari moi vouloir te femme venir quand grand celui apprentissage équipe savoir réflexion échange "
        "entreprise pratique réseau curiosité expérience formation communauté"
    ).split(),
    "es": (
        "el la de que y a en un ser se no haber por con su para como estar tener le lo todo pero más hacer o poder "
        "decir este ir otro ese si me ya ver porque dar cuando él muy sin vez mucho saber qué sobre mi alguno mismo "
        "yo también hasta año dos querer entre así aprendizaje equipo conocimiento práctica comunidad experiencia "
        "conversación curiosidad empresa formación red cambio"
    ).split(),
}

# Planted by tests, never produced as filler (nor as a substring of a filler word's stem).
RESERVED = (
    "leader",
    "leadership",
    "leading",
    "lead",
    "soft",
    "skills",
    "scaffolding",
    "onboarding",
    "geneve",
    "genève",
    "zurich",
    "zürich",
    "tagline",
    "provenance",
    "description",
    "title",
    "entry",
    "rule",
    "trusted",
    "localhost",
    "facilitator",
    "ruiz",
    "okafor",
    "wayfinding",
)

TAGS = ("Café Zürich", "Communities of Practice", "Working Out Loud", "Lernkultur", "Aprendizaje Social",
        "Apprentissage", "Microlearning", "Knowledge Sharing", "Mentoring", "Remote Teams")  # fmt: skip
TOPICS = ("learning", "culture", "communities", "feedback", "remote", "coaching")
SHARERS = ("Mark Britz", "Jane Hart", "Harold Jarche", "Céline Dupont", "Jürgen Weiß", "Lucía Fernández")
AUTHORS = ("Josh Bersin", "Donald Clark", "Nick Shackleton-Jones", "Brigitte Sommer", "Élodie Martin", None)
HOSTS = ("Ana Ruiz", "Tom Okafor", None)  # facilitators: a facet, never searchable text
APPROVERS = ("facilitator@example.com", "ruiz@impromptu.example")
SITES = ("LinkedIn", "Medium", "Substack", "Le Monde", "El País", "Die Zeit")
RULE = "trusted-share-on-leadership-or-learning"
INTERNAL_URL = "http://127.0.0.1:8000/internal"

_SYLLABLES = ("ka", "lo", "mi", "ne", "su", "ta", "ri", "po", "ve", "da", "zu", "bo", "fe", "gi", "ha", "ju", "ko",
              "ly", "mo", "nu", "pe", "qua", "ro", "si", "ti", "ul", "vo", "wa", "xe", "yo", "ze", "an", "en", "in",
              "on", "ar", "er", "or", "ur", "ix")  # fmt: skip
START = datetime(2022, 1, 10, 15, 0, tzinfo=UTC)


@dataclass
class Corpus:
    records: list[LibraryRecord] = field(default_factory=list)
    articles: list[ArticleItem] = field(default_factory=list)
    texts: dict[str, SearchText] = field(default_factory=dict)

    def extend(self, other: Corpus) -> None:
        self.records += other.records
        self.articles += other.articles
        self.texts.update(other.texts)


def _is_reserved(word: str) -> bool:
    folded = word.casefold()
    return any(reserved in folded for reserved in RESERVED)


class Vocabulary:
    """Per language: the common words first, then pseudo-words, drawn with weight 1/rank (Zipf)."""

    def __init__(self, rng: random.Random, pseudo_words: int = 4000) -> None:
        self.words: dict[str, list[str]] = {}
        self.cumulative: dict[str, list[float]] = {}
        for language in LANGUAGES:
            words = [w for w in WORDS[language] if not _is_reserved(w)]
            seen = set(words)
            while len(words) < len(WORDS[language]) + pseudo_words:
                word = "".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(2, 4)))
                if word not in seen and not _is_reserved(word):
                    seen.add(word)
                    words.append(word)
            self.words[language] = words
            self.cumulative[language] = list(accumulate(1.0 / (rank + 1) for rank in range(len(words))))

    def sentence(self, rng: random.Random, language: str, length: int) -> list[str]:
        return rng.choices(self.words[language], cum_weights=self.cumulative[language], k=length)


def cues(
    words: list[str], *, per_line: int = 12, seconds_per_line: float = 4.0, speakers: tuple[str, ...] = ()
) -> list[Cue]:
    lines = [words[i : i + per_line] for i in range(0, len(words), per_line)]
    return [
        Cue(start=n * seconds_per_line, text=" ".join(line), speaker=speakers[n % len(speakers)] if speakers else None)
        for n, line in enumerate(lines)
    ]


def record(
    entry_id: str,
    *,
    title: str,
    tagline: str = "",
    description: str = "",
    tags: tuple[str, ...] = (),
    topics: tuple[str, ...] = (),
    language: str = "en",
    started_at: datetime = START,
    shared_by: str = "Mark Britz",
    author: str | None = "Josh Bersin",
    article_title: str = "",
    site_name: str | None = "LinkedIn",
    host: str | None = "Ana Ruiz",
    approved_by: str | None = "facilitator@example.com",
    visibility: Visibility = "public",
    published: bool = True,
    article_id: str | None = None,
    duration_seconds: int = 3600,
) -> LibraryRecord:
    correlation = "corr-" + hashlib.sha256(entry_id.encode()).hexdigest()[:16]
    entry = LibraryEntry(
        id=f"library-{entry_id}",
        correlation_id=correlation,
        causation_id=f"recording-{entry_id}",
        created_at=started_at + timedelta(hours=2),
        entry_id=entry_id,
        title=title,
        tagline=tagline,
        description=description,
        tags=list(tags),
        topics=list(topics),
        language=language,
        started_at=started_at,
        duration_seconds=duration_seconds,
        article_id=article_id,
        visibility=visibility,
        provenance=Provenance(
            shared_by=shared_by,
            sharer_handle="@" + shared_by.split()[0].lower(),
            share_url=f"{INTERNAL_URL}/share/{entry_id}",
            share_text="Worth a read",
            article_title=article_title,
            article_url=f"{INTERNAL_URL}/article/{entry_id}",
            article_author=author,
            site_name=site_name,
            approved_by=approved_by,
            host=host,
            rule=RULE,
            session_id=f"session-{entry_id}",
            channels=["slack", "x"],
        ),
    )
    history = [EntryChange(at=started_at + timedelta(hours=2), by="archive", what="kept", detail=entry_id)]
    return LibraryRecord(entry=entry, published=published, history=history)


def article(
    article_id: str,
    *,
    title: str,
    tagline: str = "",
    summary: str = "",
    key_phrases: tuple[str, ...] = (),
    topics: tuple[str, ...] = (),
    author: str | None = "Josh Bersin",
    shared_by: str = "Mark Britz",
    first_shared_at: datetime = START,
    recordings: tuple[str, ...] = (),
    visibility: Visibility = "public",
    listed: bool = True,
    language: str = "en",
) -> ArticleItem:
    return ArticleItem(
        article_id=article_id,
        url=f"{INTERNAL_URL}/article/{article_id}",
        title=title,
        author=author,
        site_name="LinkedIn",
        summary=summary,
        tagline=tagline,
        key_phrases=list(key_phrases),
        topics=list(topics),
        language=language,
        shared_by=shared_by,
        sharer_handle="@" + shared_by.split()[0].lower(),
        first_shared_at=first_shared_at,
        recordings=list(recordings),
        visibility=visibility,
        listed=listed,
    )


def generate(
    n: int,
    *,
    seed: int = 15,
    transcript_words: tuple[int, int] = (120, 300),
    article_words: tuple[int, int] = (80, 200),
    articles_every: int = 3,
    vocabulary: Vocabulary | None = None,
) -> Corpus:
    """n recordings spread over four years and four languages; every `articles_every`-th has its article on the
    reading list (same words as the text its session discussed). Every 17th is internal, every 23rd unpublished."""
    rng = random.Random(seed)
    vocabulary = vocabulary or Vocabulary(rng)
    corpus = Corpus()
    for i in range(n):
        language = LANGUAGES[i % len(LANGUAGES)]
        entry_id = f"rec-{i:05d}"
        article_id = f"art-{i:05d}" if i % articles_every == 0 else None
        started_at = START + timedelta(days=(i * 37) % 1460, hours=i % 9)

        def words(low: int, high: int, language: str = language) -> list[str]:
            return vocabulary.sentence(rng, language, rng.randint(low, high))

        title = " ".join(words(3, 7)).capitalize()
        article_title = " ".join(words(4, 8)).capitalize()
        author = AUTHORS[i % len(AUTHORS)]
        shared_by = SHARERS[(i // 2) % len(SHARERS)]
        topics = (TOPICS[i % len(TOPICS)],)
        corpus.records.append(
            record(
                entry_id,
                title=title,
                tagline=" ".join(words(6, 12)),
                description=" ".join(words(25, 60)),
                tags=tuple(sorted({TAGS[i % len(TAGS)], TAGS[(i * 7 + 3) % len(TAGS)]})),
                topics=topics,
                language=language,
                started_at=started_at,
                shared_by=shared_by,
                author=author,
                article_title=article_title,
                site_name=SITES[i % len(SITES)],
                host=HOSTS[i % len(HOSTS)],
                approved_by=APPROVERS[i % len(APPROVERS)],
                visibility="internal" if i % 17 == 5 else "public",
                published=i % 23 != 7,
                article_id=article_id,
            )
        )
        article_text = " ".join(words(*article_words))
        transcript = words(*transcript_words)
        corpus.texts[entry_id] = SearchText(cues=cues(transcript, speakers=("Ana", "Guest")), article_text=article_text)
        if article_id is not None:
            corpus.articles.append(
                article(
                    article_id,
                    title=article_title,
                    tagline=" ".join(words(6, 10)),
                    summary=" ".join(words(20, 40)),
                    key_phrases=tuple(" ".join(words(2, 3)) for _ in range(3)),
                    topics=topics,
                    author=author,
                    shared_by=shared_by,
                    first_shared_at=started_at - timedelta(days=2),
                    recordings=(entry_id,),
                    language=language,
                    listed=i % 29 != 11,
                )
            )
            corpus.texts[article_id] = SearchText(article_text=article_text)
    return corpus
