"""LinkedIn: an article post through the versioned Posts API (`POST /rest/posts`), plus the helpers behind
`impromptu linkedin login` (the OAuth 2 authorization URL, the code exchange, and the member's author URN).

Posting uses httpx directly: python-linkedin-v2 has no Posts API, so it only builds the login URL and exchanges the
code. The access token travels in the Authorization header only, never in a URL, and never appears in a message.
A post's outcome cannot be looked up afterwards (`can_find` is False): an unknown outcome goes to a person.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote

import httpx
import requests
from linkedin_v2.exceptions import LinkedInError, LinkedInUnauthorizedError
from linkedin_v2.linkedin import LinkedInAuthentication
from pydantic import Field, SecretStr

from pipeline import http_retry
from pipeline.channels import base
from pipeline.channels.base import ChannelBroken, NotSent, Post, Posted, PostRefused, RateLimited
from pipeline.errors import ConfigError, RetryableError
from pipeline.settings import Settings

API_URL = "https://api.linkedin.com"
SCOPES = ("openid", "profile", "w_member_social")
FEED_URL = "https://www.linkedin.com/feed/update/{urn}/"
CREATED_ID = "x-restli-id"  # the new post's URN: a 201 has no body
DEFAULT_WAIT = 3600.0  # LinkedIn's limits are daily and it sends no Retry-After: back off by the hour
GONE = (404, 410)
LOGIN_AGAIN = "run `impromptu linkedin login` again to get a new IMPROMPTU_LINKEDIN_ACCESS_TOKEN"
_ENV = {"access_token": "IMPROMPTU_LINKEDIN_ACCESS_TOKEN", "author": "IMPROMPTU_LINKEDIN_AUTHOR"}

# little text: these mark up mentions, hashtags and templates; unescaped, LinkedIn silently cuts the post there
_RESERVED = re.compile(r"([\\|{}@\[\]()<>#*_~])")
_URL = re.compile(r"https?://[^\s<>\"]+", re.IGNORECASE)
_TRAILING = ".,;:!?'\""
_CLOSING = {")": "(", "]": "[", "}": "{"}


class LinkedInLoginFailed(ConfigError):
    """`impromptu linkedin login` could not finish: the message says what to fix."""


def escape_little_text(text: str) -> str:
    """`text` as LinkedIn's little text shows it verbatim: reserved characters backslash-escaped (the backslash
    itself included), except inside URLs, which must stay intact to be auto-linked."""
    parts: list[str] = []
    position = 0
    for match in _URL.finditer(text):
        url = _trim_url(match.group())
        parts.append(_RESERVED.sub(r"\\\1", text[position : match.start()]))
        parts.append(url)
        position = match.start() + len(url)
    parts.append(_RESERVED.sub(r"\\\1", text[position:]))
    return "".join(parts)


def _trim_url(url: str) -> str:
    """Leave sentence punctuation and an unbalanced closing bracket after a URL out of it ("(see https://a.b/c)")."""
    while url:
        last = url[-1]
        opening = _CLOSING.get(last)
        if last in _TRAILING or (opening is not None and url.count(opening) < url.count(last)):
            url = url[:-1]
        else:
            break
    return url


class LinkedInSettings(base.ChannelSettings):
    linkedin_access_token: SecretStr | None = Field(
        default=None, description="OAuth 2 token with w_member_social (`impromptu linkedin login`)."
    )
    linkedin_author: str | None = Field(
        default=None, description="Who posts: urn:li:person:ID or urn:li:organization:ID (`impromptu linkedin login`)."
    )
    linkedin_version: str = Field(
        default="202509", description="LinkedIn-Version header (YYYYMM); LinkedIn retires each about a year on."
    )
    linkedin_api_url: str = "https://api.linkedin.com"
    linkedin_client_id: str | None = Field(default=None, description="LinkedIn app, for `impromptu linkedin login`.")
    linkedin_client_secret: SecretStr | None = None
    linkedin_redirect_uri: str = "http://127.0.0.1:8000/linkedin/callback"
    linkedin_oauth_url: str = Field(
        default="https://www.linkedin.com/oauth/v2", description="LinkedIn's OAuth 2 endpoints (authorization, token)."
    )


class LinkedInChannel(base.ChannelAdapter):
    name = "linkedin"
    title = "LinkedIn"
    Section = LinkedInSettings
    limit = 3000
    can_find = False
    can_delete = True

    @classmethod
    def from_settings(cls, settings: Settings) -> LinkedInChannel:
        section = LinkedInSettings.of(settings)
        return cls(
            access_token=_reveal(section.linkedin_access_token),
            author=(section.linkedin_author or "").strip() or None,
            version=section.linkedin_version,
            api_url=section.linkedin_api_url,
            timeout=section.outreach_timeout_seconds,
        )

    def __init__(
        self,
        *,
        access_token: str | None,
        author: str | None,
        version: str = "202509",
        api_url: str = API_URL,
        timeout: float = 15.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._token = access_token or None
        self.author = author or None
        self.version = version
        self.api_url = api_url.rstrip("/")
        self.timeout = timeout
        self._transport = transport

    def missing(self) -> list[str]:
        return base.unset({_ENV["access_token"]: self._token, _ENV["author"]: self.author})

    def payload(self, post: Post) -> dict[str, Any]:
        """The Posts API body of an article post; LinkedIn does not scrape the link, so the card is given whole."""
        return {
            "author": self.author,
            "commentary": escape_little_text(post.text),
            "visibility": "PUBLIC",
            "distribution": {
                "feedDistribution": "MAIN_FEED",
                "targetEntities": [],
                "thirdPartyDistributionChannels": [],
            },
            "content": {"article": {"source": post.link, "title": post.title, "description": post.description}},
            "lifecycleState": "PUBLISHED",
            "isReshareDisabledByAuthor": False,
        }

    async def post(self, post: Post) -> Posted:
        what = "post"
        response = await self._request("POST", f"{self.api_url}/rest/posts", what, json=self.payload(post))
        if not response.is_success:
            raise self._failure(response, what)
        urn = response.headers.get(CREATED_ID, "").strip()
        if not urn.startswith("urn:li:"):
            raise RetryableError(
                f"LinkedIn {what}: answered {response.status_code} without the new post's id ({CREATED_ID}); the "
                "outcome is unknown: check the author's feed before posting it again"
            )
        return Posted(remote_id=urn, url=FEED_URL.format(urn=urn))

    async def find(self, post: Post) -> Posted | None:
        raise NotImplementedError("LinkedIn cannot look up an earlier post (can_find is False)")

    async def delete(self, posted: Posted) -> None:
        if not posted.remote_id:
            raise PostRefused("LinkedIn: nothing to delete, the post has no URN")
        what = f"delete {posted.remote_id}"
        url = f"{self.api_url}/rest/posts/{quote(posted.remote_id, safe='')}"
        response = await self._request("DELETE", url, what, headers={"X-RestLi-Method": "DELETE"})
        if response.is_success or response.status_code in GONE:
            return  # already gone counts as deleted: a redelivered delete must not fail
        raise self._failure(response, what)

    # --- HTTP and its failures --------------------------------------------------------------------------------

    async def _request(
        self, method: str, url: str, what: str, headers: dict[str, str] | None = None, **kwargs: object
    ) -> httpx.Response:
        base.require("LinkedIn is not configured", self.missing())
        all_headers = {
            "Authorization": f"Bearer {self._token}",
            "LinkedIn-Version": self.version,
            "X-Restli-Protocol-Version": "2.0.0",
            **(headers or {}),
        }
        return await base.request(
            method,
            url,
            where=f"LinkedIn {what}",
            secrets=self._secrets,
            timeout=self.timeout,
            transport=self._transport,
            headers=all_headers,
            **kwargs,
        )

    @property
    def _secrets(self) -> list[str]:
        return [self._token] if self._token else []

    def _failure(self, response: httpx.Response, what: str) -> Exception:
        status = response.status_code
        code, message = _error(response)
        label = base.redact(f"{status} {code}".strip() + (f": {message}" if message else ""), self._secrets)
        where = f"LinkedIn {what}"
        if status == 401:
            return ChannelBroken(f"{where}: the access token was refused ({label}): {LOGIN_AGAIN}")
        if status == 403:
            return ChannelBroken(f"{where}: not allowed ({label}): {self._permission_hint()}")
        if status == 426 or code == "NONEXISTENT_VERSION":
            return ChannelBroken(
                f"{where}: LinkedIn API version {self.version} is no longer active ({label}): set "
                "IMPROMPTU_LINKEDIN_VERSION to a current YYYYMM"
            )
        if status == 429:
            wait = http_retry.retry_after_seconds(response.headers.get("retry-after"))
            wait = DEFAULT_WAIT if wait is None else wait
            return RateLimited(f"{where}: rate limited ({label}); try again in {wait:.0f} s", retry_after=wait)
        if status >= 500:
            return NotSent(f"{where}: LinkedIn had a server error ({label}); try again later")
        if 300 <= status < 400:
            return ChannelBroken(f"{where}: unexpected redirect ({status}): check IMPROMPTU_LINKEDIN_API_URL")
        return PostRefused(f"{where}: refused ({label})")

    def _permission_hint(self) -> str:
        if self.author and self.author.startswith("urn:li:organization:"):
            return (
                f"the token needs w_organization_social and its member must be an ADMINISTRATOR or CONTENT_ADMIN "
                f"of {self.author}; fix the role or IMPROMPTU_LINKEDIN_AUTHOR, then {LOGIN_AGAIN}"
            )
        return (
            "the token lacks the w_member_social permission, or IMPROMPTU_LINKEDIN_AUTHOR is not its member; "
            + LOGIN_AGAIN
        )


def _error(response: httpx.Response) -> tuple[str, str]:
    """(code, message) of LinkedIn's error body {"status", "serviceErrorCode", "code", "message"}; whatever came."""
    body = base.json_or_none(response)
    if isinstance(body, dict):
        code = body.get("code") or body.get("serviceErrorCode") or ""
        return base.printable(str(code), 60), base.printable(str(body.get("message") or ""))
    # a plain or JSON text is worth showing; an HTML error page is not
    readable = any(kind in response.headers.get("content-type", "") for kind in ("json", "text/plain"))
    return "", base.printable(response.text, 200) if readable else ""


