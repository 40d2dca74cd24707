"""Zoom recordings: the event webhook's checks and events, and the cloud-recordings lookup for missed events.

Webhook (`POST /webhooks/zoom`, routed in pipeline/web/recordings.py), as Zoom documents it:
- every request carries `x-zm-request-timestamp` and `x-zm-signature` = "v0=" + hex HMAC-SHA256(secret token,
  "v0:" + timestamp + ":" + raw body); a timestamp more than 5 minutes away from now is a replay and refused;
- `endpoint.url_validation` is answered with {"plainToken", "encryptedToken": hex HMAC-SHA256(secret, plainToken)},
  only once its signature checked (unsigned, the answer would sign anything an attacker sends as a plainToken);
- `recording.completed` and `recording.transcript_completed` list `payload.object.recording_files`: MP4 -> video,
  M4A -> audio, TRANSCRIPT (VTT) -> transcript, CHAT (TXT) -> chat, status "completed"; others are skipped. The
  event's top-level `download_token` (24 h) is a credential: it goes to the KV bucket impromptu-downloads, never on
  the bus or in a log.

Lookup (`recordings_of`): `GET /past_meetings/{meetingId}/instances` names the meeting's instances (UUIDs), then
`GET /meetings/{meetingUUID}/recordings` for the instance held in the session's time; a UUID that begins with "/"
or contains "//" is double URL-encoded, as Zoom requires. Without instances (a meeting never started, an account
without the scope) it asks `GET /meetings/{meetingId}/recordings`, which Zoom answers with the latest instance.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pipeline.messages import Recording, RecordingFile, RecordingFileKind, ScheduledSession, stable_id
from pipeline.providers.http import error_object
from pipeline.providers.zoom import ZoomProvider

SIGNATURE_HEADER = "x-zm-signature"
TIMESTAMP_HEADER = "x-zm-request-timestamp"
REPLAY_SECONDS = 300
URL_VALIDATION = "endpoint.url_validation"
RECORDING_EVENTS = ("recording.completed", "recording.transcript_completed")
NO_RECORDING = 3301  # Zoom: "This recording does not exist."
NO_MEETING = 3001
FILE_KINDS: dict[str, RecordingFileKind] = {"MP4": "video", "M4A": "audio", "TRANSCRIPT": "transcript", "CHAT": "chat"}
CONTENT_TYPES: dict[RecordingFileKind, str] = {
    "video": "video/mp4",
    "audio": "audio/mp4",
    "transcript": "text/vtt",
    "chat": "text/plain",
}
# When a meeting has several videos (one per layout), the one people watch: the shared screen with the speaker.
VIDEO_PREFERENCE = (
    "shared_screen_with_speaker_view",
    "shared_screen_with_speaker_view(CC)",
    "shared_screen_with_gallery_view",
    "active_speaker",
    "speaker_view",
    "gallery_view",
    "shared_screen",
)


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore")


class ZoomFile(_Lenient):
    id: str | None = None
    file_type: str = ""
    file_extension: str = ""
    file_size: int | None = Field(default=None, ge=0)
    download_url: str | None = None
    status: str = ""
    recording_type: str = ""
    recording_start: datetime | None = None
    recording_end: datetime | None = None


class ZoomMeeting(_Lenient):
    id: int | str
    uuid: str = ""
    topic: str = ""
    start_time: datetime | None = None
    duration: int | None = None
    recording_files: list[ZoomFile] = []


class ZoomEvent(_Lenient):
    event: str
    event_ts: int | None = None
    payload: dict[str, Any] = {}
    download_token: str | None = None

    def meeting(self) -> ZoomMeeting:
        return ZoomMeeting.model_validate(self.payload.get("object") or {})

    @property
    def key(self) -> str:
        """One event, however often Zoom delivers it: what it is, which meeting instance, when it happened."""
        uuid = str((self.payload.get("object") or {}).get("uuid", ""))
        return stable_id("zoom", self.event, uuid, str(self.event_ts or ""))


class WebhookRefused(Exception):
    def __init__(self, status: int, error: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.error, self.detail = status, error, detail


# --- the webhook ----------------------------------------------------------------------------------------------------


def signature(secret: bytes, timestamp: str, body: bytes) -> str:
    """The x-zm-signature Zoom sends for `body` at `timestamp`."""
    message = b"v0:" + timestamp.encode() + b":" + body
    return "v0=" + hmac.new(secret, message, hashlib.sha256).hexdigest()


def check_request(secret: bytes, headers: dict[str, str], body: bytes, now: float | None = None) -> None:
    """WebhookRefused (401) unless the request is signed by Zoom now; the reason never includes the signature."""
    timestamp = headers.get(TIMESTAMP_HEADER)
    given = headers.get(SIGNATURE_HEADER)
    if not timestamp or not given:
        raise WebhookRefused(401, "bad_signature", f"missing {TIMESTAMP_HEADER} or {SIGNATURE_HEADER} header")
    if not timestamp.isdigit() or len(timestamp) > 16:
        raise WebhookRefused(401, "bad_signature", f"{TIMESTAMP_HEADER} must be a Unix time")
    seconds = int(timestamp) / (1000 if len(timestamp) > 11 else 1)  # Zoom sends seconds; milliseconds tolerated
    age = (time.time() if now is None else now) - seconds
    if abs(age) > REPLAY_SECONDS:
        raise WebhookRefused(
            401, "stale_request", f"{TIMESTAMP_HEADER} is {age:.0f} s from now (more than {REPLAY_SECONDS} s): a replay"
        )
    if not hmac.compare_digest(signature(secret, timestamp, body).encode(), given.encode("latin-1")):
        raise WebhookRefused(401, "bad_signature", f"{SIGNATURE_HEADER} does not match the body")


def parse_event(body: bytes) -> ZoomEvent:
    try:
        return ZoomEvent.model_validate_json(body)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}"
            for e in error.errors(include_input=False, include_url=False)
        )
        raise WebhookRefused(422, "invalid_body", f"not a Zoom event: {problems}") from None


def url_validation_answer(secret: bytes, event: ZoomEvent) -> dict[str, str]:
    plain = event.payload.get("plainToken")
    if not isinstance(plain, str) or not plain or len(plain) > 256:
        raise WebhookRefused(422, "invalid_body", "endpoint.url_validation without a plainToken")
    encrypted = hmac.new(secret, plain.encode(), hashlib.sha256).hexdigest()
    return {"plainToken": plain, "encryptedToken": encrypted}


def download_key(event: ZoomEvent) -> str:
    """The key of the event's download_token in the bucket impromptu-downloads."""
    return f"zoom.{event.key.removeprefix('zoom-')}"


