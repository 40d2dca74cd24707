"""Mastodon as a share source: each public status of a trusted account that links to something is a share of it.

Public REST API, no credentials:
- `GET /api/v1/accounts/lookup?acct=<user>` once per account; the id is cached in the account's checkpoint
  (`mastodon.<hash of user@instance>`) and looked up again when the instance later answers 404 or 410 for it.
- `GET /api/v1/accounts/:id/statuses?limit=40&since_id=<newest seen>`, replies included: the rules decide about
  them. Mastodon answers the newest page after since_id, so when a page comes back full, older pages are read with
  max_id down to since_id (at most `max_pages`): a poll after an outage does not skip statuses.
- The first poll of an account reads only the newest page and emits only its statuses from the last 24 hours, as
  feeds do (adding a person must not replay their history into the triggers); the newest id is remembered either way.
- Emit first, checkpoint after: a crash in between re-emits, and JetStream drops the repeated Nats-Msg-Ids.
- The shared link is the preview card's URL when the instance made one (it is what the post is about), else the
  first link in the content that is not a mention or hashtag. A boost shares the boosted status's link (is_repost).
- One account failing does not stop the others: the failures of a poll are raised together at the end. A 429 holds
  back every account on that instance (Mastodon limits per client address) until Retry-After or X-RateLimit-Reset.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, ClassVar
from urllib.parse import quote

import httpx
import lxml.html
import structlog
from lxml import etree
from pydantic import Field, ValidationError

from pipeline.domain.rules import Person
from pipeline.messages import Share, stable_id, utc_now
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
from pipeline.triggers.sources.feeds import FIRST_POLL_WINDOW
from pipeline.triggers.sources.http import (
    Clock,
    HoldBacks,
    HttpStatusError,
    PollProblems,
    get_capped,
    html_to_text,
    is_http_url,
)

log = structlog.get_logger("pipeline.sources.mastodon")

PAGE_SIZE = 40  # the most Mastodon returns per page
MAX_PAGES = 5

InstanceUrl = Callable[[str], str]
"""Base URL of an instance by its name; tests point it at a local server."""


def https_instance(instance: str) -> str:
    return f"https://{instance}"


@dataclass(frozen=True)
class Account:
    user: str
    instance: str

    @property
    def acct(self) -> str:
        return f"{self.user}@{self.instance}"

    @property
    def handle(self) -> str:
        return f"@{self.acct}"


def parse_account(text: str) -> Account:
    user, _, instance = text.strip().lstrip("@").partition("@")
    return Account(user=user, instance=instance.lower())


def accounts(people: Iterable[Person]) -> list[Account]:
    """Every account once, in rules-file order (user names are case-insensitive on Mastodon)."""
    unique: dict[str, Account] = {}
    for person in people:
        for text in person.mastodon:
            account = parse_account(text)
            unique.setdefault(account.acct.lower(), account)
    return list(unique.values())


def checkpoint_key(account: Account) -> str:
    return f"mastodon.{stable_id('account', account.acct.lower())}"


def status_order(status_id: str) -> tuple[int, str]:
    # Mastodon's ids are decimal snowflakes, Pleroma's fixed-length flake ids: both sort by (length, text)
    return (len(status_id), status_id)


# --- Status -> Share -------------------------------------------------------------------------------------------


def is_mention_or_hashtag(anchor: lxml.html.HtmlElement) -> bool:
    classes = (anchor.get("class") or "").split()
    return "mention" in classes or "hashtag" in classes or "tag" in (anchor.get("rel") or "").split()


def is_quote_reference(anchor: lxml.html.HtmlElement) -> bool:
    # Mastodon 4.4 prefixes quote posts with <p class="quote-inline">RE: <a href=status></a></p>: not an article
    return any("quote-inline" in (parent.get("class") or "").split() for parent in anchor.iterancestors())


def first_plain_link(content: str, skip: set[str]) -> str | None:
    """The first http(s) link of a status's HTML that is not a mention, a hashtag or a quoted post."""
    try:
        root = lxml.html.fragment_fromstring(content, create_parent="div")
    except (ValueError, etree.ParserError):
        return None
    for anchor in root.iter("a"):
        href = anchor.get("href")
        if is_http_url(href) and href not in skip and not is_mention_or_hashtag(anchor):
            if not is_quote_reference(anchor):
                return href
    return None