def _reveal(value: SecretStr | str | None) -> str | None:
    text = value.get_secret_value() if isinstance(value, SecretStr) else (value or "")
    return text.strip() or None


def from_settings(settings: Settings) -> LinkedInChannel:
    return LinkedInChannel.from_settings(settings)


# --- `impromptu linkedin login` ---------------------------------------------------------------------------------


def _authentication(settings: Settings) -> LinkedInAuthentication:
    missing = base.unset(
        {
            "IMPROMPTU_LINKEDIN_CLIENT_ID": settings.linkedin_client_id,
            "IMPROMPTU_LINKEDIN_CLIENT_SECRET": _reveal(settings.linkedin_client_secret),
        }
    )
    if missing:
        raise LinkedInLoginFailed(f"LinkedIn login: set {' and '.join(missing)} (your LinkedIn app's Auth tab)")
    auth = LinkedInAuthentication(
        settings.linkedin_client_id,
        _reveal(settings.linkedin_client_secret),
        settings.linkedin_redirect_uri,
        permissions=list(SCOPES),
    )
    # the library still points at the legacy /uas/oauth2/ endpoints; these are the documented ones
    oauth = settings.linkedin_oauth_url.rstrip("/")
    auth.AUTHORIZATION_URL, auth.ACCESS_TOKEN_URL = f"{oauth}/authorization", f"{oauth}/accessToken"
    return auth