# --- from Zoom's recording files to ours ----------------------------------------------------------------------------


def chosen_files(files: list[ZoomFile], kinds: tuple[RecordingFileKind, ...] | None = None) -> list[ZoomFile]:
    """One completed file per kind we keep (the preferred layout for video), in Zoom's own order."""
    by_kind: dict[RecordingFileKind, ZoomFile] = {}
    for file in files:
        kind = FILE_KINDS.get(file.file_type.upper())
        if kind is None or (kinds and kind not in kinds) or file.status != "completed" or not file.download_url:
            continue
        if not file.download_url.startswith("https://") and not file.download_url.startswith("http://"):
            continue
        current = by_kind.get(kind)
        if current is None or (kind == "video" and _rank(file) < _rank(current)):
            by_kind[kind] = file
    return [f for f in files if f in by_kind.values()]


def still_processing(files: list[ZoomFile]) -> list[str]:
    return [
        f"{f.file_type} {f.recording_type}".strip()
        for f in files
        if f.file_type.upper() in FILE_KINDS and f.status and f.status != "completed"
    ]


def _rank(file: ZoomFile) -> int:
    try:
        return VIDEO_PREFERENCE.index(file.recording_type)
    except ValueError:
        return len(VIDEO_PREFERENCE)


def recording_from(
    session: ScheduledSession,
    meeting: ZoomMeeting,
    *,
    kinds: tuple[RecordingFileKind, ...] | None = None,
    download_key: str | None = None,
    submitted_by: str,
) -> Recording | None:
    """The Recording of the files Zoom lists, or None when none of them is one we keep."""
    files = chosen_files(meeting.recording_files, kinds)
    if not files:
        return None
    main = next((f for f in files if FILE_KINDS[f.file_type.upper()] in ("video", "audio")), None)
    started = (main.recording_start if main else None) or meeting.start_time
    duration: int | None = None
    if main and main.recording_start and main.recording_end:
        duration = max(int((main.recording_end - main.recording_start).total_seconds()), 0)
    elif meeting.duration is not None:
        duration = max(meeting.duration, 0) * 60
    return Recording.arrived(
        session,
        source="zoom",
        files=[
            RecordingFile(
                kind=FILE_KINDS[f.file_type.upper()],
                location=f.download_url or "",
                content_type=CONTENT_TYPES[FILE_KINDS[f.file_type.upper()]],
                size=f.file_size,
                provider_file_id=f.id,
                credential="zoom",
            )
            for f in files
        ],
        started_at=started,
        duration_seconds=duration,
        submitted_by=submitted_by,
        download_key=download_key,
    )


