"""Which instance leads: the one whose connection holds a session advisory lock.

The lock is the database's to give and take back: it is released when the holder's
session ends, which PostgreSQL notices at once when a process dies. A process that
freezes instead (stopped, or cut off) keeps its session open, so the leader's session
is opened with `idle_session_timeout`: the leader pings every `PING_SECONDS`, and a
leader silent for `SILENCE` loses its session, and the lead, to another instance.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import anyio
from anyio.abc import TaskStatus

from tracker.events.postgres_db import close_quietly, connect, database_errors, reason

if TYPE_CHECKING:
    import asyncpg

logger = logging.getLogger(__name__)

LEADER_LOCK = 0x54524B52_0002
"""The session advisory lock the leader holds."""
PING_SECONDS = 0.5
"""How often an instance tries for the lead, and how often the leader shows it lives."""
SILENCE = "2s"
"""How long the database lets a leader's session be silent before it ends it."""
RETRY_SECONDS = 1.0
"""How long an instance that could not reach the database waits before trying again."""


class LeaderLease:
    """Runs some work only while this instance leads the ones sharing the database."""

    def __init__(self, url: str, can_lead: Callable[[], bool]) -> None:
        self._url = url
        self._can_lead = can_lead
        self._errors = database_errors()

    async def run(
        self,
        work: Callable[[], Awaitable[None]],
        *,
        task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Run `work` whenever this instance leads, for ever (until cancelled).

        It waits for the leader lock; once it holds it, it runs `work` and pings every
        `PING_SECONDS`. If a ping fails, the database has let go of the lock (another
        instance may lead now), so `work` is cancelled and the wait starts again. An
        instance that `can_lead` no longer (its writes fail) lets go of the lead.
        `task_status` is told once the first try is over: this instance leads (and
        `work` is about to begin), or another does, or the database is out of reach.
        """
        unsaid = [task_status]  # told once, whichever way the first try goes

        def tell() -> None:
            while unsaid:
                unsaid.pop().started()

        while True:
            if not self._can_lead():
                tell()
                await anyio.sleep(RETRY_SECONDS)
                continue
            try:
                connection = await connect(self._url, idle_session_timeout=SILENCE)
            except self._errors as exc:
                logger.warning("cannot reach the database to lead: %s", reason(exc))
                tell()
                await anyio.sleep(RETRY_SECONDS)
                continue
            try:
                if not await self._try_lock(connection):
                    tell()
                    await self._wait_for_lock(connection)
                logger.info("this instance leads (it finishes timers)")
                tell()
                async with anyio.create_task_group() as tasks:
                    tasks.start_soon(self._hold, connection, tasks.cancel_scope)
                    await work()
                    tasks.cancel_scope.cancel()
                logger.warning("this instance no longer leads")
            except self._errors as exc:
                logger.warning("the lead's connection failed: %s", reason(exc))
                tell()
            finally:
                with anyio.CancelScope(shield=True):
                    await close_quietly(connection)
            await anyio.sleep(RETRY_SECONDS)

    async def _try_lock(self, connection: asyncpg.Connection) -> bool:
        held: bool = await connection.fetchval(
            "SELECT pg_try_advisory_lock($1)", LEADER_LOCK, timeout=PING_SECONDS * 2
        )
        return held

    async def _wait_for_lock(self, connection: asyncpg.Connection) -> None:
        while True:
            await anyio.sleep(PING_SECONDS)
            if await self._try_lock(connection):
                return

    async def _hold(self, connection: asyncpg.Connection, lead: anyio.CancelScope) -> None:
        while self._can_lead():
            await anyio.sleep(PING_SECONDS)
            try:
                await connection.fetchval("SELECT 1", timeout=PING_SECONDS * 2)
            except self._errors as exc:
                logger.warning("the leader's connection failed: %s", reason(exc))
                break
        lead.cancel()
