"""YouTube Live recordings: a finished broadcast's video becomes the session's recording; it stays on YouTube.

For a session held as a YouTube Live broadcast (provider_id = broadcast id = video id), through the Data API v3 with
the channel's token (pipeline/providers/youtube.py):

1. `liveBroadcasts.list?part=status&id=` until `status.lifeCycleStatus` is "complete";
2. `videos.list?part=processingDetails,contentDetails,snippet,liveStreamingDetails&id=` until
   `processingDetails.processingStatus` is "succeeded": the length (contentDetails.duration, ISO 8601), the real
   start (liveStreamingDetails.actualStartTime) and the poster (snippet.thumbnails maxres, else high...);
3. captions, when the owner's token allows: `captions.list?part=snippet&videoId=`, the best track (a person's over
   YouTube's automatic one), and one `captions/{id}?tfmt=vtt` download to learn that it may be downloaded (403: no
   transcript, logged, not an error). The track goes to the archive stage as a RecordingFile with credential
   "youtube": sources.py downloads it again with the owner's token (a caption is never put on the bus).
"""

from __future__ import annotations

import re
from datetime import datetime

import structlog
from pydantic import BaseModel, ConfigDict, Field

from pipeline.archive.zoom import NotYet
from pipeline.messages import Recording, RecordingFile, ScheduledSession
from pipeline.providers.youtube import YouTubeProvider

log = structlog.get_logger("pipeline.archive")

ISO_DURATION = re.compile(r"P(?:(?P<d>\d+)D)?(?:T(?:(?P<h>\d+)H)?(?:(?P<m>\d+)M)?(?:(?P<s>\d+(?:\.\d+)?)S)?)?")
THUMBNAIL_PREFERENCE = ("maxres", "standard", "high", "medium", "default")


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore")


class _Status(_Lenient):
    lifeCycleStatus: str = ""


class _Broadcast(_Lenient):
    id: str
    status: _Status = Field(default_factory=_Status)


class _Broadcasts(_Lenient):
    items: list[_Broadcast] = []


class _Processing(_Lenient):
    processingStatus: str = ""


class _Content(_Lenient):
    duration: str = ""


class _Thumbnail(_Lenient):
    url: str


class _Snippet(_Lenient):
    title: str = ""
    thumbnails: dict[str, _Thumbnail] = {}


class _Live(_Lenient):
    actualStartTime: datetime | None = None
    actualEndTime: datetime | None = None


class Video(_Lenient):
    id: str
    processingDetails: _Processing | None = None
    contentDetails: _Content = Field(default_factory=_Content)
    snippet: _Snippet = Field(default_factory=_Snippet)
    liveStreamingDetails: _Live = Field(default_factory=_Live)


class _Videos(_Lenient):
    items: list[Video] = []


class _CaptionSnippet(_Lenient):
    trackKind: str = ""
    language: str = ""
    status: str = ""
    isDraft: bool = False


class _Caption(_Lenient):
    id: str
    snippet: _CaptionSnippet = Field(default_factory=_CaptionSnippet)


class _Captions(_Lenient):
    items: list[_Caption] = []


def duration_seconds(iso: str) -> int | None:
    """PT1H2M3S -> 3723; None for what is not an ISO 8601 duration."""
    match = ISO_DURATION.fullmatch(iso.strip()) if iso else None
    if not match or iso.strip() in ("P", "PT"):
        return None
    parts = {k: float(v) for k, v in match.groupdict().items() if v}
    return int(parts.get("d", 0) * 86400 + parts.get("h", 0) * 3600 + parts.get("m", 0) * 60 + parts.get("s", 0))


def thumbnail(video: Video) -> str | None:
    for size in THUMBNAIL_PREFERENCE:
        if found := video.snippet.thumbnails.get(size):
            return found.url
    return None


async def finished_video(provider: YouTubeProvider, session: ScheduledSession) -> Video:
    """The broadcast's video once the broadcast is complete and the video processed; NotYet before."""
    video_id = session.provider_id or ""
    what = f"status of broadcast {video_id}"
    response = await provider.get("/liveBroadcasts", what, params={"part": "status", "id": video_id})
    if not response.is_success:
        raise provider.failure(response, what)
    broadcasts = provider.http.parse(_Broadcasts, response, what).items
    if not broadcasts:
        raise NotYet(f"youtube: no broadcast {video_id} (deleted, or another channel's)")
    state = broadcasts[0].status.lifeCycleStatus
    if state != "complete":
        raise NotYet(f"youtube: broadcast {video_id} is {state or 'of no stated state'}, not complete")
    what = f"video {video_id}"
    parts = "processingDetails,contentDetails,snippet,liveStreamingDetails"
    response = await provider.get("/videos", what, params={"part": parts, "id": video_id})
    if not response.is_success:
        raise provider.failure(response, what)
    videos = provider.http.parse(_Videos, response, what).items
    if not videos:
        raise NotYet(f"youtube: no video {video_id} yet")
    video = videos[0]
    status = video.processingDetails.processingStatus if video.processingDetails else ""
    if status != "succeeded":
        raise NotYet(f"youtube: video {video_id} processing is {status or 'not reported'}, not succeeded")
    return video


async def caption_track(provider: YouTubeProvider, video_id: str) -> str | None:
    """The URL of the best caption track the token may download as WebVTT, or None (logged) when there is none
    or the owner's token does not allow it."""
    what = f"captions of video {video_id}"
    response = await provider.get("/captions", what, params={"part": "snippet", "videoId": video_id})
    if response.status_code in (401, 403):
        reason = f"listing captions refused (HTTP {response.status_code})"
        log.info("recording.no_captions", video_id=video_id, reason=reason)
        return None
    if not response.is_success:
        raise provider.failure(response, what)
    tracks = [t for t in provider.http.parse(_Captions, response, what).items if t.snippet.status in ("", "serving")]
    tracks = [t for t in tracks if not t.snippet.isDraft]
    if not tracks:
        log.info("recording.no_captions", video_id=video_id, reason="no caption track is serving")
        return None
    # a person's track (standard) before YouTube's automatic one (asr); forced subtitles last
    tracks.sort(key=lambda t: {"standard": 0, "asr": 1}.get(t.snippet.trackKind, 2))
    url = f"{provider.api_url}/captions/{tracks[0].id}?tfmt=vtt"
    what = f"caption track {tracks[0].id}"
    response = await provider.get(f"/captions/{tracks[0].id}", what, params={"tfmt": "vtt"})
    if response.status_code in (401, 403):
        reason = (
            f"downloading captions refused (HTTP {response.status_code}): the token is not the video owner's, or "
            "the track may not be downloaded"
        )
        log.info("recording.no_captions", video_id=video_id, reason=reason)
        return None
    if not response.is_success:
        raise provider.failure(response, what)
    return url


async def recording_of(provider: YouTubeProvider, session: ScheduledSession) -> Recording:
    """The session's recording from YouTube (NotYet until the broadcast is complete and processed)."""
    video = await finished_video(provider, session)
    caption = await caption_track(provider, video.id)
    files = (
        [RecordingFile(kind="transcript", location=caption, content_type="text/vtt", credential="youtube")]
        if caption
        else []
    )
    return Recording.arrived(
        session,
        source="youtube",
        files=files,
        youtube_video_id=video.id,
        thumbnail_url=thumbnail(video),
        started_at=video.liveStreamingDetails.actualStartTime,
        duration_seconds=duration_seconds(video.contentDetails.duration),
        submitted_by="youtube",
    )
