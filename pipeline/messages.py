"""Every message on the bus, in one place.

Each message carries its own `id` (also its Nats-Msg-Id, so a re-publish is dropped by JetStream), the
`correlation_id` of the share it descends from, and `causation_id`, the id of the message that caused it.
Upstream facts are embedded rather than looked up, so each stage works from its input alone.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, Self, get_args
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field


def _http_url(value: str) -> str:
    if not value.startswith(("http://", "https://")):
        raise ValueError("must be an http:// or https:// URL")
    try:
        host = urlsplit(value).hostname
    except ValueError as error:
        raise ValueError(f"is not a valid URL: {error}") from None
    if not host or any(c.isspace() or not c.isprintable() for c in value):
        raise ValueError("is not a valid URL (no host, or spaces or control characters in it)")
    return value


HttpUrlStr = Annotated[str, AfterValidator(_http_url)]


def utc_now() -> datetime:
    return datetime.now(UTC)


def as_utc(moment: datetime) -> datetime:
    """The same moment in UTC; a zone-less time is taken as UTC, never as the host's zone."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def stable_id(prefix: str, *parts: str) -> str:
    """A short id derived from content identity: the same inputs always give the same id."""
    digest = hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:16]
    return f"{prefix}-{digest}"


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(description="Identity of this message; used as its Nats-Msg-Id.")
    correlation_id: str = Field(description="Same for every message descending from one share.")
    causation_id: str | None = Field(description="Id of the message that caused this one.")
    created_at: datetime = Field(default_factory=utc_now)

    @classmethod
    def caused_by(cls, cause: Message, *, id: str, **fields: Any) -> Self:
        """A message descending from `cause`: same correlation id, `cause` as its causation."""
        return cls(id=id, correlation_id=cause.correlation_id, causation_id=cause.id, **fields)


Network = Literal["x", "mastodon", "linkedin", "rss"]


class Share(Message):
    """Someone in the network shared a link."""

    source: Literal["x", "rss", "mastodon", "webhook", "cli", "replay"]
    sharer: str = Field(
        description="Who shared it: an X handle (@britz), a Mastodon account (@britz@mastodon.social), a LinkedIn "
        "name or an RSS feed URL.",
        examples=["@britz"],
    )
    network: Network | None = Field(
        default=None, description="The network `sharer` is a handle on; unset: match the handle on any network."
    )
    text: str = Field(default="", description="The post's own text.")
    url: HttpUrlStr = Field(description="The linked article, expanded (never a t.co or other short link).")
    shared_at: datetime = Field(default_factory=utc_now)
    is_reply: bool = Field(default=False, description="The post answers another post.")
    is_repost: bool = Field(default=False, description="A retweet / boost of someone else's post.")
    language: str | None = Field(default=None, description="Language of the post as the network reports it (en).")

    @classmethod
    def from_source(cls, *, source: str, native_id: str, **fields: object) -> Share:
        share_id = f"{source}:{native_id}"
        return cls(
            id=share_id,
            correlation_id=stable_id("c", share_id),
            causation_id=None,
            source=source,  # type: ignore[arg-type]
            **fields,  # type: ignore[arg-type]
        )


ChannelName = Literal["x", "linkedin", "facebook", "mastodon", "slack", "teams", "email"]
CHANNEL_NAMES: tuple[str, ...] = get_args(ChannelName)  # each has an adapter in pipeline/channels/
DEFAULT_CHANNELS: tuple[ChannelName, ...] = ("x", "linkedin", "facebook")


