"""HTTP and text helpers every polling source shares: capped streaming GETs, Retry-After, per-host hold-backs,
one error per failed feed or account, HTML to plain text."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TypeGuard

import httpx
import lxml.html
import structlog
from lxml import etree

from pipeline import http_retry
from pipeline.messages import utc_now
from pipeline.text import shorten as shorten  # kept importable here: tests/unit/test_source_feeds.py
from pipeline.triggers.sources.base import RateLimited, SourceUnavailable

log = structlog.get_logger("pipeline.sources")

Clock = Callable[[], datetime]

DEFAULT_RETRY_AFTER = 60.0  # a 429 without a usable Retry-After


class HttpStatusError(SourceUnavailable):
    """The server answered with an error status (429 is RateLimited instead)."""

    def __init__(self, status: int) -> None:
        super().__init__(f"answered HTTP {status}")
        self.status = status


@dataclass(frozen=True)
class Fetched:
    url: str  # where redirects ended
    status: int
    headers: httpx.Headers
    body: bytes


async def get_capped(
    http: httpx.AsyncClient,
    url: str,
    *,
    timeout_seconds: float,
    max_bytes: int,
    clock: Clock = utc_now,
    headers: Mapping[str, str] | None = None,
    params: Mapping[str, str] | None = None,
) -> Fetched:
    """GET `url` and read at most `max_bytes` of its body. 304 is returned; 429 raises RateLimited; other errors
    raise SourceUnavailable with a reason that does not repeat the URL (the caller names the feed or account)."""
    try:
        async with asyncio.timeout(timeout_seconds):  # the whole exchange: a server dripping bytes cannot stall us
            async with http.stream(
                "GET", url, headers=headers, params=params, timeout=timeout_seconds, follow_redirects=True
            ) as response:
                if response.status_code == 429:
                    wait = retry_after_seconds(response.headers, clock())
                    raise RateLimited(wait, f"answered HTTP 429, retry after {round(wait)}s")
                if response.status_code >= 400:
                    raise HttpStatusError(response.status_code)
                body = await read_capped(response, max_bytes)
                return Fetched(str(response.url), response.status_code, response.headers, body)
    except TimeoutError as error:
        raise SourceUnavailable(f"no complete answer within {timeout_seconds}s") from error
    except httpx.TimeoutException as error:
        raise SourceUnavailable(f"timed out ({type(error).__name__})") from error
    except (httpx.HTTPError, httpx.InvalidURL) as error:
        raise SourceUnavailable(f"request failed: {type(error).__name__}: {error}") from error


async def read_capped(response: httpx.Response, max_bytes: int) -> bytes:
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise SourceUnavailable(f"body is larger than {max_bytes} bytes")
    body = bytearray()
    async for chunk in response.aiter_bytes():  # decoded, so a compressed bomb stops at the cap too
        body.extend(chunk)
        if len(body) > max_bytes:
            raise SourceUnavailable(f"body is larger than {max_bytes} bytes")
    return bytes(body)


def retry_after_seconds(headers: Mapping[str, str], now: datetime) -> float:
    """Seconds to wait after a 429: Retry-After (seconds or HTTP date), else Mastodon's X-RateLimit-Reset (ISO 8601)."""
    wait = http_retry.retry_after_seconds(headers.get("retry-after"), now)
    if wait is None:
        moment = http_retry.iso_moment(headers.get("x-ratelimit-reset"))
        wait = None if moment is None else max((moment - now).total_seconds(), 0.0)
    return DEFAULT_RETRY_AFTER if wait is None else wait


class HoldBacks:
    """Who answered 429, and until when we leave them alone. Kept in memory: after a restart one request finds out
    again, which costs less than a checkpoint write per rate limit."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.until: dict[str, datetime] = {}

    def hold(self, key: str, seconds: float) -> None:
        self.until[key] = self.clock() + timedelta(seconds=seconds)

    def is_held(self, key: str) -> bool:
        until = self.until.get(key)
        if until is None:
            return False
        if self.clock() >= until:
            del self.until[key]
            return False
        return True


@dataclass
class PollProblems:
    """What went wrong for some feeds or accounts in one poll; raised together once the others are done."""

    failures: dict[str, str] = field(default_factory=dict)
    rate_limits: dict[str, str] = field(default_factory=dict)

    def failed(self, what: str, reason: str) -> None:
        self.failures[what] = reason

    def rate_limited(self, what: str, reason: str) -> None:
        self.rate_limits[what] = reason

    def raise_if_any(self, next_poll_seconds: float) -> None:
        """Failures make the poll fail (run_source backs off); rate limits alone are RateLimited with the normal
        interval, since the limited feeds or instances are already held back on their own."""
        everything = "; ".join(f"{what}: {why}" for what, why in {**self.failures, **self.rate_limits}.items())
        if self.failures:
            raise SourceUnavailable(everything)
        if self.rate_limits:
            raise RateLimited(next_poll_seconds, everything)


BLOCKS = {"p", "div", "li", "blockquote", "pre", "h1", "h2", "h3", "h4", "h5", "h6", "tr", "ul", "ol", "table"}


def html_to_text(html: str) -> str:
    """Visible text of an HTML fragment: blocks as paragraphs, <br> as line breaks, other whitespace collapsed."""
    try:
        root = lxml.html.fragment_fromstring(html, create_parent="div")
    except (ValueError, etree.ParserError):  # not parseable as HTML: it was text
        return " ".join(html.split())
    for element in root.iter():
        if element.tag == "br":
            element.tail = "\n" + (element.tail or "")
        elif element.tag in BLOCKS:
            element.tail = "\n\n" + (element.tail or "")
    lines = (" ".join(line.split()) for line in root.text_content().split("\n"))
    paragraphs = "\n".join(lines).split("\n\n")
    return "\n\n".join(paragraph.strip("\n") for paragraph in paragraphs if paragraph.strip())


def is_http_url(url: object) -> TypeGuard[str]:
    return isinstance(url, str) and url.startswith(("http://", "https://"))
