"""Announcements on a Facebook Page's feed through the Graph API, with a Page access token.

Posting sends the token as the `access_token` form field, never in the query string (URLs end up in logs).
Reading the feed back and deleting send it as `Authorization: Bearer` (what the Graph SDKs use for GET/DELETE).
Graph errors are `{"error": {"message", "type", "code", "error_subcode", "fbtrace_id"}}`, nearly always with HTTP
400, so they are told apart by `error.code`, not the HTTP status.
"""

from __future__ import annotations

import json
from urllib.parse import quote

import httpx
from pydantic import Field, SecretStr

from pipeline.channels import base
from pipeline.channels.base import ChannelBroken, NotSent, Post, Posted, PostRefused, RateLimited
from pipeline.errors import RetryableError
from pipeline.settings import Settings

PAGE_ENV = "IMPROMPTU_FACEBOOK_PAGE_ID"
TOKEN_ENV = "IMPROMPTU_FACEBOOK_PAGE_TOKEN"
FEED_LIMIT = 100  # posts per page of the feed that find() reads (the Graph API's most for a Page feed)
FEED_PAGES = 10  # find() reads this many pages back: under a burst an interrupted post is soon 25 posts deep
THROTTLED = {4, 17, 32, 613, 80001}  # app, user, Pages, custom and Page (business use case) rate limits
THROTTLE_WAIT = 600.0  # seconds, when X-Business-Use-Case-Usage does not say when access comes back
BLOCKED_WAIT = 6 * 3600.0  # code 368: blocked for a while as abusive; posting again soon would prolong it
_TOKEN_PROBLEMS = {
    458: "belongs to a user who removed the app",
    459: "needs its user to log in to facebook.com (checkpoint)",
    460: "was invalidated by a password change",
    463: "has expired",
    464: "belongs to an unconfirmed user",
    467: "is invalid (expired, revoked or logged out)",
}


class FacebookSettings(base.ChannelSettings):
    facebook_page_id: str | None = None
    facebook_page_token: SecretStr | None = Field(default=None, description="A Page access token (pages_manage_posts).")
    facebook_graph_url: str = "https://graph.facebook.com"
    facebook_api_version: str = Field(default="v23.0", description="Graph API version; Meta retires each in ~2 years.")


