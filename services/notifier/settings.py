"""The notifier's settings: which detections alert, how email is sent, and the deterrent."""

from __future__ import annotations

import re
from datetime import time
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, SecretStr, ValidationInfo, field_validator

from services.common.settings import (
    AbsolutePath,
    CommaList,
    OptionalFile,
    ServiceSettings,
    split_comma_list,
)
from services.common.topics import label_slug, validate_camera_id
from services.notifier.const import SMTP_DEFAULT_PORTS

SmtpSecurity = Literal["ssl", "starttls", "none"]
QuietRange = tuple[time, time]
_RANGE_RE = re.compile(r"([01]?\d|2[0-3]):([0-5]\d)-([01]?\d|2[0-3]):([0-5]\d)")


def parse_schedule(text: str) -> list[QuietRange]:
    """``22:00-07:00, 12:30-13:00`` as (start, end) pairs; a range may cross midnight."""
    ranges = []
    for item in split_comma_list(text):
        match = _RANGE_RE.fullmatch(item.replace(" ", ""))
        if not match:
            raise ValueError(f"{item!r} is not HH:MM-HH:MM")
        start = time(int(match[1]), int(match[2]))
        end = time(int(match[3]), int(match[4]))
        if start == end:
            raise ValueError(f"{item!r} is empty: start and end are the same")
        ranges.append((start, end))
    return ranges


