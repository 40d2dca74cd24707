"""Catching up on recordings no webhook brought: the sessions that ended and wait, asked at their provider.

Reads the keys `awaiting.<session>` of the KV bucket impromptu-library (catalog.AwaitingRecording, written by the
archive stage when a session ends without its recording, deleted once it is kept): a bounded set, read with one
ranged scan a tick. For each, Zoom (pipeline/archive/zoom.py) or YouTube (pipeline/archive/youtube.py) is asked;
Jitsi has nobody to ask (its recordings come by POST /webhooks/recordings or `impromptu record`). A recording found
is published on `impromptu.recordings` (its id names the session and files: several workers finding it publish one
message). Each check is noted on the key (checks, last_check, last_problem) by compare-and-set; after
IMPROMPTU_RECORDINGS_WAIT_HOURS past the session's end the key is deleted and `recording.not_found` logged with the
last reason. One session failing never stops the others; NATS away skips the tick with a warning.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import structlog
from faststream.nats import NatsBroker
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue
from pydantic import ValidationError

from pipeline import bus, stores
from pipeline.archive import youtube, zoom
from pipeline.domain import catalog
from pipeline.domain.catalog import AwaitingRecording
from pipeline.errors import ImpromptuError
from pipeline.messages import Recording, ScheduledSession, utc_now
from pipeline.providers.youtube import YouTubeProvider
from pipeline.providers.zoom import ZoomProvider
from pipeline.settings import Settings
from pipeline.stores import stored_session

log = structlog.get_logger("pipeline.archive")

ASKED = ("zoom", "youtube")


@dataclass
class Providers:
    """One adapter per provider for the poller's life: their token caches are kept between ticks."""

    zoom: ZoomProvider
    youtube: YouTubeProvider

    @classmethod
    def from_settings(cls, settings: Settings) -> Providers:
        return cls(zoom=ZoomProvider.from_settings(settings), youtube=YouTubeProvider.from_settings(settings))


@dataclass
class PollReport:
    found: list[str] = field(default_factory=list)
    waiting: dict[str, str] = field(default_factory=dict)
    given_up: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


async def poll_recordings(broker: NatsBroker, settings: Settings) -> None:
    """Every IMPROMPTU_RECORDINGS_POLL_SECONDS until cancelled: one pass over the sessions awaiting a recording."""
    providers = Providers.from_settings(settings)
    while True:
        try:
            await poll_once(broker, settings, providers)
        except bus.NOT_ANSWERING as error:
            log.warning("recordings.poll_skipped", reason=bus.not_answering_reason(error))
        except Exception as error:  # one bad pass must not end the polling for the life of the process
            log.warning("recordings.poll_failed", error=f"{type(error).__name__}: {error}")
        await asyncio.sleep(settings.recordings_poll_seconds)


async def poll_once(
    broker: NatsBroker, settings: Settings, providers: Providers | None = None, *, now: datetime | None = None
) -> PollReport:
    """One pass: ask each awaiting session's provider; see the module docstring."""
    providers = providers or Providers.from_settings(settings)
    now = now or utc_now()
    kv = await catalog.library_bucket(broker)
    report = PollReport()
    for entry in await stores.scan(kv, catalog.AWAITING + ">"):
        try:
            awaiting = AwaitingRecording.model_validate_json(entry.value or b"")
        except ValidationError:
            log.warning("recordings.poll_unreadable", key=entry.key)
            continue
        await _check(broker, settings, providers, kv, awaiting, entry.revision or 0, now, report)
    return report


async def _check(
    broker: NatsBroker,
    settings: Settings,
    providers: Providers,
    kv: KeyValue,
    awaiting: AwaitingRecording,
    revision: int,
    now: datetime,
    report: PollReport,
) -> None:
    session_id = awaiting.session_id
    if now - awaiting.ended_at > timedelta(hours=settings.recordings_wait_hours):
        await _give_up(kv, awaiting, revision, settings)
        report.given_up.append(session_id)
        return
    if awaiting.provider not in ASKED:
        report.skipped.append(session_id)  # Jitsi: its recording is handed in, nobody can be asked
        return
    recent = timedelta(seconds=settings.recordings_poll_seconds / 2)
    if awaiting.last_check and now - awaiting.last_check < recent:
        report.skipped.append(session_id)  # another worker asked moments ago
        return
    problem: str | None
    try:
        session = await stored_session(broker, session_id)
        if session is None:
            problem = f"session {session_id} is not in impromptu-sessions"
        else:
            recording = await _ask(providers, session)
            await bus.publish(broker, bus.RECORDINGS, recording)
            log.info("recording.found", session_id=session_id, provider=awaiting.provider, recording_id=recording.id)
            report.found.append(session_id)
            problem = None
    except bus.NOT_ANSWERING:
        raise
    except zoom.NotYet as not_yet:
        problem = str(not_yet)
    except ImpromptuError as error:  # refused (credentials, scopes, quota) or busy (5xx, rate limit): noted, next tick
        problem = str(error)
        log.warning("recording.lookup_failed", session_id=session_id, provider=awaiting.provider, reason=problem)
    except Exception as error:  # one session's surprise must not stop the others
        problem = f"{type(error).__name__}: {error}"
        log.exception("recording.lookup_failed", session_id=session_id, provider=awaiting.provider)
    if problem is not None:
        report.waiting[session_id] = problem
    await _note_check(kv, session_id, now, problem)


async def _ask(providers: Providers, session: ScheduledSession) -> Recording:
    if not session.provider_id:
        raise zoom.NotYet(f"{session.provider}: the session has no provider id to ask about")
    if session.provider == "zoom":
        meeting = await zoom.recordings_of(providers.zoom, session)
        recording = zoom.recording_from(session, meeting, submitted_by="zoom cloud recordings")
        if recording is None:
            raise zoom.NotYet("zoom: the cloud recording has no completed MP4, M4A, TRANSCRIPT or CHAT file")
        return recording
    return await youtube.recording_of(providers.youtube, session)


async def _note_check(kv: KeyValue, session_id: str, now: datetime, problem: str | None) -> None:
    def change(current: AwaitingRecording | None) -> AwaitingRecording | None:
        if current is None:
            return None  # kept meanwhile (the archive stage deleted it): nothing to note
        return current.model_copy(update={"checks": current.checks + 1, "last_check": now, "last_problem": problem})

    await catalog.update(kv, catalog.awaiting_key(session_id), AwaitingRecording, change)


async def _give_up(kv: KeyValue, awaiting: AwaitingRecording, revision: int, settings: Settings) -> None:
    reason = awaiting.last_problem or (
        "nobody to ask (a Jitsi session): hand it in with `impromptu record` or POST /webhooks/recordings"
        if awaiting.provider not in ASKED
        else "never checked"
    )
    key = catalog.awaiting_key(awaiting.session_id)
    try:
        await kv.delete(key, last=revision)
    except (KeyWrongLastSequenceError, KeyNotFoundError):
        return  # changed meanwhile (noted or kept by another worker): decided on the next pass
    await stores.erase(kv, key)  # no delete marker left: the next scans stay as small as the set that waits
    log.warning(
        "recording.not_found",
        session_id=awaiting.session_id,
        provider=awaiting.provider,
        waited_hours=settings.recordings_wait_hours,
        checks=awaiting.checks,
        reason=reason,
    )