class SessionPlan(BaseModel):
    """What a rule asks for when it fires."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    lead_minutes: int = Field(default=30, ge=0, description="How far out the session starts (the seed: 30).")
    duration_minutes: int = Field(default=60, gt=0)
    channels: list[ChannelName] = Field(
        default_factory=lambda: list(DEFAULT_CHANNELS), description="Where the session is announced."
    )
    facilitators: list[str] = Field(default_factory=list, description="Who is asked to approve (names).")
    without_article: bool = Field(
        default=False, description="When the page cannot be fetched or read, propose from the post's text alone."
    )
    article_must_match: bool = Field(
        default=False, description="Veto: propose only when the article itself matches one of the rule's topics."
    )
    on_timeout: Literal["expire", "auto_approve"] = Field(
        default="expire",
        description="When nobody decides before the deadline: expire (nothing is created) or auto_approve (the "
        "session is approved by the clock, unless its host is booked by then).",
    )


class Sharer(BaseModel):
    """One trusted person who shared the link."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="The person, as the rules file names them.")
    handle: str
    trust: float = Field(ge=0, le=1, description="Their trust on this share's topics (0 when not trusted on them).")
    share_id: str
    shared_at: datetime


class ScoreTerms(BaseModel):
    """The terms of a trigger score, each 0..1, and the weighted total."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sharers: float = Field(ge=0, le=1, description="Combined trust of the distinct trusted sharers: 1 - prod(1 - t).")
    author: float = Field(ge=0, le=1, description="Respect for the article's author (by name or domain).")
    topic: float = Field(ge=0, le=1, description="1 when the share matches one of the rule's topics.")
    crowd: float = Field(ge=0, le=1, description="1 - 1/n for n distinct trusted sharers of the same link.")
    total: float = Field(ge=0, le=1, description="Weighted mean of the terms.")


class TriggerFired(Message):
    """A share passed a trigger rule."""

    share: Share = Field(description="The share that made the rule fire.")
    canonical_url: str = Field(description="The article's URL without tracking parameters or fragment.")
    shared_by: list[Sharer] = Field(default_factory=list, description="Every trusted sharer so far, first first.")
    rule: str = Field(description="Name of the rule that fired.")
    score: float = Field(ge=0, le=1)
    terms: ScoreTerms | None = None
    author: str | None = Field(default=None, description="The respected author the share points to, if any.")
    topics: list[str] = Field(default_factory=list, description="Topics the share text matched.")
    reasons: list[str] = Field(default_factory=list, description="Why it fired, for humans.")
    plan: SessionPlan = SessionPlan()


class SharerJoined(Message):
    """Another trusted person shared a link that already fired: "also shared by", not a second session."""

    trigger_id: str = Field(description="The TriggerFired this share joins.")
    canonical_url: str
    sharer: Sharer
    share: Share


class Article(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    url: HttpUrlStr = Field(description="The URL that was shared.")
    final_url: HttpUrlStr = Field(description="Where redirects ended.")
    title: str
    author: str | None = Field(default=None, description="The first author, as the page names them.")
    authors: list[str] = Field(default_factory=list, description="Every author the page names.")
    site_name: str | None = None
    published: str | None = Field(default=None, description="Publication date (YYYY-MM-DD) as the page states it.")
    description: str | None = None
    summary: str = Field(description="3-5 key sentences of the text (or the page's description when it has none).")
    key_phrases: list[str] = Field(default_factory=list, description="The text's key phrases, most relevant first.")
    categories: list[str] = Field(default_factory=list)
    tags: list[str] = Field(default_factory=list)
    language: str | None = None
    image: str | None = Field(default=None, description="The page's preview image (og:image), if any.")
    word_count: int = Field(ge=0)
    reading_minutes: int = Field(ge=0)
    from_metadata: bool = Field(
        default=False,
        description="True when the page had too little readable text (e.g. a login wall) and title, description "
        "and summary come from its OpenGraph / Twitter-card metadata.",
    )


class EnrichedContent(Message):
    """The shared page was fetched and understood."""

    trigger: TriggerFired
    article: Article
    topics: list[str] = Field(default_factory=list, description="Rule topics the article itself matches.")
    topic_scores: dict[str, float] = Field(
        default_factory=dict, description="Topic -> how strongly the article matches it, 0..1."
    )
    respected_author: str | None = Field(default=None, description="A respected author (rules file) who wrote it.")
    unread_reason: str | None = Field(
        default=None, description="Set when the page could not be read: the article is then built from the post."
    )


class EnrichmentFailed(Message):
    """The shared page could not be fetched or read; the rule decides whether the post's text alone will do."""

    trigger: TriggerFired
    url: str
    reason: str = Field(description="Short code: blocked_address, too_large, timeout, not_html, http_404, ...")
    detail: str = Field(description="What happened, for the operator.")
    retryable: bool = Field(description="False when trying again cannot help (refused); true when retries ran out.")


