"""The YouTube Live adapter against a local server that answers as the YouTube Data API v3 and Google's token
endpoint document.

Payloads follow the reference for liveBroadcasts (insert, list, bind, delete), liveStreams (insert, list, delete)
and POST https://oauth2.googleapis.com/token (grant_type=refresh_token), with Google's error body
{"error": {"code", "message", "errors": [{"domain", "reason", "message"}], "status"}}.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

import pytest
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from pipeline.embedded import free_port
from pipeline.errors import RetryableError
from pipeline.providers import CreatedSession, ProviderRefused, SessionRequest
from pipeline.providers.youtube import YouTubeProvider
from pipeline.settings import Settings
from tests.peers import serve

STATIC_TOKEN = "ya29.a0static-access-token-SECRET"
CLIENT_ID = "123456789012-abc.apps.googleusercontent.com"
CLIENT_SECRET = "GOCSPX-client-secret-SECRET"
REFRESH_TOKEN = "1//0refresh-token-SECRET"
STREAM_KEY = "abcd-efgh-ijkl-mnop-qrst"
INGESTION = "rtmp://a.rtmp.youtube.com/live2"
STARTS = datetime(2025, 3, 4, 10, 45, tzinfo=UTC)
API = "/youtube/v3"


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def google_error(status: int, reason: str, message: str, domain: str = "youtube.liveBroadcast") -> JSONResponse:
    errors = [{"message": message, "domain": domain, "reason": reason}]
    return JSONResponse({"error": {"code": status, "message": message, "errors": errors}}, status)


AUTH_ERROR = {
    "error": {
        "code": 401,
        "message": "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or "
        "other valid authentication credential.",
        "errors": [
            {
                "message": "Invalid Credentials",
                "domain": "global",
                "reason": "authError",
                "location": "Authorization",
                "locationType": "header",
            }
        ],
        "status": "UNAUTHENTICATED",
    }
}


@dataclass
class FakeYouTube:
    """The Data API v3 live endpoints and Google's token endpoint, as documented; state kept in dicts."""

    base: str = ""
    page_size: int = 2  # small pages, so listing takes several requests
    seen: list[Seen] = field(default_factory=list)
    broadcasts: dict[str, dict[str, Any]] = field(default_factory=dict)
    streams: dict[str, dict[str, Any]] = field(default_factory=dict)
    valid_tokens: set[str] = field(default_factory=set)
    issued: list[str] = field(default_factory=list)
    revoked_refresh: bool = False
    canned: dict[tuple[str, str], list[Response]] = field(default_factory=dict)
    delay: float = 0.0
    made: int = 0

    def fail(self, method: str, path: str, response: Response) -> None:
        self.canned.setdefault((method, path), []).append(response)

    def api(self, method: str | None = None, path: str | None = None) -> list[Seen]:
        return [
            s
            for s in self.seen
            if s.path.startswith(API) and method in (None, s.method) and (path is None or s.path == API + path)
        ]

    def tokens(self) -> list[Seen]:
        return [s for s in self.seen if s.path == "/token"]

    def new_id(self, prefix: str) -> str:
        self.made += 1
        return f"{prefix}{self.made:02d}AbCdEfG"[:11]

    @property
    def app(self) -> FastAPI:
        app = FastAPI()

        @app.middleware("http")
        async def record(request: Request, call_next: Any) -> Response:
            body = await request.body()
            self.seen.append(
                Seen(request.method, request.url.path, dict(request.query_params), dict(request.headers), body)
            )
            if self.delay:
                await asyncio.sleep(self.delay)
            queue = self.canned.get((request.method, request.url.path))
            if queue:
                return queue.pop(0)
            if request.url.path.startswith(API):
                auth = request.headers.get("authorization", "")
                if auth.removeprefix("Bearer ") not in self.valid_tokens:
                    return JSONResponse(AUTH_ERROR, 401)
            return await call_next(request)

        @app.post("/token")
        async def token(request: Request) -> Response:
            form = await request.form()
            if form.get("client_id") != CLIENT_ID or form.get("client_secret") != CLIENT_SECRET:
                return JSONResponse({"error": "invalid_client", "error_description": "Unauthorized"}, 401)
            if form.get("grant_type") != "refresh_token" or form.get("refresh_token") != REFRESH_TOKEN:
                return JSONResponse({"error": "unsupported_grant_type", "error_description": "Invalid grant_type"}, 400)
            if self.revoked_refresh:
                return JSONResponse(
                    {"error": "invalid_grant", "error_description": "Token has been expired or revoked."}, 400
                )
            access = f"ya29.refreshed-{len(self.issued) + 1}-SECRET"
            self.issued.append(access)
            self.valid_tokens.add(access)
            return JSONResponse(
                {
                    "access_token": access,
                    "expires_in": 3599,
                    "scope": "https://www.googleapis.com/auth/youtube",
                    "token_type": "Bearer",
                }
            )

        @app.post(f"{API}/liveBroadcasts")
        async def insert_broadcast(part: str, request: Request) -> Response:
            body = await request.json()
            broadcast_id = self.new_id("bc")
            broadcast = {
                "kind": "youtube#liveBroadcast",
                "etag": f"etag-{broadcast_id}",
                "id": broadcast_id,
                "snippet": {
                    "publishedAt": "2025-03-04T10:16:02Z",
                    "channelId": "UCxyz0123456789abcdefghi",
                    "title": body["snippet"]["title"],
                    "description": body["snippet"]["description"],
                    "thumbnails": {"default": {"url": f"https://i.ytimg.com/vi/{broadcast_id}/default_live.jpg"}},
                    "scheduledStartTime": body["snippet"]["scheduledStartTime"],
                    "scheduledEndTime": body["snippet"]["scheduledEndTime"],
                    "isDefaultBroadcast": False,
                    "liveChatId": f"chat-{broadcast_id}",
                },
                "status": {
                    "lifeCycleStatus": "created",
                    "privacyStatus": body["status"]["privacyStatus"],
                    "recordingStatus": "notRecording",
                    "madeForKids": False,
                    "selfDeclaredMadeForKids": False,
                },
                "contentDetails": {
                    "monitorStream": {"enableMonitorStream": True, "broadcastStreamDelayMs": 0},
                    "enableEmbed": True,
                    "enableDvr": body["contentDetails"]["enableDvr"],
                    "recordFromStart": body["contentDetails"]["recordFromStart"],
                    "enableClosedCaptions": False,
                    "enableLowLatency": False,
                    "latencyPreference": "normal",
                    "projection": "rectangular",
                    "enableAutoStart": body["contentDetails"]["enableAutoStart"],
                    "enableAutoStop": body["contentDetails"]["enableAutoStop"],
                },
            }
            self.broadcasts[broadcast_id] = broadcast
            return JSONResponse(broadcast)

        @app.get(f"{API}/liveBroadcasts")
        async def list_broadcasts(part: str, broadcastStatus: str, maxResults: int, pageToken: str = "") -> Response:
            everything = list(self.broadcasts.values())
            start = int(pageToken.removeprefix("page")) if pageToken else 0
            items = everything[start : start + self.page_size]
            body: dict[str, Any] = {
                "kind": "youtube#liveBroadcastListResponse",
                "etag": "list-etag",
                "pageInfo": {"totalResults": len(everything), "resultsPerPage": self.page_size},
                "items": items,
            }
            if start + self.page_size < len(everything):
                body["nextPageToken"] = f"page{start + self.page_size}"
            return JSONResponse(body)

        @app.post(f"{API}/liveStreams")
        async def insert_stream(part: str, request: Request) -> Response:
            body = await request.json()
            stream_id = f"UCxyz0123456789abcdefghi{self.new_id('st')}"
            stream = {
                "kind": "youtube#liveStream",
                "etag": f"etag-{stream_id}",
                "id": stream_id,
                "snippet": {
                    "publishedAt": "2025-03-04T10:16:03Z",
                    "channelId": "UCxyz0123456789abcdefghi",
                    "title": body["snippet"]["title"],
                    "description": "",
                    "isDefaultStream": False,
                },
                "cdn": {
                    "ingestionType": body["cdn"]["ingestionType"],
                    "ingestionInfo": {
                        "streamName": STREAM_KEY,
                        "ingestionAddress": INGESTION,
                        "backupIngestionAddress": "rtmp://b.rtmp.youtube.com/live2?backup=1",
                        "rtmpsIngestionAddress": "rtmps://a.rtmps.youtube.com/live2",
                    },
                    "resolution": body["cdn"]["resolution"],
                    "frameRate": body["cdn"]["frameRate"],
                },
                "status": {"streamStatus": "ready", "healthStatus": {"status": "noData"}},
                "contentDetails": {"isReusable": body["contentDetails"]["isReusable"]},
            }
            self.streams[stream_id] = stream
            return JSONResponse(stream)

        @app.get(f"{API}/liveStreams")
        async def list_streams(part: str, id: str) -> Response:
            items = [self.streams[i] for i in id.split(",") if i in self.streams]
            return JSONResponse(
                {
                    "kind": "youtube#liveStreamListResponse",
                    "etag": "streams-etag",
                    "pageInfo": {"totalResults": len(items), "resultsPerPage": 5},
                    "items": items,
                }
            )

        @app.post(f"{API}/liveBroadcasts/bind")
        async def bind(id: str, part: str, streamId: str) -> Response:
            if id not in self.broadcasts:
                return google_error(404, "liveBroadcastNotFound", "Broadcast not found")
            if streamId not in self.streams:
                return google_error(404, "liveStreamNotFound", "Stream not found", "youtube.liveStream")
            broadcast = self.broadcasts[id]
            broadcast["contentDetails"]["boundStreamId"] = streamId
            broadcast["contentDetails"]["boundStreamLastUpdateTimeMs"] = "2025-03-04T10:16:04Z"
            return JSONResponse(
                {
                    "kind": "youtube#liveBroadcast",
                    "etag": "bound",
                    "id": id,
                    "contentDetails": broadcast["contentDetails"],
                }
            )

        @app.delete(f"{API}/liveBroadcasts")
        async def delete_broadcast(id: str) -> Response:
            if self.broadcasts.pop(id, None) is None:
                return google_error(404, "liveBroadcastNotFound", "Broadcast not found")
            return Response(status_code=204)

        @app.delete(f"{API}/liveStreams")
        async def delete_stream(id: str) -> Response:
            if self.streams.pop(id, None) is None:
                return google_error(404, "liveStreamNotFound", "Stream not found", "youtube.liveStream")
            return Response(status_code=204)

        return app


