"""What every outreach channel adapter shares: the announcement to make, what came of it, and the errors that tell
the delivery loop what to do next.

The error classes carry the decision, so adapters only translate their provider's answers:
- `NotSent` (retryable): the provider surely did not post (connection refused, 5xx answer, 429). Safe to post again.
- `RateLimited` (a NotSent): try this channel again after `retry_after` seconds; the other channels are unaffected.
- a plain `RetryableError`: the outcome is unknown (a timeout after the request went out). Not re-posted blindly:
  the delivery asks `find()` first, or flags the post for a human when the channel cannot read back.
- `ChannelBroken` (permanent): credentials revoked or expired, a missing permission, a sunset API version. The channel
  is marked broken and people are told; nothing more is posted on it until an operator resets it.
- `PostRefused` (permanent): this one post was refused (invalid, duplicate, too long); the channel is fine.
"""

from __future__ import annotations

import functools
import json
import ssl
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, Self, get_args
from urllib.parse import urlsplit

import certifi
import httpx
from pydantic import BaseModel, ConfigDict

from pipeline.errors import PermanentError, RetryableError
from pipeline.messages import AnnouncementKind, ScheduledSession
from pipeline.redaction import printable as printable  # re-exported: the adapters call base.printable
from pipeline.redaction import redact as redact  # and base.redact
from pipeline.settings import SettingsSection

if TYPE_CHECKING:
    from pipeline.settings import Settings

Kind = AnnouncementKind
KINDS: tuple[Kind, ...] = get_args(AnnouncementKind)


class NotSent(RetryableError):
    """The provider surely did not post: posting again is safe."""


class RateLimited(NotSent):
    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ChannelBroken(PermanentError):
    """The channel cannot post until a person fixes its credentials or settings."""


class PostRefused(PermanentError):
    """The provider refused this post; other posts on the channel may still work."""


@dataclass(frozen=True)
class Post:
    """One announcement to make on one channel."""

    key: str  # "<session>.<channel>.<kind>": the idempotency key (Mastodon's Idempotency-Key, log and KV key)
    channel: str
    kind: Kind
    text: str  # rendered: plain text; Slack/Teams: the JSON payload; email: "Subject: ...\n\nbody"
    session: ScheduledSession
    link: str  # the post's main link: the join URL, or the library page for "recording"
    title: str  # for link cards (LinkedIn article, Facebook link)
    description: str