class FacebookChannel(base.ChannelAdapter):
    name = "facebook"
    title = "Facebook"
    Section = FacebookSettings
    limit = 63206
    can_find = True
    can_delete = True

    @classmethod
    def from_settings(cls, settings: Settings, *, transport: httpx.AsyncBaseTransport | None = None) -> FacebookChannel:
        section = FacebookSettings.of(settings)
        token = section.facebook_page_token.get_secret_value() if section.facebook_page_token else None
        return cls(
            section.facebook_page_id,
            token,
            graph_url=section.facebook_graph_url,
            api_version=section.facebook_api_version,
            timeout=section.outreach_timeout_seconds,
            transport=transport,
        )

    def __init__(
        self,
        page_id: str | None,
        token: str | None,
        *,
        graph_url: str = "https://graph.facebook.com",
        api_version: str = "v23.0",
        timeout: float = 15.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._page = (page_id or "").strip()
        self._token = (token or "").strip()
        self._api = f"{graph_url.rstrip('/')}/{api_version.strip('/')}"
        self._timeout = timeout
        self._transport = transport
        self._where = f"Facebook Page {self._page}"

    def missing(self) -> list[str]:
        return base.unset({PAGE_ENV: self._page, TOKEN_ENV: self._token})

    async def post(self, post: Post) -> Posted:
        fields = {"message": post.text, "access_token": self._token}
        if post.link:
            fields["link"] = post.link
        response = await self._request("POST", f"/{quote(self._page, safe='')}/feed", data=fields)
        if not response.is_success:
            raise self._error(response)
        body = base.json_or_none(response)
        post_id = body.get("id") if isinstance(body, dict) else None
        if not isinstance(post_id, str) or not post_id:
            # an answer without an id: Facebook may or may not have posted; find() can tell
            raise RetryableError(
                f"{self._where} answered HTTP {response.status_code} without a post id ({self._snippet(response)})"
            )
        return _posted(post_id)

    async def find(self, post: Post) -> Posted | None:
        """The post on the Page's feed with exactly this text, newest first, following the feed's `after` cursor
        up to FEED_PAGES pages (an interrupted post is recent, but a burst of announcements buries it fast)."""
        wanted = post.text.strip()  # Facebook trims the message it keeps
        params = {"fields": "id,message,created_time", "limit": str(FEED_LIMIT)}
        for _ in range(FEED_PAGES):
            response = await self._request("GET", f"/{quote(self._page, safe='')}/feed", params=params, bearer=True)
            if not response.is_success:
                raise self._error(response)
            body = base.json_or_none(response)
            items = body.get("data") if isinstance(body, dict) else None
            if not isinstance(body, dict) or not isinstance(items, list):
                raise RetryableError(f"{self._where}: the feed could not be read ({self._snippet(response)})")
            for item in items:
                if isinstance(item, dict) and str(item.get("message", "")).strip() == wanted and item.get("id"):
                    return _posted(str(item["id"]))
            after = _next_cursor(body)
            if after is None or not items:
                return None
            params = {**params, "after": after}
        return None

    async def delete(self, posted: Posted) -> None:
        if not posted.remote_id:
            raise PostRefused(f"{self._where}: no post id to delete")
        response = await self._request("DELETE", f"/{quote(posted.remote_id, safe='')}", bearer=True)
        if not response.is_success:
            error = _graph_error(response) or {}
            if (error.get("code"), error.get("error_subcode")) == (100, 33):
                return  # "Object ... does not exist": deleted already
            raise self._error(response)
        body = base.json_or_none(response)
        if not isinstance(body, dict) or body.get("success") is not True:
            raise RetryableError(f"{self._where}: the delete was not confirmed ({self._snippet(response)})")

    async def _request(
        self,
        method: str,
        path: str,
        *,
        data: dict[str, str] | None = None,
        params: dict[str, str] | None = None,
        bearer: bool = False,
    ) -> httpx.Response:
        base.require("Facebook", self.missing())
        return await base.request(
            method,
            self._api + path,
            where=self._where,
            secrets=[self._token],
            timeout=self._timeout,
            transport=self._transport,
            data=data,
            params=params,
            headers={"Authorization": f"Bearer {self._token}"} if bearer else {},
        )

    def _snippet(self, response: httpx.Response) -> str:
        return base.redact(base.printable(response.text, 120), [self._token]) or "no body"

    def _error(self, response: httpx.Response) -> Exception:
        """What a failed Graph answer means for this post and this channel."""
        status = response.status_code
        error = _graph_error(response)
        if error is None:
            detail = f"HTTP {status}, {self._snippet(response)}"
            if status == 429:
                return RateLimited(f"{self._where} is rate limiting ({detail})", _regain_seconds(response))
            if status >= 500:
                return NotSent(f"{self._where} failed ({detail}); Facebook may be having trouble")
            if status < 400:
                return ChannelBroken(f"{self._where}: the Graph API redirects ({detail}); check the Graph URL")
            return PostRefused(f"{self._where} refused the request ({detail})")
        code = _number(error.get("code"))
        subcode = _number(error.get("error_subcode"))
        said = base.redact(base.printable(str(error.get("message") or "")), [self._token])
        text = f"{self._where}: {said} (code {code}{f'/{subcode}' if subcode else ''}, HTTP {status})"
        if code in (190, 102):
            problem = _TOKEN_PROBLEMS.get(subcode or 0, "is not valid")
            return ChannelBroken(f"{text}; the Page token {problem}: get a new Page token into {TOKEN_ENV}")
        if code == 10 or (code is not None and 200 <= code <= 299):
            return ChannelBroken(
                f"{text}; a permission is missing: the Page token needs pages_manage_posts and "
                f"pages_read_engagement, and its user the CREATE_CONTENT task on the Page"
            )
        if code in THROTTLED:
            return RateLimited(f"{text}; rate limited", _regain_seconds(response) or THROTTLE_WAIT)
        if code == 368:
            return RateLimited(f"{text}; Facebook blocked posting for a while", BLOCKED_WAIT)
        if code in (1, 2) or status >= 500:
            return NotSent(f"{text}; Facebook had a temporary problem")
        if code == 506:
            return PostRefused(f"{text}; the same text was posted already")
        return PostRefused(text)


def _posted(post_id: str) -> Posted:
    return Posted(remote_id=post_id, url=f"https://www.facebook.com/{post_id}")


def _number(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _graph_error(response: httpx.Response) -> dict[str, object] | None:
    body = base.json_or_none(response)
    error = body.get("error") if isinstance(body, dict) else None
    return error if isinstance(error, dict) else None


def _regain_seconds(response: httpx.Response) -> float | None:
    """When Facebook says access comes back: the largest estimated_time_to_regain_access (minutes) in
    X-Business-Use-Case-Usage, `{"<page-id>": [{"type": "pages", ..., "estimated_time_to_regain_access": 5}]}`."""
    try:
        usage = json.loads(response.headers.get("x-business-use-case-usage", ""))
    except ValueError:
        return None
    minutes = [
        entry.get("estimated_time_to_regain_access")
        for entries in (usage.values() if isinstance(usage, dict) else [])
        if isinstance(entries, list)
        for entry in entries
        if isinstance(entry, dict)
    ]
    waits = [m for m in minutes if isinstance(m, int | float) and not isinstance(m, bool) and m > 0]
    return max(waits) * 60.0 if waits else None


def from_settings(settings: Settings, *, transport: httpx.AsyncBaseTransport | None = None) -> FacebookChannel:
    return FacebookChannel.from_settings(settings, transport=transport)


def _next_cursor(body: dict[str, object]) -> str | None:
    """The cursor of the feed's next (older) page: Graph gives `paging.next` only while there is one."""
    paging = body.get("paging")
    if not isinstance(paging, dict) or not paging.get("next"):
        return None
    cursors = paging.get("cursors")
    after = cursors.get("after") if isinstance(cursors, dict) else None
    return after if isinstance(after, str) and after else None
