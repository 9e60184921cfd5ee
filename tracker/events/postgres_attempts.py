"""Login attempts counted in PostgreSQL, so that every instance on the database sees
every attempt (their number must not multiply an attacker's tries). Their times are the
database's, so that the instances' own clocks need not agree."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tracker.errors import StorageError
from tracker.events.postgres_db import database_errors, reason

if TYPE_CHECKING:
    import asyncpg

_TAKE = """
WITH now AS (SELECT extract(epoch FROM clock_timestamp())::double precision AS t),
     expired AS (DELETE FROM login_failures WHERE at <= (SELECT t FROM now) - $2),
     recent AS (SELECT count(*) AS attempts, min(at) AS oldest FROM login_failures
                WHERE key = $1 AND at > (SELECT t FROM now) - $2),
     taken AS (INSERT INTO login_failures (key, at)
               SELECT $1, (SELECT t FROM now) FROM recent WHERE attempts < $3)
SELECT CASE WHEN attempts < $3 THEN NULL ELSE oldest + $2 - (SELECT t FROM now) END
FROM recent
"""
"""Forget expired attempts (of every key: the index on `at` finds just those), count the
key's recent ones, and take one unless they reach the limit; if they did, how long until
the oldest ages out."""

_GIVE_BACK = """
DELETE FROM login_failures WHERE ctid = (
    SELECT ctid FROM login_failures WHERE key = $1 ORDER BY at DESC LIMIT 1)
"""


class PostgresAttempts:
    """The `Attempts` of a throttle, in the `login_failures` table."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._errors = database_errors()

    async def take(self, key: str, limit: int, window: float, now: float) -> float | None:
        try:
            async with self._pool.acquire() as connection, connection.transaction():
                # One key's attempts are counted one at a time, on whichever instance.
                await connection.execute(
                    "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", key
                )
                wait: float | None = await connection.fetchval(_TAKE, key, window, limit)
        except self._errors as exc:
            raise StorageError(f"cannot count the login attempt: {reason(exc)}") from exc
        return wait

    async def give_back(self, key: str) -> None:
        await self._execute(_GIVE_BACK, key)

    async def forget(self, key: str) -> None:
        await self._execute("DELETE FROM login_failures WHERE key = $1", key)

    async def _execute(self, query: str, key: str) -> None:
        try:
            await self._pool.execute(query, key)
        except self._errors as exc:
            raise StorageError(f"cannot count the login attempt: {reason(exc)}") from exc