class Posted(BaseModel):
    """Where a post landed, as far as the provider tells."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    remote_id: str | None = None  # what `delete` needs: tweet id, post URN, status id, ...
    url: str | None = None  # where a person can see it


class Channel(Protocol):
    @property
    def name(self) -> str: ...  # read only: an adapter's class attribute

    can_find: bool  # True when `find` can tell whether an interrupted post went out (a channel whose answer
    # expires, like Mastodon's Idempotency-Key, also has `find_within`: seconds after the attempt it still works)
    can_delete: bool  # True when a cancelled session's announcement can be deleted

    def missing(self) -> list[str]:
        """The environment variables this channel needs that are not set (empty: ready)."""
        ...

    async def post(self, post: Post) -> Posted: ...

    async def find(self, post: Post) -> Posted | None:
        """The post, if an earlier (interrupted) attempt made it; None when it surely did not."""
        ...

    async def delete(self, posted: Posted) -> None: ...


# --- what a channel says about itself -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    """What is wrong with a rendered announcement for its channel."""

    code: str  # too_long (shortening may help) or bad_structure (it cannot)
    detail: str


class ChannelSettings(SettingsSection):
    """A channel's section of the settings, declared in its adapter's file (see `SettingsSection`)."""

    outreach_timeout_seconds: float = 15.0  # every channel's: how long one post may take


class ChannelAdapter(ABC):
    """Everything about one channel, in its adapter's file: the adapter classes derive from this and are listed in
    `pipeline.channels.registry.ADAPTERS` (a test or a plugin adds one with `register`). Templates live in
    `templates/<name>/<kind>.j2`.

    The class attributes and class methods are the channel's rules, used without an adapter instance (rendering,
    previews, a facilitator's own text); an instance posts, finds and deletes (the `Channel` protocol)."""

    name: ClassVar[str]
    title: ClassVar[str] = ""  # how people call it, on the approval page (default: its name)
    Section: ClassVar[type[ChannelSettings]] = ChannelSettings  # its section of the settings
    limit: ClassVar[int | None] = None  # the longest post, as `length` counts it; None: no length limit
    unit: ClassVar[str] = "characters"  # what `length` counts, for the refusal's reason
    can_find: bool = False
    can_delete: bool = False

    @classmethod
    def text_limit(cls, settings: Settings) -> int | None:
        """The limit with these settings (Mastodon: the instance's own)."""
        return cls.limit

    @staticmethod
    def length(text: str) -> int:
        """The length the channel counts."""
        return len(text)

    @classmethod
    def shaped(cls, text: str) -> tuple[str, Problem | None]:
        """The text as it will be posted (Slack/Teams: JSON compacted), and what is wrong with its structure."""
        return text, None

    @staticmethod
    def readable(text: str) -> str:
        """What a reader sees of a post (for previews): the text itself, unless the post is structure."""
        return text

    @classmethod
    @abstractmethod
    def from_settings(cls, settings: Settings) -> Self:
        """The adapter, configured from its section of `settings` (`Section.of(settings)`)."""

    # --- what an instance does: the `Channel` protocol ---

    @abstractmethod
    def missing(self) -> list[str]:
        """The environment variables this channel needs that are not set (empty: ready)."""

    @abstractmethod
    async def post(self, post: Post) -> Posted: ...

    @abstractmethod
    async def find(self, post: Post) -> Posted | None:
        """The post, if an earlier (interrupted) attempt made it; None when it surely did not (`can_find`)."""

    @abstractmethod
    async def delete(self, posted: Posted) -> None: ...


def json_object(text: str) -> tuple[dict[str, Any] | None, Problem | None]:
    """A rendered JSON post (Slack blocks, a Teams card) as a JSON object, or why it is not one."""
    try:
        payload = json.loads(text)
    except ValueError as error:
        return None, Problem("bad_structure", f"is not valid JSON: {error}")
    if not isinstance(payload, dict):
        return None, Problem("bad_structure", "must render a JSON object")
    return payload, None


# --- helpers for adapters ---------------------------------------------------------------------------------------


async def send(
    client: httpx.AsyncClient, method: str, url: str, *, where: str, secrets: list[str], **kwargs: object
) -> httpx.Response:
    """One HTTP request with transport failures mapped: not reached -> NotSent; sent but unanswered -> a plain
    RetryableError (the post may exist). Secrets never appear in the reason."""
    try:
        return await client.request(method, url, **kwargs)  # type: ignore[arg-type]
    except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as error:
        detail = redact(printable(str(error)), secrets) or type(error).__name__
        raise NotSent(f"{where} could not be reached: {detail}") from None
    except httpx.TimeoutException as error:
        unknown = f"{where} did not answer in time ({type(error).__name__}); the post may have been made"
        raise RetryableError(unknown) from None
    except (httpx.UnsupportedProtocol, httpx.InvalidURL) as error:
        raise ChannelBroken(f"{where}: the configured URL is not valid ({redact(str(error), secrets)})") from None
    except httpx.TransportError as error:
        detail = redact(printable(str(error)), secrets) or type(error).__name__
        unknown = f"{where}: the connection failed mid-request ({detail}); the post may have been made"
        raise RetryableError(unknown) from None


def json_or_none(response: httpx.Response) -> object:
    try:
        return response.json()
    except ValueError:
        return None


