"""Settings shared by every service, read from the environment and a ``.env`` file.

Each service subclasses :class:`ServiceSettings`. A bad value stops the service at start with exit code 2
and one line naming the setting, so a typo in ``.env`` is found at boot and not at 3 a.m.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, TypeVar

from pydantic import AfterValidator, BeforeValidator, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

EXIT_BAD_SETTINGS = 2

# A setting whose name has one of these words is never echoed in an error line (logs are often shared);
# "urls": the notifier's push URLs carry tokens (NOTIFY_URLS, NOTIFY_URLS_FILE).
SECRET_WORDS = ("password", "secret", "key", "urls")

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]
URL_PASSWORD_RE = re.compile(r"(://[^/@:\s]*:)[^/@\s]*@")


def split_comma_list(value: Any) -> Any:
    """Let list settings be written the way people write them: ``person, car``."""
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


# A list setting written as comma-separated text in the environment (``EMAIL_TO=a@x, b@y``).
CommaList = Annotated[list[str], NoDecode, BeforeValidator(split_comma_list)]


def absolute(value: Path) -> Path:
    """A path made absolute against the working directory at start, once: Flask's ``send_file`` takes a
    relative path as relative to the app's folder, ``Path.exists`` as relative to the working directory,
    and a relative WEB_DATA_DIR once made every snapshot answer 500. No symlink is followed."""
    return Path(os.path.abspath(value.expanduser()))


def absolute_or_none(value: Path | None) -> Path | None:
    return None if value is None else absolute(value)


def existing_file(value: Path | None) -> Path | None:
    if value is not None and not value.is_file():
        raise ValueError(f"no such file: {value}")
    return absolute_or_none(value)


# Every path setting is one of these: relative means relative to the working directory, everywhere. A field
# with a default other than None also needs ``validate_default=True`` (pydantic leaves defaults alone).
AbsolutePath = Annotated[Path, AfterValidator(absolute)]
OptionalPath = Annotated[Path | None, AfterValidator(absolute_or_none)]
# An optional file setting: a path that is not a file stops the service at start.
OptionalFile = Annotated[Path | None, AfterValidator(existing_file)]


class ServiceSettings(BaseSettings):
    """Settings every service has: how to reach the broker, and how much to log."""

    # ``SETTING=`` (in the environment or .env) means "not set", as the generated .env.example writes
    # unset settings: the default applies.
    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", env_ignore_empty=True
    )

    # Shown in .env.example as the section heading for the class's own fields.
    section: ClassVar[str] = "MQTT broker and logging (every service)"

    mqtt_host: str = Field("localhost", min_length=1, description="Host name or address of the MQTT broker.")
    mqtt_port: int = Field(
        1883, ge=1, le=65535, description="TCP port of the MQTT broker (8883 is usual for TLS)."
    )
    mqtt_username: str | None = Field(None, description="User name for the broker; empty for anonymous.")
    mqtt_password: SecretStr | None = Field(None, description="Password for the broker user.")
    mqtt_tls: bool = Field(False, description="Connect with TLS, verifying the broker's certificate.")
    mqtt_ca_file: OptionalFile = Field(
        None, description="CA certificate that signed the broker's certificate; empty = the system CAs."
    )
    log_level: LogLevel = Field("INFO", description="Log level: DEBUG, INFO, WARNING or ERROR.")

    @field_validator("log_level", mode="before")
    @classmethod
    def upper_case_level(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value


SettingsT = TypeVar("SettingsT", bound=ServiceSettings)


def describe_error(error: ValidationError) -> str:
    """One line naming the first bad setting as the user wrote it (its environment variable)."""
    first = error.errors()[0]
    name = str(first["loc"][0]).upper() if first["loc"] else "settings"
    value = first.get("input")
    secret = any(word in name.lower() for word in SECRET_WORDS)
    # A URL's password (rtsp://user:password@camera) is hidden as everywhere else.
    shown = "" if isinstance(value, dict) or secret else "=" + URL_PASSWORD_RE.sub(r"\1***@", str(value))
    message = first["msg"].removeprefix("Value error, ")
    return f"invalid setting {name}{shown}: {message}"


def load_settings(settings_class: type[SettingsT], service: str) -> SettingsT:
    """Read the settings, or stop the process with exit code 2 and one line naming the bad setting."""
    try:
        return settings_class()
    except ValidationError as error:
        print(f"sentrycam-{service}: {describe_error(error)}", file=sys.stderr)
        sys.exit(EXIT_BAD_SETTINGS)
