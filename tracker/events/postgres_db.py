"""Talking to PostgreSQL: the driver, connections with Tracker's session settings, the
schema and its checks, and errors told in one line without the connection string.

The driver is asyncpg, an optional extra: `pip install 'tracker[postgres]'`.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from tracker.errors import CorruptLog, StorageError
from tracker.events.records import GENESIS_HASH

if TYPE_CHECKING:
    import asyncpg

logger = logging.getLogger(__name__)

APPLICATION = "tracker"
SCHEMA_VERSION = 1
SCHEMA_LOCK = 0x54524B52_0001
"""The advisory lock that serialises creating the schema (two instances starting at once)."""
CONNECT_TIMEOUT = 5.0
"""Seconds to wait for a connection before the database counts as unreachable."""
COMMAND_TIMEOUT = 30.0
"""Seconds a statement may take before its connection is given up."""
SESSION = {
    # A peer frozen inside its transaction (a paused VM, a lost network) would hold the
    # log's head row, and with it every instance's writes: the server ends it instead.
    "idle_in_transaction_session_timeout": "10s",
    # A batch waits this long for the head row, then fails (503) rather than hang.
    "lock_timeout": "5s",
}
"""Settings of every session Tracker opens."""

SCHEMA = f"""
CREATE TABLE tracker_meta (
    key    text PRIMARY KEY,
    value  text NOT NULL
);
INSERT INTO tracker_meta VALUES ('application', '{APPLICATION}'),
                                ('schema_version', '{SCHEMA_VERSION}');
CREATE TABLE events (
    position     bigint  PRIMARY KEY,
    stream       text    COLLATE "C" NOT NULL,
    version      bigint  NOT NULL,
    type         text    NOT NULL,
    schema       integer NOT NULL,
    data         bytea   NOT NULL,
    actor        text    NOT NULL,
    recorded_at  text    NOT NULL,
    hash         text    NOT NULL,
    UNIQUE (stream, version)
);
CREATE TABLE log_head (
    only_row  boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    position  bigint  NOT NULL,
    hash      text    NOT NULL
);
INSERT INTO log_head (position, hash) VALUES (0, '{GENESIS_HASH}');
CREATE TABLE snapshots (
    name      text    PRIMARY KEY,
    position  bigint  NOT NULL,
    hash      text    NOT NULL,
    format    integer NOT NULL,
    data      bytea   NOT NULL
);
CREATE TABLE login_failures (
    key  text             NOT NULL,
    at   double precision NOT NULL
);
CREATE INDEX login_failures_by_key ON login_failures (key, at);
CREATE INDEX login_failures_by_age ON login_failures (at);
"""


def driver() -> Any:
    """The asyncpg module, or `StorageError` saying how to install it."""
    try:
        import asyncpg
    except ImportError:
        raise StorageError(
            "TRACKER_DATABASE_URL names PostgreSQL, whose driver is not installed:"
            " pip install 'tracker[postgres]'"
        ) from None
    return asyncpg


def database_errors() -> tuple[type[BaseException], ...]:
    """What the driver and the network raise when the database cannot do what was asked."""
    asyncpg = driver()
    return (asyncpg.PostgresError, asyncpg.InterfaceError, OSError)


def describe(url: str) -> str:
    """Where `url` points, for messages: what follows the user and password, as written
    (not parsed: a URL this cannot read must still never show its password)."""
    address = url.partition("://")[2].rpartition("@")[2].partition("?")[0]
    return f"PostgreSQL at {address}" if address else "PostgreSQL"


def reason(exc: BaseException) -> str:
    """An error of the driver or the network in one line, without the connection string."""
    text = str(exc).splitlines()[0] if str(exc) else ""
    return text or type(exc).__name__


async def connect(url: str, **settings: str) -> asyncpg.Connection:
    """A new connection with Tracker's session settings (and `settings`)."""
    connection: asyncpg.Connection = await driver().connect(
        url,
        timeout=CONNECT_TIMEOUT,
        command_timeout=COMMAND_TIMEOUT,
        server_settings={**SESSION, **settings},
    )
    return connection


async def create_pool(url: str, size: int) -> asyncpg.Pool:
    """A pool of up to `size` connections with Tracker's session settings."""
    pool: asyncpg.Pool = await driver().create_pool(
        url,
        min_size=1,
        max_size=size,
        timeout=CONNECT_TIMEOUT,
        command_timeout=COMMAND_TIMEOUT,
        server_settings=SESSION,
    )
    return pool


async def close_quietly(connection: asyncpg.Connection) -> None:
    """Close `connection` (within 2 s, else drop it): nothing to report if it fails."""
    try:
        await connection.close(timeout=2)
    except Exception:
        connection.terminate()


async def prepare(
    connection: asyncpg.Connection | asyncpg.pool.PoolConnectionProxy,
    where: str,
    *,
    create: bool,
) -> None:
    """Check the database holds a Tracker log this version reads; in an empty one (if
    `create`), create the schema. Two instances starting at once take turns."""
    async with connection.transaction():
        await connection.execute("SELECT pg_advisory_xact_lock($1)", SCHEMA_LOCK)
        if await connection.fetchval("SELECT to_regclass('tracker_meta') IS NOT NULL"):
            rows = await connection.fetch("SELECT key, value FROM tracker_meta")
            meta: dict[str, str] = {row[0]: row[1] for row in rows}
            if meta.get("application") != APPLICATION:
                raise CorruptLog(f"{where} is not a Tracker log (it holds another application's)")
            version = int(meta.get("schema_version", "0"))
            if version > SCHEMA_VERSION:
                raise CorruptLog(
                    f"{where} was written by a newer Tracker (schema {version}); "
                    f"this version reads schema {SCHEMA_VERSION} and older"
                )
            return
        tables = await connection.fetchval(
            "SELECT count(*) FROM pg_catalog.pg_tables WHERE schemaname = current_schema()"
        )
        if tables:
            raise CorruptLog(
                f"{where} is not a Tracker log (it holds another application's tables)"
            )
        if not create:
            raise CorruptLog(f"{where} is empty: it holds no Tracker log")
        await connection.execute(SCHEMA)
