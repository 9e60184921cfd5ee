"""The server store: one PostgreSQL database, shared by any number of Tracker instances.

Each instance group-commits its own appends as the SQLite store does, and every
batch takes the log's head row (`SELECT ... FOR UPDATE`) first. Whoever holds
that row lock assigns the next positions, and holds it until its commit: so
positions are gap-free and in commit order across all writers, and a reader that
sees position n sees every position before it.

Each instance follows the log by position: a commit ends with a `NOTIFY`, which
wakes the followers of every other instance (and a poll catches up if a
notification is lost). The writer also publishes, under the same lock, any events
other instances committed before its batch, so listeners (the read model) always
see the log in position order, and a client reads its own writes at once.

One instance at a time leads (`postgres_lease`): it runs the work that must happen
once, such as finishing timers.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import anyio
from anyio.abc import TaskStatus

from tracker.background import background
from tracker.clock import Clock, system_clock
from tracker.errors import BadEvent, CorruptLog, StorageError
from tracker.events.batching import GroupCommitLog, Pending, Row, fail_all, unknown_streams
from tracker.events.postgres_attempts import PostgresAttempts
from tracker.events.postgres_db import (
    close_quietly,
    connect,
    create_pool,
    database_errors,
    describe,
    driver,
    prepare,
    reason,
)
from tracker.events.postgres_lease import LeaderLease
from tracker.events.reading import (
    MAX_POSITION,
    READ_PAGE,
    ReplayCallback,
    decode_replay_page,
    embeddable,
    pages,
    record,
    replay_pages,
    replay_rows,
)
from tracker.events.records import GENESIS_HASH, LeanRow, Recorded, ReplayRow, record_row
from tracker.events.store import Snapshot
from tracker.events.verify import ChainChecker, ChainReport

if TYPE_CHECKING:
    import asyncpg

logger = logging.getLogger(__name__)

CHANNEL = "tracker_log"
"""The channel every commit notifies, with the new head position as payload."""
POLL_SECONDS = 0.5
"""How often a follower looks for new events without being notified."""
RETRY_SECONDS = 1.0
"""The first wait before listening again after the notification connection failed..."""
MAX_RETRY_SECONDS = 30.0
"""...doubling up to this."""
POOL_SIZE = 4
"""Connections for reads (histories, the event feed, replays), snapshots and logins."""
CLOSE_SECONDS = 5.0
"""How long closing waits for the pool's connections to be given back."""

_COLUMNS = "position, stream, version, type, schema, data, actor, recorded_at, hash"
_LOCK_HEAD = "SELECT position, hash FROM log_head FOR UPDATE"
_EVENTS_AFTER = (
    f"SELECT {_COLUMNS} FROM events WHERE position > $1 AND position <= $2"
    " ORDER BY position LIMIT $3"
)
_WRITE = f"""
WITH written AS (
    INSERT INTO events ({_COLUMNS})
    SELECT * FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::text[], $5::integer[],
                         $6::bytea[], $7::text[], $8::text[], $9::text[])
), head AS (
    UPDATE log_head SET position = $10, hash = $11
)
SELECT pg_notify('{CHANNEL}', $12)
"""


def _data_begins_with(prefix: bytes) -> str:
    return f"substring(data from 1 for {len(prefix)}) = '\\x{prefix.hex()}'::bytea"


_REPLAY_PAGE = f"""
SELECT json_agg(CASE WHEN {embeddable(_data_begins_with)}
                     THEN json_build_array(position, stream, version, recorded_at,
                                           convert_from(data, 'UTF8')::json)
                END ORDER BY position)
FROM (SELECT position, stream, version, type, schema, data, recorded_at FROM events
      WHERE position > $1 AND position <= $2 ORDER BY position LIMIT $3) AS page
"""
"""A replay page as one JSON document, each event's data embedded as it is stored (the
`json` type checks that it is valid JSON and keeps its text as it is), when
`embeddable`; else a null stands in its place. Data that is not UTF-8 or not JSON fails
the whole page."""


