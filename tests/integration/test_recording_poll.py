"""The poller against fake Zoom and YouTube APIs on loopback, fed with documented responses (tests/fixtures), and a
real nats-server: a missed Zoom webhook is caught up by the meeting's instance UUID (double-encoded when Zoom says
so), a finished YouTube broadcast becomes a recording (captions only when the token may download them), checks are
noted on the awaiting key, a session waited for too long is given up, and one failing provider stops no other."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from faststream.nats import NatsBroker
from pydantic import SecretStr
from structlog.testing import capture_logs

from pipeline import bus, stores
from pipeline.archive.poll import poll_once
from pipeline.domain import catalog
from pipeline.domain.catalog import AwaitingRecording
from pipeline.messages import Recording, ScheduledSession
from pipeline.settings import Settings
from tests.integration.bus_helpers import models_on
from tests.peers import serve
from tests.unit.conftest import make_session

pytestmark = pytest.mark.nats

FIXTURES = Path(__file__).parent.parent / "fixtures"
SLASH_UUID = "/ajXp112QmuoKj4854875=="
MEETING_ID = "6840331990"
VIDEO_ID = "Ab1Cd2Ef3Gh"


def fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


@dataclass
class Fakes:
    """Zoom's and YouTube's endpoints the poller calls; `state` changes what they answer."""

    zoom_paths: list[str] = field(default_factory=list)
    zoom_recording: str = "ready"  # ready | missing | broken
    broadcast: str = "complete"
    captions_download: int = 200
    instance_start: str = ""

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.get("/v2/past_meetings/{meeting}/instances")
        async def instances(meeting: str) -> JSONResponse:
            body = fixture("zoom/past_meeting_instances.json")
            body["meetings"][0]["uuid"] = SLASH_UUID
            if self.instance_start:  # else the documented 2019 instance: not in the session's time
                body["meetings"][0]["start_time"] = self.instance_start
            return JSONResponse(body)

        @app.get("/v2/meetings/{meeting:path}/recordings")
        async def recordings(request: Request) -> Response:
            self.zoom_paths.append(request.scope["raw_path"].decode())
            if self.zoom_recording == "broken":
                return JSONResponse({"code": 500, "message": "Internal error"}, 500)
            if self.zoom_recording == "missing":
                return JSONResponse({"code": 3301, "message": "This recording does not exist."}, 404)
            return JSONResponse(fixture("zoom/meeting_recordings.json"))

        @app.get("/youtube/v3/liveBroadcasts")
        async def broadcasts() -> JSONResponse:
            body = fixture("youtube/live_broadcasts_complete.json")
            body["items"][0]["status"]["lifeCycleStatus"] = self.broadcast
            return JSONResponse(body)

        @app.get("/youtube/v3/videos")
        async def videos() -> JSONResponse:
            return JSONResponse(fixture("youtube/videos_processed.json"))

        @app.get("/youtube/v3/captions")
        async def captions() -> JSONResponse:
            return JSONResponse(fixture("youtube/captions_list.json"))

        @app.get("/youtube/v3/captions/{caption_id}")
        async def download(caption_id: str) -> Response:
            if self.captions_download == 403:
                errors = [{"domain": "youtube.caption", "reason": "forbidden", "message": "Forbidden"}]
                return JSONResponse({"error": {"code": 403, "message": "Forbidden", "errors": errors}}, 403)
            return Response(b"WEBVTT\n\n00:00.000 --> 00:03.000\nWelcome\n", media_type="text/vtt")

        return app


@pytest.fixture
def fakes() -> Fakes:
    return Fakes()


@pytest.fixture
def peer(fakes: Fakes) -> Iterator[str]:
    with serve(fakes.app()) as base:
        yield base


@pytest.fixture
def poll_settings(settings: Settings, peer: str) -> Settings:
    return settings.model_copy(
        update={
            "zoom_api_url": f"{peer}/v2",
            "zoom_access_token": SecretStr("zoom-static-token"),
            "youtube_api_url": f"{peer}/youtube/v3",
            "youtube_access_token": SecretStr("youtube-static-token"),
            "recordings_poll_seconds": 0.01,
            "recordings_wait_hours": 72,
        }
    )


async def awaiting(client: NatsBroker, provider: str, provider_id: str, native: str = "1") -> ScheduledSession:
    """A held session of `provider`, ended, whose recording is awaited (as the archive stage records it)."""
    session = make_session(native_id=native).model_copy(update={"provider": provider, "provider_id": provider_id})
    await (await stores.bucket(client, stores.SESSIONS)).put(session.id, session.model_dump_json().encode())
    record = AwaitingRecording(
        session_id=session.id, provider=provider, provider_id=provider_id, ended_at=session.ends_at
    )
    await (await catalog.library_bucket(client)).put(
        catalog.awaiting_key(session.id), record.model_dump_json().encode()
    )
    return session


async def awaiting_record(client: NatsBroker, session: ScheduledSession) -> AwaitingRecording | None:
    found = await catalog.read(
        await catalog.library_bucket(client), catalog.awaiting_key(session.id), AwaitingRecording
    )
    return found[0] if found else None


async def test_a_missed_zoom_webhook_is_caught_up_by_the_instance_uuid_encoded_twice(
    poll_settings: Settings, client: NatsBroker, fakes: Fakes
) -> None:
    session = await awaiting(client, "zoom", MEETING_ID)
    fakes.instance_start = (session.starts_at + timedelta(minutes=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    report = await poll_once(client, poll_settings, now=session.ends_at + timedelta(minutes=30))

    assert report.found == [session.id]
    assert fakes.zoom_paths == ["/v2/meetings/%252FajXp112QmuoKj4854875%253D%253D/recordings"]
    [recording] = await models_on(client, bus.RECORDINGS.subject, Recording)
    assert recording.session.id == session.id and recording.source == "zoom"
    assert [(f.kind, f.location, f.credential) for f in recording.files] == [
        ("video", "https://example.com/rec/download/Qg75t7xZBtEbAkjdlgbfdngBBBB", "zoom")
    ]
    noted = await awaiting_record(client, session)
    assert noted is not None and noted.checks == 1 and noted.last_problem is None


async def test_a_second_worker_finding_it_too_publishes_nothing_more(
    poll_settings: Settings, client: NatsBroker, fakes: Fakes
) -> None:
    session = await awaiting(client, "zoom", MEETING_ID)
    fakes.instance_start = session.starts_at.strftime("%Y-%m-%dT%H:%M:%SZ")
    later = session.ends_at + timedelta(minutes=30)
    await poll_once(client, poll_settings, now=later)
    await poll_once(client, poll_settings, now=later + timedelta(minutes=5))
    assert len(fakes.zoom_paths) == 2
    assert len(await models_on(client, bus.RECORDINGS.subject, Recording)) == 1


async def test_no_recording_yet_is_noted_on_the_awaiting_key(
    poll_settings: Settings, client: NatsBroker, fakes: Fakes
) -> None:
    session = await awaiting(client, "zoom", MEETING_ID)
    fakes.zoom_recording = "missing"
    report = await poll_once(client, poll_settings, now=session.ends_at + timedelta(minutes=10))
    assert report.found == [] and "no cloud recording" in report.waiting[session.id]
    noted = await awaiting_record(client, session)
    assert noted is not None and noted.checks == 1 and "no cloud recording" in (noted.last_problem or "")
    assert fakes.zoom_paths == [f"/v2/meetings/{MEETING_ID}/recordings"]  # no instance in its time: by meeting id
    assert await models_on(client, bus.RECORDINGS.subject, Recording) == []


async def test_a_finished_youtube_broadcast_becomes_the_recording_with_its_captions(
    poll_settings: Settings, client: NatsBroker, fakes: Fakes, peer: str
) -> None:
    session = await awaiting(client, "youtube", VIDEO_ID)
    report = await poll_once(client, poll_settings, now=session.ends_at + timedelta(minutes=30))
    assert report.found == [session.id]
    [recording] = await models_on(client, bus.RECORDINGS.subject, Recording)
    assert recording.youtube_video_id == VIDEO_ID and recording.source == "youtube"
    assert recording.duration_seconds == 3723
    assert recording.thumbnail_url == "https://i.ytimg.com/vi/Ab1Cd2Ef3Gh/maxresdefault.jpg"
    assert recording.started_at is not None and recording.started_at.isoformat() == "2025-03-04T10:46:12+00:00"
    # the person's track (standard) before YouTube's automatic one
    [caption] = recording.files
    assert caption.kind == "transcript" and caption.credential == "youtube"
    assert caption.location == f"{peer}/youtube/v3/captions/AUieDaYfJuRuvK3fyVgB6C5nqFTc1aBNOOI0lHqKzo8h?tfmt=vtt"


async def test_captions_the_token_may_not_download_leave_the_recording_without_transcript(
    poll_settings: Settings, client: NatsBroker, fakes: Fakes
) -> None:
    session = await awaiting(client, "youtube", VIDEO_ID)
    fakes.captions_download = 403
    with capture_logs() as logs:
        report = await poll_once(client, poll_settings, now=session.ends_at + timedelta(minutes=30))
    assert report.found == [session.id]
    [recording] = await models_on(client, bus.RECORDINGS.subject, Recording)
    assert recording.files == [] and recording.youtube_video_id == VIDEO_ID
    assert [e["event"] for e in logs if e["event"] == "recording.no_captions"] == ["recording.no_captions"]


async def test_one_failing_provider_stops_no_other_session(
    poll_settings: Settings, client: NatsBroker, fakes: Fakes
) -> None:
    failing = await awaiting(client, "zoom", MEETING_ID, native="1")
    live = await awaiting(client, "youtube", VIDEO_ID, native="2")
    fakes.zoom_recording = "broken"
    fakes.broadcast = "live"
    report = await poll_once(client, poll_settings, now=failing.ends_at + timedelta(minutes=30))
    assert "HTTP 500" in report.waiting[failing.id] and "is live, not complete" in report.waiting[live.id]
    fakes.broadcast = "complete"
    report = await poll_once(client, poll_settings, now=failing.ends_at + timedelta(minutes=40))
    assert report.found == [live.id] and failing.id in report.waiting


async def test_a_session_waited_for_too_long_is_given_up_with_the_reason(
    poll_settings: Settings, client: NatsBroker, fakes: Fakes
) -> None:
    session = await awaiting(client, "zoom", MEETING_ID)
    fakes.zoom_recording = "missing"
    await poll_once(client, poll_settings, now=session.ends_at + timedelta(hours=1))
    with capture_logs() as logs:
        report = await poll_once(client, poll_settings, now=session.ends_at + timedelta(hours=73))
    assert report.given_up == [session.id]
    [given_up] = [e for e in logs if e["event"] == "recording.not_found"]
    assert given_up["session_id"] == session.id and "no cloud recording" in given_up["reason"]
    assert await awaiting_record(client, session) is None
    assert (await poll_once(client, poll_settings)).given_up == []  # gone, not given up twice


async def test_a_jitsi_session_is_not_asked_anywhere(poll_settings: Settings, client: NatsBroker, fakes: Fakes) -> None:
    session = await awaiting(client, "jitsi", "Impromptu-Room-abc")
    report = await poll_once(client, poll_settings, now=session.ends_at + timedelta(minutes=30))
    assert report.skipped == [session.id] and fakes.zoom_paths == []
