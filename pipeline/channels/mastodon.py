"""Announcements as Mastodon statuses (POST /api/v1/statuses on IMPROMPTU_MASTODON_URL).

Every post carries its key as `Idempotency-Key`: Mastodon keeps the key for an hour and answers a repeated
request with the status the first one made, so a post interrupted mid-request can be asked again without a
second status. Errors are `{"error": "..."}`: 401/403 break the channel (token revoked, scope or account
refused), 422 refuses this post (too long, blank), 429 waits until X-RateLimit-Reset, 5xx is tried again.
"""

from __future__ import annotations

from typing import Literal
from urllib.parse import quote, urlsplit

import httpx
from pydantic import Field, SecretStr

from pipeline import http_retry
from pipeline.channels import base, xtext
from pipeline.channels.base import ChannelBroken, NotSent, Post, Posted, PostRefused, RateLimited
from pipeline.errors import RetryableError
from pipeline.settings import Settings

URL_ENV = "IMPROMPTU_MASTODON_URL"
TOKEN_ENV = "IMPROMPTU_MASTODON_ACCESS_TOKEN"
_NEW_TOKEN = f"set {TOKEN_ENV} to a token of the posting account with the write:statuses scope"


class MastodonSettings(base.ChannelSettings):
    mastodon_url: str | None = Field(default=None, description="Your Mastodon instance, e.g. https://mastodon.social.")
    mastodon_access_token: SecretStr | None = Field(default=None, description="Token with write:statuses.")
    mastodon_visibility: Literal["public", "unlisted", "private"] = "public"
    mastodon_max_characters: int = Field(default=500, description="Your instance's post limit.")


class MastodonChannel(base.ChannelAdapter):
    name = "mastodon"
    title = "Mastodon"
    Section = MastodonSettings
    limit = 500  # Mastodon's default; an instance may set its own (IMPROMPTU_MASTODON_MAX_CHARACTERS)
    can_find = True
    can_delete = True
    find_within = 55 * 60.0  # seconds: Mastodon forgets an Idempotency-Key after an hour (margin for clocks)

    @classmethod
    def text_limit(cls, settings: Settings) -> int | None:
        return MastodonSettings.of(settings).mastodon_max_characters

    @staticmethod
    def length(text: str) -> int:
        return xtext.mastodon_length(text)  # graphemes, each link 23

    @classmethod
    def from_settings(cls, settings: Settings, *, transport: httpx.AsyncBaseTransport | None = None) -> MastodonChannel:
        section = MastodonSettings.of(settings)
        token = section.mastodon_access_token.get_secret_value() if section.mastodon_access_token else None
        return cls(
            section.mastodon_url,
            token,
            visibility=section.mastodon_visibility,
            timeout=section.outreach_timeout_seconds,
            transport=transport,
        )

    def __init__(
        self,
        base_url: str | None,
        token: str | None,
        *,
        visibility: str = "public",
        timeout: float = 15.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._base = (base_url or "").strip().rstrip("/")
        self._token = (token or "").strip()
        self._visibility = visibility
        self._timeout = timeout
        self._transport = transport
        try:
            host = urlsplit(self._base).hostname or self._base
        except ValueError:
            host = "(invalid URL)"
        self._where = f"Mastodon at {host}"

    def missing(self) -> list[str]:
        return base.unset({URL_ENV: self._base, TOKEN_ENV: self._token})

    async def post(self, post: Post) -> Posted:
        response = await self._request(
            "POST",
            "/api/v1/statuses",
            data={"status": post.text, "visibility": self._visibility},
            headers={"Idempotency-Key": post.key},
        )
        if not response.is_success:
            raise self._error(response)
        return self._posted(response)

    async def find(self, post: Post) -> Posted | None:
        # Asking again with the same Idempotency-Key returns the status an interrupted attempt made (Mastodon keeps
        # keys for 1 hour), or makes it now when that attempt never arrived: either way exactly one status exists.
        # Later than an hour after the first attempt Mastodon has forgotten the key and this would post again.
        return await self.post(post)

    async def delete(self, posted: Posted) -> None:
        if not posted.remote_id:
            raise PostRefused(f"{self._where}: no status id to delete")
        response = await self._request("DELETE", f"/api/v1/statuses/{quote(posted.remote_id, safe='')}")
        if response.status_code in (200, 404):  # 404: already deleted
            return
        raise self._error(response)

    async def _request(
        self, method: str, path: str, *, data: dict[str, str] | None = None, headers: dict[str, str] | None = None
    ) -> httpx.Response:
        base.require("Mastodon", self.missing())
        return await base.request(
            method,
            self._base + path,
            where=self._where,
            secrets=[self._token],
            timeout=self._timeout,
            transport=self._transport,
            headers={"Authorization": f"Bearer {self._token}", **(headers or {})},
            data=data,
        )

    def _posted(self, response: httpx.Response) -> Posted:
        status = base.json_or_none(response)
        status_id = status.get("id") if isinstance(status, dict) else None
        if not isinstance(status, dict) or not isinstance(status_id, str | int) or status_id == "":
            snippet = base.redact(base.printable(response.text, 120), [self._token])
            answered = f"answered HTTP {response.status_code} without a status ({snippet!r})"
            raise RetryableError(f"{self._where} {answered}; the post may exist")
        url = status.get("url") or status.get("uri")
        return Posted(remote_id=str(status_id), url=url if isinstance(url, str) else None)

    def _error(self, response: httpx.Response) -> Exception:
        status = response.status_code
        body = base.json_or_none(response)
        said = body.get("error") if isinstance(body, dict) else None
        text = base.redact(base.printable(said if isinstance(said, str) else response.text), [self._token]) or "no body"
        detail = f"HTTP {status}, {text}"
        if status == 401:
            return ChannelBroken(f"{self._where} refused the access token ({detail}); {_NEW_TOKEN}")
        if status == 403:
            return ChannelBroken(f"{self._where} does not allow this account to post ({detail}); {_NEW_TOKEN}")
        if status == 422:
            return PostRefused(f"{self._where} refused the status ({detail})")
        if status == 429:
            headers = response.headers
            wait = http_retry.reset_seconds(headers.get("x-ratelimit-reset")) or http_retry.retry_after_seconds(
                headers.get("retry-after")
            )
            return RateLimited(f"{self._where} is rate limiting ({detail})", wait)
        if status >= 500:
            return NotSent(f"{self._where} failed ({detail}); the instance may be having trouble")
        if status == 404 or status < 400:
            return ChannelBroken(f"{self._where} has no Mastodon API there ({detail}); check {URL_ENV}")
        return PostRefused(f"{self._where} refused the request ({detail})")


def from_settings(settings: Settings, *, transport: httpx.AsyncBaseTransport | None = None) -> MastodonChannel:
    return MastodonChannel.from_settings(settings, transport=transport)
