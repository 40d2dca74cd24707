"""What enrichment learned about a page, kept in NATS KV by canonical URL for a while: fifty people sharing one
article cost one fetch, and a page that was refused is not fetched again until the entry expires."""

from __future__ import annotations

from datetime import datetime

from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue
from pydantic import BaseModel, ConfigDict

from pipeline.messages import Article, utc_now


class PageRecord(BaseModel):
    """Either the article read from the page, or why it could not be read (permanent refusals only)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    canonical_url: str
    article: Article | None = None
    topic_text: str = ""  # the text topics are matched against, so a cache hit scores topics like a fetch
    refused: str | None = None  # reason code
    detail: str = ""
    stored_at: datetime

    @classmethod
    def read(cls, canonical_url: str, article: Article, topic_text: str) -> PageRecord:
        return cls(canonical_url=canonical_url, article=article, topic_text=topic_text, stored_at=utc_now())

    @classmethod
    def refusal(cls, canonical_url: str, reason: str, detail: str) -> PageRecord:
        return cls(canonical_url=canonical_url, refused=reason, detail=detail, stored_at=utc_now())


async def cached(kv: KeyValue, key: str) -> PageRecord | None:
    try:
        entry = await kv.get(key)
    except KeyNotFoundError:
        return None
    return PageRecord.model_validate_json(entry.value or b"")


async def remember(kv: KeyValue, key: str, record: PageRecord) -> None:
    await kv.put(key, record.model_dump_json().encode())
