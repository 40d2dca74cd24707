"""YouTube Live: a scheduled broadcast, recorded, bound to a fresh RTMP stream, through the Data API v3.

Creating takes three calls (broadcast, stream, bind). The broadcast's description carries the request's marker, so
a create cut short after the first call is finished, not repeated: both `create()` and `find()` look for the marked
broadcast first and only add and bind a stream when it has none.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from pipeline.messages import Provider
from pipeline.providers import CreatedSession, ProviderAdapter, ProviderPreview, ProviderSettings, SessionRequest
from pipeline.providers.http import (
    ApiAccess,
    HttpApi,
    Model,
    TokenCache,
    error_object,
    has_marker,
    quoted,
    retry_after,
    reveal,
    utc_text,
    with_marker,
)
from pipeline.settings import Settings
from pipeline.text import shorten

TITLE_LIMIT = 100
STREAM_TITLE_LIMIT = 128
DESCRIPTION_LIMIT = 5000
MAX_PAGES = 100  # a list that never ends (a provider bug) must not loop forever
WATCH_URL = "https://www.youtube.com/watch?v="
NO_CREDENTIALS = (
    "no credentials: set IMPROMPTU_YOUTUBE_ACCESS_TOKEN or IMPROMPTU_YOUTUBE_CLIENT_ID/CLIENT_SECRET/REFRESH_TOKEN "
    "(an OAuth client authorised for the channel)"
)
RATE_LIMITS = {"rateLimitExceeded", "userRateLimitExceeded"}
GONE = {"liveBroadcastNotFound", "liveStreamNotFound", "notFound"}


class YouTubeSettings(ProviderSettings):
    youtube_api_url: str = "https://www.googleapis.com/youtube/v3"
    google_token_url: str = "https://oauth2.googleapis.com/token"
    youtube_access_token: SecretStr | None = Field(default=None, description="A ready OAuth access token.")
    youtube_client_id: str | None = Field(default=None, description="OAuth client, to refresh tokens.")
    youtube_client_secret: SecretStr | None = None
    youtube_refresh_token: SecretStr | None = None
    youtube_privacy: Literal["public", "unlisted", "private"] = "unlisted"


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore")


class _Snippet(_Lenient):
    title: str = ""
    description: str = ""


class _BroadcastStatus(_Lenient):
    privacyStatus: str = ""


class _BroadcastContent(_Lenient):
    boundStreamId: str | None = None


class _Broadcast(_Lenient):
    id: str
    snippet: _Snippet = Field(default_factory=_Snippet)
    status: _BroadcastStatus = Field(default_factory=_BroadcastStatus)
    contentDetails: _BroadcastContent = Field(default_factory=_BroadcastContent)


class _BroadcastList(_Lenient):
    items: list[_Broadcast] = []
    nextPageToken: str | None = None


class _Ingestion(_Lenient):
    """streamName (the stream key: whoever has it can broadcast on the channel) is deliberately not read."""

    ingestionAddress: str = ""


class _Cdn(_Lenient):
    ingestionInfo: _Ingestion = Field(default_factory=_Ingestion)


class _Stream(_Lenient):
    id: str
    cdn: _Cdn = Field(default_factory=_Cdn)


class _StreamList(_Lenient):
    items: list[_Stream] = []


class _Token(_Lenient):
    access_token: str
    expires_in: float = 3599


def _plain(text: str) -> str:
    """YouTube refuses titles and descriptions containing < or > (invalidTitle, invalidDescription)."""
    return text.replace("<", "‹").replace(">", "›")


class YouTubeProvider(ApiAccess, ProviderAdapter):
    name: ClassVar[Provider] = "youtube"
    Section = YouTubeSettings

    @classmethod
    def stand_in_join_url(cls, settings: Settings, title: str) -> str:
        return WATCH_URL + "x" * 11

    @classmethod
    def from_settings(cls, settings: Settings, client: httpx.AsyncClient | None = None) -> YouTubeProvider:
        return cls(YouTubeSettings.of(settings), client)

    def __init__(self, section: YouTubeSettings, client: httpx.AsyncClient | None = None) -> None:
        self.api_url = section.youtube_api_url.rstrip("/")
        self.token_url = section.google_token_url
        self.privacy = section.youtube_privacy
        self.http = HttpApi(self.name, section.provider_timeout_seconds, client)
        token = reveal(section.youtube_access_token)
        self._client_id = section.youtube_client_id
        self._client_secret = reveal(section.youtube_client_secret)
        self._refresh_token = reveal(section.youtube_refresh_token)
        self.http.keep_secret(token, self._client_secret, self._refresh_token)
        refreshable = bool(self._client_id and self._client_secret and self._refresh_token)
        self._configured = bool(token or refreshable)
        self.tokens = TokenCache(self._fetch_token if refreshable else None, initial=token)

    def preview(self, request: SessionRequest) -> ProviderPreview:
        return ProviderPreview(
            provider=self.name,
            summary=f"YouTube Live broadcast ({self.privacy}), recorded from the start",
            details={
                "start": utc_text(request.starts_at),
                "end": utc_text(request.ends_at),
                "privacy": self.privacy,
                "recording": "from the start, DVR on",
            },
        )

    async def create(self, request: SessionRequest) -> CreatedSession:
        broadcast = await self._find_broadcast(request) or await self._insert_broadcast(request)
        return await self._complete(broadcast, request)

    async def find(self, request: SessionRequest) -> CreatedSession | None:
        broadcast = await self._find_broadcast(request)
        return None if broadcast is None else await self._complete(broadcast, request)

    async def cancel(self, created: CreatedSession) -> None:
        if created.provider != self.name:
            raise self.http.refused(f"cannot cancel a {created.provider} session")
        await self._delete("liveBroadcasts", created.provider_id)
        if stream_id := created.details.get("stream_id"):
            await self._delete("liveStreams", stream_id)  # unused once its broadcast is gone

    async def _find_broadcast(self, request: SessionRequest) -> _Broadcast | None:
        what = "list broadcasts"
        page_token = ""
        for _ in range(MAX_PAGES):
            params = {"part": "snippet,contentDetails,status", "broadcastStatus": "upcoming", "maxResults": "50"}
            if page_token:
                params["pageToken"] = page_token
            page = await self._api("GET", "/liveBroadcasts", what, _BroadcastList, params=params)
            for broadcast in page.items:
                if has_marker(broadcast.snippet.description, request.marker):
                    return broadcast
            if not page.nextPageToken or page.nextPageToken == page_token:
                return None
            page_token = page.nextPageToken
        raise self.http.refused(f"{what}: more than {MAX_PAGES} pages of upcoming broadcasts")

    async def _insert_broadcast(self, request: SessionRequest) -> _Broadcast:
        body = {
            "snippet": {
                "title": shorten(_plain(request.title), TITLE_LIMIT) or "Session",
                "description": with_marker(_plain(request.description), request.marker, DESCRIPTION_LIMIT),
                "scheduledStartTime": utc_text(request.starts_at),
                "scheduledEndTime": utc_text(request.ends_at),
            },
            "status": {"privacyStatus": self.privacy, "selfDeclaredMadeForKids": False},
            "contentDetails": {
                "enableAutoStart": False,
                "enableAutoStop": True,
                "recordFromStart": True,
                "enableDvr": True,
            },
        }
        params = {"part": "snippet,status,contentDetails"}
        return await self._api("POST", "/liveBroadcasts", "create broadcast", _Broadcast, params=params, json=body)

    async def _complete(self, broadcast: _Broadcast, request: SessionRequest) -> CreatedSession:
        """The broadcast with its stream: the bound one, or a new one bound now (a create cut short, resumed)."""
        stream = None
        if bound := broadcast.contentDetails.boundStreamId:
            params = {"part": "id,cdn", "id": bound}
            found = await self._api("GET", "/liveStreams", "read stream", _StreamList, params=params)
            stream = next((s for s in found.items if s.id == bound), None)
        if stream is None:
            stream = await self._insert_stream(request)
            params = {"id": broadcast.id, "part": "id,contentDetails", "streamId": stream.id}
            bound_to = await self._api("POST", "/liveBroadcasts/bind", "bind stream", _Broadcast, params=params)
            if bound_to.contentDetails.boundStreamId != stream.id:
                raise self.http.refused(f"unexpected response to bind stream: broadcast {broadcast.id} is not bound")
        return CreatedSession(
            provider=self.name,
            provider_id=broadcast.id,
            join_url=f"{WATCH_URL}{broadcast.id}",
            details={
                "broadcast_id": broadcast.id,
                "stream_id": stream.id,
                "ingestion_address": stream.cdn.ingestionInfo.ingestionAddress,
                "privacy": broadcast.status.privacyStatus or self.privacy,
            },
        )

    async def _insert_stream(self, request: SessionRequest) -> _Stream:
        body = {
            "snippet": {"title": shorten(_plain(request.title), STREAM_TITLE_LIMIT) or "Session"},
            "cdn": {"frameRate": "variable", "ingestionType": "rtmp", "resolution": "variable"},
            "contentDetails": {"isReusable": False},
        }
        params = {"part": "snippet,cdn,contentDetails"}
        return await self._api("POST", "/liveStreams", "create stream", _Stream, params=params, json=body)

    async def _delete(self, resource: str, id: str) -> None:
        what = f"delete {resource} {id}"
        response = await self._call("DELETE", f"/{resource}", what, params={"id": id})
        if response.is_success or (response.status_code == 404 and _reason(response)[0] in GONE):
            return  # already gone counts as cancelled: a redelivered cancel must not fail
        raise self._failure(response, what)

    async def _call(self, method: str, path: str, what: str, **kwargs: object) -> httpx.Response:
        if not self._configured:
            raise self.http.refused(NO_CREDENTIALS)
        url = f"{self.api_url}{path}"
        return await self.http.call(self.tokens, method, url, what, stale=_unauthorised, **kwargs)

    async def _api(self, method: str, path: str, what: str, model: type[Model], **kwargs: object) -> Model:
        response = await self._call(method, path, what, **kwargs)
        if not response.is_success:
            raise self._failure(response, what)
        return self.http.parse(model, response, what)

    def _failure(self, response: httpx.Response, what: str) -> Exception:
        status = response.status_code
        reason, message = _reason(response)
        said = f"{reason}: {message}" if reason else message
        if status == 401:
            fix = (
                "a refreshed token was refused too: check the OAuth client and its scopes"
                if self.tokens.can_refresh
                else "set a fresh IMPROMPTU_YOUTUBE_ACCESS_TOKEN, or a refresh token so tokens are renewed"
            )
            return self.http.refused(f"access token invalid or expired ({what}: {said}); {fix}")
        if reason == "quotaExceeded":
            return self.http.refused(f"daily API quota exceeded; resets at midnight Pacific time ({what}: {message})")
        if status == 429 or reason in RATE_LIMITS:
            return self.http.busy(f"{what}: rate limited ({said})", retry_after(response)[0])
        if status >= 500 or status == 408:
            return self.http.busy(f"{what}: YouTube answered HTTP {status} ({said})", retry_after(response)[0])
        if reason == "liveStreamingNotEnabled":
            return self.http.refused(
                f"{what}: live streaming is not enabled for this channel ({message}); enable it in YouTube Studio"
            )
        if status == 403:
            return self.http.refused(f"{what}: not allowed ({said}); check the channel and the token's scopes")
        return self.http.refused(f"{what} refused (HTTP {status}, {said})")

    async def _fetch_token(self) -> tuple[str, float]:
        """Google's token endpoint trades the refresh token for an access token valid for about an hour."""
        what = "token refresh"
        form = {
            "grant_type": "refresh_token",
            "client_id": self._client_id or "",
            "client_secret": self._client_secret or "",
            "refresh_token": self._refresh_token or "",
        }
        response = await self.http.request("POST", self.token_url, what, data=form)
        if response.status_code >= 500 or response.status_code == 429:
            raise self.http.busy(f"{what}: Google answered HTTP {response.status_code}", retry_after(response)[0])
        if not response.is_success:
            error, description = _reason(response)
            if error == "invalid_grant":
                raise self.http.refused(
                    f"refresh token expired or revoked: re-authorise the channel and set a new "
                    f"IMPROMPTU_YOUTUBE_REFRESH_TOKEN ({description})"
                )
            raise self.http.refused(
                f"{what} refused ({error or response.status_code}: {description}); "
                "check IMPROMPTU_YOUTUBE_CLIENT_ID/CLIENT_SECRET/REFRESH_TOKEN"
            )
        token = self.http.parse(_Token, response, what)
        self.http.keep_secret(token.access_token)
        return token.access_token, token.expires_in


def _reason(response: httpx.Response) -> tuple[str, str]:
    """(reason, message) of a Google error: the API's {"error": {...}} or the token endpoint's {"error": "..."}."""
    body = error_object(response)
    error = body.get("error")
    if isinstance(error, str):
        return error, quoted(body.get("error_description") or response.reason_phrase)
    if not isinstance(error, dict):
        return "", quoted(response.reason_phrase or response.status_code)
    details = error.get("errors")
    first = details[0] if isinstance(details, list) and details and isinstance(details[0], dict) else {}
    reason = first.get("reason") or error.get("status") or ""
    return str(reason), quoted(error.get("message") or first.get("message") or response.reason_phrase)


def _unauthorised(response: httpx.Response) -> bool:
    return response.status_code == 401
