"""What a text says, without a model: word counts, its language, key phrases (YAKE) and an extractive summary.

Everything here is statistical and local (no downloads at run time) and works on any language: sentences end at
`.!?…` or at the CJK full stops, never on capital letters alone, and unspaced scripts (Japanese, Chinese) are
counted and keyed by character runs instead of by spaces.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from functools import cache
from typing import NamedTuple

import yake
from py3langid.langid import MODEL_FILE, LanguageIdentifier

# Kana and CJK ideographs: scripts written without spaces between words (Hangul uses spaces, so it is not here).
UNSPACED_CHAR = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff66-\uff9f々〆ヵヶ]")
UNSPACED_LANGUAGES = frozenset({"ja", "zh", "th", "lo", "km", "my"})
# Two CJK characters carry about one English word's worth of reading: 460 characters a minute at 230 wpm.
UNSPACED_CHARS_PER_WORD = 2

# A sentence ends at . ! ? … (with closing quotes or brackets) before a space, or at a CJK full stop.
SENTENCE_END = re.compile(r"[.!?…]+[\"'”’»)\]]*(?=\s)|[。！？]+[」』）”\"]*")
# A whole sentence closes with one of them; headings, captions and list intros ("as follows:") do not.
SENTENCE_CLOSE = re.compile(r"[.!?…。！？][\"'”’»)\]」』）]*$")
# Signs of a line of code: a call "name(", braces, a closing semicolon, assignments, arrows, keywords opening a line.
CODE = re.compile(r"\w\(|[{}]|;$|==|=>|->|\s=\s|\w=\w|^\s*(def|class|import|return|from \S+ import|const|let|var)\b")
# Calls to action that survive in main text ("Become a supporter", "Subscribe"): never the gist of an article.
CALL_TO_ACTION = re.compile(
    r"\b(subscribe|sign up|newsletter|donate|support (us|the show|our work)"
    r"|become a (supporter|member|patron|subscriber)|follow us|share this|click here|read more|sponsored|advertis\w*"
    r"|abonnieren|abonnez|suscr[ií]bete|assine)\b",
    re.IGNORECASE,
)
# Tokens before a full stop that do not end a sentence ("Dr. Okafor", "z. B. die", "Sept. 24"), lower case.
ABBREVIATIONS = frozenset(
    """mr mrs ms dr prof st vs e.g i.e cf approx dept fig no nos vol jr sr inc ltd co corp
    jan feb mar apr jun jul aug sep sept oct nov dec
    z.b bzw ca nr vgl inkl ggf evtl d.h u.a str abs bd
    mme mlle p.ex env
    sra dra núm pág ud uds
    sig dott ecc
    bijv o.a d.w.z dhr mevr""".split()
)
# Languages that write ordinals with a dot ("am 7. Oktober"), so "7." followed by a capital is not a sentence end.
ORDINAL_DOT_LANGUAGES = frozenset({"de", "da", "no", "nb", "nn", "fi", "cs", "sk", "pl", "hu", "sl", "hr", "sr", "et"})

WORD = re.compile(r"[^\W\d_][\w'’-]*", re.UNICODE)
# Terms of unspaced text: runs of ideographs, runs of katakana, or Latin words (bounded: a run is a compound noun,
# rarely longer than ten characters).
UNSPACED_TERM = re.compile(
    r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff々〆ヵヶ]{2,10}|[\u30a0-\u30ffー]{2,12}|[A-Za-z][\w-]{2,30}"
)

SUMMARY_MIN_WORDS = 6
SUMMARY_MAX_WORDS = 60
# A summary is drawn from the first 400 sentences (some 8,000 words): enough for any article, bounded for dumps.
MAX_CANDIDATES = 400
SHORT_SENTENCE_TERMS = 6
# After a pick its words count this much less (SumBasic squares probabilities: too harsh for short texts).
PICKED_WORD_DECAY = 0.5
# A sentence sharing this much of its content words with a picked one says the same thing again.
REDUNDANT_SHARE = 0.6
KEY_PHRASES = 8
# Yake reads about 30 words a millisecond; the first 700 words (three screens) carry an article's key phrases.
KEY_PHRASE_SAMPLE_WORDS = 700
MAX_WORD_CHARS = 40
EDGE_PUNCTUATION = " .,;:!?…'\"“”‘’«»()[]{}"
UNSPACED_SAMPLE_CHARS = 20_000
DETECTION_SAMPLE_CHARS = 4000
DETECTION_MIN_CONFIDENCE = 0.5


def count_words(text: str) -> int:
    """Words of `text`; in unspaced scripts every two characters count as one word."""
    unspaced = len(UNSPACED_CHAR.findall(text))
    spaced = len(UNSPACED_CHAR.sub(" ", text).split())
    return spaced + math.ceil(unspaced / UNSPACED_CHARS_PER_WORD)


def is_unspaced(text: str, language: str | None = None) -> bool:
    """True for Japanese, Chinese and the like: space-separated tokens mean nothing there."""
    if language in UNSPACED_LANGUAGES:
        return True
    sample = text[:2000]
    return len(UNSPACED_CHAR.findall(sample)) > 0.3 * max(1, len(sample.replace(" ", "")))


# -- language ---------------------------------------------------------------------------------------------------------


@cache
def _language_identifier() -> LanguageIdentifier:
    # Loading the model takes about half a second: once per process, on first use.
    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


def detect_language(text: str) -> tuple[str | None, float]:
    """The language of `text` as an ISO 639-1 code with its probability, or (None, 0) when there is nothing to go on."""
    sample = text[:DETECTION_SAMPLE_CHARS]
    if not WORD.search(sample) and not UNSPACED_CHAR.search(sample):
        return None, 0.0
    language, confidence = _language_identifier().classify(sample)
    if language in {"und", "zxx"} or confidence < DETECTION_MIN_CONFIDENCE:
        return None, 0.0
    return language, confidence


# -- sentences --------------------------------------------------------------------------------------------------------


def split_sentences(paragraph: str, language: str | None = None) -> list[str]:
    """The sentences of one paragraph, in order, each stripped; text without an end mark is one sentence."""
    pieces: list[str] = []
    start = 0
    for match in SENTENCE_END.finditer(paragraph):
        pieces.append(paragraph[start : match.end()].strip())
        start = match.end()
    pieces.append(paragraph[start:].strip())
    sentences: list[str] = []
    for piece in filter(None, pieces):
        if sentences and _continues(sentences[-1], piece, language):
            sentences[-1] = f"{sentences[-1]} {piece}"
        else:
            sentences.append(piece)
    return sentences


def _continues(previous: str, piece: str, language: str | None) -> bool:
    """True when the full stop ending `previous` belongs to an abbreviation, an initial or an ordinal."""
    if not previous.endswith("."):
        return False
    if piece[0].islower():
        return True
    last = previous.rsplit(None, 1)[-1].rstrip(".").lower()
    if last in ABBREVIATIONS or (len(last) == 1 and last.isalpha()):
        return True
    return language in ORDINAL_DOT_LANGUAGES and last.isdigit() and len(last) <= 2


# -- terms ------------------------------------------------------------------------------------------------------------


@cache
def stopwords(language: str | None) -> frozenset[str]:
    """Yake's stop words for `language` (an empty set when it has none)."""
    return frozenset(w for w in yake.KeywordExtractor(lan=language or "noLang").stopword_set if w)