def authorization_url(settings: Settings, state: str) -> str:
    """Where to send the person who logs in; `state` must come back on the callback unchanged (check it there)."""
    if not state:
        raise ValueError("an OAuth state is needed, to check on the callback")
    auth = _authentication(settings)
    auth.state = state  # the library's own is an MD5 of random.randrange: not meant for security
    return str(auth.authorization_url)


def exchange_code(settings: Settings, code: str, *, token_url: str | None = None) -> tuple[str, int]:
    """The callback's `code` for (access token, seconds it lasts), at IMPROMPTU_LINKEDIN_OAUTH_URL or `token_url`."""
    if not code:
        raise LinkedInLoginFailed("LinkedIn login: the callback carried no authorization code")
    auth = _authentication(settings)
    if token_url is not None:
        auth.ACCESS_TOKEN_URL = token_url
    auth.authorization_code = code
    secrets = [code, _reveal(settings.linkedin_client_secret) or ""]
    try:
        token = auth.get_access_token(timeout=settings.outreach_timeout_seconds)
        access_token, expires_in = token.access_token, int(token.expires_in)
    except LinkedInError as error:
        # the library drops LinkedIn's error_description and says "Unknown Error" instead: only the code is left
        detail = base.redact(base.printable(str(error)), secrets).removesuffix(": Unknown Error")
        if isinstance(error, LinkedInUnauthorizedError) or "invalid_client" in detail:
            raise LinkedInLoginFailed(
                f"LinkedIn login: the app's credentials were refused ({detail}): check "
                "IMPROMPTU_LINKEDIN_CLIENT_ID and IMPROMPTU_LINKEDIN_CLIENT_SECRET"
            ) from None
        raise LinkedInLoginFailed(
            f"LinkedIn login: the code was refused ({detail}): codes last 30 minutes and work once, and the "
            "redirect URL (IMPROMPTU_LINKEDIN_REDIRECT_URI) must be one of the app's; log in again"
        ) from None
    except requests.RequestException as error:  # before ValueError: requests' JSONDecodeError is both
        if isinstance(error, requests.JSONDecodeError):
            raise LinkedInLoginFailed(
                "LinkedIn login: LinkedIn's token answer was empty or not JSON (a server error?); log in again"
            ) from None
        detail = base.redact(base.printable(str(error)), secrets) or type(error).__name__
        raise LinkedInLoginFailed(f"LinkedIn login: could not reach LinkedIn ({detail}); try again") from None
    except (AttributeError, ValueError, KeyError, TypeError) as error:
        # the library's error handling breaks on LinkedIn's usual error bodies (AttributeError: no .message) and
        # on empty ones (then the JSON read fails); a 2xx without the token fields lands here too
        raise LinkedInLoginFailed(
            f"LinkedIn login: LinkedIn's token answer could not be read ({type(error).__name__}); log in again"
        ) from None
    if not isinstance(access_token, str) or not access_token.strip():
        raise LinkedInLoginFailed("LinkedIn login: the token answer had no access token; log in again")
    return access_token.strip(), expires_in


