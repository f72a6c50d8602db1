"""Settings of the web relay (``WEB_*``)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import ClassVar

from pydantic import Field, SecretStr, ValidationInfo, field_validator
from werkzeug.security import generate_password_hash

from services.common.settings import AbsolutePath, OptionalPath, ServiceSettings

MIN_PASSWORD_LENGTH = 8
MIN_SECRET_KEY_LENGTH = 32
HEX_RE = re.compile(r"[0-9a-f]+")


class WebSettings(ServiceSettings):
    section: ClassVar[str] = "Web relay"

    web_host: str = Field("0.0.0.0", min_length=1, description="Address the web server listens on.")  # noqa: S104
    web_port: int = Field(8080, ge=1, le=65535, description="TCP port of the web server.")
    web_data_dir: AbsolutePath = Field(
        Path("data/web"),
        validate_default=True,
        description="Where the relay keeps its event database, snapshots and generated secret key.",
    )
    web_record_dir: OptionalPath = Field(
        None,
        description="The recorder's directory (its RECORD_DIR), read only, for playing clips and "
        "recordings; a relative path is relative to the working directory; empty = no playback.",
    )
    web_username: str = Field("admin", min_length=1, max_length=64, description="The owner's login name.")
    web_password_hash: SecretStr | None = Field(
        None,
        description="A werkzeug password hash (werkzeug.security.generate_password_hash) instead of the "
        "password itself.",
    )
    web_password: SecretStr | None = Field(
        None,
        validate_default=True,
        description=f"The owner's password, at least {MIN_PASSWORD_LENGTH} characters (or give "
        "WEB_PASSWORD_HASH instead).",
    )
    web_secret_key: SecretStr | None = Field(
        None,
        description=f"Key that signs session cookies, at least {MIN_SECRET_KEY_LENGTH} characters; empty = "
        "generated once and kept in the data directory.",
    )
    web_threads: int = Field(
        100, ge=4, le=1000, description="Server threads: each live viewer and each open page holds one."
    )
    web_secure_cookies: bool = Field(
        False, description="Mark the session cookie Secure (set it when a HTTPS reverse proxy is in front)."
    )
    web_trusted_proxy: str | None = Field(
        None,
        description="Address of a reverse proxy whose X-Forwarded-For/-Proto headers are believed; "
        "empty = none.",
    )
    web_login_attempts: int = Field(
        5, ge=1, description="Failed logins allowed per client address within WEB_LOGIN_WINDOW_S."
    )
    web_login_window_s: float = Field(300.0, gt=0, description="Window of the failed-login limit, seconds.")
    web_retention_days: float = Field(
        30.0, gt=0, description="Events older than this many days are deleted with their snapshots."
    )
    web_retention_mb: float = Field(
        1024.0, gt=0, description="Total snapshot size kept, megabytes; the oldest events go first."
    )

    @field_validator("web_password_hash")
    @classmethod
    def looks_like_a_hash(cls, value: SecretStr | None) -> SecretStr | None:
        """Found now, not as a server error at every login (or a login that can never succeed)."""
        if value is None:
            return value
        parts = value.get_secret_value().split("$")
        if len(parts) != 3 or not all(parts):
            raise ValueError("not a werkzeug password hash (method$salt$hash)")
        method, _salt, digest = parts
        try:
            # What this method makes: it must be known, and the digest as long as the ones it makes.
            made = generate_password_hash("", method=method, salt_length=1).split("$")[2]
        except ValueError as error:
            raise ValueError(f"not a werkzeug password hash: {error}") from error
        if not HEX_RE.fullmatch(digest) or len(digest) != len(made):
            raise ValueError(
                f"not a werkzeug password hash: the hash after the second $ must be {len(made)} hex digits"
            )
        return value

    @field_validator("web_password")
    @classmethod
    def needs_a_password(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        if value is None and info.data.get("web_password_hash") is None:
            raise ValueError("set WEB_PASSWORD or WEB_PASSWORD_HASH")
        if value is not None and len(value.get_secret_value()) < MIN_PASSWORD_LENGTH:
            raise ValueError(f"must be at least {MIN_PASSWORD_LENGTH} characters")
        return value

    @field_validator("web_secret_key")
    @classmethod
    def long_enough_key(cls, value: SecretStr | None) -> SecretStr | None:
        # A short key can be guessed offline from one cookie, and then any cookie forged.
        if value is not None and len(value.get_secret_value()) < MIN_SECRET_KEY_LENGTH:
            raise ValueError(
                f"must be at least {MIN_SECRET_KEY_LENGTH} characters (python -c 'import "
                "secrets; print(secrets.token_hex(32))' makes one)"
            )
        return value
