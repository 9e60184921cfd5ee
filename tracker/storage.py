"""Which store the settings name: the SQLite file by default, PostgreSQL given a URL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from tracker.clock import Clock, system_clock
from tracker.config import Settings
from tracker.events.postgres import PostgresStore
from tracker.events.postgres_db import describe
from tracker.events.sqlite import SQLiteStore

Store = SQLiteStore | PostgresStore


@asynccontextmanager
async def open_store(
    settings: Settings,
    clock: Clock = system_clock,
    *,
    create: bool = True,
    exclusive: bool = True,
) -> AsyncIterator[Store]:
    """Open the log the settings name (`exclusive`: SQLite's lock, for whatever writes)."""
    if settings.database_url is not None:
        async with PostgresStore.open(settings.database_url, clock, create=create) as remote:
            yield remote
    else:
        async with SQLiteStore.open(
            settings.db, clock, create=create, exclusive=exclusive
        ) as local:
            yield local


def log_name(settings: Settings) -> str:
    """The log the settings name, for messages: a file's path, or a database (no password)."""
    if settings.database_url is not None:
        return describe(settings.database_url)
    return str(settings.db)