@pytest.fixture
def youtube() -> Iterator[FakeYouTube]:
    fake = FakeYouTube()
    with serve(fake.app) as base:
        fake.base = base
        yield fake


def make_settings(fake: FakeYouTube, *, token: str | None = None, refresh: bool = False, **extra: Any) -> Settings:
    values: dict[str, Any] = {
        "session_provider": "youtube",
        "youtube_api_url": f"{fake.base}{API}",
        "google_token_url": f"{fake.base}/token",
        "youtube_access_token": token,
        "youtube_client_id": CLIENT_ID if refresh else None,
        "youtube_client_secret": CLIENT_SECRET if refresh else None,
        "youtube_refresh_token": REFRESH_TOKEN if refresh else None,
        "youtube_privacy": "unlisted",
        "provider_timeout_seconds": 2.0,
    }
    return Settings(**(values | extra))


def static(fake: FakeYouTube, **extra: Any) -> YouTubeProvider:
    fake.valid_tokens.add(STATIC_TOKEN)
    return YouTubeProvider.from_settings(make_settings(fake, token=STATIC_TOKEN, **extra))


def request(session_id: str = "s-1", **changes: Any) -> SessionRequest:
    values: dict[str, Any] = {
        "session_id": session_id,
        "title": "Why eLearning Isn't Working for Leadership and Soft Skills",
        "description": "A 60-minute discussion of Josh Bersin's article, shared by @britz.",
        "starts_at": STARTS,
        "duration_minutes": 60,
    }
    return SessionRequest(**(values | changes))