def terms(text: str, language: str | None, unspaced: bool) -> list[str]:
    """The content words of `text`, lower case, stop words dropped."""
    if unspaced:
        return [t.lower() for t in UNSPACED_TERM.findall(text)]
    stop = stopwords(language)
    return [w for w in (m.lower().strip("'’-") for m in WORD.findall(text)) if len(w) > 1 and w not in stop]


# -- key phrases ------------------------------------------------------------------------------------------------------


def key_phrases(text: str, language: str | None, count: int = KEY_PHRASES, *, title: str = "") -> list[str]:
    """The text's key phrases, most relevant first, without near-duplicates."""
    if not text.strip():
        return []
    if is_unspaced(text, language):
        return _unspaced_key_terms(f"{title}\n{text[:UNSPACED_SAMPLE_CHARS]}", count)
    sample = keyword_sample(text, title)
    candidates = [phrase.strip(EDGE_PUNCTUATION) for phrase in yake_ranked(sample, language, count * 5)]
    return _distinct(_rerank_by_repetition(candidates, sample), count)


# Where a sentence's word run breaks: no key phrase spans a comma, a bracket, a quote or a dash between spaces.
PHRASE_BREAK = re.compile(r"[,;:()\[\]{}\"“”«»„]|\s[-–—]\s")
MAX_PHRASE_WORDS = 3