Provider = Literal["jitsi", "zoom", "youtube"]


class ProviderPreview(BaseModel):
    """Shown on the proposal before approval: what approving will create, and where."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    provider: Provider
    summary: str = Field(description="One line, e.g. 'Zoom meeting, cloud recording on'.")
    details: dict[str, str] = Field(default_factory=dict, description="Settings that will be used, for display.")


class SessionProposal(Message):
    """A live session waiting for a facilitator's yes."""

    content: EnrichedContent
    title: str
    description: str
    starts_at: datetime
    duration_minutes: int = Field(gt=0)
    provider: Provider = "jitsi"
    preview: ProviderPreview | None = Field(default=None, description="What approving creates at the provider.")
    facilitator: str | None = Field(default=None, description="Who hosts: the facilitator the slot was found for.")
    slot_reason: str = Field(default="", description="Why this start time was suggested.")
    timezone: str = Field(
        default="UTC",
        description="IANA time zone announcements and notices show the start in, beside UTC (the rules file's).",
    )
    channels: list[str]
    expires_at: datetime = Field(description="No decision by then: the proposal lapses.")
    texts: dict[str, str] = Field(
        default_factory=dict,
        description="A channel's announcement as a facilitator wrote it, used instead of its template's; "
        "`{join_url}` marks where the join link goes.",
    )


class FacilitatorDecision(Message):
    """A facilitator approved or rejected a proposal."""

    proposal: SessionProposal
    decision: Literal["approved", "rejected"]
    decided_by: str
    reason: str = ""


ProposalState = Literal[
    "proposed", "approved", "scheduled", "live", "ended", "archived", "rejected", "expired", "cancelled"
]
IN_PLAY: frozenset[ProposalState] = frozenset({"proposed", "approved", "scheduled", "live"})  # not finished yet


