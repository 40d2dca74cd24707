"""Recordings handed in by anything but Zoom: POST /webhooks/recordings (our signed body, 8x8 JaaS's documented
RECORDING_UPLOADED event) and `impromptu record`, against the FastAPI app and a real nats-server."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from faststream.nats import NatsBroker
from pydantic import SecretStr
from typer.testing import CliRunner

from pipeline import bus, stores
from pipeline.app import connected
from pipeline.cli import cli
from pipeline.domain.describe import entry_id_for
from pipeline.domain.sessions import provider_key
from pipeline.embedded import EmbeddedNats
from pipeline.messages import Recording, ScheduledSession, utc_now
from pipeline.settings import Settings
from pipeline.web.recordings import sign
from pipeline.web.server import create_web_app
from tests.integration.bus_helpers import models_on
from tests.unit.conftest import make_session

pytestmark = pytest.mark.nats

SECRET = "recordings-webhook-secret-never-logged"
ROOM = "Impromptu-Why-eLearning-4Fq9xYz"
JAAS_EVENT = {  # 8x8's documented RECORDING_UPLOADED example, its room made ours
    "idempotencyKey": "c2b42ad3d-12a6-5908-cf38-f21ae2451fc0",
    "customerId": "c2824d584eac4489a1e32e4e164d5a3c",
    "appId": "vpaas-magic-cookie-c2824d584eac4489a1e32e4e164d5a3c",
    "eventType": "RECORDING_UPLOADED",
    "sessionId": "c3348153-1027-4382-afad-5ae91b433c26",
    "timestamp": 1600952817465,
    "fqn": f"vpaas-magic-cookie-c2824d584eac4489a1e32e4e164d5a3c/{ROOM}",
    "data": {
        "participants": [
            {"name": "Jane Doe", "avatar": "https://link.to/user/avatar/picture1", "id": "uniqueUserIdentifier1"},
            {"name": "John Doe ", "avatar": "https://link.to/user/avatar/picture2", "id": "uniqueUserIdentifier2"},
        ],
        "preAuthenticatedLink": "https://objectstorage.us-phoenix-1.oraclecloud.com/p/hrnGsHYw-ct5undQ5eL3zK1r1Uzq"
        "HlnYMwRtCdDgn22qx7GZTOl_NDL5ACC4UbJk/n/fr4eeztjonbe/b/vpaas-recordings-stage-8x8-us-phoenix-1/o/vpaas-magic-"
        "cookie-c2824d584eac4489a1e32e4e164d5a3c/testroom2_2020-09-24-12-01-07.mp4",
        "share": True,
        "initiatorId": "uniqueUserIdentifier1",
        "durationSec": 15,
        "startTimestamp": 1612175247396,
        "endTimestamp": 1612175263000,
        "recordingSessionId": "nkdsnfkdfkjdsfdsjklds",
    },
}


def signed(body: object, *, age: int = 0, secret: str = SECRET) -> tuple[bytes, dict[str, str]]:
    raw = json.dumps(body).encode()
    return raw, {**sign(secret.encode(), str(int(time.time()) - age), raw), "content-type": "application/json"}


@pytest.fixture
async def http(settings: Settings, client: NatsBroker) -> AsyncIterator[httpx.AsyncClient]:
    hooked = settings.model_copy(update={"recordings_webhook_secret": SecretStr(SECRET)})
    app = create_web_app(hooked, client)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://impromptu.test") as http:
        yield http


async def keep_session(client: NatsBroker, session: ScheduledSession) -> ScheduledSession:
    kv = await stores.bucket(client, stores.SESSIONS)
    await kv.put(session.id, session.model_dump_json().encode())
    if session.provider_id:
        await kv.put(provider_key(session.provider, session.provider_id), session.id.encode())
    return session


@pytest.fixture
async def held(client: NatsBroker) -> ScheduledSession:
    return await keep_session(client, make_session().model_copy(update={"provider_id": ROOM}))


async def test_a_signed_recording_is_accepted_once(
    http: httpx.AsyncClient, client: NatsBroker, held: ScheduledSession
) -> None:
    body = {
        "session_id": held.id,
        "media_url": "https://jibri.example.org/recordings/session.mp4",
        "transcript_url": "https://jibri.example.org/recordings/session.vtt",
        "by": "jibri finalize",
    }
    first = await http.post("/webhooks/recordings", content=signed(body)[0], headers=signed(body)[1])
    raw, headers = signed(body)
    again = await http.post("/webhooks/recordings", content=raw, headers=headers)
    assert (first.status_code, again.status_code) == (202, 202)
    assert again.json() == {"id": first.json()["id"], "duplicate": True}
    [recording] = await models_on(client, bus.RECORDINGS.subject, Recording)
    assert recording.source == "webhook" and recording.submitted_by == "jibri finalize"
    assert [(f.kind, f.location) for f in recording.files] == [
        ("video", body["media_url"]),
        ("transcript", body["transcript_url"]),
    ]


async def test_refusals_say_why(http: httpx.AsyncClient, client: NatsBroker, held: ScheduledSession) -> None:
    future = await keep_session(
        client, make_session(native_id="2").model_copy(update={"starts_at": utc_now() + timedelta(hours=1)})
    )
    good = {"session_id": held.id, "media_url": "https://jibri.example.org/r.mp4"}
    cases = {
        "unknown": ({**good, "session_id": "session-nope"}, 0, SECRET, 404, "unknown_session"),
        "not started": ({**good, "session_id": future.id}, 0, SECRET, 409, "not_started"),
        "bad url": ({**good, "media_url": "http://10.0.0.1/r.mp4", "chat_url": "ftp://x/c"}, 0, SECRET, 422, ""),
        "escape": ({**good, "media_url": "import:../etc/passwd"}, 0, SECRET, 422, ""),
        "unknown field": ({**good, "path": "/etc/passwd"}, 0, SECRET, 422, ""),
        "stale": (good, 301, SECRET, 401, "bad_signature"),
        "wrong secret": (good, 0, "not-the-secret", 401, "bad_signature"),
    }
    for name, (body, age, secret, status, error) in cases.items():
        raw, headers = signed(body, age=age, secret=secret)
        answer = await http.post("/webhooks/recordings", content=raw, headers=headers)
        assert answer.status_code == status, (name, answer.text)
        assert not error or answer.json()["error"] == error, name
    raw, headers = signed({**good, "media_url": "http://10.0.0.1/r.mp4", "chat_url": "ftp://x/c"})
    problems = (await http.post("/webhooks/recordings", content=raw, headers=headers)).json()["detail"]
    assert {p["field"] for p in problems} == {"media_url", "chat_url"}
    assert await models_on(client, bus.RECORDINGS.subject, Recording) == []


async def test_jaas_recording_uploaded_is_matched_to_our_jitsi_room(
    http: httpx.AsyncClient, client: NatsBroker, held: ScheduledSession
) -> None:
    raw = json.dumps(JAAS_EVENT).encode()
    stamp = str(int(time.time()))
    digest = base64.b64encode(hmac.new(SECRET.encode(), stamp.encode() + b"." + raw, hashlib.sha256).digest())
    headers = {"X-Jaas-Signature": f"t={stamp},v1={digest.decode()}", "content-type": "application/json"}
    answer = await http.post("/webhooks/recordings", content=raw, headers=headers)
    assert answer.status_code == 202, answer.text
    [recording] = await models_on(client, bus.RECORDINGS.subject, Recording)
    assert recording.session.id == held.id and recording.duration_seconds == 15
    assert [f.location for f in recording.files] == [JAAS_EVENT["data"]["preAuthenticatedLink"]]  # type: ignore[index]

    other = {**JAAS_EVENT, "eventType": "ROOM_CREATED", "data": {"conference": "x"}}
    raw = json.dumps(other).encode()
    digest = base64.b64encode(hmac.new(SECRET.encode(), stamp.encode() + b"." + raw, hashlib.sha256).digest())
    headers["X-Jaas-Signature"] = f"t={stamp},v1={digest.decode()}"
    seen = await http.post("/webhooks/recordings", content=raw, headers=headers)
    assert seen.status_code == 200 and seen.json()["status"] == "ignored"


# --- impromptu record -----------------------------------------------------------------------------------------------


def run_record(nats: EmbeddedNats, data_dir: Path, *args: str) -> tuple[int, str]:
    env = {
        "NATS_URL": nats.url,
        "IMPROMPTU_DATA_DIR": str(data_dir),
        "IMPROMPTU_FETCH_ALLOW": "[]",
        "IMPROMPTU_FACILITATOR_LOGINS": '{"mark": {}}',  # who may hand a recording in by name
    }
    result = CliRunner().invoke(cli, ["record", *args], env=env)
    return result.exit_code, result.output + (str(result.exception) if result.exception else "")


def test_record_hands_in_an_imported_file_and_refuses_what_it_must(nats_server: EmbeddedNats, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    (data_dir / "import").mkdir(parents=True)
    (data_dir / "import" / "talk.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42")
    outside = tmp_path / "elsewhere.mp4"
    outside.write_bytes(b"x")
    settings = Settings(nats_url=nats_server.url, data_dir=data_dir)
    held = make_session()
    future = make_session(native_id="2").model_copy(update={"starts_at": utc_now() + timedelta(hours=1)})

    async def setup() -> None:
        async with connected(settings) as broker:
            for session in (held, future):
                await keep_session(broker, session)

    asyncio.run(setup())
    code, out = run_record(nats_server, data_dir, held.id, "--media", "talk.mp4", "--by", "Mallory")
    assert code == 1 and "--by 'Mallory' is not a login" in out, out  # the audit trail holds no invented names
    code, out = run_record(nats_server, data_dir, held.id, "--media", "talk.mp4", "--by", "mark")
    assert code == 0, out
    entry_id = entry_id_for(held.id)
    assert f"the archive stage keeps it as {entry_id}: see `impromptu library show {entry_id}`" in out
    code, out = run_record(nats_server, data_dir, held.id, "--media", str(outside))
    assert code == 1 and "not inside the import folder" in out and str((data_dir / "import").resolve()) in out
    code, out = run_record(nats_server, data_dir, future.id, "--media", "talk.mp4")
    assert code == 1 and "has not started" in out
    code, out = run_record(nats_server, data_dir, "session-nope", "--media", "talk.mp4")
    assert code == 1 and "no scheduled session" in out

    async def published() -> list[Recording]:
        async with connected(settings) as broker:
            return await models_on(broker, bus.RECORDINGS.subject, Recording)

    [recording] = asyncio.run(published())
    assert recording.source == "cli" and recording.submitted_by == "mark"
    assert [(f.kind, f.location) for f in recording.files] == [("video", "import:talk.mp4")]