def assert_no_secrets(text: str) -> None:
    for secret in (STATIC_TOKEN, CLIENT_SECRET, REFRESH_TOKEN, STREAM_KEY, "ya29.refreshed"):
        assert secret not in text


def created_for(fake: FakeYouTube, broadcast_id: str, privacy: str = "unlisted") -> CreatedSession:
    stream_id = fake.broadcasts[broadcast_id]["contentDetails"]["boundStreamId"]
    return CreatedSession(
        provider="youtube",
        provider_id=broadcast_id,
        join_url=f"https://www.youtube.com/watch?v={broadcast_id}",
        details={
            "broadcast_id": broadcast_id,
            "stream_id": stream_id,
            "ingestion_address": INGESTION,
            "privacy": privacy,
        },
    )


# --- create ---


async def test_create_schedules_a_recorded_broadcast_and_binds_a_new_stream(youtube: FakeYouTube) -> None:
    created = await static(youtube, youtube_privacy="private").create(request())

    calls = youtube.api()
    assert [(s.method, s.path) for s in calls] == [
        ("GET", f"{API}/liveBroadcasts"),  # a broadcast left by an earlier, interrupted create?
        ("POST", f"{API}/liveBroadcasts"),
        ("POST", f"{API}/liveStreams"),
        ("POST", f"{API}/liveBroadcasts/bind"),
    ]
    assert all(s.headers["authorization"] == f"Bearer {STATIC_TOKEN}" for s in calls)
    insert = calls[1]
    assert insert.query == {"part": "snippet,status,contentDetails"}
    assert insert.json() == {
        "snippet": {
            "title": "Why eLearning Isn't Working for Leadership and Soft Skills",
            "description": f"{request().description}\n\nimpromptu-session: s-1",
            "scheduledStartTime": "2025-03-04T10:45:00Z",
            "scheduledEndTime": "2025-03-04T11:45:00Z",
        },
        "status": {"privacyStatus": "private", "selfDeclaredMadeForKids": False},
        "contentDetails": {
            "enableAutoStart": False,
            "enableAutoStop": True,
            "recordFromStart": True,
            "enableDvr": True,
        },
    }
    stream = calls[2]
    assert stream.query == {"part": "snippet,cdn,contentDetails"}
    assert stream.json() == {
        "snippet": {"title": "Why eLearning Isn't Working for Leadership and Soft Skills"},
        "cdn": {"frameRate": "variable", "ingestionType": "rtmp", "resolution": "variable"},
        "contentDetails": {"isReusable": False},
    }
    [broadcast_id] = youtube.broadcasts
    [stream_id] = youtube.streams
    assert calls[3].query == {"id": broadcast_id, "part": "id,contentDetails", "streamId": stream_id}
    assert youtube.broadcasts[broadcast_id]["contentDetails"]["boundStreamId"] == stream_id
    assert created == created_for(youtube, broadcast_id, "private")
    assert_no_secrets(created.model_dump_json())