def yake_ranked(sample: str, language: str | None, top: int) -> list[str]:
    """The `top` best 1-3 word phrases of `sample`, lower case, by YAKE's statistics (Campos et al., 2020).

    The yake package computes the same features through a networkx graph and an object per candidate, at 4-5x the
    cost of everything else in reading a page; these are its formulas over plain dicts (its window of 1, its stop
    words: a word under 3 letters is one too). A word's score H (lower is better) weighs where it first appears
    (position), how often (frequency), in how many sentences (spread), how often capitalised mid-sentence (case)
    and how many different words stand next to it (relatedness: a word beside anything says little). A phrase
    scores the product of its words' H over its frequency times (1 + their sum); it starts and ends with a content
    word and stays inside one run of words.
    """
    stop = stopwords(language)
    frequency: Counter[str] = Counter()
    acronym: Counter[str] = Counter()
    named: Counter[str] = Counter()  # capitalised, not opening a sentence
    sentences_of: dict[str, list[int]] = {}
    left: dict[str, Counter[str]] = {}
    right: dict[str, Counter[str]] = {}
    phrases: Counter[tuple[str, ...]] = Counter()
    sentences = split_sentences(sample, language)
    for number, sentence in enumerate(sentences):
        opening = True
        for run in PHRASE_BREAK.split(sentence):
            words: list[str] = []
            for token in WORD.findall(run):
                token = token.strip("'’-")
                if not token:
                    continue
                word = token.lower()
                frequency[word] += 1
                if token.isupper() and len(token) > 1:
                    acronym[word] += 1
                elif token[0].isupper() and not opening:
                    named[word] += 1
                opening = False
                sentences_of.setdefault(word, []).append(number)
                if words:
                    left.setdefault(word, Counter())[words[-1]] += 1
                    right.setdefault(words[-1], Counter())[word] += 1
                words.append(word)
            content = [len(w) >= 3 and w not in stop for w in words]
            for start in range(len(words)):
                if content[start]:
                    for end in range(start, min(start + MAX_PHRASE_WORDS, len(words))):
                        if content[end]:
                            phrases[tuple(words[start : end + 1])] += 1
    counts = [n for w, n in frequency.items() if len(w) >= 3 and w not in stop]
    if not counts:
        return []
    mean = sum(counts) / len(counts)
    spread_of_counts = math.sqrt(sum((n - mean) ** 2 for n in counts) / len(counts))
    most = max(frequency.values())
    score: dict[str, float] = {}
    for word, n in frequency.items():
        case = max(acronym[word], named[word]) / (1 + math.log(n))
        position = math.log(math.log(3 + _median(sentences_of[word])))
        relatedness = 1 + _diversity(left.get(word)) * n / most + _diversity(right.get(word)) * n / most
        spread = len(set(sentences_of[word])) / len(sentences)
        frequent = n / (mean + spread_of_counts)
        score[word] = (position * relatedness) / (case + frequent / relatedness + spread / relatedness)
    ranked = []
    for phrase, n in phrases.items():
        content_scores = [score[w] for w in phrase if len(w) >= 3 and w not in stop]
        ranked.append((math.prod(content_scores) / (n * (1 + sum(content_scores))), " ".join(phrase)))
    ranked.sort()
    return [phrase for _score, phrase in ranked[:top]]


def _diversity(neighbours: Counter[str] | None) -> float:
    """Different neighbours per co-occurrence: 1 when every neighbour is another word."""
    return len(neighbours) / neighbours.total() if neighbours else 0.0