class PostgresStore(GroupCommitLog):
    """The `EventStore` on a PostgreSQL database. Open it with `PostgresStore.open(url)`."""

    def __init__(self, url: str, pool: asyncpg.Pool, clock: Clock) -> None:
        super().__init__(clock)
        self._url = url
        self._where = describe(url)
        self._pool = pool
        self._errors = database_errors()
        self._unique_violation: type[Exception] = driver().UniqueViolationError
        self._writer: asyncpg.Connection | None = None
        self._publishing = anyio.Lock()
        """Held by whoever moves the head on and publishes: the writer or a catch-up."""
        self._notified = anyio.Event()
        self._catch_ups_asked = 0
        self._caught_up_for = 0
        """Every catch-up asked for up to this number has been answered by a read (or a
        commit) that began after it was asked."""
        self._unreadable = False
        """Whether the last catch-up failed (a database outage is logged once)."""
        self._attempts = PostgresAttempts(pool)
        self._lease = LeaderLease(url, can_lead=lambda: self._queue.broken is None)

    @classmethod
    @asynccontextmanager
    async def open(
        cls, url: str, clock: Clock = system_clock, *, create: bool = True
    ) -> AsyncIterator[PostgresStore]:
        """Connect to the database at `url` (creating the schema in an empty one, if
        `create`), run the writer, and close everything on exit."""
        errors = database_errors()
        where = describe(url)
        try:
            pool = await create_pool(url, POOL_SIZE)
        except ValueError:  # the driver could not read the URL: its message may quote it
            raise StorageError(
                "TRACKER_DATABASE_URL is not a URL PostgreSQL's driver reads"
                " (in a password, write / # ? @ and : percent-encoded)"
            ) from None
        except errors as exc:
            raise StorageError(f"cannot connect to {where}: {reason(exc)}") from exc
        try:
            store = cls(url, pool, clock)
            try:
                async with pool.acquire() as connection:
                    await prepare(connection, where, create=create)
                await store._load_head()
            except errors as exc:
                raise StorageError(f"cannot open the log in {where}: {reason(exc)}") from exc
            try:
                # On leaving, the writer finishes what it was given, then stops.
                async with background(store._run_writer, store._queue.close):
                    yield store
            finally:
                with anyio.CancelScope(shield=True):
                    await store._drop_writer()
        finally:
            with anyio.CancelScope(shield=True):
                with anyio.move_on_after(CLOSE_SECONDS) as closing:
                    await pool.close()
                if closing.cancelled_caught:
                    pool.terminate()

    @property
    def attempts(self) -> PostgresAttempts:
        """Login attempts, counted in the database for every instance."""
        return self._attempts

    async def lead(
        self,
        work: Callable[[], Awaitable[None]],
        *,
        task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Run `work` whenever this instance leads (see `postgres_lease`); an instance
        whose writes fail for good lets another lead."""
        await self._lease.run(work, task_status=task_status)

    # Following the log

    async def follow(self) -> None:
        """Publish what other instances commit, as they commit it, for ever (until
        cancelled): woken by their notifications, and polling all the while, so that a
        lost notification (or connection) costs at most `POLL_SECONDS`."""
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(self._listen)
            while True:
                with anyio.move_on_after(POLL_SECONDS):
                    await self._notified.wait()
                self._notified = anyio.Event()
                await self.catch_up()

    async def _listen(self) -> None:
        """Keep a connection listening for commits; after a failure, wait (longer each
        time, up to `MAX_RETRY_SECONDS`) and listen again."""
        delay = RETRY_SECONDS
        while True:
            try:
                await self._listen_until_closed(resumed=delay > RETRY_SECONDS)
                delay = RETRY_SECONDS
            except self._errors as exc:
                if delay == RETRY_SECONDS:
                    logger.warning("cannot listen for new events (polling): %s", reason(exc))
                delay = min(delay * 2, MAX_RETRY_SECONDS)
            await anyio.sleep(delay)

    async def _listen_until_closed(self, *, resumed: bool) -> None:
        connection = await connect(self._url)
        try:
            closed = anyio.Event()
            connection.add_termination_listener(lambda _: closed.set())
            await connection.add_listener(CHANNEL, self._on_notify)
            if resumed:
                logger.info("listening for new events again")
            await closed.wait()
        finally:
            with anyio.CancelScope(shield=True):
                await close_quietly(connection)

    def _on_notify(self, connection: object, pid: int, channel: str, payload: object) -> None:
        if not str(payload).isdigit() or int(str(payload)) > self._head:
            self._notified.set()

    async def catch_up(self) -> int:
        """Publish every event committed since the last one this instance knows of;
        return how many (a failure to read is logged, and tried again by the follower).

        Callers that ask while another catch-up is under way wait for it, then share
        the next one: a burst of requests that missed something costs one read.
        """
        self._catch_ups_asked += 1
        asked = self._catch_ups_asked
        async with self._publishing:
            if self._caught_up_for >= asked:
                return 0
            began = self._catch_ups_asked
            count = await self._read_new()
            if count is not None:
                self._caught_up_for = began
            return count or 0

    async def _read_new(self) -> int | None:
        """Publish what was committed after the head, a page at a time; how many events
        that was, or None if the database could not be read."""
        count = 0
        while True:
            try:
                rows = await self._pool.fetch(_EVENTS_AFTER, self._head, MAX_POSITION, READ_PAGE)
            except self._errors as exc:
                if not self._unreadable:
                    logger.warning("cannot read new events (will retry): %s", reason(exc))
                    self._unreadable = True
                return None
            if self._unreadable:
                logger.info("reading new events again")
                self._unreadable = False
            records = [record(row) for row in rows]
            if records and records[0].position != self._head + 1:
                logger.error(
                    "the log in %s has a gap after position %d (found %d)",
                    self._where,
                    self._head,
                    records[0].position,
                )
                return count
            self._advance(records)
            count += len(records)
            if len(records) < READ_PAGE:
                return count

    # Reading

    async def read_all(
        self,
        after: int = 0,
        until: int | None = None,
        streams: Sequence[str] | None = None,
        *,
        types: Sequence[str] | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[Recorded]:
        where = ["position > $1", "position <= $2"]
        filters: list[Any] = []
        for column, values in (("stream", streams), ("type", types)):
            if values is not None:
                filters.append(list(values))
                where.append(f"{column} = ANY(${len(filters) + 2}::text[])")
        query = (
            f"SELECT {_COLUMNS} FROM events WHERE {' AND '.join(where)}"
            f" ORDER BY position LIMIT ${len(filters) + 3}"
        )
        end = MAX_POSITION if until is None else until

        async def read(last: int, size: int) -> list[Any]:
            return await self._fetch(query, last, end, *filters, size)

        async for rows in pages(read, after, limit):
            for row in rows:
                yield record(row)

    async def replay(
        self, callback: ReplayCallback, after: int = 0, until: int | None = None
    ) -> int:
        rows = replay_rows(self._built_page, self._lean_page, after, until)
        return await replay_pages(rows, callback)

    async def _built_page(self, after: int, until: int, size: int) -> Sequence[ReplayRow] | None:
        """A replay page as PostgreSQL builds it, in its own process; None if it cannot
        (data that is not UTF-8 or not JSON)."""
        try:
            text = await self._pool.fetchval(_REPLAY_PAGE, after, until, size)
        except self._errors:
            return None
        return decode_replay_page(text)

    async def _lean_page(self, after: int, until: int, size: int) -> Sequence[LeanRow]:
        rows = await self._fetch(_EVENTS_AFTER, after, until, size)
        return [(r[0], r[1], r[2], r[3], r[4], bytes(r[5]), r[7]) for r in rows]

    async def check_chain(self, until: int) -> ChainReport:
        checker = ChainChecker()
        try:
            while True:
                rows = await self._fetch(_EVENTS_AFTER, checker.position, until, READ_PAGE)
                for row in rows:
                    checker.check_row(tuple(row))
                if len(rows) < READ_PAGE:
                    return checker.report()
        except BadEvent as bad:
            return checker.report(bad)

    async def read_stream(self, stream: str) -> list[Recorded]:
        rows = await self._fetch(
            f"SELECT {_COLUMNS} FROM events WHERE stream = $1 ORDER BY version", stream
        )
        return [record(row) for row in rows]

    async def event_at(self, position: int) -> Recorded | None:
        rows = await self._fetch(f"SELECT {_COLUMNS} FROM events WHERE position = $1", position)
        return record(rows[0]) if rows else None

    async def save_snapshot(self, snapshot: Snapshot) -> None:
        try:
            await self._pool.execute(
                "INSERT INTO snapshots (name, position, hash, format, data)"
                " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (name) DO UPDATE SET"
                " position = excluded.position, hash = excluded.hash,"
                " format = excluded.format, data = excluded.data",
                snapshot.name,
                snapshot.position,
                snapshot.hash,
                snapshot.format,
                snapshot.data,
            )
        except self._errors as exc:
            raise StorageError(f"cannot save the snapshot: {reason(exc)}") from exc

    async def load_snapshot(self, name: str) -> Snapshot | None:
        rows = await self._fetch(
            "SELECT name, position, hash, format, data FROM snapshots WHERE name = $1", name
        )
        return Snapshot(*rows[0]) if rows else None

    async def delete_snapshots(self) -> None:
        """Forget every snapshot (they are caches: the next start rebuilds them)."""
        try:
            await self._pool.execute("DELETE FROM snapshots")
        except self._errors as exc:
            raise StorageError(f"cannot delete snapshots: {reason(exc)}") from exc

    async def import_log(self, chunks: AsyncIterable[Sequence[Recorded]]) -> int:
        """Restore already-verified events into this empty log, all in one transaction.

        If `chunks` raises, nothing is written. Returns how many events were restored.
        """
        count = 0
        last: Recorded | None = None
        source = aiter(chunks)
        reading = False
        async with self._publishing:
            try:
                writer = await self._writer_connection()
                async with writer.transaction():
                    # Reading and checking the backup may pause longer than a writer may.
                    await writer.execute("SET LOCAL idle_in_transaction_session_timeout = 0")
                    head, _ = await _lock_head(writer, self._where)
                    if head != 0:
                        raise CorruptLog(
                            f"{self._where} is not empty: import restores into an empty log only"
                        )
                    while True:
                        reading = True  # an error now is the source's, not the database's
                        try:
                            chunk = await anext(source)
                        except StopAsyncIteration:
                            break
                        reading = False
                        await writer.copy_records_to_table(
                            "events",
                            records=[record_row(recorded) for recorded in chunk],
                            columns=_COLUMNS.split(", "),
                        )
                        count += len(chunk)
                        last = chunk[-1] if chunk else last
                    if last is not None:
                        await writer.execute(
                            "UPDATE log_head SET position = $1, hash = $2",
                            last.position,
                            last.hash,
                        )
                        await writer.execute(
                            f"SELECT pg_notify('{CHANNEL}', $1)", str(last.position)
                        )
            except self._errors as exc:
                if reading:
                    raise
                await self._drop_writer()
                raise StorageError(f"cannot import into {self._where}: {reason(exc)}") from exc
            if last is not None:
                self._head, self._last_hash = last.position, last.hash
                self._versions.clear()
        return count

    # The writer

    async def _run_writer(self) -> None:
        await self._queue.run(self._commit)

    async def _commit(self, batch: list[Pending]) -> None:
        """Write the batch's acceptable appends in one transaction that holds the head
        row; fill in every result."""
        async with self._publishing:
            began = self._catch_ups_asked
            try:
                try:
                    records = await self._write(batch, every_stream=False)
                except self._unique_violation:
                    # A stream taken to be new was not: look it up, and decide again.
                    records = await self._write(batch, every_stream=True)
            except self._errors as exc:
                await self._drop_writer()
                fail_all(batch, StorageError(f"the event log cannot be written: {reason(exc)}"))
                return
            except Exception as exc:  # a bug, or a damaged log: refuse every write, loudly
                self._queue.fail(batch, exc)
                return
            # The transaction published whatever was committed before it: a catch-up.
            self._caught_up_for = max(self._caught_up_for, began)
            self._advance(records)

    async def _write(self, batch: list[Pending], *, every_stream: bool) -> list[Recorded]:
        """One transaction: take the head row, publish what other instances committed
        before it, decide on the batch, and insert what was accepted."""
        writer = await self._writer_connection()
        async with writer.transaction():
            head, last_hash = await _lock_head(writer, self._where)
            if head > self._head:
                await self._publish_missed(writer, head)
            if (head, last_hash) != (self._head, self._last_hash):
                raise CorruptLog(f"the log's head in {self._where} does not match its events")
            await self._load_versions(writer, batch, every_stream=every_stream)
            rows, records = self._decide(batch)
            if rows:
                await self._insert(writer, rows)
        return records

    async def _insert(self, writer: asyncpg.Connection, rows: Sequence[Row]) -> None:
        columns = [list(column) for column in zip(*rows, strict=True)]
        last = rows[-1]
        await writer.execute(_WRITE, *columns, last[0], last[8], str(last[0]))

    async def _publish_missed(self, writer: asyncpg.Connection, head: int) -> None:
        """Publish the events other instances committed up to `head` (under the head lock)."""
        while self._head < head:
            rows = await writer.fetch(_EVENTS_AFTER, self._head, head, READ_PAGE)
            records = [record(row) for row in rows]
            if not records or records[0].position != self._head + 1:
                raise CorruptLog(f"the log in {self._where} has a gap after position {self._head}")
            self._advance(records)

    async def _load_versions(
        self, writer: asyncpg.Connection, batch: list[Pending], *, every_stream: bool
    ) -> None:
        unknown = unknown_streams(batch, self._versions, every_stream=every_stream)
        if not unknown:
            return
        rows = await writer.fetch(
            "SELECT stream, max(version) FROM events WHERE stream = ANY($1::text[])"
            " GROUP BY stream",
            sorted(unknown),
        )
        found = {row[0]: row[1] for row in rows}
        for stream in unknown:
            self._versions[stream] = found.get(stream, 0)

    async def _load_head(self) -> None:
        row = await self._pool.fetchrow("SELECT position, hash FROM log_head")
        self._head, self._last_hash = (row[0], row[1]) if row else (0, GENESIS_HASH)

    async def _writer_connection(self) -> asyncpg.Connection:
        if self._writer is None or self._writer.is_closed():
            self._writer = await connect(self._url)
        return self._writer

    async def _drop_writer(self) -> None:
        """Forget the writer's connection (after an error: the next batch opens a new one)."""
        writer, self._writer = self._writer, None
        if writer is not None:
            with anyio.CancelScope(shield=True):
                await close_quietly(writer)

    async def _fetch(self, query: str, *args: Any) -> list[Any]:
        try:
            return list(await self._pool.fetch(query, *args))
        except self._errors as exc:
            raise StorageError(f"the event log cannot be read: {reason(exc)}") from exc


async def _lock_head(writer: asyncpg.Connection, where: str) -> tuple[int, str]:
    """The log's head position and hash, locked until the transaction ends: whoever holds
    it is the only writer assigning positions."""
    row = await writer.fetchrow(_LOCK_HEAD)
    if row is None:
        raise CorruptLog(f"{where} has lost its log's head row")
    return row[0], row[1]
