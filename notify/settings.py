"""The notifier's one settings class, read from ``PILOTWATCH_NOTIFY_*`` when the service starts (never at import).

Secrets (SMTP password, MQTT password, acknowledge-link key) come from the environment or a ``*_file`` that holds
them (a docker or systemd secret); there is no default for any of them, and placeholder values are refused.
"""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Any, Self

from pydantic import Field, SecretStr, ValidationInfo, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from pilotwatch.alerting import ALERT_STORE_FILE
from pilotwatch.manifest import Manifest
from pilotwatch.settings import CommonSettings, MqttConnection, ServiceSettings, StackConfig, refuse_placeholder


class SmtpSecurity(enum.StrEnum):
    STARTTLS = "starttls"  # connect in plain text, upgrade with STARTTLS before login (port 587)
    TLS = "tls"  # TLS from the first byte (port 465)


class NotifySettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="PILOTWATCH_NOTIFY_", extra="forbid", env_nested_delimiter="__")

    # -- state ----------------------------------------------------------------------------------------------
    alerts_db: Path = Path(".pilotwatch/alerts") / ALERT_STORE_FILE
    """The alert engine's SQLite database, read for its ``alert_transitions`` outbox."""
    state_db: Path = Path(".pilotwatch/notify/notify.db")
    """The notifier's own database: cursor, deliveries, messages, attempts, dead letters, timers."""
    recipients_file: Path | None = None
    """Recipients YAML; empty means the manifest's ``notifications.recipients``."""
    manifest: Path | None = None
    """Pilot manifest; empty means ``PILOTWATCH_MANIFEST`` or the shipped default."""

    # -- policy ---------------------------------------------------------------------------------------------
    group_window_s: float = Field(default=30.0, ge=0, le=3600)
    """Alerts of one city, kind and transition for one recipient that arrive within this window share a message."""
    repeat_interval_s: float = Field(default=4 * 3600.0, gt=0)
    """A fired alert nobody has acknowledged or resolved is sent again after this long."""
    max_per_recipient_per_hour: int = Field(default=20, ge=1)
    """Messages per recipient per rolling hour; what is held back goes out as one summary when there is room."""
    max_alerts_per_message: int = Field(default=200, ge=1, le=5000)

    # -- retries --------------------------------------------------------------------------------------------
    retry_base_s: float = Field(default=2.0, gt=0)
    retry_max_s: float = Field(default=600.0, gt=0)
    max_attempts: int = Field(default=12, ge=1)
    """After this many failed attempts a message becomes a dead letter with its last error."""
    send_timeout_s: float = Field(default=10.0, gt=0)
    send_concurrency: int = Field(default=8, ge=1, le=64)
    poll_interval_s: float = Field(default=0.2, gt=0)

    # -- e-mail ---------------------------------------------------------------------------------------------
    smtp_host: str | None = None
    smtp_port: int = Field(default=587, ge=1, le=65535)
    smtp_security: SmtpSecurity = SmtpSecurity.STARTTLS
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_password_file: Path | None = None
    smtp_from: str = "pilotwatch <alerts@localhost>"
    smtp_ca_file: Path | None = None
    """CA bundle that signs the SMTP server's certificate, when it is not in the system store (a private CA)."""

    # -- MQTT -----------------------------------------------------------------------------------------------
    mqtt: MqttConnection | None = None
    """The broker of the MQTT channel (``PILOTWATCH_NOTIFY_MQTT__HOST``, ...); unset: no MQTT channel."""
    mqtt_client_id: str = Field(default="pilotwatch-notify", min_length=1, max_length=64)

    # -- links ----------------------------------------------------------------------------------------------
    public_url: str | None = None
    """Base URL of the API as people reach it, for reading and acknowledge links; empty: no links."""
    ack_link_secret: SecretStr | None = None
    ack_link_secret_file: Path | None = None
    ack_link_ttl_s: float = Field(default=24 * 3600.0, gt=0)

    metrics_host: str = "127.0.0.1"
    metrics_port: int | None = None

    @field_validator("smtp_password", "ack_link_secret")
    @classmethod
    def _no_placeholder(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        refuse_placeholder(info.field_name or "secret", value)
        return value

    @field_validator("public_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError(f"public_url must start with http:// or https://, got {value!r}")
        return None if value is None else value.rstrip("/")

    @model_validator(mode="after")
    def _secrets_from_files(self) -> Self:
        for name in ("smtp_password", "ack_link_secret"):
            path: Path | None = getattr(self, f"{name}_file")
            if path is None:
                continue
            if getattr(self, name) is not None:
                raise ValueError(f"set {name} or {name}_file, not both")
            try:
                text = path.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ValueError(f"cannot read {name}_file {str(path)!r}: {exc.strerror}") from None
            refuse_placeholder(f"{name}_file", SecretStr(text))
            setattr(self, name, SecretStr(text))
        if self.ack_link_secret is not None and len(self.ack_link_secret.get_secret_value()) < 16:
            raise ValueError("ack_link_secret must have at least 16 characters (`openssl rand -hex 32`)")
        if self.smtp_username is not None and self.smtp_password is None:
            raise ValueError("smtp_username is set but smtp_password (or smtp_password_file) is not")
        return self

    @classmethod
    def local_defaults(cls, common: CommonSettings, stack: StackConfig | None) -> dict[str, Any]:
        return {
            "alerts_db": common.home / "alerts" / ALERT_STORE_FILE,
            "state_db": common.home / "notify" / "notify.db",
            "manifest": common.manifest,
        }

    def resolve_recipients_file(self, manifest: Manifest) -> Path:
        if self.recipients_file is not None:
            return self.recipients_file
        if manifest.notifications is None:
            raise ValueError(
                "no recipients file: set PILOTWATCH_NOTIFY_RECIPIENTS_FILE or notifications.recipients in the manifest"
            )
        base = self.manifest.parent if self.manifest is not None else Path.cwd()
        return base / manifest.notifications.recipients
