"""Settings from the environment (prefix IMPROMPTU_, plus the conventional NATS_URL)."""

from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path
from typing import Annotated, Literal, Self

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict, SettingsError

from pipeline.errors import ConfigError
from pipeline.messages import Provider


class DeliveryPolicy(BaseModel):
    max_deliveries: int = 5
    backoff_base_seconds: float = 1.0
    backoff_max_seconds: float = 60.0

    def retry_delay(self, delivered: int) -> float:
        # the exponent is capped: a waiting message is delivered thousands of times, and 2.0**1024 overflows
        return min(self.backoff_base_seconds * 2.0 ** min(max(delivered - 1, 0), 32), self.backoff_max_seconds)


MIN_STREAM_AGE_DAYS = 7

DEFAULT_RULES = Path(__file__).parent / "triggers" / "default_rules.yaml"


LoginRole = Literal["facilitator", "ops"]

# The pipeline's stages in flow order; `impromptu run --stages` (IMPROMPTU_STAGES) picks some of them.
STAGE_NAMES = ("trigger", "enrich", "actions", "outreach", "archive")


def parse_stages(value: str | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """'enrich' or 'trigger,actions' (or a list) -> the stages in flow order; ValueError names an unknown one."""
    names = value.split(",") if isinstance(value, str) else list(value)
    chosen = {name.strip().lower() for name in names if name.strip()}
    if unknown := sorted(chosen - set(STAGE_NAMES)):
        raise ValueError(f"unknown stage {', '.join(map(repr, unknown))}: the stages are {', '.join(STAGE_NAMES)}")
    if not chosen:
        raise ValueError(f"no stage named: give one or more of {', '.join(STAGE_NAMES)}")
    return tuple(name for name in STAGE_NAMES if name in chosen)


class FacilitatorLogin(BaseModel):
    """Only hashes are kept: an argon2 password hash for the web pages, a SHA-256 of the API token; and what the
    login may see: `facilitator` (the approval pages and API), `ops` (the ops page), or both."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    password_hash: str | None = Field(default=None, description="argon2id hash (`impromptu facilitators add`).")
    token_sha256: str | None = Field(default=None, description="hex SHA-256 of the bearer token for the JSON API.")
    roles: list[LoginRole] = Field(
        default=["facilitator"], description="facilitator: approval pages and API; ops: the ops page (/ops)."
    )
    slack_user_id: str | None = Field(
        default=None,
        description="Their Slack member id (U…): their Approve / Reject clicks in Slack decide as this login "
        "(`impromptu facilitators link NAME --slack-user U…`).",
    )
    email: str | None = Field(
        default=None,
        description="Their address among IMPROMPTU_NOTIFY_EMAIL_TO: their notice carries one-click Approve / Reject "
        "links that decide as this login (`impromptu facilitators link NAME --email ADDRESS`).",
    )


_SAVED_LOGINS: dict[Path, tuple[tuple[int, int], dict[str, FacilitatorLogin]]] = {}  # file -> (stamp, logins)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="IMPROMPTU_", env_nested_delimiter="__", extra="ignore")

    nats_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("NATS_URL", "IMPROMPTU_NATS_URL"),
        description="External NATS server(s); when unset, an embedded nats-server is started.",
    )
    nats_credentials: Path | None = Field(
        default=None, description="A NATS .creds file (JWT + NKey) for an external server or cluster."
    )
    nats_nkey_seed: Path | None = Field(
        default=None,
        description="A file holding a NATS user's NKey seed (SU...), for a server whose users are nkeys: an external "
        "one, or the embedded one's `DATA_DIR/nats-auth/admin.nk` when reached through NATS_URL.",
    )
    nats_tls_ca_file: Path | None = Field(default=None, description="CA bundle to verify the NATS server's TLS.")
    nats_tls_cert_file: Path | None = Field(default=None, description="Client certificate for mutual TLS.")
    nats_tls_key_file: Path | None = Field(default=None, description="Client key for mutual TLS.")
    stream_replicas: int = Field(
        default=1, ge=1, le=5, description="Replicas of the stream and KV buckets (3 on a 3-node cluster)."
    )
    data_dir: Path = Field(default=Path("data"), description="NATS store, outbox and library live here.")
    embedded_nats_host: str = "127.0.0.1"
    embedded_nats_port: int = 4222

    duplicate_window_seconds: float = Field(
        default=24 * 3600,
        description="How long JetStream remembers Nats-Msg-Id values to drop re-published duplicates.",
    )
    stream_max_age_days: float = Field(
        default=0,
        ge=0,
        description="Messages older than this leave the stream, dead letters included (0: kept forever). "
        "At least 7 days, and longer than the duplicate window.",
    )
    stream_max_bytes: int = Field(
        default=0, ge=0, description="When the stream holds this much, its oldest messages go (0: no limit)."
    )

    @model_validator(mode="after")
    def _retention_keeps_what_stages_need(self) -> Settings:
        # shorter would drop messages a stopped stage or a waiting dead letter still needs, or let a re-published
        # duplicate through after its original has gone
        days = self.stream_max_age_days
        if days and (days < MIN_STREAM_AGE_DAYS or days * 86400 <= self.duplicate_window_seconds):
            raise ValueError(
                f"stream_max_age_days={days:g}: keep messages at least {MIN_STREAM_AGE_DAYS} days and longer "
                f"than the duplicate window ({self.duplicate_window_seconds / 3600:g} h), or 0 to keep them forever"
            )
        return self

    delivery: DeliveryPolicy = DeliveryPolicy()
    ack_wait_seconds: float = 30.0

    stages: Annotated[tuple[str, ...], NoDecode] = Field(
        default=STAGE_NAMES,
        description="The stages this process runs, comma-separated (`impromptu run --stages enrich`); default all.",
    )
    extract_processes: int | None = Field(
        default=None,
        ge=0,
        description="Processes the enrich stage reads pages in (default: the machine's cores; 0: in the stage's "
        "own process, without a time bound).",
    )
    extract_timeout_seconds: float = Field(
        default=10.0, gt=0, description="A page whose extraction takes longer fails (extract_timeout)."
    )

    @field_validator("stages", mode="before")
    @classmethod
    def _known_stages(cls, value: object) -> tuple[str, ...]:
        if not isinstance(value, str | list | tuple):
            raise ValueError("give stage names, comma-separated")
        return parse_stages(value)

    @property
    def extract_pool_size(self) -> int:
        """Extraction processes for `impromptu run`: the setting, else the cores this process may use."""
        if self.extract_processes is not None:
            return self.extract_processes
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1

    rules_file: Path = DEFAULT_RULES
    trigger_concurrency: int = Field(
        default=16, ge=1, description="Shares one trigger worker judges at once (state writes are compare-and-set)."
    )
    rules_reload_seconds: float = Field(default=1.0, description="How often the rules file is checked for edits.")
    rules_max_bytes: int = Field(
        default=1_048_576, ge=1024, description="A larger rules file is refused before it is parsed (1 MB)."
    )
    rules_max_depth: int = Field(
        default=64, ge=8, description="A rules file nested deeper (brackets, braces, indentation) is refused unparsed."
    )

    http_host: str = Field(default="127.0.0.1", description="Where the pipeline's HTTP server listens.")
    http_port: int = Field(default=8000, description="Port of the HTTP server (webhook; 0: any free port).")
    trusted_proxies: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Addresses or CIDRs of the reverse proxies whose X-Forwarded-For/-Proto are believed, "
        "comma-separated (default none: the client is the peer, whatever headers it sends).",
    )
    ops_endpoints: Literal["public", "login"] | None = Field(
        default=None,
        description="/metrics, /docs, /docs/asyncapi, /openapi.json: public, or only to logins (ops: /metrics and "
        "the AsyncAPI document; any login: the API docs), by Bearer token or login cookie. Default: public while "
        "the server listens on loopback only and no non-loopback IMPROMPTU_PUBLIC_URL is set, else login.",
    )

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _proxy_list(cls, value: object) -> list[str]:
        if isinstance(value, str):
            parts = [part.strip() for part in value.split(",") if part.strip()]
        elif isinstance(value, list | tuple):
            parts = [str(part).strip() for part in value if str(part).strip()]
        else:
            raise ValueError("give addresses or CIDRs, comma-separated")
        for part in parts:
            if part != "*":
                try:
                    ipaddress.ip_network(part, strict=False)
                except ValueError:
                    raise ValueError(f"{part!r} is not an address or CIDR (nor *, every peer)") from None
        return parts

    sources_enabled: bool = Field(default=True, description="Poll X, Mastodon and feeds from `impromptu run`.")
    x_bearer_token: SecretStr | None = Field(default=None, description="X API v2 app token; unset: X is off.")
    x_list_id: str | None = Field(default=None, description="Read this X list instead of each person's timeline.")
    x_poll_seconds: float = 60.0
    mastodon_poll_seconds: float = 120.0
    mastodon_base_urls: dict[str, str] = Field(
        default_factory=dict, description="Instance -> base URL, for a proxy or a local test server."
    )
    rss_poll_seconds: float = 300.0
    source_timeout_seconds: float = 15.0
    source_max_bytes: int = Field(default=5 * 1024 * 1024, description="Largest feed or API response read.")
    webhook_secret: SecretStr | None = Field(
        default=None, description="HMAC-SHA256 key for POST /shares; unset: the webhook refuses every share."
    )
    webhook_allow_untimed: bool = Field(
        default=False,
        description="Also take POST /shares signed over the body alone, without X-Impromptu-Timestamp (older "
        "senders): such a request can be replayed once the 24 h duplicate window has passed.",
    )

    fetch_allow: list[str] = Field(
        default_factory=list,
        description="Hosts, addresses or CIDRs, each best with its port (127.0.0.1:8080, [::1]:8080, "
        "10.0.0.0/8:443, wiki.internal:8443), that may be fetched although private (local test servers only).",
    )
    fetch_timeout_seconds: float = 10.0
    fetch_max_bytes: int = 5 * 1024 * 1024

    session_provider: Provider = Field(  # the shipped providers' names: pipeline/providers/registry.py
        default="jitsi", description="Where sessions are held; Jitsi needs no account."
    )
    session_timezone: str = Field(default="UTC", description="Time zone given to the provider and shown in pages.")
    jitsi_base_url: str = "https://meet.jit.si"
    zoom_api_url: str = "https://api.zoom.us/v2"
    zoom_oauth_url: str = "https://zoom.us/oauth/token"
    zoom_user: str = Field(default="me", description="Zoom user (id or email) who hosts the meetings.")
    zoom_access_token: SecretStr | None = Field(default=None, description="A ready OAuth access token for Zoom.")
    zoom_account_id: str | None = Field(default=None, description="Server-to-Server OAuth app: account id.")
    zoom_client_id: str | None = None
    zoom_client_secret: SecretStr | None = None
    youtube_api_url: str = "https://www.googleapis.com/youtube/v3"
    google_token_url: str = "https://oauth2.googleapis.com/token"
    youtube_access_token: SecretStr | None = Field(default=None, description="A ready OAuth access token.")
    youtube_client_id: str | None = Field(default=None, description="OAuth client, to refresh tokens.")
    youtube_client_secret: SecretStr | None = None
    youtube_refresh_token: SecretStr | None = None
    youtube_privacy: Literal["public", "unlisted", "private"] = "unlisted"
    provider_timeout_seconds: float = 15.0

    public_url: str | None = Field(
        default=None,
        description="Base URL of the approval pages in links sent to facilitators (default: http://HOST:PORT).",
    )
    web_secret: SecretStr | None = Field(
        default=None, description="Signs login cookies; unset: a random one is kept in DATA_DIR/web-secret."
    )
    facilitator_logins: dict[str, FacilitatorLogin] = Field(
        default_factory=dict,
        description="Facilitator name -> hashed password and/or API token (`impromptu facilitators add`).",
    )
    login_max_age_seconds: int = Field(default=12 * 3600, description="How long a web login lasts.")
    expiry_check_seconds: float = Field(default=30.0, description="How often lapsed proposals are expired.")
    decision_margin_minutes: int = Field(default=5, ge=0, description="Proposals lapse this long before the start.")

    notify_slack_webhook: SecretStr | None = Field(
        default=None, description="Slack incoming webhook for new proposals."
    )
    notify_email_to: list[str] = Field(default_factory=list, description="Who is emailed about new proposals.")
    smtp_host: str | None = None
    smtp_port: int = 587
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_starttls: bool = True
    smtp_from: str = "impromptu@localhost"
    slack_signing_secret: SecretStr | None = Field(
        default=None,
        description="Your Slack app's signing secret: verifies POST /slack/actions (Approve / Reject clicked in a "
        "notice); unset: notices carry no buttons and the route refuses everything.",
    )

    outreach_dry_run: bool = Field(
        default=True,
        description="Write every announcement to DATA_DIR/outbox instead of posting it (demos and rehearsals); "
        "set false to post on the channels whose credentials are set.",
    )
    outreach_templates_dir: Path | None = Field(
        default=None, description="Your own announcement templates (CHANNEL/KIND.j2); shipped ones fill the gaps."
    )
    outreach_timeout_seconds: float = Field(default=15.0, description="How long one post may take.")
    template_seconds: float = Field(
        default=2.0, gt=0, le=60, description="How long rendering one announcement may take; then it is refused."
    )
    template_max_output: int = Field(
        default=65_536, ge=1024, description="Characters one render may write, before the channel's own limit."
    )
    template_processes: int = Field(default=1, ge=1, le=16, description="Worker processes that render templates.")
    template_memory_mb: int = Field(
        default=256, ge=32, description="Memory (MB) one template worker may add while rendering."
    )
    outreach_follow_up_wait_hours: float = Field(
        default=24.0,
        gt=0,
        description="How long a follow-up (recording, cancellation) waits for its channel's announcement (a rate "
        "limit, a post a person must resolve) after the session's end; then it is skipped with the reason. "
        '"Starting now" waits only until the session ends.',
    )
    # Each channel's own settings are declared in its adapter's section (pipeline/channels/<name>.py, read by
    # `Section.of(settings)`); the shipped channels' fields stay here too, so every IMPROMPTU_ name and keyword keeps
    # working (tests/unit/test_settings_names.py holds both to the same names, types and defaults). A channel added
    # later declares its fields in its section alone.
    x_api_key: str | None = Field(default=None, description="X app's API key (OAuth 1.0a consumer key) for posting.")
    x_api_secret: SecretStr | None = None
    x_access_token: SecretStr | None = Field(default=None, description="The posting account's OAuth 1.0a token.")
    x_access_token_secret: SecretStr | None = None
    linkedin_access_token: SecretStr | None = Field(
        default=None, description="OAuth 2 token with w_member_social (`impromptu linkedin login`)."
    )
    linkedin_author: str | None = Field(
        default=None, description="Who posts: urn:li:person:ID or urn:li:organization:ID (`impromptu linkedin login`)."
    )
    linkedin_version: str = Field(
        default="202509", description="LinkedIn-Version header (YYYYMM); LinkedIn retires each about a year on."
    )
    linkedin_api_url: str = "https://api.linkedin.com"
    linkedin_client_id: str | None = Field(default=None, description="LinkedIn app, for `impromptu linkedin login`.")
    linkedin_client_secret: SecretStr | None = None
    linkedin_redirect_uri: str = "http://127.0.0.1:8000/linkedin/callback"
    linkedin_oauth_url: str = Field(
        default="https://www.linkedin.com/oauth/v2", description="LinkedIn's OAuth 2 endpoints (authorization, token)."
    )
    facebook_page_id: str | None = None
    facebook_page_token: SecretStr | None = Field(default=None, description="A Page access token (pages_manage_posts).")
    facebook_graph_url: str = "https://graph.facebook.com"
    facebook_api_version: str = Field(default="v23.0", description="Graph API version; Meta retires each in ~2 years.")
    slack_webhook: SecretStr | None = Field(default=None, description="Slack incoming webhook for announcements.")
    teams_webhook: SecretStr | None = Field(
        default=None, description='Teams Workflows webhook ("When a Teams webhook request is received").'
    )
    mastodon_url: str | None = Field(default=None, description="Your Mastodon instance, e.g. https://mastodon.social.")
    mastodon_access_token: SecretStr | None = Field(default=None, description="Token with write:statuses.")
    mastodon_visibility: Literal["public", "unlisted", "private"] = "public"
    mastodon_max_characters: int = Field(default=500, description="Your instance's post limit.")
    outreach_email_to: list[str] = Field(
        default_factory=list, description="Who receives announcements by e-mail (with the .ics invite)."
    )

    library_public: bool = Field(
        default=True,
        description="Anyone may read the library (pages, feeds, API); false: only logins. Entries of sessions "
        "announced on internal channels only are never public.",
    )
    library_show_facilitators: bool = Field(
        default=False, description="Show who approved and hosted a session on its library page."
    )
    library_page_size: int = Field(default=20, ge=1, le=100, description="Entries per library page.")
    library_index_storage: Literal["memory", "file"] = Field(
        default="memory",
        description="Where each process keeps its search index: in memory (fastest; grows with the library) or in "
        "a temporary file (RSS stays flat).",
    )
    media_store: Literal["nats", "s3"] = Field(
        default="nats", description="Where recordings are kept: the NATS JetStream Object Store, or an S3 bucket."
    )
    media_bucket: str = Field(default="impromptu-media", description="Object Store bucket, or S3 bucket, of media.")
    s3_endpoint_url: str | None = Field(default=None, description="An S3-compatible endpoint (unset: AWS).")
    s3_region: str = "us-east-1"
    s3_access_key_id: str | None = None
    s3_secret_access_key: SecretStr | None = None
    s3_prefix: str = Field(default="", description="Key prefix inside the S3 bucket.")
    recordings_max_bytes: int = Field(
        default=8 * 1024**3, gt=0, description="Largest recording file kept (a larger one is refused)."
    )
    recordings_import_dir: Path | None = Field(
        default=None,
        description="The only folder local recording files are read from (`impromptu record --media FILE`); "
        "default DATA_DIR/import.",
    )
    recordings_webhook_secret: SecretStr | None = Field(
        default=None, description="HMAC-SHA256 key of POST /webhooks/recordings; unset: it refuses everything."
    )
    zoom_webhook_secret: SecretStr | None = Field(
        default=None, description="The Zoom app's secret token: verifies POST /webhooks/zoom; unset: refused."
    )
    recordings_poll_seconds: float = Field(
        default=300.0, gt=0, description="How often sessions that ended without a recording are looked up."
    )
    recordings_wait_hours: float = Field(
        default=72.0, gt=0, description="How long after its end a session's recording is looked for."
    )
    recordings_download_timeout_seconds: float = Field(
        default=30.0, gt=0, description="Connect/read timeout of a recording download (no overall bound)."
    )

    log_json: bool | None = Field(default=None, description="JSON logs; default: JSON unless on a terminal.")
    log_level: str = "INFO"

    @property
    def nats_store_dir(self) -> Path:
        return self.data_dir / "nats"

    @property
    def nats_auth_dir(self) -> Path:
        """The embedded server's users (nkey seeds, 0600) and its config; made at its first start."""
        return self.data_dir / "nats-auth"

    @property
    def base_url(self) -> str:
        return (self.public_url or f"http://{self.http_host}:{self.http_port}").rstrip("/")

    @property
    def logins_file(self) -> Path:
        """Where `impromptu facilitators add` keeps facilitators' hashed logins (mode 0600)."""
        return self.data_dir / "facilitators.json"

    def saved_logins(self) -> dict[str, FacilitatorLogin]:
        """The logins in `logins_file`, re-read whenever the file changes."""
        try:
            stat = self.logins_file.stat()
        except FileNotFoundError:
            return {}
        stamp = (stat.st_mtime_ns, stat.st_size)
        cached = _SAVED_LOGINS.get(self.logins_file)
        if cached is None or cached[0] != stamp:
            cached = (stamp, TypeAdapter(dict[str, FacilitatorLogin]).validate_json(self.logins_file.read_bytes()))
            _SAVED_LOGINS[self.logins_file] = cached
        return dict(cached[1])

    def current_logins(self) -> dict[str, FacilitatorLogin]:
        """The logins as they are now (the environment's win over saved ones): `impromptu facilitators add/remove`
        take effect at the next request, without a restart."""
        return {**self.saved_logins(), **self.facilitator_logins}

    @property
    def outbox_dir(self) -> Path:
        return self.data_dir / "outbox"

    @property
    def library_dir(self) -> Path:
        return self.data_dir / "library"

    @property
    def import_dir(self) -> Path:
        """Where local recording files may be read from, and nowhere else."""
        return self.recordings_import_dir or self.data_dir / "import"

    @property
    def embedded_url_file(self) -> Path:
        """Where `impromptu run` writes the embedded server's URL so other commands can find it."""
        return self.data_dir / "nats.url"


def load_settings() -> Settings:
    """Settings from the environment; a wrong value is a ConfigError naming the variable, not a traceback."""
    try:
        return Settings()
    except ValidationError as error:
        problems = []
        for problem in error.errors(include_url=False):
            fields = [str(part) for part in problem["loc"]]
            where = ("IMPROMPTU_" + "__".join(fields).upper() + ": ") if fields else ""
            shown = f" (got {problem['input']!r})" if fields and _may_show(fields[0], problem["input"]) else ""
            problems.append(f"{where}{problem['msg'].removeprefix('Value error, ')}{shown}")
        raise ConfigError("bad settings in the environment: " + "; ".join(problems)) from None
    except SettingsError as error:  # a list or mapping setting that is not JSON
        field = re.search(r'field "([^"]+)"', str(error))
        name = f"IMPROMPTU_{field.group(1).upper()}" if field else "a list or mapping setting"
        raise ConfigError(f"bad settings in the environment: {name}: not valid JSON") from None


def _may_show(field: str, value: object) -> bool:
    """Echo a wrong value back, unless it is (or sits in) a secret: those are never printed or logged."""
    info = Settings.model_fields.get(field)
    secret = info is None or "SecretStr" in repr(info.annotation) or field == "facilitator_logins"
    return not secret and isinstance(value, str | int | float)


class SettingsSection(BaseSettings):
    """An adapter's section of the settings (a channel's, a session provider's, a share source's), declared in its
    adapter's file; each field is read from IMPROMPTU_<FIELD>.

    `of(settings)` takes the values the flat Settings holds (the shipped adapters' fields stay there, so every
    existing IMPROMPTU_ name and `Settings(zoom_user=...)` keep working); a field the flat Settings does not know
    (an adapter added since) is read from the environment by the section itself."""

    model_config = SettingsConfigDict(env_prefix="IMPROMPTU_", extra="ignore")

    @classmethod
    def of(cls, settings: Settings) -> Self:
        given = {name: getattr(settings, name) for name in cls.model_fields if hasattr(settings, name)}
        return cls(**given)

    @classmethod
    def env_names(cls) -> list[str]:
        return [f"IMPROMPTU_{name.upper()}" for name in cls.model_fields]
