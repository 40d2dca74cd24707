"""X (Twitter): a post through API v2 `POST /2/tweets` with tweepy's `Client`, signed with OAuth 1.0a user context.

tweepy's Client is synchronous (its async client needs aiohttp, not installed), so each call runs in a thread, on its
own Client and requests session: a session is not guaranteed thread-safe. `wait_on_rate_limit` stays False: tweepy
would sleep inside the call (blocking the worker) and, without a reset header, re-send immediately and forever.
X cannot be searched for an earlier attempt here (`can_find` is False): an unknown outcome goes to a person.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import requests
import tweepy
from pydantic import Field, SecretStr
from urllib3.exceptions import MaxRetryError

from pipeline import http_retry
from pipeline.channels import base, xtext
from pipeline.channels.base import ChannelBroken, NotSent, Post, Posted, PostRefused, RateLimited
from pipeline.errors import RetryableError
from pipeline.redaction import TimeoutSession
from pipeline.settings import Settings

STATUS_URL = "https://x.com/i/web/status/{id}"
DEFAULT_WAIT = 15 * 60.0  # X's rate windows are 15 minutes; used when a 429 carries no reset header
# (reset header, remaining header) per limit X reports; the 24-hour ones are the daily posting caps
RATE_HEADERS = (
    ("x-rate-limit-reset", "x-rate-limit-remaining"),
    ("x-user-limit-24hour-reset", "x-user-limit-24hour-remaining"),
    ("x-app-limit-24hour-reset", "x-app-limit-24hour-remaining"),
)
_ENV = {
    "api_key": "IMPROMPTU_X_API_KEY",
    "api_secret": "IMPROMPTU_X_API_SECRET",
    "access_token": "IMPROMPTU_X_ACCESS_TOKEN",
    "access_token_secret": "IMPROMPTU_X_ACCESS_TOKEN_SECRET",
}
_NEW_TOKEN = (
    "regenerate the access token and secret in the X developer portal and set IMPROMPTU_X_ACCESS_TOKEN and "
    "IMPROMPTU_X_ACCESS_TOKEN_SECRET (check IMPROMPTU_X_API_KEY and IMPROMPTU_X_API_SECRET too)"
)
_WRITE_PERMISSION = (
    'give the X app "Read and write" permission (User authentication settings), then regenerate the access token '
    "and secret: tokens made before the change stay read-only"
)


class XSettings(base.ChannelSettings):
    x_api_key: str | None = Field(default=None, description="X app's API key (OAuth 1.0a consumer key) for posting.")
    x_api_secret: SecretStr | None = None
    x_access_token: SecretStr | None = Field(default=None, description="The posting account's OAuth 1.0a token.")
    x_access_token_secret: SecretStr | None = None


class XChannel(base.ChannelAdapter):
    name = "x"
    title = "X"
    Section = XSettings
    limit = 280
    can_find = False  # no search of one's own recent posts on the tiers this targets
    can_delete = True

    @staticmethod
    def length(text: str) -> int:
        return xtext.weighted_length(text)  # links 23, CJK and emoji 2

    @classmethod
    def from_settings(cls, settings: Settings) -> XChannel:
        section = XSettings.of(settings)
        return cls(
            api_key=(section.x_api_key or "").strip() or None,
            api_secret=_reveal(section.x_api_secret),
            access_token=_reveal(section.x_access_token),
            access_token_secret=_reveal(section.x_access_token_secret),
            timeout=section.outreach_timeout_seconds,
        )

    def __init__(
        self,
        *,
        api_key: str | None,
        api_secret: str | None,
        access_token: str | None,
        access_token_secret: str | None,
        timeout: float = 15.0,
    ) -> None:
        self._credentials = {
            "api_key": api_key or None,
            "api_secret": api_secret or None,
            "access_token": access_token or None,
            "access_token_secret": access_token_secret or None,
        }
        self.timeout = timeout

    def missing(self) -> list[str]:
        return base.unset({_ENV[name]: value for name, value in self._credentials.items()})

    async def post(self, post: Post) -> Posted:
        body = await asyncio.to_thread(self._call, "post", lambda client: client.create_tweet(text=post.text))
        tweet_id = _tweet_id(body)
        if tweet_id is None:
            raise RetryableError(
                "X accepted the post but its answer has no tweet id; the outcome is unknown: check the account's "
                "timeline before posting it again"
            )
        return Posted(remote_id=tweet_id, url=STATUS_URL.format(id=tweet_id))

    async def find(self, post: Post) -> Posted | None:
        raise NotImplementedError("X cannot look up an earlier post (can_find is False)")

    async def delete(self, posted: Posted) -> None:
        if not posted.remote_id:
            raise PostRefused("X: nothing to delete, the post has no tweet id")
        tweet_id = posted.remote_id
        try:
            body = await asyncio.to_thread(self._call, "delete", lambda client: client.delete_tweet(tweet_id))
        except _AlreadyGone:
            return  # deleted before (or never there): a redelivered delete must not fail
        data = body.get("data") if isinstance(body, dict) else None
        if isinstance(data, dict) and data.get("deleted") is False:
            raise NotSent(f"X did not delete tweet {tweet_id} (deleted: false); try again later")

    # --- the call and its failures ----------------------------------------------------------------------------

    def _call(self, what: str, action: Callable[[tweepy.Client], Any]) -> Any:
        """Run one tweepy call in this thread; every failure comes out as one of the channel errors."""
        base.require("X is not configured", self.missing())
        client = tweepy.Client(
            consumer_key=self._credentials["api_key"],
            consumer_secret=self._credentials["api_secret"],
            access_token=self._credentials["access_token"],
            access_token_secret=self._credentials["access_token_secret"],
            return_type=dict,  # the raw JSON: its shape is checked here, not assumed
            wait_on_rate_limit=False,
        )
        client.session = TimeoutSession(self.timeout)
        try:
            return action(client)
        except tweepy.NotFound as error:
            if what == "delete":
                raise _AlreadyGone from None
            raise self._refused(error, what) from None
        except tweepy.HTTPException as error:
            raise self._http_failure(error, what) from None
        except requests.JSONDecodeError:  # a 2xx that is not JSON (tweepy reads error bodies itself)
            raise RetryableError(f"X {what}: the answer was not JSON; the outcome is unknown") from None
        except requests.RequestException as error:
            raise self._transport_failure(error, what) from None
        except (AttributeError, TypeError, KeyError) as error:  # tweepy reading an answer of an unexpected shape
            raise RetryableError(
                f"X {what}: the answer could not be read ({type(error).__name__}); the outcome is unknown"
            ) from None
        finally:
            client.session.close()

    def _http_failure(self, error: tweepy.HTTPException, what: str) -> Exception:
        status = error.response.status_code
        detail = self._detail(error)
        if isinstance(error, tweepy.TooManyRequests):
            wait = rate_limit_wait(error.response.headers)
            return RateLimited(f"X {what}: rate limited (429 {detail}); try again in {wait:.0f} s", retry_after=wait)
        if isinstance(error, tweepy.Unauthorized):
            return ChannelBroken(f"X {what}: the credentials were refused (401 {detail}): {_NEW_TOKEN}")
        if isinstance(error, tweepy.Forbidden):
            if "duplicate content" in detail.lower():
                return PostRefused(f"X {what}: refused as a duplicate of a recent post (403): change the text")
            if "oauth1" in detail.lower() or "permission" in detail.lower():
                return ChannelBroken(f"X {what}: the app may not post (403 {detail}): {_WRITE_PERMISSION}")
            return ChannelBroken(
                f"X {what}: forbidden (403 {detail}): check the app's access level and project in the X "
                "developer portal"
            )
        if isinstance(error, tweepy.TwitterServerError):
            return NotSent(f"X {what}: X had a server error ({status} {detail}); try again later")
        return self._refused(error, what)

    def _refused(self, error: tweepy.HTTPException, what: str) -> PostRefused:
        status = error.response.status_code
        return PostRefused(f"X {what}: refused ({status} {self._detail(error)})")

    def _transport_failure(self, error: requests.RequestException, what: str) -> Exception:
        reason = self._safe(str(error)) or type(error).__name__
        if isinstance(error, requests.ConnectTimeout):
            return NotSent(f"X {what}: X could not be reached in time ({reason})")
        if isinstance(error, requests.ConnectionError) and error.args and isinstance(error.args[0], MaxRetryError):
            # requests wraps failures to connect in MaxRetryError; anything else broke after the request went out
            return NotSent(f"X {what}: X could not be reached ({reason})")
        if isinstance(error, requests.Timeout):
            return RetryableError(f"X {what}: X did not answer in time; the outcome is unknown")
        return RetryableError(f"X {what}: the connection failed mid-request ({reason}); the outcome is unknown")

    def _detail(self, error: tweepy.HTTPException) -> str:
        messages = [str(m) for m in error.api_messages if m]
        text = "; ".join(messages) or str(error.response.reason or "")
        return self._safe(text)

    def _safe(self, text: str) -> str:
        return base.redact(base.printable(text), [value for value in self._credentials.values() if value])


class _AlreadyGone(Exception):
    """Internal: the tweet to delete is not there (404)."""


def rate_limit_wait(headers: Any) -> float:
    """Seconds until X lets the account post again: the latest reset among the exhausted limits (a limit without a
    remaining header counts as exhausted), else the window reset; 15 minutes when X said nothing."""
    resets = [
        headers[reset]
        for reset, remaining in RATE_HEADERS
        if reset in headers and headers.get(remaining, "0").strip() == "0"
    ]
    if not resets and "x-rate-limit-reset" in headers:
        resets = [headers["x-rate-limit-reset"]]
    waits = [wait for wait in (http_retry.reset_seconds(value) for value in resets) if wait is not None]
    return max(waits) if waits else DEFAULT_WAIT


def _tweet_id(body: object) -> str | None:
    data = body.get("data") if isinstance(body, dict) else None
    tweet_id = data.get("id") if isinstance(data, dict) else None
    return str(tweet_id) if isinstance(tweet_id, str | int) and str(tweet_id).strip() else None


def _reveal(value: SecretStr | None) -> str | None:
    text = value.get_secret_value().strip() if value is not None else ""
    return text or None


def from_settings(settings: Settings) -> XChannel:
    return XChannel.from_settings(settings)