def unset(values: Mapping[str, object]) -> list[str]:
    """What `missing()` reports: the names (environment variables) whose values are empty."""
    return [name for name, value in values.items() if not value]


def require(label: str, missing: list[str]) -> None:
    """ChannelBroken naming what to set: a channel without its settings must not call its provider at all."""
    if missing:
        raise ChannelBroken(f"{label}: set {', '.join(missing)}")


@functools.cache
def tls_context() -> ssl.SSLContext:
    """One verifying TLS context for every post: building one loads the CA bundle, about 15 ms each time."""
    return ssl.create_default_context(cafile=certifi.where())


class _Borrowed(httpx.AsyncBaseTransport):
    """A caller's transport, used by a per-call client without being closed with it (AsyncClient.aclose() closes
    the transport it was given, and the caller may share it between calls)."""

    def __init__(self, transport: httpx.AsyncBaseTransport) -> None:
        self._transport = transport

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await self._transport.handle_async_request(request)


async def request(
    method: str,
    url: str,
    *,
    where: str,
    secrets: list[str],
    timeout: float,
    transport: httpx.AsyncBaseTransport | None = None,
    **kwargs: object,
) -> httpx.Response:
    """`send` on a client of its own: adapters keep no connections between posts, which are minutes apart."""
    borrowed = _Borrowed(transport) if transport is not None else None
    # a redirect would resend the credentials somewhere unexpected: never followed
    async with httpx.AsyncClient(
        timeout=timeout, follow_redirects=False, transport=borrowed, verify=tls_context()
    ) as client:
        return await send(client, method, url, where=where, secrets=secrets, **kwargs)


def webhook_secrets(url: str) -> tuple[str, list[str]]:
    """A webhook URL's host (safe to show) and the parts that must never be shown: the URL, its path and query."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or "(no host)"
    except ValueError:
        return "(invalid URL)", [url]
    return host, [url, parts.path if len(parts.path) > 1 else "", parts.query]


@dataclass(frozen=True)
class Webhook:
    """An incoming webhook (Slack, Teams) to post JSON to. The whole URL is a secret: `where` names its host only."""

    url: str  # empty when not configured
    where: str
    secrets: list[str]
    timeout: float
    transport: httpx.AsyncBaseTransport | None = None

    @classmethod
    def at(
        cls, url: str | None, label: str, *, timeout: float, transport: httpx.AsyncBaseTransport | None = None
    ) -> Webhook:
        url = (url or "").strip()
        host, secrets = webhook_secrets(url)
        return cls(url, f"{label} at {host}", secrets, timeout, transport)

    async def post_json(self, body: bytes) -> httpx.Response:
        return await request(
            "POST",
            self.url,
            where=self.where,
            secrets=self.secrets,
            timeout=self.timeout,
            transport=self.transport,
            content=body,
            # without the charset, Teams has counted the message's size twice over
            headers={"Content-Type": "application/json; charset=utf-8"},
        )


def readable_lines(node: Any) -> str:
    """The texts of a Slack Block Kit message or a Teams Adaptive Card in reading order, buttons as "[label] url"."""
    lines: list[str] = []
    _collect(node, lines)
    return "\n".join(line for line in lines if line.strip())


def _collect(node: Any, lines: list[str]) -> None:
    if isinstance(node, list):
        for item in node:
            _collect(item, lines)
        return
    if not isinstance(node, dict):
        return
    kind = node.get("type")
    if kind in ("button", "Action.OpenUrl"):
        label = node.get("title") or (node.get("text") or {}).get("text", "")
        lines.append(f"[{label}] {node.get('url', '')}")
    elif kind == "FactSet":
        lines.extend(f"{fact.get('title')}: {fact.get('value')}" for fact in node.get("facts", []))
    elif isinstance(node.get("text"), str):
        lines.append(node["text"])
    else:
        for key in ("text", "fields", "elements", "items", "columns"):
            _collect(node.get(key), lines)
