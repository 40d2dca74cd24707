"""POST /webhooks/zoom with Zoom's documented bodies (tests/fixtures/zoom), signed as Zoom signs them, against the
FastAPI app and a real nats-server: the validation challenge, each file type, a bad signature, an old timestamp,
a duplicate event (one message on impromptu.recordings), a meeting that is not ours.

Fixtures: recording_completed.json and recording_transcript_completed.json are Zoom's examples; url_validation.json
its validation example; recording_completed_all_types.json is the documented example with a TRANSCRIPT, a CHAT, a
TIMELINE (skipped) and a gallery-view MP4 (the shared screen with speaker view is preferred) added in the same shape.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from faststream.nats import NatsBroker
from pydantic import SecretStr
from structlog.testing import capture_logs

from pipeline import bus, stores
from pipeline.archive import zoom
from pipeline.domain.sessions import provider_key
from pipeline.messages import Recording, ScheduledSession
from pipeline.settings import Settings
from pipeline.web.server import create_web_app
from tests.integration.bus_helpers import messages_on, models_on
from tests.unit.conftest import make_session

pytestmark = pytest.mark.nats

FIXTURES = Path(__file__).parent.parent / "fixtures" / "zoom"
SECRET = "zoom-app-secret-token-never-logged"
MEETING_ID = "1234567890"


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def zoom_headers(body: bytes, secret: str = SECRET, timestamp: int | None = None) -> dict[str, str]:
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    digest = hmac.new(secret.encode(), f"v0:{stamp}:".encode() + body, hashlib.sha256).hexdigest()
    return {"x-zm-request-timestamp": stamp, "x-zm-signature": f"v0={digest}", "content-type": "application/json"}


@pytest.fixture
def zoom_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"zoom_webhook_secret": SecretStr(SECRET)})


@pytest.fixture
async def http(zoom_settings: Settings, client: NatsBroker) -> AsyncIterator[httpx.AsyncClient]:
    app = create_web_app(zoom_settings, client)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://impromptu.test") as http:
        yield http


@pytest.fixture
async def zoom_session(client: NatsBroker) -> ScheduledSession:
    """Our Zoom session for meeting 1234567890, kept as the actions stage keeps it."""
    session = make_session().model_copy(update={"provider": "zoom", "provider_id": MEETING_ID})
    kv = await stores.bucket(client, stores.SESSIONS)
    await kv.put(session.id, session.model_dump_json().encode())
    await kv.put(provider_key("zoom", MEETING_ID), session.id.encode())
    return session


async def recordings(client: NatsBroker) -> list[Recording]:
    return await models_on(client, bus.RECORDINGS.subject, Recording)


async def test_the_validation_challenge_is_answered_with_the_hmac_of_the_plain_token(http: httpx.AsyncClient) -> None:
    body = fixture("url_validation.json")
    answer = await http.post("/webhooks/zoom", content=body, headers=zoom_headers(body))
    assert answer.status_code == 200
    expected = hmac.new(SECRET.encode(), b"qgg8vlvZRS6UYooatFL8Aw", hashlib.sha256).hexdigest()
    assert answer.json() == {"plainToken": "qgg8vlvZRS6UYooatFL8Aw", "encryptedToken": expected}


async def test_an_unsigned_validation_is_refused_so_it_cannot_sign_what_an_attacker_chooses(
    http: httpx.AsyncClient,
) -> None:
    forged = json.dumps({"event": "endpoint.url_validation", "payload": {"plainToken": "v0:1700000000:{}"}}).encode()
    answer = await http.post("/webhooks/zoom", content=forged, headers={"content-type": "application/json"})
    assert answer.status_code == 401
    assert "encryptedToken" not in answer.text


async def test_recording_completed_becomes_one_recording_and_the_token_stays_off_the_bus(
    http: httpx.AsyncClient, client: NatsBroker, zoom_session: ScheduledSession
) -> None:
    body = fixture("recording_completed.json")
    token = json.loads(body)["download_token"]
    with capture_logs() as logs:
        answer = await http.post("/webhooks/zoom", content=body, headers=zoom_headers(body))
    assert answer.status_code == 200, answer.text
    assert answer.json()["duplicate"] is False

    [recording] = await recordings(client)
    assert recording.id == answer.json()["id"]
    assert recording.session.id == zoom_session.id and recording.source == "zoom"
    kinds = {f.kind: f for f in recording.files}
    assert set(kinds) == {"video", "audio"}
    assert kinds["video"].location == "https://example.com/recording/download/Qg75t7xZBtEbAkjdlgbfdngCCCC"
    assert kinds["video"].size == 282825 and kinds["video"].credential == "zoom"
    assert kinds["audio"].location == "https://example.com/recording/download/Qg75t7xZBtEbAkjdlgbfdngBBBB"
    assert recording.duration_seconds == 3644  # 22:14:57 -> 23:15:41, the recording's own times
    # the token is in KV under the recording's download_key, never on the bus nor in a log line
    assert recording.download_key
    kept = await (await stores.bucket(client, stores.DOWNLOADS)).get(recording.download_key)
    assert kept.value == token.encode()
    assert all(token.encode() not in raw for raw in await messages_on(client, bus.RECORDINGS.subject))
    assert token not in repr(logs)


async def test_each_file_type_is_kept_once_and_others_skipped(
    http: httpx.AsyncClient, client: NatsBroker, zoom_session: ScheduledSession
) -> None:
    body = fixture("recording_completed_all_types.json")
    answer = await http.post("/webhooks/zoom", content=body, headers=zoom_headers(body))
    assert answer.status_code == 200, answer.text
    [recording] = await recordings(client)
    by_kind = {f.kind: f for f in recording.files}
    assert sorted(f.kind for f in recording.files) == ["audio", "chat", "transcript", "video"]
    assert by_kind["video"].location.endswith("CCCC")  # shared screen with speaker view, not the gallery view
    assert by_kind["transcript"].location.endswith("DDDD") and by_kind["transcript"].content_type == "text/vtt"
    assert by_kind["chat"].location.endswith("EEEE") and by_kind["chat"].content_type == "text/plain"


async def test_transcript_completed_carries_only_the_transcript(
    http: httpx.AsyncClient, client: NatsBroker, zoom_session: ScheduledSession
) -> None:
    body = fixture("recording_transcript_completed.json")
    answer = await http.post("/webhooks/zoom", content=body, headers=zoom_headers(body))
    assert answer.status_code == 200, answer.text
    [recording] = await recordings(client)
    assert [(f.kind, f.credential) for f in recording.files] == [("transcript", "zoom")]


async def test_a_retried_event_is_one_message(
    http: httpx.AsyncClient, client: NatsBroker, zoom_session: ScheduledSession
) -> None:
    body = fixture("recording_completed.json")
    first = await http.post("/webhooks/zoom", content=body, headers=zoom_headers(body))
    again = await http.post("/webhooks/zoom", content=body, headers=zoom_headers(body))
    assert (first.status_code, again.status_code) == (200, 200)
    assert again.json() == {"id": first.json()["id"], "duplicate": True}
    assert len(await recordings(client)) == 1


async def test_a_bad_signature_is_refused_and_nothing_published(
    http: httpx.AsyncClient, client: NatsBroker, zoom_session: ScheduledSession
) -> None:
    body = fixture("recording_completed.json")
    wrong = await http.post("/webhooks/zoom", content=body, headers=zoom_headers(body, secret="another-secret"))
    tampered = await http.post("/webhooks/zoom", content=body.replace(b"CCCC", b"XXXX"), headers=zoom_headers(body))
    assert (wrong.status_code, tampered.status_code) == (401, 401)
    assert wrong.json()["error"] == "bad_signature"
    assert await recordings(client) == []


async def test_a_request_older_than_five_minutes_is_a_replay(
    http: httpx.AsyncClient, client: NatsBroker, zoom_session: ScheduledSession
) -> None:
    body = fixture("recording_completed.json")
    old = await http.post("/webhooks/zoom", content=body, headers=zoom_headers(body, timestamp=int(time.time()) - 301))
    fresh = await http.post("/webhooks/zoom", content=body, headers=zoom_headers(body, timestamp=int(time.time()) - 60))
    assert old.status_code == 401 and old.json()["error"] == "stale_request"
    assert fresh.status_code == 200
    assert len(await recordings(client)) == 1


async def test_a_meeting_that_is_not_ours_is_acknowledged_and_logged(
    http: httpx.AsyncClient, client: NatsBroker, zoom_session: ScheduledSession
) -> None:
    body = fixture("recording_completed.json").replace(b'"id": 1234567890', b'"id": 9876543210')
    with capture_logs() as logs:
        answer = await http.post("/webhooks/zoom", content=body, headers=zoom_headers(body))
    assert answer.status_code == 200  # Zoom retries anything else, and retrying cannot make it ours
    assert answer.json()["status"] == "ignored"
    assert [e["meeting_id"] for e in logs if e["event"] == "recording.unmatched"] == ["9876543210"]
    assert await recordings(client) == []


async def test_an_oversized_body_is_refused_before_it_is_read_whole(http: httpx.AsyncClient) -> None:
    body = b"{" + b" " * (600 * 1024) + b"}"
    answer = await http.post("/webhooks/zoom", content=body, headers=zoom_headers(body))
    assert answer.status_code == 413


async def test_without_the_secret_the_webhook_refuses_with_the_setting_to_set(
    settings: Settings, client: NatsBroker
) -> None:
    app = create_web_app(settings, client)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://impromptu.test") as http:
        body = fixture("url_validation.json")
        answer = await http.post("/webhooks/zoom", content=body, headers=zoom_headers(body))
    assert answer.status_code == 503
    assert "IMPROMPTU_ZOOM_WEBHOOK_SECRET" in answer.json()["detail"]


def test_meeting_uuids_beginning_with_a_slash_or_holding_a_double_slash_are_encoded_twice() -> None:
    assert zoom.meeting_path("/ajXp112QmuoKj4854875==") == "%252FajXp112QmuoKj4854875%253D%253D"
    assert zoom.meeting_path("ab//cd==") == "ab%252F%252Fcd%253D%253D"
    assert zoom.meeting_path("4444AAAiAAAAAiAiAiiAii==") == "4444AAAiAAAAAiAiAiiAii%3D%3D"
    assert zoom.meeting_path("1234567890") == "1234567890"
