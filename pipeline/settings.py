"""Settings from the environment (prefix IMPROMPTU_, plus the conventional NATS_URL)."""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from pipeline.delivery import DeliveryPolicy

DEFAULT_RULES = Path(__file__).parent / "triggers" / "default_rules.yaml"


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
    delivery: DeliveryPolicy = DeliveryPolicy()
    ack_wait_seconds: float = 30.0

    rules_file: Path = DEFAULT_RULES
    trigger_concurrency: int = Field(
        default=16, ge=1, description="Shares one trigger worker judges at once (state writes are compare-and-set)."
    )
    rules_reload_seconds: float = Field(default=1.0, description="How often the rules file is checked for edits.")

    http_host: str = Field(default="127.0.0.1", description="Where the pipeline's HTTP server listens.")
    http_port: int = Field(default=8000, description="Port of the HTTP server (webhook; 0: any free port).")

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

    fetch_allow: list[str] = Field(
        default_factory=list,
        description="Hosts or CIDRs that may be fetched although private (local test servers only).",
    )
    fetch_timeout_seconds: float = 10.0
    fetch_max_bytes: int = 5 * 1024 * 1024

    jitsi_base_url: str = "https://meet.jit.si"

    log_json: bool | None = Field(default=None, description="JSON logs; default: JSON unless on a terminal.")
    log_level: str = "INFO"

    @property
    def nats_store_dir(self) -> Path:
        return self.data_dir / "nats"

    @property
    def outbox_dir(self) -> Path:
        return self.data_dir / "outbox"

    @property
    def library_dir(self) -> Path:
        return self.data_dir / "library"

    @property
    def embedded_url_file(self) -> Path:
        """Where `impromptu run` writes the embedded server's URL so other commands can find it."""
        return self.data_dir / "nats.url"
