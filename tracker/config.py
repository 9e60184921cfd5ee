"""Settings, read once from the environment (and a `.env` file in the working directory)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import msgspec
from starlette.config import Config

from tracker.errors import TrackerError


class ConfigError(TrackerError):
    """A setting has a value Tracker cannot use."""


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    """Everything that can be configured. Every field has a `TRACKER_*` variable."""

    db: Path = Path("tracker.db")
    secret_key: str | None = None
    admins: frozenset[str] = frozenset()
    bcrypt_rounds: int = 12
    cookie_secure: bool = False
    trust_proxy: bool = False
    database_url: str | None = None
    guest_token_ttl: int = 30 * 24 * 3600
    user_token_ttl: int = 24 * 3600
    snapshot_every: int = 100_000
    host: str = "127.0.0.1"
    port: int = 6969
    log_level: str = "info"
    access_log: bool = True

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, env_file: str | Path | None = ".env"
    ) -> Settings:
        """Settings from `environ` (default: the process environment) and `env_file`."""
        env_path = Path(env_file) if env_file is not None else None
        config = Config(
            env_file=env_path if env_path is not None and env_path.is_file() else None,
            environ=dict(os.environ if environ is None else environ),
        )
        try:
            settings = cls(
                db=config("TRACKER_DB", cast=Path, default=Path("tracker.db")),
                secret_key=config("TRACKER_SECRET_KEY", default=None) or None,
                admins=frozenset(
                    name.strip().lower()
                    for name in config("TRACKER_ADMINS", default="").split(",")
                    if name.strip()
                ),
                bcrypt_rounds=config("TRACKER_BCRYPT_ROUNDS", cast=int, default=12),
                cookie_secure=config("TRACKER_COOKIE_SECURE", cast=bool, default=False),
                trust_proxy=config("TRACKER_TRUST_PROXY", cast=bool, default=False),
                database_url=config("TRACKER_DATABASE_URL", default=None) or None,
                guest_token_ttl=config("TRACKER_GUEST_TOKEN_TTL", cast=int, default=30 * 86400),
                user_token_ttl=config("TRACKER_USER_TOKEN_TTL", cast=int, default=86400),
                snapshot_every=config("TRACKER_SNAPSHOT_EVERY", cast=int, default=100_000),
                host=config("TRACKER_HOST", default="127.0.0.1"),
                port=config("TRACKER_PORT", cast=int, default=6969),
                log_level=config("TRACKER_LOG_LEVEL", default="info").lower(),
                access_log=config("TRACKER_ACCESS_LOG", cast=bool, default=True),
            )
        except ValueError as exc:
            raise ConfigError(f"invalid setting: {exc}") from exc
        settings.check()
        return settings

    def check(self) -> None:
        """Refuse values that cannot work, with a message that names the variable."""
        if not 4 <= self.bcrypt_rounds <= 31:
            raise ConfigError("TRACKER_BCRYPT_ROUNDS must be between 4 and 31")
        if self.guest_token_ttl <= 0:
            raise ConfigError("TRACKER_GUEST_TOKEN_TTL must be a positive number of seconds")
        if self.user_token_ttl <= 0:
            raise ConfigError("TRACKER_USER_TOKEN_TTL must be a positive number of seconds")
        if self.log_level not in ("critical", "error", "warning", "info", "debug", "trace"):
            raise ConfigError("TRACKER_LOG_LEVEL must be debug, info, warning or error")
        if self.snapshot_every < 0:
            raise ConfigError("TRACKER_SNAPSHOT_EVERY must be 0 (never) or more events")
        if self.secret_key is not None and len(self.secret_key) < 32:
            raise ConfigError("TRACKER_SECRET_KEY must be at least 32 characters")
        if not 0 <= self.port <= 65535:
            raise ConfigError("TRACKER_PORT must be between 0 and 65535")
        if self.database_url is not None:
            if not self.database_url.startswith(("postgresql://", "postgres://")):
                raise ConfigError(
                    "TRACKER_DATABASE_URL must be a postgresql:// URL "
                    "(unset it to use the embedded SQLite log, TRACKER_DB)"
                )
            if self.secret_key is None:
                raise ConfigError(
                    "TRACKER_SECRET_KEY is required with TRACKER_DATABASE_URL: "
                    "every instance on the database must sign sessions with the same key"
                )

    def replace(self, **changes: object) -> Settings:
        """A copy with some fields changed (re-checked)."""
        settings = msgspec.structs.replace(self, **changes)
        settings.check()
        return settings