class FieldChange(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    before: str
    after: str


class ProposalTransition(Message):
    """A proposal moved from one state to another (or was edited): who, when, what changed. The audit trail."""

    proposal_id: str
    from_state: ProposalState
    to_state: ProposalState
    by: str = Field(description="A facilitator's name, or the stage/clock that moved it.")
    reason: str = ""
    changes: dict[str, FieldChange] = Field(default_factory=dict, description="Edited fields, before and after.")


class ScheduledSession(Message):
    """An approved session with its real join link and calendar invite."""

    proposal: SessionProposal
    approved_by: str
    provider: Provider = "jitsi"
    provider_id: str | None = Field(default=None, description="The provider's meeting/broadcast id (Jitsi: room).")
    join_url: HttpUrlStr
    starts_at: datetime
    ends_at: datetime
    ics: str = Field(description="iCalendar invite (text/calendar).")


AnnouncementKind = Literal["scheduled", "starting", "recording", "cancelled"]


class AnnouncementDue(Message):
    """One channel's announcement of one moment in a session's life, waiting to be made: each channel is its own
    message, so a rate-limited channel waits alone while the others post."""

    session: ScheduledSession
    channel: str
    kind: AnnouncementKind = Field(
        description="scheduled: the session is announced; starting: it starts now; recording: its recording is in "
        "the library; cancelled: it will not take place."
    )
    library_url: str | None = Field(default=None, description="For recording: the library page of the recording.")
    tagline: str | None = Field(default=None, description="For recording: the library entry's tagline.")
    reason: str = Field(default="", description="For cancelled: why, as the facilitator wrote it.")
    after_announcement: bool = Field(
        default=False,
        description="Set on a follow-up put back on the bus once its channel's announcement settled, after waiting "
        "for it: its own retries start from zero.",
    )

    @property
    def key(self) -> str:
        """The idempotency key of this post: one per (session, channel, kind)."""
        return f"{self.session.id}.{self.channel}.{self.kind}"


class OutreachResult(Message):
    """One channel's announcement of a session, and what happened to it."""

    session_id: str
    channel: str
    kind: AnnouncementKind = "scheduled"
    status: Literal["posted", "already_posted", "failed", "unknown", "deleted", "skipped"] = Field(
        description="posted / already_posted (found posted before); failed (with the reason); unknown (a worker "
        "stopped mid-post and the channel cannot tell: a person must check, `impromptu outreach resolve`); "
        "deleted (a cancelled session's announcement was removed); skipped (not done on purpose, with the reason: "
        "e.g. a follow-up on a channel whose announcement failed, or that waited for it too long)."
    )
    text: str = Field(description="What was (or would have been) posted.")
    location: str | None = Field(default=None, description="Where the post can be seen.")
    reason: str | None = None


RecordingSource = Literal["zoom", "youtube", "webhook", "cli", "demo"]
RecordingFileKind = Literal["video", "audio", "transcript", "chat"]


class RecordingFile(BaseModel):
    """One file of a recording, still where the provider or a person put it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: RecordingFileKind = Field(description="video (MP4), audio (M4A), transcript (WebVTT) or chat (text).")
    location: str = Field(
        description="Where to get it: an http(s) URL (fetched by the safe fetcher), or `import:<relative path>` "
        "inside IMPROMPTU_RECORDINGS_IMPORT_DIR. Never a server path."
    )
    content_type: str | None = Field(default=None, description="The type the provider states, if any.")
    size: int | None = Field(default=None, ge=0, description="The size the provider states, if any (bytes).")
    provider_file_id: str | None = Field(default=None, description="The provider's id of the file (Zoom's `id`).")
    credential: Literal["none", "zoom", "youtube"] = Field(
        default="none",
        description="zoom: downloaded with the event's download_token (kept in KV for its 24 h, never on the bus) "
        "or the account's OAuth token; youtube: with the channel owner's OAuth token (a caption track).",
    )


class Recording(Message):
    """A held session's recording arrived: files to keep in the media store, or a video that stays at YouTube.

    Its id derives from the session and what arrived, so the same event delivered twice is one message, and a
    correction (other media) is a new one that replaces that kind of file in the session's library entry."""

    session: ScheduledSession
    source: RecordingSource = Field(description="Who handed it in: a provider's webhook or poll, a person, the demo.")
    files: list[RecordingFile] = Field(default_factory=list)
    youtube_video_id: str | None = Field(default=None, description="YouTube Live: the broadcast's video, embedded.")
    thumbnail_url: str | None = Field(default=None, description="The provider's poster image, if it has one.")
    started_at: datetime | None = Field(default=None, description="When the session really started (provider).")
    duration_seconds: int | None = Field(default=None, ge=0, description="Its real length (provider), if known.")
    submitted_by: str = Field(default="", description="The person (CLI) or provider event that handed it in.")
    download_key: str | None = Field(
        default=None, description="Zoom: the KV key of the event's download_token (impromptu-downloads, 24 h)."
    )

    @classmethod
    def arrived(cls, session: ScheduledSession, *, source: RecordingSource, **fields: Any) -> Recording:
        """A recording of `session`; its id names the session and what arrived (the files' locations, the video),
        so the same arrival twice is one message (JetStream drops the repeat) and a correction is a new one."""
        files = fields.get("files") or []
        what = [f"{f.kind}={f.location}" for f in files] + [f"youtube={fields.get('youtube_video_id') or ''}"]
        return cls.caused_by(
            session,
            id=stable_id(f"recording:{session.id}", source, *sorted(what)),
            session=session,
            source=source,
            **fields,
        )


StoreName = Literal["nats", "s3"]


class KeptFile(BaseModel):
    """A file of a recording, kept in the media store (NATS Object Store or S3) and checked."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: RecordingFileKind
    store: StoreName
    key: str = Field(description="The object's name in the store.")
    content_type: str
    size: int = Field(ge=0)
    sha256: str = Field(description="Hex SHA-256 of the whole object, checked after the upload.")
    filename: str = Field(description="The name it is offered under for download (session-title.mp4).")


class Resource(BaseModel):
    """A link shared in the session's chat, kept as a resource of the entry."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str
    shared_by: str | None = None
    at_seconds: float | None = Field(default=None, description="When in the session it was shared.")


class Provenance(BaseModel):
    """Where an entry came from. `rule` and the facilitators are internal: never shown on a public page (the
    facilitators only when IMPROMPTU_LIBRARY_SHOW_FACILITATORS says so)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    shared_by: str = Field(description="The sharer, as the rules file names them (Mark Britz).")
    sharer_handle: str = Field(default="", description="@britz")
    share_url: str
    share_text: str
    article_title: str = ""
    article_url: str
    article_author: str | None
    site_name: str | None = None
    approved_by: str | None = None
    host: str | None = Field(default=None, description="The facilitator who hosted.")
    rule: str
    session_id: str
    provider: str = "jitsi"
    channels: list[str] = Field(default_factory=list, description="Where the session was announced.")


Visibility = Literal["public", "internal"]


class LibraryEntry(Message):
    """A session's recording kept in the learning library (new, or its media corrected), described for later search.

    The entry itself lives in the KV bucket impromptu-library (key `entry.<entry_id>`, with its history); this
    message says it was kept, e.g. for the "recording available" announcement."""

    entry_id: str = Field(description="Stable per session: a corrected recording keeps its entry.")
    revision: int = Field(default=1, ge=1, description="1 when first kept; +1 with each corrected recording.")
    title: str
    tagline: str
    description: str
    tags: list[str] = Field(description="Readable tags (Café Zürich); their URL slugs are derived.")
    topics: list[str] = Field(default_factory=list)
    language: str | None = None
    started_at: datetime = Field(description="When the session really took place.")
    duration_seconds: int = Field(ge=0)
    files: list[KeptFile] = Field(default_factory=list, description="Video, audio, transcript, chat as kept.")
    youtube_video_id: str | None = None
    thumbnail_url: str | None = None
    summary: list[str] = Field(default_factory=list, description="Key sentences of the transcript (extractive).")
    resources: list[Resource] = Field(default_factory=list, description="Links shared in the session's chat.")
    article_id: str | None = Field(default=None, description="The reading-list item of the article it discussed.")
    visibility: Visibility = Field(
        default="public", description="internal: announced on internal channels only, never on a public page."
    )
    provenance: Provenance

    def file(self, kind: RecordingFileKind) -> KeptFile | None:
        return next((f for f in self.files if f.kind == kind), None)


class DeadLetter(BaseModel):
    """A message a stage gave up on, with the reason; replayable by putting `data` back on `subject`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    stage: str
    subject: str = Field(description="Where the original message was published.")
    data: str = Field(description="The original body, as text (undecodable bytes escaped).")
    headers: dict[str, str] = Field(default_factory=dict)
    reason: str = Field(description="Why the stage gave up, for the operator.")
    error_type: str
    permanent: bool = Field(description="True when retrying could not help; false when retries ran out.")
    deliveries: int
    stream_sequence: int | None = None
    correlation_id: str | None = None
    failed_at: datetime = Field(default_factory=utc_now)


BUS_MESSAGES: tuple[type[BaseModel], ...] = (
    Share,
    TriggerFired,
    SharerJoined,
    EnrichedContent,
    EnrichmentFailed,
    SessionProposal,
    FacilitatorDecision,
    ProposalTransition,
    ScheduledSession,
    AnnouncementDue,
    OutreachResult,
    Recording,
    LibraryEntry,
    DeadLetter,
)