async def test_title_and_description_fit_youtube_limits_and_characters(youtube: FakeYouTube) -> None:
    await static(youtube).create(request(title="<b>Bold</b> " * 40, description="x" * 6000))

    body = youtube.api("POST", "/liveBroadcasts")[0].json()
    assert len(body["snippet"]["title"]) <= 100
    assert "<" not in body["snippet"]["title"] and ">" not in body["snippet"]["title"]
    assert len(body["snippet"]["description"]) <= 5000
    assert body["snippet"]["description"].endswith("\n\nimpromptu-session: s-1")


# --- credentials ---


async def test_refresh_token_buys_an_access_token_that_is_reused(youtube: FakeYouTube) -> None:
    provider = YouTubeProvider.from_settings(make_settings(youtube, refresh=True))

    await provider.create(request("s-1"))
    await provider.create(request("s-2"))

    [token] = youtube.tokens()
    assert token.method == "POST"
    assert token.headers["content-type"] == "application/x-www-form-urlencoded"
    assert dict(parse_qsl(token.body.decode(), strict_parsing=True)) == {
        "grant_type": "refresh_token",
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "refresh_token": REFRESH_TOKEN,
    }
    assert {s.headers["authorization"] for s in youtube.api()} == {"Bearer ya29.refreshed-1-SECRET"}