def article_link(post: Mapping[str, Any]) -> str | None:
    card = post.get("card") or {}
    if is_http_url(card_url := card.get("url")):
        return card_url
    # other servers may not mark mentions and hashtags in HTML: their URLs are listed beside the content too
    listed = {item.get("url") for key in ("mentions", "tags") for item in post.get(key) or []}
    return first_plain_link(post.get("content") or "", {url for url in listed if url})


def status_to_share(account: Account, status: Mapping[str, Any]) -> Share | None:
    """The status as a share of the article it links to; None when it links to none."""
    post = status.get("reblog") or status
    link = article_link(post)
    if link is None:
        return None
    return Share.from_source(
        source="mastodon",
        native_id=f"{account.instance}:{status['id']}",
        sharer=account.handle,
        network="mastodon",
        text=html_to_text(post.get("content") or ""),
        url=link,
        shared_at=status["created_at"],  # when the account posted or boosted it
        is_reply=status.get("in_reply_to_id") is not None,
        is_repost=status.get("reblog") is not None,
        language=status.get("language") or post.get("language"),
    )


# --- Polling ---------------------------------------------------------------------------------------------------


class MastodonSourceSettings(SourceSettings):
    mastodon_poll_seconds: float = 120.0
    mastodon_base_urls: dict[str, str] = Field(
        default_factory=dict, description="Instance -> base URL, for a proxy or a local test server."
    )