class NotifierSettings(ServiceSettings):
    """Settings of ``python -m services.notifier``."""

    section: ClassVar[str] = "Notifier: email alerts, arming and the deterrent"

    notify_objects: CommaList = Field(
        ["person"],
        description="Labels whose events alert, comma-separated (e.g. person,car); NOTIFY_RULES may "
        "narrow them.",
    )
    smtp_host: str | None = Field(
        None, description="SMTP server for alert emails; empty = no email (the notifier warns once)."
    )
    smtp_port: int | None = Field(
        None, ge=1, le=65535, description="SMTP port; empty = 465 for ssl, 587 for starttls, 25 for none."
    )
    smtp_security: SmtpSecurity = Field(
        "ssl", description="ssl (TLS from the start, port 465), starttls (port 587) or none (plain text)."
    )
    smtp_username: str | None = Field(
        None, description="SMTP login; empty = send without logging in. Gmail: your address."
    )
    smtp_password: SecretStr | None = Field(
        None, description="SMTP password. Gmail: an app password, not your account password."
    )
    smtp_ca_file: OptionalFile = Field(
        None, description="CA certificate to trust for a self-signed SMTP server; empty = the system CAs."
    )
    smtp_timeout: float = Field(15.0, gt=0, le=300, description="Seconds to wait for the SMTP server.")
    email_from: str | None = Field(
        None,
        validate_default=True,
        description="Sender address of alert emails; empty = SMTP_USERNAME when that is an address.",
    )
    email_to: CommaList = Field(
        [], validate_default=True, description="Recipients of alert emails, comma-separated."
    )
    web_base_url: str | None = Field(
        None,
        description="Address of the web relay as seen by the recipients (http://cam.home:8080); "
        "emails link to <url>/events/<event id>. Empty = no link.",
    )
    notify_rules: OptionalFile = Field(
        None,
        description="YAML file of alert rules per camera: labels, required zones, dwell time, schedule "
        "(see docs/notifier.md). Empty = every event of NOTIFY_OBJECTS alerts.",
    )
    notify_cooldown: float = Field(
        60.0,
        ge=0,
        description="Seconds after an emailed alert during which further events of the same camera are "
        "recorded but not emailed.",
    )
    notify_schedule: str = Field(
        "",
        description="Quiet hours in local time, when alerts are recorded but not emailed: HH:MM-HH:MM, "
        "comma-separated, may cross midnight (22:00-07:00). Empty = always send.",
    )
    notify_max_age: float = Field(
        3600.0, gt=0, description="Seconds after the event when an unsent alert is given up (logged)."
    )
    notify_retry_min: float = Field(
        1.0, gt=0, le=3600, description="First retry delay in seconds when sending fails; doubles each time."
    )
    notify_retry_max: float = Field(
        300.0, gt=0, le=3600, description="Longest retry delay in seconds when sending keeps failing."
    )
    notify_urls: SecretStr | None = Field(
        None,
        description="Push channels: Apprise URLs (ntfy://, tgram://, hassio://, json:// ...), comma or "
        "newline separated; every alert goes to each (docs/notifier.md). Never logged. Empty = none.",
    )
    notify_urls_file: OptionalFile = Field(
        None,
        description="A file holding the push channels' Apprise URLs, as NOTIFY_URLS (a Docker secret); "
        "instead of NOTIFY_URLS.",
    )
    notify_data_dir: AbsolutePath = Field(
        Path("data"),
        validate_default=True,
        description="Directory of the alert outbox (SQLite); a volume in Docker.",
    )
    deterrent_cameras: CommaList = Field(
        [],
        description="Cameras that sound their alarm on a person while armed: ids comma-separated, or "
        "all. Empty = no deterrent.",
    )
    deterrent_duration: float = Field(10.0, gt=0, le=600, description="Seconds the deterrent sound plays.")
    deterrent_max_age: float = Field(
        10.0,
        gt=0,
        le=3600,
        description="Seconds after its detection (detected_at) during which an event still sounds the "
        "deterrent; older ones (queued while the notifier was away, or late) are emailed but sound nothing.",
    )

    @field_validator("smtp_host", "smtp_username", "email_from")
    @classmethod
    def not_blank(cls, value: str | None) -> str | None:
        # Email settings are often pasted with stray spaces; only spaces is a mistake, not "unset".
        if value is None:
            return None
        if not value.strip():
            raise ValueError("only spaces: leave it empty to unset it")
        return value.strip()

    @field_validator("notify_urls_file")
    @classmethod
    def one_url_source(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        if value is not None and info.data.get("notify_urls") is not None:
            raise ValueError("set NOTIFY_URLS or NOTIFY_URLS_FILE, not both")
        return value

    @field_validator("smtp_security", mode="before")
    @classmethod
    def lower_security(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("email_from")
    @classmethod
    def sender_address(cls, value: str | None, info: ValidationInfo) -> str | None:
        if not info.data.get("smtp_host"):
            return value
        sender = value or info.data.get("smtp_username")
        if not sender or "@" not in sender:
            raise ValueError("set it to the sender address (needed when SMTP_HOST is set)")
        return sender

    @field_validator("email_to")
    @classmethod
    def recipients(cls, value: list[str], info: ValidationInfo) -> list[str]:
        host = info.data.get("smtp_host")
        if host and not value:
            raise ValueError("set at least one recipient (needed when SMTP_HOST is set)")
        if value and not host and "smtp_host" in info.data:
            raise ValueError("recipients are set but SMTP_HOST is not")
        for address in value:
            if "@" not in address:
                raise ValueError(f"{address!r} is not an email address")
        return value

    @field_validator("web_base_url")
    @classmethod
    def http_url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"https?://[^/\s]+", value):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/") if value else value

    @field_validator("notify_schedule")
    @classmethod
    def schedule_format(cls, value: str) -> str:
        parse_schedule(value)
        return value

    @field_validator("notify_objects")
    @classmethod
    def objects(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("name at least one label")
        return [label_slug(label) for label in value]

    @field_validator("deterrent_cameras")
    @classmethod
    def cameras(cls, value: list[str]) -> list[str]:
        if [item.lower() for item in value] == ["all"]:
            return ["all"]
        return [validate_camera_id(camera) for camera in value]

    @property
    def email_enabled(self) -> bool:
        return self.smtp_host is not None

    @property
    def port(self) -> int:
        return self.smtp_port or SMTP_DEFAULT_PORTS[self.smtp_security]

    @property
    def quiet_hours(self) -> list[QuietRange]:
        return parse_schedule(self.notify_schedule)

    def deterrent_for(self, camera: str) -> bool:
        return self.deterrent_cameras == ["all"] or camera in self.deterrent_cameras