async def test_refused_access_token_is_refreshed_once_and_the_call_retried(youtube: FakeYouTube) -> None:
    provider = YouTubeProvider.from_settings(
        make_settings(youtube, token=STATIC_TOKEN, refresh=True)
    )  # expired: not valid

    created = await provider.create(request())

    assert len(youtube.tokens()) == 1
    auths = [s.headers["authorization"] for s in youtube.api()]
    assert auths[:2] == [f"Bearer {STATIC_TOKEN}", "Bearer ya29.refreshed-1-SECRET"]
    assert set(auths[2:]) == {"Bearer ya29.refreshed-1-SECRET"}
    assert created.provider_id in youtube.broadcasts


async def test_expired_access_token_without_refresh_is_refused_clearly(youtube: FakeYouTube) -> None:
    provider = YouTubeProvider.from_settings(make_settings(youtube, token=STATIC_TOKEN))  # not valid at the server

    with pytest.raises(ProviderRefused) as caught:
        await provider.create(request())

    reason = str(caught.value)
    assert reason.startswith("youtube: access token invalid or expired (list broadcasts: authError: ")
    assert "IMPROMPTU_YOUTUBE_ACCESS_TOKEN" in reason
    assert_no_secrets(reason)
    assert len(youtube.api()) == 1 and youtube.tokens() == []


async def test_revoked_refresh_token_asks_for_re_authorisation(youtube: FakeYouTube) -> None:
    youtube.revoked_refresh = True

    with pytest.raises(ProviderRefused) as caught:
        await YouTubeProvider.from_settings(make_settings(youtube, refresh=True)).create(request())

    reason = str(caught.value)
    assert reason.startswith("youtube: refresh token expired or revoked: re-authorise")
    assert "Token has been expired or revoked." in reason
    assert_no_secrets(reason)
    assert youtube.api() == []


async def test_wrong_client_secret_is_refused_without_echoing_it(youtube: FakeYouTube) -> None:
    provider = YouTubeProvider.from_settings(
        make_settings(youtube, refresh=True, youtube_client_secret="GOCSPX-wrong-one")
    )

    with pytest.raises(ProviderRefused, match="token refresh refused \\(invalid_client: Unauthorized\\)") as caught:
        await provider.create(request())

    assert "GOCSPX-wrong-one" not in str(caught.value)


async def test_no_credentials_is_refused_before_any_request(youtube: FakeYouTube) -> None:
    with pytest.raises(ProviderRefused) as caught:
        await YouTubeProvider.from_settings(make_settings(youtube)).create(request())

    reason = str(caught.value)
    assert reason.startswith("youtube: no credentials: set IMPROMPTU_YOUTUBE_ACCESS_TOKEN or ")
    assert "IMPROMPTU_YOUTUBE_CLIENT_ID/CLIENT_SECRET/REFRESH_TOKEN" in reason
    assert youtube.seen == []


# --- errors ---


async def test_quota_exceeded_is_refused_until_midnight_pacific(youtube: FakeYouTube) -> None:
    message = "The request cannot be completed because you have exceeded your quota."
    youtube.fail("POST", f"{API}/liveBroadcasts", google_error(403, "quotaExceeded", message, "youtube.quota"))

    with pytest.raises(ProviderRefused) as caught:
        await static(youtube).create(request())

    reason = str(caught.value)
    assert reason.startswith("youtube: daily API quota exceeded; resets at midnight Pacific time")
    assert message in reason
    assert_no_secrets(reason)