def _median(values: list[int]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def keyword_sample(text: str, title: str = "") -> str:
    """What yake reads: the title and the wordy lines (no code, no data tables), each closed as a sentence so that
    a heading does not run into the next line, cut at KEY_PHRASE_SAMPLE_WORDS words."""
    lines = [line for line in paragraphs(text) if is_wordy(line) and not is_heading_of(line, title)]
    if title:
        lines.insert(0, sentence_case(title, text))
    words: list[str] = []
    for line in lines:
        # Longer "words" are URLs or junk, and segtok (yake's tokenizer) slows to a crawl on them.
        kept = [w for w in line.split() if len(w) <= MAX_WORD_CHARS]
        if kept and kept[-1][-1] not in ".!?…:;":
            kept[-1] += "."
        words.extend(kept)
        if len(words) >= KEY_PHRASE_SAMPLE_WORDS:
            break
    return " ".join(words[:KEY_PHRASE_SAMPLE_WORDS])


def is_heading_of(line: str, title: str) -> bool:
    """The page's own headline, perhaps with a tail ("…, with Dr. Nadia Haddad"): counting it again next to the
    title would make the title's words look repeated."""
    return bool(title) and line.startswith(title) and len(line) <= len(title) + 60


def sentence_case(title: str, text: str) -> str:
    """ "What We Changed After Two Years" -> "What we changed after two years" where the text spells the words so:
    yake takes capitals for names. Words the text capitalises too (names, German nouns) keep their capital."""
    first, *rest = title.split(" ") if title else [""]
    lowered = (
        w.lower() if w[:1].isupper() and re.search(rf"(?<!\w){re.escape(w.lower())}(?!\w)", text) else w for w in rest
    )
    return " ".join([first, *lowered])


def is_wordy(line: str) -> bool:
    """Prose or a heading: mostly letters, and not code, a table row (trafilatura writes "| a | b |") or numbers."""
    visible = line.replace(" ", "")
    letters = sum(c.isalpha() for c in visible)
    return bool(visible) and letters >= 0.75 * len(visible) and line.count("|") < 2 and not CODE.search(line)


def _rerank_by_repetition(candidates: Sequence[str], text: str) -> list[str]:
    """Yake's order within three tiers: phrases the text repeats, then words it repeats often, then the rest.

    Yake alone favours one-off phrases of the first sentence ("fourteen billion dollars"); what an author keeps
    coming back to is what the text is about. Each phrase is given in its most frequent spelling in the text.
    """
    tiers: tuple[list[str], list[str], list[str]] = ([], [], [])
    lowered = text.lower()
    for phrase in candidates:
        spellings = Counter(_occurrences(phrase, text, lowered))
        if not spellings:
            continue
        repeats = spellings.total()
        multiword = " " in phrase
        tier = 0 if multiword and repeats >= 2 else 1 if not multiword and repeats >= 3 else 2
        tiers[tier].append(spellings.most_common(1)[0][0])
    return [phrase for tier in tiers for phrase in tier]


def _occurrences(phrase: str, text: str, lowered: str) -> list[str]:
    """Every whole-word occurrence of `phrase` in `text`, ignoring case, as spelled there (`lowered` is
    text.lower()). str.find on the lowered text: a regex per phrase spent more time compiling than matching."""
    needle = phrase.lower()
    if not needle:
        return []
    if len(lowered) != len(text) or len(needle) != len(phrase):  # lower() changed a length ("İ"): positions differ
        return re.findall(rf"(?<!\w){re.escape(phrase)}(?!\w)", text, re.IGNORECASE)
    found = []
    start = 0
    while (at := lowered.find(needle, start)) != -1:
        end = at + len(needle)
        if (at == 0 or not _is_word_char(text[at - 1])) and (end == len(text) or not _is_word_char(text[end])):
            found.append(text[at:end])
            start = end
        else:
            start = at + 1
    return found


def _is_word_char(char: str) -> bool:
    return char.isalnum() or char == "_"  # the regex \w


def _distinct(phrases: Iterable[str], count: int) -> list[str]:
    """Drop phrases that repeat a kept one: the same words (ignoring plural s), contained in it, or an overlapping
    window of the same passage ("replaced our quarterly" after "quarterly training day")."""
    kept: list[str] = []
    kept_words: list[list[str]] = []
    for phrase in phrases:
        if not _is_key_phrase(phrase):
            continue
        words = [_stem(w) for w in phrase.lower().split()]
        if any(_repeats(words, other) for other in kept_words):
            continue
        kept.append(phrase)
        kept_words.append(words)
        if len(kept) == count:
            break
    return kept


def _repeats(words: list[str], other: list[str]) -> bool:
    if set(words) <= set(other) or set(other) <= set(words):
        return True
    chained = words[0] == other[-1] or words[-1] == other[0]
    return len(words) > 1 and len(other) > 1 and chained


def _stem(word: str) -> str:
    """A crude singular, only to compare phrases: "branches" -> "branch", "studies" -> "study", "teams" -> "team"."""
    if len(word) <= 3 or not word.endswith("s") or word.endswith("ss"):
        return word
    if word.endswith("ies"):
        return word[:-3] + "y"
    return word[:-2] if word.endswith(("ches", "shes", "sses", "xes")) else word[:-1]


def _is_key_phrase(phrase: str) -> bool:
    letters = sum(c.isalpha() for c in phrase)
    return letters >= 3 and letters >= 0.6 * len(phrase.replace(" ", ""))


def _unspaced_key_terms(text: str, count: int) -> list[str]:
    """Frequent ideograph / katakana runs: Japanese and Chinese nouns without a tokenizer. A run counts wherever it
    occurs, also inside longer runs (勉強会 in 社内勉強会)."""
    frequency = {term: text.count(term) for term in set(UNSPACED_TERM.findall(text))}
    ranked = sorted(frequency, key=lambda t: (-frequency[t] * math.log(1 + len(t)), text.find(t)))
    kept: list[str] = []
    for term in ranked:
        if frequency[term] < 2 and kept:
            break
        if not any(term in other or other in term for other in kept):
            kept.append(term)
        if len(kept) == count:
            break
    return kept


# -- summary ----------------------------------------------------------------------------------------------------------


class Candidate(NamedTuple):
    position: int
    sentence: str
    terms: frozenset[str]


def summarize(text: str, phrases: Sequence[str], language: str | None) -> list[str]:
    """3-5 key sentences of `text` in their original order (fewer when the text has fewer).

    SumBasic-style: a sentence scores the mean frequency of its content words, plus its key phrases, plus a little
    for coming early; after each pick the picked words count for less, so the next pick says something new.
    """
    unspaced = is_unspaced(text, language)
    candidates = summary_candidates(text, language, unspaced)
    if not candidates:
        return []
    frequency = Counter(t for c in candidates for t in c.terms)
    total = sum(frequency.values()) or 1
    weight = {t: n / total for t, n in frequency.items()}
    phrase_weight = {p.lower(): 1 / (1 + rank) for rank, p in enumerate(phrases)}
    wanted = summary_length(len(candidates))
    picked: list[Candidate] = []
    remaining = list(candidates)
    while remaining and len(picked) < wanted:
        best = max(remaining, key=lambda c: _score(c, weight, phrase_weight, len(candidates)))
        remaining.remove(best)
        if any(_says_again(best, other) for other in picked):  # a standfirst restating the lead, say
            continue
        picked.append(best)
        for term in best.terms:
            weight[term] *= PICKED_WORD_DECAY
    return [c.sentence for c in sorted(picked)]


def _says_again(candidate: Candidate, picked: Candidate) -> bool:
    shared = len(candidate.terms & picked.terms)
    return shared >= REDUNDANT_SHARE * min(len(candidate.terms), len(picked.terms))


def summary_length(candidates: int) -> int:
    if candidates <= 15:
        return 3
    return 4 if candidates <= 40 else 5


def summary_candidates(text: str, language: str | None, unspaced: bool) -> list[Candidate]:
    """Whole sentences worth quoting: from wordy paragraphs (not code or data tables), of a readable length."""
    candidates: list[Candidate] = []
    seen: set[str] = set()
    for paragraph in paragraphs(text):
        # List items (trafilatura writes "- item") are mostly fragments that need their list to make sense.
        if not is_wordy(paragraph) or paragraph.startswith("- "):
            continue
        for sentence in split_sentences(paragraph, language):
            words = count_words(sentence)
            if not SUMMARY_MIN_WORDS <= words <= SUMMARY_MAX_WORDS or sentence in seen:
                continue
            if not SENTENCE_CLOSE.search(sentence):
                continue
            seen.add(sentence)
            candidates.append(Candidate(len(candidates), sentence, frozenset(terms(sentence, language, unspaced))))
            if len(candidates) == MAX_CANDIDATES:
                return [c for c in candidates if c.terms]
    return [c for c in candidates if c.terms]


def paragraphs(text: str) -> list[str]:
    """The text's paragraphs, whitespace collapsed. Table rows ("| a | b |") give their cells of prose length: old
    sites lay whole articles out in table cells, while the short cells of data tables are no prose."""
    found: list[str] = []
    for line in text.splitlines():
        line = " ".join(line.split())
        if line.startswith("|"):
            found.extend(cell.strip() for cell in line.split("|") if count_words(cell) >= SUMMARY_MIN_WORDS)
        elif line:
            found.append(line)
    return found


def _score(candidate: Candidate, weight: dict[str, float], phrase_weight: dict[str, float], total: int) -> float:
    mean_weight = sum(weight[t] for t in candidate.terms) / len(candidate.terms)
    lowered = candidate.sentence.lower()
    phrase_bonus = sum(w for p, w in phrase_weight.items() if p in lowered)
    lead_bonus = 1.25 if candidate.position == 0 else 1 + 0.15 * (1 - candidate.position / total)
    pitch_penalty = 0.2 if CALL_TO_ACTION.search(candidate.sentence) else 1.0
    # A mean favours short sentences, which often lean on the previous one ("Software teams could do the same.").
    # annotated: typeshed calls float ** float Any (it may be complex); this base is never negative
    length_factor: float = min(1.0, len(candidate.terms) / SHORT_SENTENCE_TERMS) ** 0.5
    return mean_weight * (1 + phrase_bonus) * lead_bonus * pitch_penalty * length_factor
