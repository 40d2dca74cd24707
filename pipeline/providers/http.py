"""What the Zoom and YouTube adapters share: requests, error parsing, tokens, markers, reasons without secrets."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, SecretStr, ValidationError

from pipeline import http_retry
from pipeline.errors import RetryableError
from pipeline.providers import ProviderRefused
from pipeline.redaction import redact
from pipeline.text import shorten

Model = TypeVar("Model", bound=BaseModel)
MAX_QUOTED = 300  # a provider's message is quoted in reasons; an HTML error page must not flood the log


class ProviderBusy(RetryableError):
    """A 5xx, a timeout or a short rate limit; `retry_after` (seconds) when the provider said how long to wait."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class ApiAccess:
    """What the recording intake may use of a provider adapter beside sessions: whether credentials are set, an
    authorised GET, and the error a failed answer maps to. The adapter provides `_configured`, `_call`, `_failure`."""

    _configured: bool

    async def _call(self, method: str, path: str, what: str, **kwargs: Any) -> httpx.Response:
        raise NotImplementedError

    def _failure(self, response: httpx.Response, what: str) -> Exception:
        raise NotImplementedError

    @property
    def configured(self) -> bool:
        """Credentials are set (a token, or what buys one)."""
        return self._configured

    async def get(self, path: str, what: str, **kwargs: Any) -> httpx.Response:
        """An authorised GET on the API (the recording intake's lookups); the status is left to the caller."""
        return await self._call("GET", path, what, **kwargs)

    def failure(self, response: httpx.Response, what: str) -> Exception:
        """The error a failed response maps to (refused: a person must act; busy: retried later)."""
        return self._failure(response, what)


class HttpApi:
    """One provider's HTTP calls: every reason is prefixed with the provider's name and scrubbed of secrets."""

    def __init__(self, provider: str, timeout: float, client: httpx.AsyncClient | None = None) -> None:
        self.provider = provider
        self.timeout = timeout
        self.client = client
        self._secrets: set[str] = set()

    def keep_secret(self, *values: str | None) -> None:
        """Never let these appear in a reason (configured secrets, tokens fetched at run time)."""
        self._secrets.update(v for v in values if v and len(v) >= 4)

    def scrub(self, text: str) -> str:
        return redact(text, self._secrets, marker="***")

    def refused(self, reason: str) -> ProviderRefused:
        return ProviderRefused(self.scrub(f"{self.provider}: {reason}"))

    def busy(self, reason: str, retry_after: float | None = None) -> ProviderBusy:
        return ProviderBusy(self.scrub(f"{self.provider}: {reason}"), retry_after)

    async def request(self, method: str, url: str, what: str, **kwargs: Any) -> httpx.Response:
        """Send one request; network trouble becomes ProviderBusy. Status codes are left to the caller."""
        try:
            if self.client is not None:
                return await self.client.request(method, url, timeout=self.timeout, **kwargs)
            # a client per call: adapters live as long as the process and the protocol has no close()
            async with httpx.AsyncClient(timeout=self.timeout) as client:
                return await client.request(method, url, **kwargs)
        except httpx.TimeoutException:
            raise self.busy(f"{what}: no answer within {self.timeout:g} s") from None
        except httpx.TransportError as error:
            # the class name only: httpx's message can carry the URL, and with it a query string
            raise self.busy(f"{what}: could not reach {httpx.URL(url).host} ({type(error).__name__})") from None

    async def call(
        self,
        tokens: TokenCache,
        method: str,
        url: str,
        what: str,
        *,
        stale: Callable[[httpx.Response], bool],
        **kwargs: Any,
    ) -> httpx.Response:
        """An authorised request; when `stale` says the token was refused and it can be renewed, once more."""
        token = await tokens.get()
        response = await self.request(method, url, what, headers=bearer(token), **kwargs)
        if tokens.can_refresh and stale(response):
            tokens.invalidate(token)
            token = await tokens.get()
            response = await self.request(method, url, what, headers=bearer(token), **kwargs)
        return response

    def json(self, response: httpx.Response, what: str) -> Any:
        try:
            return response.json()
        except ValueError:
            kind = response.headers.get("content-type", "no content type")
            status = response.status_code
            raise self.refused(f"unexpected response to {what} (HTTP {status}, not JSON: {kind})") from None

    def parse(self, model: type[Model], response: httpx.Response, what: str) -> Model:
        """The body as `model`, or a refusal naming the missing or wrong fields (never their values: secrets)."""
        body = self.json(response, what)
        try:
            return model.model_validate(body)
        except ValidationError as error:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}"
                for e in error.errors(include_input=False, include_url=False)
            )
            raise self.refused(f"unexpected response to {what} (HTTP {response.status_code}): {problems}") from None


def quoted(text: object) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= MAX_QUOTED else text[: MAX_QUOTED - 1] + "…"


def error_object(response: httpx.Response) -> Mapping[str, Any]:
    """An error response's JSON object, or {} when it is not one (a proxy's HTML page)."""
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def retry_after(response: httpx.Response, now: datetime | None = None) -> tuple[float | None, datetime | None]:
    """Retry-After as (seconds to wait, moment): seconds, an HTTP date, or the ISO time Zoom gives for daily limits."""
    value = response.headers.get("retry-after")
    now = now or datetime.now(UTC)
    moment = http_retry.retry_after_moment(value, now) or http_retry.iso_moment(value)
    if moment is None:
        return None, None
    return max((moment - now).total_seconds(), 0.0), moment


def utc_text(moment: datetime) -> str:
    """RFC 3339 in UTC with a Z, to the second: what both Zoom's start_time and YouTube's schedule accept."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)  # a naive time in a request is taken as UTC, not the host's zone
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def with_marker(text: str, marker: str, limit: int, *, first: bool = False) -> str:
    """`text` cut so that `marker` (on a line of its own) always fits within the provider's `limit`."""
    room = limit - len(marker) - 2
    body = shorten(text.strip(), room) if room > 0 else ""
    if not body:
        return marker
    return f"{marker}\n\n{body}" if first else f"{body}\n\n{marker}"


def has_marker(text: str | None, marker: str) -> bool:
    """Whole-line match: the marker for session "s-1" must not match one written for "s-10"."""
    return bool(text) and any(line.strip() == marker for line in (text or "").splitlines())


class TokenCache:
    """An OAuth access token kept until shortly before it expires; one fetch at a time for concurrent callers."""

    def __init__(
        self,
        fetch: Callable[[], Awaitable[tuple[str, float]]] | None,
        *,
        initial: str | None = None,
        margin_seconds: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._fetch = fetch
        self._margin = margin_seconds
        self._clock = clock
        self._token = initial
        self._expires_at = float("inf")  # a configured token: its lifetime is unknown, so kept until refused
        self._lock = asyncio.Lock()

    @property
    def can_refresh(self) -> bool:
        return self._fetch is not None

    async def get(self) -> str:
        async with self._lock:
            if self._token is None or self._clock() >= self._expires_at:
                if self._fetch is None:
                    raise RuntimeError("no token and no way to fetch one")  # callers check credentials first
                token, expires_in = await self._fetch()
                self._token, self._expires_at = token, self._clock() + max(expires_in - self._margin, 0.0)
            return self._token

    def invalidate(self, token: str) -> None:
        """Drop `token` after the API refused it, unless another caller has already replaced it."""
        if self._token == token and self._fetch is not None:
            self._token = None


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Accept": "application/json"}


def reveal(value: SecretStr | None) -> str | None:
    """A configured secret's text; blank counts as unset (an empty env var)."""
    text = value.get_secret_value().strip() if value is not None else ""
    return text or None