# --- the lookup -----------------------------------------------------------------------------------------------------


def meeting_path(meeting: str) -> str:
    """A meeting id or UUID as a path segment: a UUID that begins with "/" or contains "//" is encoded twice."""
    if meeting.startswith("/") or "//" in meeting:
        return quote(quote(meeting, safe=""), safe="")
    return quote(meeting, safe="")


class _Instance(_Lenient):
    uuid: str
    start_time: datetime | None = None


class _Instances(_Lenient):
    meetings: list[_Instance] = []


class NotYet(Exception):
    """Zoom has no finished recording for the meeting yet; the reason says what it answered."""


async def recordings_of(provider: ZoomProvider, session: ScheduledSession) -> ZoomMeeting:
    """The cloud recording of the session's meeting (NotYet while there is none, or it is still processing)."""
    meeting_id = session.provider_id or ""
    uuid = await _instance_in_session(provider, meeting_id, session)
    target = uuid or meeting_id
    what = f"recordings of meeting {meeting_id}"
    response = await provider.get(f"/meetings/{meeting_path(target)}/recordings", what)
    if response.status_code == 404 and error_object(response).get("code") in (NO_RECORDING, NO_MEETING):
        raise NotYet(f"zoom: no cloud recording of meeting {meeting_id} yet")
    if not response.is_success:
        raise provider.failure(response, what)
    meeting = provider.http.parse(ZoomMeeting, response, what)
    if busy := still_processing(meeting.recording_files):
        raise NotYet(f"zoom: still processing {', '.join(busy)}")
    return meeting


async def _instance_in_session(provider: ZoomProvider, meeting_id: str, session: ScheduledSession) -> str | None:
    """The UUID of the meeting's instance held during the session (the latest that started in its time)."""
    what = f"instances of meeting {meeting_id}"
    response = await provider.get(f"/past_meetings/{meeting_path(meeting_id)}/instances", what)
    if response.status_code in (400, 404):  # never started, or not a past meeting yet: ask by meeting id
        return None
    if not response.is_success:
        raise provider.failure(response, what)
    instances = provider.http.parse(_Instances, response, what).meetings
    earliest = session.starts_at - timedelta(hours=2)  # a host may open the meeting early
    held = [i for i in instances if i.start_time and earliest <= i.start_time <= session.ends_at]
    held.sort(key=lambda i: i.start_time or session.starts_at)
    return held[-1].uuid if held else None
