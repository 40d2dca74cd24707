"""X (Twitter): the tweets of trusted people, as shares of the articles they link.

Design:
- App-only, read-only access (a bearer token) through tweepy's X API v2 `Client`. tweepy is synchronous, so each
  call runs in a worker thread (`asyncio.to_thread`): the event loop, and with it every other source and stage,
  never waits on X. The client never sleeps on a rate limit itself (`wait_on_rate_limit=False`); `run_source`
  schedules the wait instead, so a limit on X delays only X.
- Two modes. By default each person's timeline (GET /2/users/:id/tweets) for every X handle in the rules file,
  which is re-read on every poll because the file hot-reloads. With `list_id`, one X list (GET
  /2/lists/:id/tweets): one request per poll however many people it holds, the cheaper choice on a small API tier.
- Checkpoints (see `base`): `x.users` caches handle -> user id, so a restart costs no look-ups; `x.since.<user id>`
  is the newest tweet id read from a person (sent as `since_id`); `x.list.<list id>` the newest tweet id seen in
  the list, whose endpoint has no `since_id`. A checkpoint moves only after every share before it was emitted:
  a crash in between re-emits, and JetStream drops the duplicates by Nats-Msg-Id.
- No backfill: a person (or list) without a checkpoint yields only the newest page. Older tweets were shared before
  Impromptu was watching; replaying them would propose sessions on stale articles and spend the monthly tweet cap.
- A tweet becomes one share per article it links: the unwound URL (where the redirects end) or else the expanded
  one, never a t.co link and never a link back into X (a quoted tweet, a photo). A tweet linking nothing emits
  nothing. An odd tweet is skipped (with a warning) rather than fatal, so one tweet cannot stall a timeline; a
  response X should never send (not JSON, `data` not a list of tweets, ...) fails the poll: `SourceUnavailable`.
- Failures: HTTP 429 -> `RateLimited` until `x-rate-limit-reset`; anything else -> `SourceUnavailable` with a reason
  an operator can act on. The bearer token appears in no message and no log line, tweepy's debug log included
  (it prints request headers; see `make_x_client`).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar
from urllib.parse import urlsplit

import requests
import structlog
import tweepy
from pydantic import Field, SecretStr, ValidationError

from pipeline import http_retry
from pipeline.domain.rules import Person, normalise_handle
from pipeline.messages import Share
from pipeline.redaction import TimeoutSession, redact_bearer
from pipeline.settings import Settings
from pipeline.triggers.sources.base import (
    Checkpoints,
    Emit,
    RateLimited,
    SourceAdapter,
    SourceContext,
    SourceSettings,
    SourceUnavailable,
)

log = structlog.get_logger("pipeline.sources.x")

TOKEN_ENV = "IMPROMPTU_X_BEARER_TOKEN"
USERS_KEY = "x.users"
TWEET_FIELDS = ["created_at", "entities", "lang", "referenced_tweets", "author_id"]
# A retweet's own text (and so its links) is cut at "RT @someone: ..."; the original tweet has them whole.
TIMELINE_EXPANSIONS = ["referenced_tweets.id"]
LIST_EXPANSIONS = ["author_id", "referenced_tweets.id"]
PAGE_SIZE = 100  # the API's maximum for both endpoints
LOOKUP_BATCH = 100  # usernames per GET /2/users/by
DEFAULT_MAX_PAGES = 5
DEFAULT_RATE_LIMIT_WAIT = 900.0  # X's rate-limit windows are 15 minutes
USERNAME = re.compile(r"[a-z0-9_]{1,15}")  # anything else makes X reject the whole look-up (400)
X_HOSTS = frozenset({"x.com", "twitter.com", "t.co", "pic.x.com", "pic.twitter.com", "mobile.twitter.com"})
# "und" is undetermined; zxx and the q* codes mark tweets of only media, mentions, hashtags or cashtags.
NO_LANGUAGE = frozenset({"und", "zxx", "qam", "qct", "qht", "qme", "qst"})
TWITTER_EPOCH_MS = 1288834974657  # tweet ids are snowflakes: (id >> 22) + this is the creation time in ms


@dataclass(frozen=True)
class XUser:
    id: str
    username: str


@dataclass
class Page:
    """One page of tweets, with what its expansions brought along."""

    tweets: list[tweepy.Tweet]
    referenced: dict[int, tweepy.Tweet] = field(default_factory=dict)
    authors: dict[int, str] = field(default_factory=dict)
    newest_id: str | None = None
    next_token: str | None = None
    errors: list[str] = field(default_factory=list)  # partial errors X reports with HTTP 200


class XSettings(SourceSettings):
    x_bearer_token: SecretStr | None = Field(default=None, description="X API v2 app token; unset: X is off.")
    x_list_id: str | None = Field(default=None, description="Read this X list instead of each person's timeline.")
    x_poll_seconds: float = 60.0


class XSource(SourceAdapter):
    """Polls the timelines of the trusted people's X handles (or one X list) and emits their article shares.

    In list mode `people` is not consulted: every list member's share is emitted and the trigger stage, which
    knows who is trusted on what, ignores the rest.
    """

    name: ClassVar[str] = "x"
    Section = XSettings

    @classmethod
    def from_settings(cls, settings: Settings, context: SourceContext) -> XSource | None:
        return x_source(settings, context.people, context.checkpoints, context.emit)

    def __init__(
        self,
        client: tweepy.Client,
        people: Callable[[], Sequence[Person]],
        checkpoints: Checkpoints,
        emit: Emit,
        *,
        poll_seconds: float = 60,
        list_id: str | None = None,
        max_pages: int = DEFAULT_MAX_PAGES,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if max_pages < 1:
            raise ValueError("max_pages must be at least 1")
        self.client = client
        self.people = people
        self.checkpoints = checkpoints
        self.emit = emit
        self.poll_seconds = poll_seconds
        self.list_id = list_id
        self.max_pages = max_pages
        self.clock = clock
        self._user_cache: dict[str, dict[str, str]] | None = None
        self._reported: set[str] = set()  # one warning per bad handle or account, not one per poll

    async def poll(self) -> float:
        started = time.monotonic()
        if self.list_id:
            counts = await self._poll_list(self.list_id)
        else:
            counts = await self._poll_people()
        log.info("source.polled", source=self.name, seconds=round(time.monotonic() - started, 3), **counts)
        return self.poll_seconds

    # --- people's timelines ---

    async def _poll_people(self) -> dict[str, Any]:
        users = await self._resolve(self._handles())
        tweets = shares = 0
        for done, user in enumerate(users):
            try:
                read, emitted = await self._poll_user(user)
            except RateLimited as limit:
                # Everyone before `user` is emitted and checkpointed; the rest wait for the reset.
                raise RateLimited(limit.retry_after, f"{limit} ({done} of {len(users)} people read)") from limit
            tweets += read
            shares += emitted
        return {"mode": "timelines", "people": len(users), "tweets": tweets, "shares": shares}

    def _handles(self) -> list[str]:
        handles: dict[str, None] = {}  # ordered and without repeats
        for person in self.people():
            for raw in person.x:
                handle = normalise_handle("x", raw)
                if USERNAME.fullmatch(handle):
                    handles[handle] = None
                else:
                    self._warn_once(handle, "x.handle_invalid", person=person.name, handle=raw)
        return list(handles)

    async def _resolve(self, handles: list[str]) -> list[XUser]:
        """User ids for `handles`, looked up once and then kept in the checkpoints."""
        cache = await self._load_user_cache()
        missing = [handle for handle in handles if handle not in cache]
        for batch in _chunks(missing, LOOKUP_BATCH):
            response = await self._call("GET /2/users/by", self.client.get_users, usernames=batch, user_auth=False)
            found = _read_users(response)
            if found:
                cache.update({user.username.lower(): {"id": str(user.id), "username": user.username} for user in found})
                await self.checkpoints.save(USERS_KEY, {"users": cache})
        for handle in missing:
            if handle not in cache:
                self._warn_once(handle, "x.user_not_found", handle=f"@{handle}")
        return [XUser(**cache[handle]) for handle in handles if handle in cache]

    async def _load_user_cache(self) -> dict[str, dict[str, str]]:
        if self._user_cache is None:
            stored = (await self.checkpoints.load(USERS_KEY)) or {}
            users = stored.get("users")
            self._user_cache = {
                handle: {"id": user["id"], "username": user["username"]}
                for handle, user in (users.items() if isinstance(users, dict) else [])
                if _is_cached_user(user)
            }
        return self._user_cache

    async def _poll_user(self, user: XUser) -> tuple[int, int]:
        """Emit `user`'s new shares, then move their checkpoint. Returns (tweets read, shares emitted)."""
        key = f"x.since.{user.id}"
        since_id = await self._load_id(key, "since_id")
        pages, more = await self._pages(
            "GET /2/users/:id/tweets",
            self.client.get_users_tweets,
            user.id,
            max_pages=1 if since_id is None else self.max_pages,
            since_id=since_id,
            expansions=TIMELINE_EXPANSIONS,
        )
        if more and since_id is not None:
            # Hundreds of tweets in one poll interval: keep up rather than fall further behind every poll.
            log.warning("x.pages_capped", source=self.name, handle=f"@{user.username}", pages=len(pages))
        tweets = [tweet for page in pages for tweet in page.tweets]
        emitted = await self._emit_all([(tweet, user.username) for tweet in tweets], _referenced(pages))
        newest_id = pages[0].newest_id  # the first page holds the newest tweet
        if newest_id is not None and (since_id is None or int(newest_id) > int(since_id)):
            await self.checkpoints.save(key, {"since_id": newest_id})
        return len(tweets), emitted

    # --- one X list ---

    async def _poll_list(self, list_id: str) -> dict[str, Any]:
        key = f"x.list.{list_id}"
        seen = await self._load_id(key, "newest_id")
        pages, more = await self._pages(
            "GET /2/lists/:id/tweets",
            self.client.get_list_tweets,
            list_id,
            max_pages=1 if seen is None else self.max_pages,
            stop_at=None if seen is None else int(seen),
            expansions=LIST_EXPANSIONS,
            user_fields=["username"],
        )
        if more and seen is not None:
            log.warning("x.pages_capped", source=self.name, list_id=list_id, pages=len(pages))
        every = [tweet for page in pages for tweet in page.tweets]
        # The list endpoint has no since_id: it pages back past what we have seen, so skip that part here.
        new = [tweet for tweet in every if seen is None or tweet.id > int(seen)]
        authors = {author_id: name for page in pages for author_id, name in page.authors.items()}
        named: list[tuple[tweepy.Tweet, str]] = []
        for tweet in new:
            if tweet.author_id in authors:
                named.append((tweet, authors[tweet.author_id]))
            else:  # without includes.users there is no one to name as the sharer
                log.warning("x.author_missing", source=self.name, tweet_id=str(tweet.id))
        emitted = await self._emit_all(named, _referenced(pages))
        newest = max((tweet.id for tweet in every), default=None)
        if newest is not None and (seen is None or newest > int(seen)):
            await self.checkpoints.save(key, {"newest_id": str(newest)})
        return {"mode": "list", "tweets": len(new), "shares": emitted}

    # --- shared plumbing ---

    async def _emit_all(self, tweets: list[tuple[tweepy.Tweet, str]], referenced: dict[int, tweepy.Tweet]) -> int:
        """Emit the shares of `(tweet, author username)` pairs, oldest tweet first; returns how many."""
        count = 0
        for tweet, username in sorted(tweets, key=lambda pair: pair[0].id):
            try:
                shares = tweet_shares(tweet, username, retweeted=_retweeted(tweet, referenced))
            except ValidationError as error:  # e.g. a text that is not a string: skip it, keep the timeline moving
                log.warning("x.tweet_skipped", source=self.name, tweet_id=str(tweet.id), error=str(error)[:300])
                continue
            for share in shares:
                await self.emit(share)
                count += 1
        return count

    async def _pages(
        self,
        endpoint: str,
        method: Callable[..., Any],
        resource_id: str,
        *,
        max_pages: int,
        stop_at: int | None = None,
        **params: Any,
    ) -> tuple[list[Page], bool]:
        """Pages, newest first, until X has no more, a page reaches tweet `stop_at`, or `max_pages` were read.

        Returns the pages and whether X had more.
        """
        pages: list[Page] = []
        token: str | None = None
        while len(pages) < max_pages:
            response = await self._call(
                endpoint,
                method,
                resource_id,
                pagination_token=token,
                max_results=PAGE_SIZE,
                tweet_fields=TWEET_FIELDS,
                user_auth=False,
                **params,
            )
            page = _read_page(response, endpoint)
            if page.errors:  # a protected or suspended account: worth a line, not a failure, and not every poll
                self._warn_once(
                    f"{endpoint}:{resource_id}:{page.errors}",
                    "x.api_errors",
                    endpoint=endpoint,
                    resource_id=resource_id,
                    errors=page.errors[:5],
                )
            pages.append(page)
            token = page.next_token
            if token is None or (stop_at is not None and any(tweet.id <= stop_at for tweet in page.tweets)):
                return pages, False
        return pages, True

    async def _load_id(self, key: str, name: str) -> str | None:
        stored = await self.checkpoints.load(key)
        value = (stored or {}).get(name)
        return value if isinstance(value, str) and value.isdigit() else None

    async def _call(self, endpoint: str, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """One API request in a worker thread, its failures translated for `run_source`."""
        try:
            return await asyncio.to_thread(method, *args, **kwargs)
        except tweepy.TooManyRequests as error:
            wait = _retry_after(error, self.clock())
            raise RateLimited(wait, f"X rate limit reached on {endpoint}; it resets in {round(wait)}s") from error
        except tweepy.HTTPException as error:
            raise SourceUnavailable(_http_reason(error, endpoint, self.list_id)) from error
        except tweepy.TweepyException as error:
            raise SourceUnavailable(f"tweepy failed on {endpoint}: {error}") from error
        except requests.JSONDecodeError as error:  # before RequestException and ValueError: it is both
            raise SourceUnavailable(f"X answered {endpoint} with something that is not JSON") from error
        except requests.Timeout as error:
            raise SourceUnavailable(f"X did not answer {endpoint} in time ({type(error).__name__})") from error
        except requests.RequestException as error:
            raise SourceUnavailable(f"cannot reach X for {endpoint}: {type(error).__name__}: {error}") from error
        except (KeyError, TypeError, ValueError, AttributeError) as error:  # tweepy could not parse what X sent
            raise SourceUnavailable(f"X answered {endpoint} in an unexpected shape: {error!r}") from error

    def _warn_once(self, about: str, event: str, /, **fields: Any) -> None:
        if f"{event}:{about}" not in self._reported:
            self._reported.add(f"{event}:{about}")
            log.warning(event, source=self.name, **fields)


# --- tweets -> shares ---


def tweet_shares(tweet: tweepy.Tweet, username: str, *, retweeted: tweepy.Tweet | None = None) -> list[Share]:
    """One share per article `tweet` links (a retweet: the original's links when its own text was cut)."""
    urls = article_urls(tweet.entities)
    if not urls and retweeted is not None:
        urls = article_urls(retweeted.entities)
    kinds = {ref.type for ref in tweet.referenced_tweets or [] if isinstance(ref, tweepy.ReferencedTweet)}
    common: dict[str, Any] = {
        "sharer": f"@{username}",
        "network": "x",
        "text": tweet.text,
        "shared_at": tweet.created_at or _snowflake_time(tweet.id),
        "is_reply": "replied_to" in kinds,
        "is_repost": "retweeted" in kinds,
        "language": _language(tweet.lang),
    }
    return [
        Share.from_source(source="x", native_id=_native_id(tweet.id, n, len(urls)), url=url, **common)
        for n, url in enumerate(urls, start=1)
    ]


def article_urls(entities: object) -> list[str]:
    """The distinct article links in a tweet's `entities`: unwound, else expanded; never t.co, never X itself."""
    entries = entities.get("urls") if isinstance(entities, dict) else None
    urls: dict[str, None] = {}  # ordered and without repeats
    for entry in entries if isinstance(entries, list) else []:
        if not isinstance(entry, dict):
            continue
        url = next((entry[name] for name in ("unwound_url", "expanded_url") if _is_article(entry.get(name))), None)
        if url is not None:
            urls[url] = None
    return list(urls)


def _is_article(url: object) -> bool:
    if not isinstance(url, str):
        return False
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    host = (parts.hostname or "").lower().removeprefix("www.")
    return parts.scheme in ("http", "https") and bool(host) and host not in X_HOSTS


def _native_id(tweet_id: int, n: int, count: int) -> str:
    return f"{tweet_id}" if count == 1 else f"{tweet_id}.{n}"


def _language(lang: object) -> str | None:
    return lang if isinstance(lang, str) and lang and lang not in NO_LANGUAGE else None


def _snowflake_time(tweet_id: int) -> datetime:
    """When a tweet was posted, read from its id: for the rare tweet that comes without created_at."""
    return datetime.fromtimestamp(((tweet_id >> 22) + TWITTER_EPOCH_MS) / 1000, tz=UTC)


def _retweeted(tweet: tweepy.Tweet, referenced: dict[int, tweepy.Tweet]) -> tweepy.Tweet | None:
    for ref in tweet.referenced_tweets or []:
        if isinstance(ref, tweepy.ReferencedTweet) and ref.type == "retweeted":
            return referenced.get(ref.id)
    return None


def _referenced(pages: list[Page]) -> dict[int, tweepy.Tweet]:
    return {tweet_id: tweet for page in pages for tweet_id, tweet in page.referenced.items()}


# --- reading responses ---


def _read_page(response: object, endpoint: str) -> Page:
    """A tweets page, checked: X leaves out `data` when there are no tweets, but never sends another shape."""

    def unexpected(what: str) -> SourceUnavailable:
        return SourceUnavailable(f"X answered {endpoint} in an unexpected shape: {what}")

    if not isinstance(response, tweepy.Response):
        raise unexpected(f"{type(response).__name__} instead of a tweepy Response (is the client's return_type set?)")
    data = [] if response.data is None else response.data
    if not isinstance(data, list) or not all(isinstance(tweet, tweepy.Tweet) for tweet in data):
        raise unexpected("`data` is not a list of tweets")
    if not isinstance(response.meta, dict) or not isinstance(response.includes, dict):
        raise unexpected("`meta` or `includes` is not an object")
    newest_id = response.meta.get("newest_id")
    if newest_id is not None and not (isinstance(newest_id, str) and newest_id.isdigit()):
        raise unexpected(f"meta.newest_id is {newest_id!r}")
    next_token = response.meta.get("next_token")
    if next_token is not None and not isinstance(next_token, str):
        raise unexpected(f"meta.next_token is {next_token!r}")
    users = response.includes.get("users", [])
    tweets = response.includes.get("tweets", [])
    return Page(
        tweets=data,
        referenced={tweet.id: tweet for tweet in tweets if isinstance(tweet, tweepy.Tweet)},
        authors={user.id: user.username for user in users if isinstance(user, tweepy.User)},
        newest_id=newest_id,
        next_token=next_token,
        errors=_error_details(response.errors),
    )


def _read_users(response: object) -> list[tweepy.User]:
    """The users a look-up found; unknown or suspended handles come back in `errors`, not as a failure."""
    if not isinstance(response, tweepy.Response):
        raise SourceUnavailable("X answered GET /2/users/by in an unexpected shape: not a tweepy Response")
    data = [] if response.data is None else response.data
    if not isinstance(data, list) or not all(isinstance(user, tweepy.User) for user in data):
        raise SourceUnavailable("X answered GET /2/users/by in an unexpected shape: `data` is not a list of users")
    return data


def _error_details(errors: object) -> list[str]:
    if not isinstance(errors, list):
        return []
    return [str(error.get("detail") or error.get("title")) for error in errors if isinstance(error, dict)]


def _retry_after(error: tweepy.TooManyRequests, now: float) -> float:
    """Seconds until the window resets (`x-rate-limit-reset` is epoch seconds); a full window when X didn't say."""
    headers = getattr(error.response, "headers", None) or {}
    wait = http_retry.epoch_seconds(headers.get("x-rate-limit-reset"), now)
    return DEFAULT_RATE_LIMIT_WAIT if wait is None else wait


def _http_reason(error: tweepy.HTTPException, endpoint: str, list_id: str | None) -> str:
    """What went wrong, for an operator: what to check first. X's own messages never include the token."""
    status = getattr(error.response, "status_code", None)
    said = "; ".join(str(message) for message in error.api_messages)[:300] or str(status)
    if isinstance(error, tweepy.Unauthorized):
        return f"X rejected the bearer token (401): check {TOKEN_ENV}"
    if isinstance(error, tweepy.Forbidden):
        return f"X refused {endpoint} (403): does the app's access level include it? X said: {said}"
    if isinstance(error, tweepy.NotFound) and list_id:
        return f"X has no list {list_id} (404): check IMPROMPTU_X_LIST_ID. X said: {said}"
    if isinstance(error, tweepy.TwitterServerError):
        return f"X failed on {endpoint} ({status}); trying again later"
    return f"X refused {endpoint} ({status}): {said}"


def _is_cached_user(user: object) -> bool:
    """A usable `x.users` entry; anything else is looked up again rather than trusted."""
    return (
        isinstance(user, dict)
        and isinstance(user.get("id"), str)
        and user["id"].isdigit()
        and isinstance(user.get("username"), str)
    )


def _chunks(items: list[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


# --- building it from settings ---


class _RedactBearer(logging.Filter):
    """tweepy logs each request's headers at DEBUG, the bearer token with them: cut it out before any handler."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str) and "Bearer" in record.msg:
            record.msg = redact_bearer(record.msg)
        return True


def make_x_client(bearer_token: str, *, timeout: float = 15.0) -> tweepy.Client:
    """A tweepy v2 client that fails fast: no sleeping on a rate limit, a timeout on each request, no token in logs."""
    tweepy_log = logging.getLogger("tweepy.client")
    if not any(isinstance(existing, _RedactBearer) for existing in tweepy_log.filters):
        tweepy_log.addFilter(_RedactBearer())
    client = tweepy.Client(bearer_token=bearer_token, wait_on_rate_limit=False)
    client.session = TimeoutSession(timeout)
    return client


def x_source(
    settings: Settings, people: Callable[[], Sequence[Person]], checkpoints: Checkpoints, emit: Emit
) -> XSource | None:
    """The X source the settings describe, or None (and one warning) when no bearer token is set."""
    section = XSettings.of(settings)
    token = section.x_bearer_token.get_secret_value() if section.x_bearer_token else ""
    if not token.strip():
        log.warning("source.disabled", source="x", reason=f"no X API bearer token: set {TOKEN_ENV} to read X")
        return None
    return XSource(
        make_x_client(token.strip(), timeout=section.source_timeout_seconds),
        people,
        checkpoints,
        emit,
        poll_seconds=section.x_poll_seconds,
        list_id=section.x_list_id or None,
    )
