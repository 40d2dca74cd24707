"""Zoom: a scheduled meeting with cloud recording, through the REST API v2 (a ready token or Server-to-Server OAuth).

The meeting's agenda carries the request's marker on its first line, so `find()` recognises it in the meeting list
(which shortens long agendas) after a crash between create and record.
"""

from __future__ import annotations

from typing import ClassVar
from urllib.parse import quote

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

TOPIC_LIMIT = 200
AGENDA_LIMIT = 2000
EXPIRED_TOKEN = 124  # Zoom's code for "Invalid access token." and "Access token is expired."
NO_MEETING = 3001
MAX_PAGES = 100  # a list that never ends (a provider bug) must not loop forever
NO_CREDENTIALS = (
    "no credentials: set IMPROMPTU_ZOOM_ACCESS_TOKEN or IMPROMPTU_ZOOM_ACCOUNT_ID/CLIENT_ID/CLIENT_SECRET "
    "(a Server-to-Server OAuth app)"
)


class ZoomSettings(ProviderSettings):
    zoom_api_url: str = "https://api.zoom.us/v2"
    zoom_oauth_url: str = "https://zoom.us/oauth/token"
    zoom_user: str = Field(default="me", description="Zoom user (id or email) who hosts the meetings.")
    zoom_access_token: SecretStr | None = Field(default=None, description="A ready OAuth access token for Zoom.")
    zoom_account_id: str | None = Field(default=None, description="Server-to-Server OAuth app: account id.")
    zoom_client_id: str | None = None
    zoom_client_secret: SecretStr | None = None


class _Meeting(BaseModel):
    """The fields read from a meeting; start_url and password are never parsed, so they cannot leak from here."""

    model_config = ConfigDict(extra="ignore")

    id: int
    join_url: str
    agenda: str = ""


class _MeetingList(BaseModel):
    model_config = ConfigDict(extra="ignore")

    meetings: list[_Meeting] = []
    next_page_token: str | None = None


class _Token(BaseModel):
    model_config = ConfigDict(extra="ignore")

    access_token: str
    expires_in: float = 3599