async def author_urn(
    token: str | SecretStr,
    api_url: str = API_URL,
    transport: httpx.AsyncBaseTransport | None = None,
    timeout: float = 15.0,
) -> str:
    """The logged-in member as a post author, `urn:li:person:{sub}`, from OpenID Connect's userinfo.

    Not python-linkedin-v2's get_profile: it reads /v2/me, which needs the retired r_liteprofile scope (403 with
    `openid profile`), and it sends the token as a query parameter, where URLs end up in logs."""
    secret = _reveal(token)
    if not secret:
        raise LinkedInLoginFailed("LinkedIn login: no access token to look up the member with")
    where = "LinkedIn userinfo"
    response = await base.request(
        "GET",
        f"{api_url.rstrip('/')}/v2/userinfo",
        where=where,
        secrets=[secret],
        timeout=timeout,
        transport=transport,
        headers={"Authorization": f"Bearer {secret}"},
    )
    if not response.is_success:
        code, message = _error(response)
        label = base.redact(f"{response.status_code} {code}".strip() + (f": {message}" if message else ""), [secret])
        raise LinkedInLoginFailed(
            f"{where}: refused ({label}): the token needs the openid and profile scopes; log in again"
        )
    body = base.json_or_none(response)
    sub = body.get("sub") if isinstance(body, dict) else None
    if not isinstance(sub, str) or not sub.strip():
        raise LinkedInLoginFailed(f"{where}: the answer has no member id (sub); log in again")
    return f"urn:li:person:{sub.strip()}"