@pytest.mark.parametrize(
    ("status", "reason", "expected"),
    [
        (403, "liveStreamingNotEnabled", "live streaming is not enabled for this channel"),
        (403, "insufficientPermissions", "not allowed (insufficientPermissions: "),
        (400, "invalidScheduledStartTime", "refused (HTTP 400, invalidScheduledStartTime: "),
        (400, "invalidDescription", "refused (HTTP 400, invalidDescription: "),
    ],
)
async def test_youtube_refusals_name_its_reason(youtube: FakeYouTube, status: int, reason: str, expected: str) -> None:
    youtube.fail("POST", f"{API}/liveBroadcasts", google_error(status, reason, f"The request failed: {reason}."))

    with pytest.raises(ProviderRefused) as caught:
        await static(youtube).create(request())

    assert str(caught.value).startswith("youtube: create broadcast")
    assert expected in str(caught.value)


async def test_rate_limit_is_retryable(youtube: FakeYouTube) -> None:
    youtube.fail("POST", f"{API}/liveBroadcasts", google_error(403, "userRateLimitExceeded", "Rate Limit Exceeded"))

    with pytest.raises(RetryableError, match="create broadcast: rate limited \\(userRateLimitExceeded"):
        await static(youtube).create(request())


@pytest.mark.parametrize("status", [500, 503])
async def test_server_errors_are_retryable(youtube: FakeYouTube, status: int) -> None:
    youtube.fail("POST", f"{API}/liveStreams", google_error(status, "backendError", "Backend Error", "global"))

    with pytest.raises(RetryableError, match=f"youtube: create stream: YouTube answered HTTP {status}"):
        await static(youtube).create(request())


async def test_token_endpoint_down_is_retryable(youtube: FakeYouTube) -> None:
    youtube.fail("POST", "/token", Response("<html>503</html>", 503))

    with pytest.raises(RetryableError, match="youtube: token refresh: Google answered HTTP 503"):
        await YouTubeProvider.from_settings(make_settings(youtube, refresh=True)).create(request())


async def test_timeout_is_retryable(youtube: FakeYouTube) -> None:
    youtube.delay = 0.5

    with pytest.raises(RetryableError, match="youtube: list broadcasts: no answer within 0.1 s"):
        await static(youtube, provider_timeout_seconds=0.1).create(request())


async def test_unreachable_api_is_retryable() -> None:
    fake = FakeYouTube(base=f"http://127.0.0.1:{free_port()}")

    with pytest.raises(RetryableError, match="could not reach 127.0.0.1"):
        await YouTubeProvider.from_settings(make_settings(fake, token=STATIC_TOKEN)).create(request())


async def test_non_json_success_is_refused_as_unexpected(youtube: FakeYouTube) -> None:
    youtube.fail("POST", f"{API}/liveBroadcasts", Response("<html>Sign in</html>", 200, media_type="text/html"))

    with pytest.raises(ProviderRefused, match="youtube: unexpected response to create broadcast \\(HTTP 200, not JSON"):
        await static(youtube).create(request())


async def test_stream_without_id_is_refused_without_quoting_the_stream_key(youtube: FakeYouTube) -> None:
    body = {"kind": "youtube#liveStream", "cdn": {"ingestionInfo": {"streamName": STREAM_KEY}}}
    youtube.fail("POST", f"{API}/liveStreams", JSONResponse(body))

    with pytest.raises(ProviderRefused) as caught:
        await static(youtube).create(request())

    assert str(caught.value) == "youtube: unexpected response to create stream (HTTP 200): id: Field required"


# --- an interrupted create is finished, not repeated ---


async def test_create_after_a_failed_bind_binds_the_existing_broadcast(youtube: FakeYouTube) -> None:
    provider = static(youtube)
    youtube.fail("POST", f"{API}/liveBroadcasts/bind", google_error(503, "backendError", "Backend Error", "global"))
    with pytest.raises(RetryableError):
        await provider.create(request())
    [broadcast_id] = youtube.broadcasts
    assert "boundStreamId" not in youtube.broadcasts[broadcast_id]["contentDetails"]

    created = await provider.create(request())

    assert len(youtube.api("POST", "/liveBroadcasts")) == 1  # exactly one broadcast, ever
    assert list(youtube.broadcasts) == [broadcast_id]
    assert created == created_for(youtube, broadcast_id)