class ZoomProvider(ApiAccess, ProviderAdapter):
    name: ClassVar[Provider] = "zoom"
    Section = ZoomSettings

    @classmethod
    def stand_in_join_url(cls, settings: Settings, title: str) -> str:
        return "https://us06web.zoom.us/j/81234567890?pwd=" + "x" * 32

    @classmethod
    def from_settings(cls, settings: Settings, client: httpx.AsyncClient | None = None) -> ZoomProvider:
        return cls(ZoomSettings.of(settings), client)

    def __init__(self, section: ZoomSettings, client: httpx.AsyncClient | None = None) -> None:
        self.api_url = section.zoom_api_url.rstrip("/")
        self.oauth_url = section.zoom_oauth_url
        self.user = section.zoom_user
        self.http = HttpApi(self.name, section.provider_timeout_seconds, client)
        token = reveal(section.zoom_access_token)
        self._account_id = section.zoom_account_id
        self._client_id = section.zoom_client_id
        self._client_secret = reveal(section.zoom_client_secret)
        self.http.keep_secret(token, self._client_secret)
        s2s = bool(self._account_id and self._client_id and self._client_secret)
        self._configured = bool(token or s2s)
        self.tokens = TokenCache(self._fetch_token if s2s else None, initial=token)

    def preview(self, request: SessionRequest) -> ProviderPreview:
        return ProviderPreview(
            provider=self.name,
            summary=f"Zoom meeting hosted by {self.user}, cloud recording on",
            details={
                "start": utc_text(request.starts_at),
                "duration": f"{request.duration_minutes} minutes",
                "timezone": request.timezone,
                "recording": "cloud",
            },
        )

    async def create(self, request: SessionRequest) -> CreatedSession:
        body = {
            "topic": shorten(request.title, TOPIC_LIMIT),
            "type": 2,  # scheduled
            "start_time": utc_text(request.starts_at),
            "duration": request.duration_minutes,
            "timezone": request.timezone,
            "agenda": with_marker(request.description, request.marker, AGENDA_LIMIT, first=True),
            "settings": {"auto_recording": "cloud", "join_before_host": False, "waiting_room": False},
        }
        what = "create meeting"
        response = await self._call("POST", f"/users/{self._user_path}/meetings", what, json=body)
        return self._created(self._success(response, what, _Meeting))

    async def find(self, request: SessionRequest) -> CreatedSession | None:
        what = "list meetings"
        page_token = ""
        for _ in range(MAX_PAGES):
            params = {"type": "upcoming", "page_size": "300"}
            if page_token:
                params["next_page_token"] = page_token
            response = await self._call("GET", f"/users/{self._user_path}/meetings", what, params=params)
            page = self._success(response, what, _MeetingList)
            for meeting in page.meetings:
                if has_marker(meeting.agenda, request.marker):
                    return self._created(meeting)
            if not page.next_page_token or page.next_page_token == page_token:
                return None
            page_token = page.next_page_token
        raise self.http.refused(f"{what}: more than {MAX_PAGES} pages of upcoming meetings")

    async def cancel(self, created: CreatedSession) -> None:
        if created.provider != self.name:
            raise self.http.refused(f"cannot cancel a {created.provider} session")
        what = f"delete meeting {created.provider_id}"
        response = await self._call("DELETE", f"/meetings/{quote(created.provider_id, safe='')}", what)
        if response.is_success or error_object(response).get("code") == NO_MEETING:
            return  # already gone counts as cancelled: a redelivered cancel must not fail
        raise self._failure(response, what)

    @property
    def _user_path(self) -> str:
        return quote(self.user, safe="@")

    def _created(self, meeting: _Meeting) -> CreatedSession:
        return CreatedSession(
            provider=self.name,
            provider_id=str(meeting.id),
            join_url=meeting.join_url,
            details={"meeting_id": str(meeting.id), "recording": "cloud"},
        )

    async def _call(self, method: str, path: str, what: str, **kwargs: object) -> httpx.Response:
        if not self._configured:
            raise self.http.refused(NO_CREDENTIALS)
        return await self.http.call(self.tokens, method, f"{self.api_url}{path}", what, stale=_token_expired, **kwargs)

    def _success(self, response: httpx.Response, what: str, model: type[Model]) -> Model:
        if not response.is_success:
            raise self._failure(response, what)
        return self.http.parse(model, response, what)

    def _failure(self, response: httpx.Response, what: str) -> Exception:
        status = response.status_code
        body = error_object(response)
        code = body.get("code")
        message = quoted(body.get("message") or response.reason_phrase)
        if _token_expired(response):
            fix = (
                "the Server-to-Server OAuth app's fresh token was refused too: check the app is activated"
                if self.tokens.can_refresh
                else "set a fresh IMPROMPTU_ZOOM_ACCESS_TOKEN, or IMPROMPTU_ZOOM_ACCOUNT_ID/CLIENT_ID/CLIENT_SECRET "
                "so tokens are renewed"
            )
            return self.http.refused(f"access token expired or invalid (code {EXPIRED_TOKEN}): {message}; {fix}")
        if status == 429:
            wait, at = retry_after(response)
            kind = response.headers.get("x-ratelimit-type", "")
            # a daily limit can come without the header; its message says "daily" and resets at 00:00 UTC
            if "daily" in kind.lower() or "daily" in message.lower():
                resets = utc_text(at) if at else "00:00 UTC"
                return self.http.refused(f"{what}: daily API quota reached ({message}); it resets at {resets}")
            return self.http.busy(f"{what}: per-second rate limit ({kind or 'QPS'}): {message}", wait)
        if status >= 500 or status == 408:
            return self.http.busy(f"{what}: Zoom answered HTTP {status}: {message}", retry_after(response)[0])
        if status in (401, 403):
            said = f"HTTP {status}, code {code}"
            return self.http.refused(f"{what}: not allowed ({said}): {message}; check the app's scopes")
        return self.http.refused(f"{what} refused (HTTP {status}, code {code}): {message}")

    async def _fetch_token(self) -> tuple[str, float]:
        """Server-to-Server OAuth: the account's credentials buy a bearer token valid for about an hour."""
        what = "token request"
        response = await self.http.request(
            "POST",
            self.oauth_url,
            what,
            params={"grant_type": "account_credentials", "account_id": self._account_id or ""},
            auth=httpx.BasicAuth(self._client_id or "", self._client_secret or ""),
        )
        if response.status_code >= 500 or response.status_code == 429:
            raise self.http.busy(f"{what}: Zoom answered HTTP {response.status_code}", retry_after(response)[0])
        if not response.is_success:
            body = error_object(response)
            error = quoted(body.get("error") or response.status_code)
            reason = quoted(body.get("reason") or body.get("error_description") or response.reason_phrase)
            raise self.http.refused(
                f"could not get an access token ({error}: {reason}); check IMPROMPTU_ZOOM_ACCOUNT_ID/CLIENT_ID/"
                "CLIENT_SECRET and that the Server-to-Server OAuth app is activated"
            )
        token = self.http.parse(_Token, response, what)
        self.http.keep_secret(token.access_token)
        return token.access_token, token.expires_in


def _token_expired(response: httpx.Response) -> bool:
    return response.status_code == 401 and error_object(response).get("code") == EXPIRED_TOKEN
