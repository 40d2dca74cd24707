"""Turn a fetched page into an Article with trafilatura (extraction only: fetching is ours)."""

from __future__ import annotations

import re

import trafilatura

from pipeline.errors import PermanentError
from pipeline.messages import Article

WORDS_PER_MINUTE = 230
SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'“])")


def key_sentences(text: str, count: int = 3) -> str:
    """The opening sentences of the main text; a later issue replaces this with a real summariser."""
    paragraphs = [p.strip() for p in text.splitlines() if len(p.split()) >= 6]
    sentences = [s for p in paragraphs for s in SENTENCE_END.split(p)]
    return " ".join(sentences[:count])


def extract_article(html: str, *, url: str, final_url: str) -> Article:
    document = trafilatura.bare_extraction(html, url=final_url, with_metadata=True, include_comments=False)
    if document is None or not (document.title or document.text):
        raise PermanentError(f"no_content: nothing readable at {final_url}")
    text = document.text or ""
    words = len(text.split())
    return Article(
        url=url,
        final_url=final_url,
        title=(document.title or document.description or final_url).strip(),
        author=document.author,
        site_name=document.sitename,
        published=document.date,
        description=document.description,
        summary=key_sentences(text) or (document.description or ""),
        language=document.language,
        word_count=words,
        reading_minutes=max(1, round(words / WORDS_PER_MINUTE)) if words else 0,
    )