async def test_find_after_a_failed_stream_insert_finds_and_completes_the_broadcast(youtube: FakeYouTube) -> None:
    provider = static(youtube)
    youtube.fail("POST", f"{API}/liveStreams", google_error(500, "backendError", "Backend Error", "global"))
    with pytest.raises(RetryableError):
        await provider.create(request())

    found = await provider.find(request())

    [broadcast_id] = youtube.broadcasts
    assert found == created_for(youtube, broadcast_id)
    assert len(youtube.api("POST", "/liveBroadcasts")) == 1
    assert len(youtube.streams) == 1


async def test_find_follows_pages_to_the_marked_broadcast_and_ignores_others(youtube: FakeYouTube) -> None:
    provider = static(youtube)
    await provider.create(request("s-10"))  # its marker starts with the wanted one's: must not match
    await provider.create(request("other"))
    made = await provider.create(request("s-1"))
    await provider.create(request("s-2"))
    youtube.seen.clear()

    found = await provider.find(request("s-1"))

    assert found == made
    lists = youtube.api("GET", "/liveBroadcasts")
    assert [s.query for s in lists] == [
        {"part": "snippet,contentDetails,status", "broadcastStatus": "upcoming", "maxResults": "50"},
        {
            "part": "snippet,contentDetails,status",
            "broadcastStatus": "upcoming",
            "maxResults": "50",
            "pageToken": "page2",
        },
    ]
    [read] = youtube.api("GET", "/liveStreams")  # the bound stream, for its ingestion address
    assert read.query == {"part": "id,cdn", "id": made.details["stream_id"]}
    assert youtube.api("POST") == []  # found, nothing made


async def test_find_returns_none_when_nothing_is_marked(youtube: FakeYouTube) -> None:
    provider = static(youtube)
    await provider.create(request("other"))

    assert await provider.find(request("s-1")) is None


# --- cancel ---


async def test_cancel_deletes_broadcast_and_stream_and_a_second_cancel_is_fine(youtube: FakeYouTube) -> None:
    provider = static(youtube)
    created = await provider.create(request())

    await provider.cancel(created)
    await provider.cancel(created)  # 404 liveBroadcastNotFound, liveStreamNotFound: already done

    deletes = youtube.api("DELETE")
    assert [(s.path, s.query) for s in deletes] == [
        (f"{API}/liveBroadcasts", {"id": created.provider_id}),
        (f"{API}/liveStreams", {"id": created.details["stream_id"]}),
    ] * 2
    assert all(s.headers["authorization"] == f"Bearer {STATIC_TOKEN}" for s in deletes)
    assert youtube.broadcasts == {} and youtube.streams == {}


async def test_cancel_refused_otherwise_is_reported(youtube: FakeYouTube) -> None:
    provider = static(youtube)
    created = await provider.create(request())
    youtube.fail("DELETE", f"{API}/liveBroadcasts", google_error(403, "liveBroadcastDeletionNotAllowed", "Not allowed"))

    with pytest.raises(ProviderRefused, match="delete liveBroadcasts .*liveBroadcastDeletionNotAllowed"):
        await provider.cancel(created)


# --- preview ---


async def test_preview_says_privacy_schedule_and_recording(youtube: FakeYouTube) -> None:
    preview = static(youtube, youtube_privacy="public").preview(request())

    assert preview.provider == "youtube"
    assert preview.summary == "YouTube Live broadcast (public), recorded from the start"
    assert preview.details == {
        "start": "2025-03-04T10:45:00Z",
        "end": "2025-03-04T11:45:00Z",
        "privacy": "public",
        "recording": "from the start, DVR on",
    }
    assert youtube.seen == []
    assert_no_secrets(preview.model_dump_json())
