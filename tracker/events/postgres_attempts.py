"""Login attempts counted in PostgreSQL, so that every instance on the database sees
every attempt (their number must not multiply an attacker's tries)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import asyncpg

_TAKE = """
WITH expired AS (DELETE FROM login_failures WHERE at <= $2),
     recent AS (SELECT count(*) AS attempts, min(at) AS oldest
                FROM login_failures WHERE key = $1 AND at > $2),
     taken AS (INSERT INTO login_failures (key, at)
               SELECT $1, $3 FROM recent WHERE attempts < $4)
SELECT CASE WHEN attempts < $4 THEN NULL ELSE oldest END FROM recent
"""
"""Forget expired attempts (of every key), count the key's recent ones, and take one
unless they reach the limit; the oldest recent attempt's time if they did."""


class PostgresAttempts:
    """The `Attempts` of a throttle, in the `login_failures` table."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def take(self, key: str, limit: int, window: float, now: float) -> float | None:
        async with self._pool.acquire() as connection, connection.transaction():
            # One key's attempts are counted one at a time, on whichever instance.
            await connection.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", key)
            oldest: float | None = await connection.fetchval(_TAKE, key, now - window, now, limit)
        return None if oldest is None else oldest + window - now

    async def give_back(self, key: str, at: float) -> None:
        await self._pool.execute(
            "DELETE FROM login_failures WHERE ctid = (SELECT ctid FROM login_failures"
            " WHERE key = $1 AND at = $2 LIMIT 1)",
            key,
            at,
        )

    async def forget(self, key: str) -> None:
        await self._pool.execute("DELETE FROM login_failures WHERE key = $1", key)
