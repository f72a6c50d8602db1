"""Settings of the web relay (``WEB_*``)."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from pydantic import Field, SecretStr, ValidationInfo, field_validator
from werkzeug.security import check_password_hash

from services.common.settings import ServiceSettings


class WebSettings(ServiceSettings):
    section: ClassVar[str] = "Web relay"

    web_host: str = Field("0.0.0.0", min_length=1, description="Address the web server listens on.")  # noqa: S104
    web_port: int = Field(8080, ge=1, le=65535, description="TCP port of the web server.")
    web_data_dir: Path = Field(
        Path("data/web"),
        description="Where the relay keeps its event database, snapshots and generated secret key.",
    )
    web_username: str = Field("admin", min_length=1, max_length=64, description="The owner's login name.")
    web_password_hash: SecretStr | None = Field(
        None,
        description="A werkzeug password hash (werkzeug.security.generate_password_hash) instead of the "
        "password itself.",
    )
    web_password: SecretStr | None = Field(
        None, validate_default=True, description="The owner's password (or give WEB_PASSWORD_HASH instead)."
    )
    web_secret_key: SecretStr | None = Field(
        None,
        description="Key that signs session cookies; empty = generated once and kept in the data directory.",
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
        if value is None:
            return value
        if "$" not in value.get_secret_value():
            raise ValueError("not a werkzeug password hash (method$salt$hash)")
        try:
            # Found now, not as a server error at the first login.
            check_password_hash(value.get_secret_value(), "")
        except ValueError as error:
            raise ValueError(f"not a werkzeug password hash: {error}") from error
        return value

    @field_validator("web_password")
    @classmethod
    def needs_a_password(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        if value is None and info.data.get("web_password_hash") is None:
            raise ValueError("set WEB_PASSWORD or WEB_PASSWORD_HASH")
        return value