class MastodonSource(SourceAdapter):
    """Polls every Mastodon account of every person in the rules; see the module docstring."""

    name: ClassVar[str] = "mastodon"
    Section = MastodonSourceSettings

    @classmethod
    def from_settings(cls, settings: Settings, context: SourceContext) -> MastodonSource:
        overrides = MastodonSourceSettings.of(settings).mastodon_base_urls

        def instance_url(instance: str) -> str:
            return overrides.get(instance, https_instance(instance))

        http = context.http
        return mastodon_source(
            settings, context.people, context.checkpoints, context.emit, http, instance_url=instance_url
        )

    def __init__(
        self,
        people: Callable[[], Sequence[Person]],
        checkpoints: Checkpoints,
        emit: Emit,
        http: httpx.AsyncClient,
        *,
        poll_seconds: float = 120.0,
        timeout_seconds: float = 15.0,
        max_bytes: int = 5 * 1024 * 1024,
        instance_url: InstanceUrl = https_instance,
        page_size: int = PAGE_SIZE,
        max_pages: int = MAX_PAGES,
        first_poll_window: timedelta = FIRST_POLL_WINDOW,
        clock: Clock = utc_now,
    ) -> None:
        self.people = people
        self.checkpoints = checkpoints
        self.emit = emit
        self.http = http
        self.poll_seconds = poll_seconds
        self.timeout_seconds = timeout_seconds
        self.max_bytes = max_bytes
        self.instance_url = instance_url
        self.page_size = page_size
        self.max_pages = max_pages
        self.first_poll_window = first_poll_window
        self.clock = clock
        self.held_back = HoldBacks(clock)

    async def poll(self) -> float:
        problems = PollProblems()
        for account in accounts(self.people()):
            if self.held_back.is_held(account.instance):
                log.debug("mastodon.held_back", account=account.handle, instance=account.instance)
                continue
            try:
                await self.poll_account(account)
            except RateLimited as limit:
                self.held_back.hold(account.instance, limit.retry_after)
                wait = round(limit.retry_after)
                log.warning("mastodon.rate_limited", instance=account.instance, retry_in_seconds=wait)
                problems.rate_limited(account.handle, f"{account.instance} {limit}")
            except SourceUnavailable as error:
                log.warning("mastodon.unavailable", account=account.handle, reason=str(error))
                problems.failed(account.handle, str(error))
        problems.raise_if_any(self.poll_seconds)
        return self.poll_seconds

    async def poll_account(self, account: Account) -> None:
        """Emit the account's new statuses that link somewhere, then checkpoint the newest id."""
        key = checkpoint_key(account)
        saved = await self.checkpoints.load(key) or {}
        account_id = saved.get("account_id") or await self.look_up(account, key)
        since_id: str | None = saved.get("since_id")
        try:
            statuses = await self.new_statuses(account, account_id, since_id)
        except HttpStatusError as error:
            if error.status in (404, 410):  # moved or gone: its id may have changed, so look it up again next time
                await self.checkpoints.save(key, {"acct": account.acct, "account_id": None, "since_id": since_id})
                raise SourceUnavailable(f"statuses {error}; the account will be looked up again") from error
            raise
        fresh = self.fresh_shares(account, statuses, first_poll=since_id is None)
        for share in fresh:
            await self.emit(share)
        newest = max((status["id"] for status in statuses), key=status_order, default=since_id)
        state = {"acct": account.acct, "account_id": account_id, "since_id": newest}
        if state != saved:
            await self.checkpoints.save(key, state)
        if fresh:
            log.info("mastodon.shares_emitted", account=account.handle, count=len(fresh))

    async def look_up(self, account: Account, key: str) -> str:
        url = f"{self.instance_url(account.instance)}/api/v1/accounts/lookup"
        try:
            found = await self.get_json(url, {"acct": account.user}, what="lookup")
        except HttpStatusError as error:
            if error.status in (404, 410):
                raise SourceUnavailable(f"no such account on {account.instance} (lookup {error})") from error
            raise
        if not isinstance(found, dict) or not isinstance(found.get("id"), str | int):
            raise SourceUnavailable(f"lookup answered no account id: {str(found)[:200]}")
        account_id = str(found["id"])
        await self.checkpoints.save(key, {"acct": account.acct, "account_id": account_id, "since_id": None})
        return account_id

    async def new_statuses(self, account: Account, account_id: str, since_id: str | None) -> list[dict[str, Any]]:
        """Statuses newer than `since_id`; the first time only the newest page."""
        url = f"{self.instance_url(account.instance)}/api/v1/accounts/{quote(account_id, safe='')}/statuses"
        params = {"limit": str(self.page_size)} | ({"since_id": since_id} if since_id else {})
        collected: list[dict[str, Any]] = []
        for _page in range(self.max_pages):
            page = checked_statuses(await self.get_json(url, params, what="statuses"))
            collected += page
            if since_id is None or len(page) < self.page_size:
                return collected
            params = {**params, "max_id": min((status["id"] for status in page), key=status_order)}
        log.warning("mastodon.statuses_skipped", account=account.handle, read=len(collected), since_id=since_id)
        return collected

    async def get_json(self, url: str, params: Mapping[str, str], *, what: str) -> Any:
        fetched = await get_capped(
            self.http,
            url,
            params=params,
            headers={"Accept": "application/json"},
            timeout_seconds=self.timeout_seconds,
            max_bytes=self.max_bytes,
            clock=self.clock,
        )
        try:
            return json.loads(fetched.body)
        except ValueError as error:  # UnicodeDecodeError is one too
            raise SourceUnavailable(f"{what} answered malformed JSON: {error}") from error

    def fresh_shares(self, account: Account, statuses: list[dict[str, Any]], *, first_poll: bool) -> list[Share]:
        """Shares of the statuses that link somewhere, oldest first; on the first poll only recent ones."""
        oldest_wanted = self.clock() - self.first_poll_window
        shares = []
        for status in sorted(statuses, key=lambda status: status_order(status["id"])):
            try:
                share = status_to_share(account, status)
            except (ValidationError, KeyError, TypeError, AttributeError) as error:
                # one odd status must not block the account: its id still advances since_id
                log.warning("mastodon.status_skipped", account=account.handle, status=status["id"], reason=str(error))
                continue
            if share is None or (first_poll and share.shared_at < oldest_wanted):
                continue
            shares.append(share)
        return shares


def checked_statuses(answer: Any) -> list[dict[str, Any]]:
    """The answer as a list of statuses with string ids, or SourceUnavailable: it decides what since_id becomes."""
    if not isinstance(answer, list) or not all(isinstance(status, dict) for status in answer):
        raise SourceUnavailable(f"statuses answered no list of statuses: {str(answer)[:200]}")
    for status in answer:
        if not isinstance(status.get("id"), str):
            raise SourceUnavailable(f"statuses answered a status without an id: {str(status)[:200]}")
    return answer


def mastodon_source(
    settings: Settings,
    people: Callable[[], Sequence[Person]],
    checkpoints: Checkpoints,
    emit: Emit,
    http: httpx.AsyncClient,
    *,
    instance_url: InstanceUrl = https_instance,
) -> MastodonSource:
    section = MastodonSourceSettings.of(settings)
    return MastodonSource(
        people,
        checkpoints,
        emit,
        http,
        poll_seconds=section.mastodon_poll_seconds,
        timeout_seconds=section.source_timeout_seconds,
        max_bytes=section.source_max_bytes,
        instance_url=instance_url,
    )
