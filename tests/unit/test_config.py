"""Settings from TRACKER_* variables and a .env file; a bad value names its variable."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tracker.config import ConfigError, Settings

SECRET = "s" * 32


def from_env(**environ: str) -> Settings:
    return Settings.from_env(environ=environ, env_file=None)


def test_without_variables_every_setting_has_its_default() -> None:
    settings = from_env()

    assert settings == Settings()
    assert settings.db == Path("tracker.db")
    assert settings.secret_key is None
    assert settings.admins == frozenset()
    assert settings.bcrypt_rounds == 12
    assert (settings.cookie_secure, settings.trust_proxy) == (False, False)
    assert settings.database_url is None
    assert (settings.guest_token_ttl, settings.user_token_ttl) == (30 * 86400, 86400)
    assert settings.snapshot_every == 100_000
    assert (settings.host, settings.port) == ("127.0.0.1", 6969)
    assert (settings.log_level, settings.access_log) == ("info", True)


@pytest.mark.parametrize(
    ("variable", "value", "field", "parsed"),
    [
        ("TRACKER_DB", "/var/lib/tracker/log.db", "db", Path("/var/lib/tracker/log.db")),
        ("TRACKER_SECRET_KEY", SECRET, "secret_key", SECRET),
        ("TRACKER_SECRET_KEY", "", "secret_key", None),
        ("TRACKER_ADMINS", "Ada, grace ,,LINUS", "admins", frozenset({"ada", "grace", "linus"})),
        ("TRACKER_ADMINS", " , ", "admins", frozenset()),
        ("TRACKER_BCRYPT_ROUNDS", "4", "bcrypt_rounds", 4),
        ("TRACKER_BCRYPT_ROUNDS", "31", "bcrypt_rounds", 31),
        ("TRACKER_COOKIE_SECURE", "1", "cookie_secure", True),
        ("TRACKER_COOKIE_SECURE", "true", "cookie_secure", True),
        ("TRACKER_COOKIE_SECURE", "TRUE", "cookie_secure", True),
        ("TRACKER_COOKIE_SECURE", "0", "cookie_secure", False),
        ("TRACKER_TRUST_PROXY", "1", "trust_proxy", True),
        ("TRACKER_DATABASE_URL", "", "database_url", None),
        ("TRACKER_GUEST_TOKEN_TTL", "60", "guest_token_ttl", 60),
        ("TRACKER_USER_TOKEN_TTL", "120", "user_token_ttl", 120),
        ("TRACKER_SNAPSHOT_EVERY", "0", "snapshot_every", 0),
        ("TRACKER_SNAPSHOT_EVERY", "500", "snapshot_every", 500),
        ("TRACKER_HOST", "0.0.0.0", "host", "0.0.0.0"),
        ("TRACKER_PORT", "0", "port", 0),
        ("TRACKER_PORT", "8080", "port", 8080),
        ("TRACKER_PORT", "65535", "port", 65535),
        ("TRACKER_LOG_LEVEL", "DEBUG", "log_level", "debug"),
        ("TRACKER_ACCESS_LOG", "false", "access_log", False),
    ],
)
def test_every_variable_is_read(variable: str, value: str, field: str, parsed: Any) -> None:
    assert getattr(from_env(**{variable: value}), field) == parsed


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("TRACKER_BCRYPT_ROUNDS", "twelve"),
        ("TRACKER_BCRYPT_ROUNDS", "3"),
        ("TRACKER_BCRYPT_ROUNDS", "32"),
        ("TRACKER_COOKIE_SECURE", "yes"),
        ("TRACKER_TRUST_PROXY", "maybe"),
        ("TRACKER_ACCESS_LOG", "off"),
        ("TRACKER_PORT", "http"),
        ("TRACKER_PORT", "-1"),
        ("TRACKER_PORT", "65536"),
        ("TRACKER_SNAPSHOT_EVERY", "-1"),
        ("TRACKER_SNAPSHOT_EVERY", "1e4"),
        ("TRACKER_SECRET_KEY", "too-short"),
        ("TRACKER_DATABASE_URL", "mysql://db/tracker"),
        ("TRACKER_DATABASE_URL", "db.example/tracker"),
        ("TRACKER_GUEST_TOKEN_TTL", "1h"),
        ("TRACKER_USER_TOKEN_TTL", "3.5"),
        ("TRACKER_GUEST_TOKEN_TTL", "0"),
        ("TRACKER_USER_TOKEN_TTL", "-5"),
        ("TRACKER_LOG_LEVEL", "loud"),
    ],
)
def test_a_bad_value_is_refused_naming_its_variable(variable: str, value: str) -> None:
    with pytest.raises(ConfigError, match=variable):
        from_env(**{variable: value})


def test_a_postgresql_url_needs_a_secret_key_every_instance_shares() -> None:
    with pytest.raises(ConfigError, match="TRACKER_SECRET_KEY is required"):
        from_env(TRACKER_DATABASE_URL="postgresql://db/tracker")


@pytest.mark.parametrize("scheme", ["postgresql", "postgres"])
def test_a_postgresql_url_with_a_secret_key_selects_postgresql(scheme: str) -> None:
    settings = from_env(
        TRACKER_DATABASE_URL=f"{scheme}://tracker@db:5432/tracker", TRACKER_SECRET_KEY="k" * 32
    )
    assert settings.database_url == f"{scheme}://tracker@db:5432/tracker"


@pytest.mark.parametrize("variable", ["TRACKER_GUEST_TOKEN_TTL", "TRACKER_USER_TOKEN_TTL"])
def test_a_token_lifetime_that_is_not_positive_is_refused(variable: str) -> None:
    with pytest.raises(ConfigError):
        from_env(**{variable: "0"})


def test_a_dotenv_file_is_read(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text(
        "# local settings\nTRACKER_PORT=8080\nTRACKER_ADMINS=ada\nTRACKER_DB=local.db\n"
    )

    settings = Settings.from_env(environ={}, env_file=env_file)

    assert (settings.port, settings.admins, settings.db) == (
        8080,
        frozenset({"ada"}),
        Path("local.db"),
    )


def test_the_environment_wins_over_the_dotenv_file(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("TRACKER_PORT=8080\n")

    settings = Settings.from_env(environ={"TRACKER_PORT": "9090"}, env_file=env_file)

    assert settings.port == 9090


def test_a_missing_dotenv_file_is_no_error(tmp_path: Path) -> None:
    assert Settings.from_env(environ={}, env_file=tmp_path / "absent.env") == Settings()


def test_a_bad_value_in_the_dotenv_file_is_refused(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("TRACKER_PORT=eighty\n")

    with pytest.raises(ConfigError, match="TRACKER_PORT"):
        Settings.from_env(environ={}, env_file=env_file)


def test_variables_without_the_prefix_are_ignored() -> None:
    assert from_env(PORT="1", DB="x.db") == Settings()


def test_replace_checks_the_new_values() -> None:
    settings = from_env()

    assert settings.replace(port=1234).port == 1234
    with pytest.raises(ConfigError, match="TRACKER_PORT"):
        settings.replace(port=70000)
