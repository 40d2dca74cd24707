"""The Zoom adapter against a local server that answers as Zoom's REST API v2 and OAuth endpoint document.

Payloads follow Zoom's reference (POST /users/{userId}/meetings, GET /users/{userId}/meetings, DELETE
/meetings/{meetingId}, POST https://zoom.us/oauth/token with grant_type=account_credentials) and its error body
{"code", "message"}; the server records every request so tests assert on what really went over HTTP.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from pipeline.embedded import free_port
from pipeline.errors import RetryableError
from pipeline.providers import CreatedSession, ProviderRefused, SessionRequest
from pipeline.providers.http import ProviderBusy
from pipeline.providers.zoom import ZoomProvider
from pipeline.settings import Settings
from tests.peers import serve

STATIC_TOKEN = "eyJzdGF0aWMtdG9rZW4tc2VjcmV0In0.static-secret"
ACCOUNT_ID = "lAAAAAAAAAAAAA"
CLIENT_ID = "zoom-client-id"
CLIENT_SECRET = "zoom-client-secret-VERY-SECRET"
START_URL = "https://us05web.zoom.us/s/85746065432?zak=eyJ0eXAiOiJKV1QiLCJzdiI6IjAwMDAwMSIsInNlY3JldCI6InNlY3JldCJ9"
PASSWORD = "Xy7pQ2"
STARTS = datetime(2025, 3, 4, 10, 45, tzinfo=UTC)


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class FakeZoom:
    """Zoom as documented: OAuth token endpoint, meetings API with paging, error bodies {"code", "message"}."""

    base: str = ""
    page_size: int = 2  # small pages, so listing takes several requests
    expires_in: int = 3599
    seen: list[Seen] = field(default_factory=list)
    meetings: dict[int, dict[str, Any]] = field(default_factory=dict)
    valid_tokens: set[str] = field(default_factory=set)
    issued: list[str] = field(default_factory=list)
    canned: dict[tuple[str, str], list[Response]] = field(default_factory=dict)
    delay: float = 0.0

    def fail(self, method: str, path: str, response: Response) -> None:
        """The next `method path` request gets `response` instead of the real answer."""
        self.canned.setdefault((method, path), []).append(response)

    def api(self) -> list[Seen]:
        return [s for s in self.seen if s.path.startswith("/v2/")]

    def tokens(self) -> list[Seen]:
        return [s for s in self.seen if s.path == "/oauth/token"]

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
            if request.url.path.startswith("/v2/"):
                auth = request.headers.get("authorization", "")
                if not auth.startswith("Bearer ") or auth.removeprefix("Bearer ") not in self.valid_tokens:
                    return JSONResponse({"code": 124, "message": "Invalid access token."}, status_code=401)
            return await call_next(request)

        @app.post("/oauth/token")
        async def token(request: Request) -> Response:
            expected = base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
            if request.headers.get("authorization") != f"Basic {expected}":
                return JSONResponse({"reason": "Invalid client_id or client_secret", "error": "invalid_client"}, 400)
            if request.query_params.get("account_id") != ACCOUNT_ID:
                return JSONResponse({"reason": "Invalid account_id", "error": "invalid_request"}, 400)
            access = f"s2s-token-{len(self.issued) + 1}-SECRET"
            self.issued.append(access)
            self.valid_tokens.add(access)
            return JSONResponse(
                {
                    "access_token": access,
                    "token_type": "bearer",
                    "expires_in": self.expires_in,
                    "scope": "meeting:write:admin meeting:read:admin",
                }
            )

        @app.post("/v2/users/{user}/meetings")
        async def create(user: str, request: Request) -> Response:
            if user not in ("me", "host@example.com"):
                return JSONResponse({"code": 1001, "message": f"User does not exist: {user}."}, 404)
            body = await request.json()
            meeting_id = 85746065432 + len(self.meetings)
            meeting = {
                "uuid": f"iEqdh9H+Q{meeting_id}==",
                "id": meeting_id,
                "host_id": "30R7kT7bTIKSNUFEuH_Qlg",
                "host_email": "host@example.com",
                "topic": body["topic"],
                "type": body["type"],
                "status": "waiting",
                "start_time": body["start_time"],
                "duration": body["duration"],
                "timezone": body["timezone"],
                "agenda": body["agenda"],
                "created_at": "2025-03-04T10:16:02Z",
                "start_url": START_URL,
                "join_url": f"https://us05web.zoom.us/j/{meeting_id}?pwd=aBcD1234",
                "password": PASSWORD,
                "h323_password": "123456",
                "pstn_password": "123456",
                "encrypted_password": "aBcD1234",
                "settings": {
                    "host_video": False,
                    "participant_video": False,
                    "join_before_host": body["settings"]["join_before_host"],
                    "waiting_room": body["settings"]["waiting_room"],
                    "auto_recording": body["settings"]["auto_recording"],
                    "mute_upon_entry": False,
                    "approval_type": 2,
                    "audio": "voip",
                },
                "pre_schedule": False,
            }
            self.meetings[meeting_id] = meeting
            return JSONResponse(meeting, status_code=201)

        @app.get("/v2/users/{user}/meetings")
        async def listing(user: str, type: str, page_size: int, next_page_token: str = "") -> Response:
            everything = sorted(self.meetings.values(), key=lambda m: m["id"])
            start = int(next_page_token.removeprefix("tok")) if next_page_token else 0
            page = everything[start : start + self.page_size]
            more = start + self.page_size < len(everything)
            keys = ("uuid", "id", "host_id", "topic", "type", "start_time", "duration", "timezone", "created_at")
            items = [{k: m[k] for k in keys} | {"agenda": m["agenda"][:250], "join_url": m["join_url"]} for m in page]
            return JSONResponse(
                {
                    "page_size": self.page_size,
                    "total_records": len(everything),
                    "next_page_token": f"tok{start + self.page_size}" if more else "",
                    "meetings": items,
                }
            )

        @app.delete("/v2/meetings/{meeting_id}")
        async def delete(meeting_id: int) -> Response:
            if self.meetings.pop(meeting_id, None) is None:
                return JSONResponse({"code": 3001, "message": f"Meeting does not exist: {meeting_id}."}, 404)
            return Response(status_code=204)

        return app


@pytest.fixture
def zoom() -> Iterator[FakeZoom]:
    fake = FakeZoom()
    with serve(fake.app) as base:
        fake.base = base
        yield fake


def make_settings(fake: FakeZoom, *, token: str | None = None, s2s: bool = False, **extra: Any) -> Settings:
    values: dict[str, Any] = {
        "session_provider": "zoom",
        "zoom_api_url": f"{fake.base}/v2",
        "zoom_oauth_url": f"{fake.base}/oauth/token",
        "zoom_user": "me",
        "zoom_access_token": token,
        "zoom_account_id": ACCOUNT_ID if s2s else None,
        "zoom_client_id": CLIENT_ID if s2s else None,
        "zoom_client_secret": CLIENT_SECRET if s2s else None,
        "provider_timeout_seconds": 2.0,
    }
    return Settings(**(values | extra))


def static(fake: FakeZoom, **extra: Any) -> ZoomProvider:
    fake.valid_tokens.add(STATIC_TOKEN)
    return ZoomProvider.from_settings(make_settings(fake, token=STATIC_TOKEN, **extra))


def request(session_id: str = "s-1", **changes: Any) -> SessionRequest:
    values: dict[str, Any] = {
        "session_id": session_id,
        "title": "Why eLearning Isn't Working for Leadership and Soft Skills",
        "description": "A 60-minute discussion of Josh Bersin's article, shared by @britz.",
        "starts_at": STARTS,
        "duration_minutes": 60,
        "timezone": "Europe/Berlin",
    }
    return SessionRequest(**(values | changes))


def assert_no_secrets(text: str, *also: str) -> None:
    for secret in (STATIC_TOKEN, CLIENT_SECRET, START_URL, "zak=", PASSWORD, "s2s-token", *also):
        assert secret not in text


# --- create ---


async def test_create_schedules_a_recorded_meeting_with_the_marker_in_its_agenda(zoom: FakeZoom) -> None:
    created = await static(zoom).create(request())

    [seen] = zoom.api()
    assert (seen.method, seen.path) == ("POST", "/v2/users/me/meetings")
    assert seen.headers["authorization"] == f"Bearer {STATIC_TOKEN}"
    body = seen.json()
    assert body["topic"] == "Why eLearning Isn't Working for Leadership and Soft Skills"
    assert body["type"] == 2
    assert body["start_time"] == "2025-03-04T10:45:00Z"
    assert body["duration"] == 60
    assert body["timezone"] == "Europe/Berlin"
    assert body["agenda"].splitlines()[0] == "impromptu-session: s-1"
    assert "Josh Bersin's article" in body["agenda"]
    assert body["settings"] == {"auto_recording": "cloud", "join_before_host": False, "waiting_room": False}

    [meeting] = zoom.meetings.values()
    assert created == CreatedSession(
        provider="zoom",
        provider_id=str(meeting["id"]),
        join_url=meeting["join_url"],
        details={"meeting_id": str(meeting["id"]), "recording": "cloud"},
    )
    assert_no_secrets(created.model_dump_json())


async def test_long_title_and_description_are_cut_to_zoom_limits_keeping_the_marker(zoom: FakeZoom) -> None:
    await static(zoom).create(request(title="T" * 500, description="word " * 1000))

    body = zoom.api()[0].json()
    assert len(body["topic"]) == 200
    assert len(body["agenda"]) <= 2000
    assert "impromptu-session: s-1" in body["agenda"].splitlines()


async def test_host_named_by_email_is_used_in_the_path(zoom: FakeZoom) -> None:
    await static(zoom, zoom_user="host@example.com").create(request())

    assert zoom.api()[0].path == "/v2/users/host@example.com/meetings"


async def test_naive_start_is_taken_as_utc(zoom: FakeZoom) -> None:
    await static(zoom).create(request(starts_at=datetime(2025, 3, 4, 10, 45)))

    assert zoom.api()[0].json()["start_time"] == "2025-03-04T10:45:00Z"


# --- credentials ---


async def test_server_to_server_token_is_fetched_once_and_reused(zoom: FakeZoom) -> None:
    provider = ZoomProvider.from_settings(make_settings(zoom, s2s=True))

    await provider.create(request("s-1"))
    await provider.create(request("s-2"))

    [token_request] = zoom.tokens()
    assert token_request.method == "POST"
    assert token_request.query == {"grant_type": "account_credentials", "account_id": ACCOUNT_ID}
    expected = base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
    assert token_request.headers["authorization"] == f"Basic {expected}"
    assert [s.headers["authorization"] for s in zoom.api()] == ["Bearer s2s-token-1-SECRET"] * 2


async def test_token_close_to_expiry_is_renewed_before_use(zoom: FakeZoom) -> None:
    zoom.expires_in = 30  # within the renewal margin: never worth reusing
    provider = ZoomProvider.from_settings(make_settings(zoom, s2s=True))

    await provider.create(request("s-1"))
    await provider.create(request("s-2"))

    assert len(zoom.tokens()) == 2
    assert [s.headers["authorization"] for s in zoom.api()] == [
        "Bearer s2s-token-1-SECRET",
        "Bearer s2s-token-2-SECRET",
    ]


async def test_expired_token_code_124_is_renewed_once_and_the_call_retried(zoom: FakeZoom) -> None:
    provider = ZoomProvider.from_settings(make_settings(zoom, s2s=True))
    await provider.create(request("s-1"))
    zoom.valid_tokens.clear()  # Zoom revoked it early (the app was re-activated, a new token was issued elsewhere)

    created = await provider.create(request("s-2"))

    assert len(zoom.tokens()) == 2
    assert [s.headers["authorization"] for s in zoom.api()] == [
        "Bearer s2s-token-1-SECRET",
        "Bearer s2s-token-1-SECRET",
        "Bearer s2s-token-2-SECRET",
    ]
    assert len(zoom.meetings) == 2
    assert created.provider_id == str(max(zoom.meetings))


async def test_a_static_token_is_replaced_by_server_to_server_when_refused(zoom: FakeZoom) -> None:
    provider = ZoomProvider.from_settings(
        make_settings(zoom, token=STATIC_TOKEN, s2s=True)
    )  # not in valid_tokens: expired

    await provider.create(request())

    assert [s.headers["authorization"] for s in zoom.api()] == [f"Bearer {STATIC_TOKEN}", "Bearer s2s-token-1-SECRET"]


async def test_expired_static_token_without_credentials_is_refused_clearly(zoom: FakeZoom) -> None:
    provider = ZoomProvider.from_settings(make_settings(zoom, token=STATIC_TOKEN))  # Zoom no longer accepts it

    with pytest.raises(ProviderRefused) as caught:
        await provider.create(request())

    reason = str(caught.value)
    assert reason.startswith("zoom: access token expired or invalid (code 124): Invalid access token.")
    assert "IMPROMPTU_ZOOM_ACCESS_TOKEN" in reason
    assert_no_secrets(reason)
    assert len(zoom.api()) == 1 and not zoom.tokens()  # nothing to renew it with: no second try


async def test_a_freshly_fetched_token_refused_again_is_not_retried_forever(zoom: FakeZoom) -> None:
    provider = ZoomProvider.from_settings(make_settings(zoom, s2s=True))
    expired = json.dumps({"code": 124, "message": "Access token is expired."})
    for _ in range(2):
        zoom.fail("POST", "/v2/users/me/meetings", Response(expired, 401, media_type="application/json"))

    with pytest.raises(ProviderRefused, match=r"code 124\): Access token is expired\.") as caught:
        await provider.create(request())

    assert len(zoom.api()) == 2 and len(zoom.tokens()) == 2
    assert_no_secrets(str(caught.value))


async def test_no_credentials_at_all_is_refused_before_any_request(zoom: FakeZoom) -> None:
    provider = ZoomProvider.from_settings(make_settings(zoom))

    with pytest.raises(ProviderRefused) as caught:
        await provider.create(request())

    reason = str(caught.value)
    assert reason.startswith("zoom: no credentials: ")
    assert "set IMPROMPTU_ZOOM_ACCESS_TOKEN or IMPROMPTU_ZOOM_ACCOUNT_ID/CLIENT_ID/CLIENT_SECRET" in reason
    assert zoom.seen == []


async def test_wrong_client_secret_is_refused_without_echoing_it(zoom: FakeZoom) -> None:
    provider = ZoomProvider.from_settings(make_settings(zoom, s2s=True, zoom_client_secret="wrong-secret-value"))

    with pytest.raises(ProviderRefused) as caught:
        await provider.create(request())

    reason = str(caught.value)
    assert "could not get an access token (invalid_client: Invalid client_id or client_secret)" in reason
    assert "wrong-secret-value" not in reason
    assert zoom.api() == []


# --- errors ---


def zoom_error(status: int, code: int, message: str, **headers: str) -> Response:
    return Response(json.dumps({"code": code, "message": message}), status, headers, media_type="application/json")


async def test_daily_rate_limit_is_refused_with_when_it_resets(zoom: FakeZoom) -> None:
    message = (
        "You have exceeded the daily rate limit (100) of Meeting Create/Update API requests permitted for this "
        "particular user. You may resume these requests at GMT 00:00:00."
    )
    headers = {
        "X-RateLimit-Type": "Daily-limit",
        "X-RateLimit-Category": "Light",
        "Retry-After": "2025-03-05T00:00:00Z",
    }
    zoom.fail("POST", "/v2/users/me/meetings", zoom_error(429, 429, message, **headers))

    with pytest.raises(ProviderRefused) as caught:
        await static(zoom).create(request())

    reason = str(caught.value)
    assert reason.startswith("zoom: create meeting: daily API quota reached")
    assert "resets at 2025-03-05T00:00:00Z" in reason
    assert_no_secrets(reason)


async def test_daily_limit_without_headers_is_still_recognised(zoom: FakeZoom) -> None:
    zoom.fail("POST", "/v2/users/me/meetings", zoom_error(429, 429, "You have exceeded the daily rate limit (100)."))

    with pytest.raises(ProviderRefused, match="quota reached .* resets at 00:00 UTC"):
        await static(zoom).create(request())


async def test_per_second_rate_limit_is_retryable_after_the_given_wait(zoom: FakeZoom) -> None:
    message = "You have reached the maximum per-second rate limit for this API. Try again later."
    zoom.fail("POST", "/v2/users/me/meetings", zoom_error(429, 429, message, **{"X-RateLimit-Type": "QPS"}))
    zoom.fail("POST", "/v2/users/me/meetings", zoom_error(429, 429, message, **{"Retry-After": "2"}))
    provider = static(zoom)

    with pytest.raises(RetryableError, match="zoom: create meeting: per-second rate limit \\(QPS\\)"):
        await provider.create(request())
    with pytest.raises(ProviderBusy) as caught:
        await provider.create(request())

    assert caught.value.retry_after == 2.0
    assert not isinstance(caught.value, ProviderRefused)


@pytest.mark.parametrize(
    ("status", "code", "message"),
    [
        (400, 300, "Invalid meeting id."),
        (404, 1001, "User does not exist: nobody@example.com."),
        (400, 4711, "Invalid access token, does not contain scopes:[meeting:write:admin]."),
    ],
)
async def test_zoom_refusals_carry_its_code_and_message(zoom: FakeZoom, status: int, code: int, message: str) -> None:
    zoom.fail("POST", "/v2/users/me/meetings", zoom_error(status, code, message))

    with pytest.raises(ProviderRefused) as caught:
        await static(zoom).create(request())

    assert f"code {code}" in str(caught.value) and message in str(caught.value)


async def test_unknown_user_is_refused_by_zoom_itself(zoom: FakeZoom) -> None:
    with pytest.raises(ProviderRefused, match="HTTP 404, code 1001\\): User does not exist: nobody@example.com"):
        await static(zoom, zoom_user="nobody@example.com").create(request())


@pytest.mark.parametrize("status", [500, 502, 503, 504])
async def test_server_errors_are_retryable(zoom: FakeZoom, status: int) -> None:
    zoom.fail("POST", "/v2/users/me/meetings", Response("<html>Bad gateway</html>", status, media_type="text/html"))

    with pytest.raises(RetryableError, match=f"zoom: create meeting: Zoom answered HTTP {status}"):
        await static(zoom).create(request())


async def test_timeout_is_retryable(zoom: FakeZoom) -> None:
    zoom.delay = 0.5
    provider = static(zoom, provider_timeout_seconds=0.1)

    with pytest.raises(RetryableError, match="zoom: create meeting: no answer within 0.1 s"):
        await provider.create(request())


async def test_unreachable_server_is_retryable() -> None:
    fake = FakeZoom(base=f"http://127.0.0.1:{free_port()}")

    with pytest.raises(RetryableError, match="could not reach 127.0.0.1") as caught:
        await ZoomProvider.from_settings(make_settings(fake, token=STATIC_TOKEN)).create(request())

    assert_no_secrets(str(caught.value))


async def test_non_json_success_is_refused_as_unexpected(zoom: FakeZoom) -> None:
    zoom.fail("POST", "/v2/users/me/meetings", Response("<html>Welcome to our proxy</html>", 201))

    with pytest.raises(ProviderRefused, match="zoom: unexpected response to create meeting \\(HTTP 201, not JSON"):
        await static(zoom).create(request())


async def test_malformed_meeting_is_refused_without_quoting_its_secrets(zoom: FakeZoom) -> None:
    body = {"id": "not-a-number", "start_url": START_URL, "password": PASSWORD}
    zoom.fail("POST", "/v2/users/me/meetings", JSONResponse(body, 201))

    with pytest.raises(ProviderRefused) as caught:
        await static(zoom).create(request())

    reason = str(caught.value)
    assert reason.startswith("zoom: unexpected response to create meeting (HTTP 201): id:")
    assert "join_url: Field required" in reason
    assert_no_secrets(reason)


# --- find ---


async def test_find_follows_pages_to_the_meeting_with_the_marker_and_ignores_others(zoom: FakeZoom) -> None:
    provider = static(zoom)
    await provider.create(request("s-10"))  # its marker starts with the wanted one's: must not match
    await provider.create(request("other"))
    long_description = "A long agenda. " * 100  # the list shortens agendas; the marker is on the first line
    made = await provider.create(request("s-1", description=long_description))
    await provider.create(request("s-2"))
    zoom.seen.clear()

    found = await provider.find(request("s-1"))

    assert found == made
    pages = zoom.api()
    assert [(s.method, s.path) for s in pages] == [("GET", "/v2/users/me/meetings")] * 2
    assert pages[0].query == {"type": "upcoming", "page_size": "300"}
    assert pages[1].query == {"type": "upcoming", "page_size": "300", "next_page_token": "tok2"}
    assert all(s.headers["authorization"] == f"Bearer {STATIC_TOKEN}" for s in pages)


async def test_find_returns_none_when_no_meeting_has_the_marker(zoom: FakeZoom) -> None:
    provider = static(zoom)
    for session_id in ("a", "b", "c"):
        await provider.create(request(session_id))

    assert await provider.find(request("s-1")) is None
    assert len([s for s in zoom.api() if s.method == "GET"]) == 2


async def test_find_maps_errors_like_create(zoom: FakeZoom) -> None:
    zoom.fail("GET", "/v2/users/me/meetings", Response("", 503))

    with pytest.raises(RetryableError, match="zoom: list meetings: Zoom answered HTTP 503"):
        await static(zoom).find(request())


# --- cancel ---


async def test_cancel_deletes_the_meeting_and_a_second_cancel_is_fine(zoom: FakeZoom) -> None:
    provider = static(zoom)
    created = await provider.create(request())

    await provider.cancel(created)
    await provider.cancel(created)  # 404 code 3001: already gone

    deletes = [s for s in zoom.api() if s.method == "DELETE"]
    assert [s.path for s in deletes] == [f"/v2/meetings/{created.provider_id}"] * 2
    assert deletes[0].headers["authorization"] == f"Bearer {STATIC_TOKEN}"
    assert zoom.meetings == {}


async def test_cancel_failing_otherwise_is_reported(zoom: FakeZoom) -> None:
    provider = static(zoom)
    created = await provider.create(request())
    zoom.fail("DELETE", f"/v2/meetings/{created.provider_id}", zoom_error(400, 3000, "Cannot access meeting info."))

    with pytest.raises(ProviderRefused, match="delete meeting .* code 3000\\): Cannot access meeting info"):
        await provider.cancel(created)


async def test_cancel_of_another_providers_session_is_refused(zoom: FakeZoom) -> None:
    jitsi = CreatedSession(provider="jitsi", provider_id="Impromptu-x", join_url="https://meet.jit.si/Impromptu-x")

    with pytest.raises(ProviderRefused, match="cannot cancel a jitsi session"):
        await static(zoom).cancel(jitsi)
    assert zoom.seen == []


# --- preview ---


async def test_preview_says_who_hosts_and_that_recording_is_on(zoom: FakeZoom) -> None:
    provider = static(zoom, zoom_user="host@example.com")

    preview = provider.preview(request())

    assert preview.provider == "zoom"
    assert preview.summary == "Zoom meeting hosted by host@example.com, cloud recording on"
    assert preview.details == {
        "start": "2025-03-04T10:45:00Z",
        "duration": "60 minutes",
        "timezone": "Europe/Berlin",
        "recording": "cloud",
    }
    assert zoom.seen == []  # nothing is created, or even asked, before approval
    assert_no_secrets(preview.model_dump_json())


async def test_a_secret_echoed_by_the_provider_is_scrubbed_from_the_reason(zoom: FakeZoom) -> None:
    zoom.fail("POST", "/v2/users/me/meetings", zoom_error(400, 300, f"Bad header: Bearer {STATIC_TOKEN}"))

    with pytest.raises(ProviderRefused) as caught:
        await static(zoom).create(request())

    assert str(caught.value) == "zoom: create meeting refused (HTTP 400, code 300): Bad header: Bearer ***"
