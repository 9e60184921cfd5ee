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

One instance at a time leads (a session advisory lock): it runs the work that
must happen once, such as finishing timers.

The driver is asyncpg, an optional extra: `pip install 'tracker[postgres]'`.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import anyio
import msgspec

from tracker.background import background
from tracker.clock import Clock, format_timestamp, system_clock
from tracker.errors import CorruptLog, StorageError
from tracker.events.batching import CommitQueue, Pending, Row, decide, fail_all, unknown_streams
from tracker.events.postgres_attempts import PostgresAttempts
from tracker.events.reading import (
    MAX_POSITION,
    READ_PAGE,
    decode_replay_page,
    follows,
    record,
    replay_pages,
)
from tracker.events.records import GENESIS_HASH, Recorded, ReplayRow, record_row
from tracker.events.store import Append, CommitListener, Snapshot
from tracker.events.types import BaseEvent
from tracker.events.verify import BadEvent, ChainChecker, ChainReport

if TYPE_CHECKING:
    import asyncpg

logger = logging.getLogger(__name__)

APPLICATION = "tracker"
SCHEMA_VERSION = 1
CHANNEL = "tracker_log"
"""The channel every commit notifies, with the new head position as payload."""
SCHEMA_LOCK = 0x54524B52_0001
"""The advisory lock that serialises creating the schema (two instances starting at once)."""
LEADER_LOCK = 0x54524B52_0002
"""The session advisory lock its leader holds."""
POLL_SECONDS = 0.5
"""How often a follower looks for new events without being notified."""
LEASE_SECONDS = 0.5
"""How often an instance tries for the lead, and how often the leader checks it holds it."""
RETRY_SECONDS = 1.0
POOL_SIZE = 4
CONNECT_TIMEOUT = 5.0

_SCHEMA = f"""
CREATE TABLE tracker_meta (
    key    text PRIMARY KEY,
    value  text NOT NULL
);
INSERT INTO tracker_meta VALUES ('application', '{APPLICATION}'),
                                ('schema_version', '{SCHEMA_VERSION}');
CREATE TABLE events (
    position     bigint  PRIMARY KEY,
    stream       text    NOT NULL,
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
"""

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
_REPLAY_PAGE = """
SELECT json_agg(json_build_array(position, stream, version, type, schema,
                                 convert_from(data, 'UTF8'), recorded_at) ORDER BY position)
FROM (SELECT position, stream, version, type, schema, data, recorded_at FROM events
      WHERE position > $1 AND position <= $2 ORDER BY position LIMIT $3) AS page
"""


def _driver() -> Any:
    try:
        import asyncpg
    except ImportError:
        raise StorageError(
            "TRACKER_DATABASE_URL names PostgreSQL, whose driver is not installed:"
            " pip install 'tracker[postgres]'"
        ) from None
    return asyncpg


def describe(url: str) -> str:
    """Where `url` points (host, port, database), without the user or password."""
    parts = urlsplit(url)
    host = parts.hostname or "localhost"
    port = f":{parts.port}" if parts.port else ""
    return f"PostgreSQL at {host}{port}{parts.path or '/'}"


def _database_errors() -> tuple[type[BaseException], ...]:
    asyncpg = _driver()
    return (asyncpg.PostgresError, asyncpg.InterfaceError, OSError)


class PostgresStore:
    """The `EventStore` on a PostgreSQL database. Open it with `PostgresStore.open(url)`."""

    def __init__(self, url: str, pool: asyncpg.Pool, clock: Clock) -> None:
        self._url = url
        self._where = describe(url)
        self._pool = pool
        self._clock = clock
        self._errors = _database_errors()
        self._errors_or_bad_page: tuple[type[BaseException], ...] = (
            *self._errors,
            msgspec.DecodeError,
        )
        self._unique_violation: type[Exception] = _driver().UniqueViolationError
        self._writer: asyncpg.Connection | None = None
        self._head = 0
        self._last_hash = GENESIS_HASH
        self._versions: dict[str, int] = {}
        self._queue = CommitQueue()
        self._publishing = anyio.Lock()
        """Held by whoever moves `_head` on and publishes: the writer or the follower."""
        self._notified = anyio.Event()

    @classmethod
    @asynccontextmanager
    async def open(
        cls, url: str, clock: Clock = system_clock, *, create: bool = True
    ) -> AsyncIterator[PostgresStore]:
        """Connect to the database at `url` (creating the schema in an empty one, if
        `create`), run the writer, and close everything on exit."""
        asyncpg = _driver()
        errors = _database_errors()
        where = describe(url)
        try:
            pool = await asyncpg.create_pool(
                url, min_size=1, max_size=POOL_SIZE, timeout=CONNECT_TIMEOUT
            )
        except errors as exc:
            raise StorageError(f"cannot connect to {where}: {_reason(exc)}") from exc
        try:
            try:
                async with pool.acquire() as connection:
                    await _prepare(connection, where, create=create)
            except errors as exc:
                raise StorageError(f"cannot open the log in {where}: {_reason(exc)}") from exc
            store = cls(url, pool, clock)
            await store._load_head()
            try:
                # On leaving, the writer finishes what it was given, then stops.
                async with background(store._run_writer, store._queue.close):
                    yield store
            finally:
                with anyio.CancelScope(shield=True):
                    await store._close_writer()
        finally:
            with anyio.CancelScope(shield=True):
                await pool.close()

    @property
    def head(self) -> int:
        return self._head

    @property
    def last_hash(self) -> str:
        """The hash of the last event this instance knows of: the tip of its chain."""
        return self._last_hash

    @property
    def attempts(self) -> PostgresAttempts:
        """Login attempts, counted in the database for every instance."""
        return PostgresAttempts(self._pool)

    @property
    def where(self) -> str:
        """The database, for messages (no credentials)."""
        return self._where

    def add_listener(self, listener: CommitListener) -> None:
        self._queue.listeners.append(listener)

    async def append(
        self, stream: str, expected_version: int | None, events: Sequence[BaseEvent], actor: str
    ) -> list[Recorded]:
        return await self.append_all([Append(stream, expected_version, events)], actor)

    async def append_all(self, appends: Sequence[Append], actor: str) -> list[Recorded]:
        return await self._queue.submit(appends, actor)

    # Following the log

    async def follow(self) -> None:
        """Publish what other instances commit, as they commit it, for ever (until
        cancelled): woken by their notifications, or by a poll if one is missed."""
        while True:
            try:
                listener = await self._connect()
            except self._errors as exc:
                logger.warning("cannot listen for new events (polling): %s", _reason(exc))
                listener = None
            try:
                if listener is not None:
                    await listener.add_listener(CHANNEL, self._on_notify)
                while listener is None or not listener.is_closed():
                    with anyio.move_on_after(POLL_SECONDS):
                        await self._notified.wait()
                    self._notified = anyio.Event()
                    await self.catch_up()
                    if listener is None:
                        break
            except self._errors as exc:
                logger.warning("lost the notification connection: %s", _reason(exc))
            finally:
                if listener is not None:
                    with anyio.CancelScope(shield=True):
                        await _close_quietly(listener)

    def _on_notify(self, connection: object, pid: int, channel: str, payload: object) -> None:
        if not str(payload).isdigit() or int(str(payload)) > self._head:
            self._notified.set()

    async def catch_up(self) -> int:
        """Publish every event committed since the last one this instance knows of;
        return how many (a failure to read is logged, and tried again later)."""
        count = 0
        async with self._publishing:
            while True:
                try:
                    rows = await self._pool.fetch(
                        _EVENTS_AFTER, self._head, MAX_POSITION, READ_PAGE
                    )
                except self._errors as exc:
                    logger.warning("cannot read new events (will retry): %s", _reason(exc))
                    return count
                records = [record(row) for row in rows]
                if not records or records[0].position != self._head + 1:
                    return count
                self._published(records)
                count += len(records)
                if len(records) < READ_PAGE:
                    return count

    def _published(self, records: Sequence[Recorded]) -> None:
        """Move the head on past `records` (committed, in order) and publish them."""
        if not records:
            return
        for recorded in records:
            self._versions[recorded.stream] = recorded.version
        self._head, self._last_hash = records[-1].position, records[-1].hash
        self._queue.publish(records)

    # Leading

    async def lead(self, work: Callable[[], Awaitable[None]]) -> None:
        """Run `work` whenever this instance leads, for ever (until cancelled).

        It waits for the leader lock; once it holds it, it runs `work` and checks
        the lock's connection every `LEASE_SECONDS`. If that connection fails, the
        database has let go of the lock (another instance may lead now), so `work`
        is cancelled and the wait starts again.
        """
        while True:
            try:
                connection = await self._connect()
            except self._errors as exc:
                logger.warning("cannot reach the database to lead: %s", _reason(exc))
                await anyio.sleep(RETRY_SECONDS)
                continue
            try:
                await self._wait_for_lead(connection)
                logger.info("this instance leads (it finishes timers)")
                async with anyio.create_task_group() as tasks:
                    tasks.start_soon(self._hold_lease, connection, tasks.cancel_scope)
                    await work()
                    tasks.cancel_scope.cancel()
            except self._errors as exc:
                logger.warning("lost the lead: %s", _reason(exc))
            finally:
                with anyio.CancelScope(shield=True):
                    await _close_quietly(connection)
            await anyio.sleep(RETRY_SECONDS)

    async def _wait_for_lead(self, connection: asyncpg.Connection) -> None:
        """Try for the leader lock every `LEASE_SECONDS` until this connection holds it."""
        while True:
            if await connection.fetchval("SELECT pg_try_advisory_lock($1)", LEADER_LOCK):
                return
            await anyio.sleep(LEASE_SECONDS)

    async def _hold_lease(self, connection: asyncpg.Connection, lead: anyio.CancelScope) -> None:
        while True:
            await anyio.sleep(LEASE_SECONDS)
            try:
                await connection.fetchval("SELECT 1")
            except self._errors as exc:
                logger.warning("the leader's connection failed: %s", _reason(exc))
                lead.cancel()
                return

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
        last, left = after, limit
        while left != 0:
            page = READ_PAGE if left is None else min(READ_PAGE, left)
            rows = await self._fetch(query, last, end, *filters, page)
            for row in rows:
                yield record(row)
            if len(rows) < page:
                return
            last = rows[-1][0]
            if left is not None:
                left -= len(rows)

    async def replay(
        self, callback: Callable[[ReplayRow], object], after: int = 0, until: int | None = None
    ) -> int:
        return await replay_pages(self._replay_pages(after, until), callback)

    async def _replay_pages(
        self, after: int, until: int | None
    ) -> AsyncIterator[Sequence[ReplayRow]]:
        """Replay rows, a page at a time: PostgreSQL builds each page as one JSON document
        in its own process. A page that cannot be built so (data that is not UTF-8) or
        that has a gap is read row by row: a faulty event is named when applied."""
        last, end = after, MAX_POSITION if until is None else until
        while last < end:
            page: Sequence[ReplayRow]
            try:
                text = await self._pool.fetchval(_REPLAY_PAGE, last, end, READ_PAGE)
                page = decode_replay_page(text) if text is not None else []
            except self._errors_or_bad_page:
                page = []
            if not follows(page, last):
                rows = await self._fetch(_EVENTS_AFTER, last, end, READ_PAGE)
                page = [(r[0], r[1], r[2], r[3], r[4], bytes(r[5]), r[7]) for r in rows]
            if page:
                yield page
            if len(page) < READ_PAGE:
                return
            last = page[-1][0]

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
            raise StorageError(f"cannot save the snapshot: {_reason(exc)}") from exc

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
            raise StorageError(f"cannot delete snapshots: {_reason(exc)}") from exc

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
                        position = str(last.position)
                        await writer.execute(
                            "UPDATE log_head SET position = $1, hash = $2",
                            last.position,
                            last.hash,
                        )
                        await writer.execute(f"SELECT pg_notify('{CHANNEL}', $1)", position)
            except self._errors as exc:
                if reading:
                    raise
                raise StorageError(f"cannot import into {self._where}: {_reason(exc)}") from exc
            if last is not None:
                self._head, self._last_hash = last.position, last.hash
                self._versions.clear()
        return count

    # The writer

    async def _run_writer(self) -> None:
        await self._queue.run(self._commit)

    async def _commit(self, batch: list[Pending]) -> None:
        """Take the head, publish what others committed before, then write the batch's
        acceptable appends in the same transaction; fill in every result."""
        async with self._publishing:
            records: list[Recorded] = []
            try:
                writer = await self._writer_connection()
                async with writer.transaction():
                    head, last_hash = await _lock_head(writer, self._where)
                    if head > self._head:
                        await self._publish_missed(writer, head)
                    if (head, last_hash) != (self._head, self._last_hash):
                        raise CorruptLog(
                            f"the log's head in {self._where} does not match its events"
                        )
                    records = await self._write(writer, batch)
            except self._errors as exc:
                await self._drop_writer()
                fail_all(batch, StorageError(f"the event log cannot be written: {_reason(exc)}"))
                return
            except Exception as exc:  # a bug, or a damaged log: refuse every write, loudly
                self._queue.fail(batch, exc)
                return
            self._published(records)

    async def _write(self, writer: asyncpg.Connection, batch: list[Pending]) -> list[Recorded]:
        await self._load_versions(writer, batch)
        rows, records = self._decide(batch)
        if not rows:
            return records
        try:
            async with writer.transaction():  # a savepoint: a wrong guess is undone alone
                await self._insert(writer, rows)
        except self._unique_violation:
            # A stream taken to be new was not: learn its real head and decide again.
            await self._load_versions(writer, batch, every_stream=True)
            rows, records = self._decide(batch)
            if rows:
                await self._insert(writer, rows)
        return records

    def _decide(self, batch: list[Pending]) -> tuple[list[Row], list[Recorded]]:
        recorded_at = format_timestamp(self._clock())
        return decide(batch, self._head, self._last_hash, self._versions, recorded_at)

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
            self._published(records)

    async def _load_versions(
        self, writer: asyncpg.Connection, batch: list[Pending], *, every_stream: bool = False
    ) -> None:
        unknown = unknown_streams(batch, self._versions, every_stream=every_stream)
        if every_stream:
            unknown |= {append.stream for pending in batch for append in pending.appends}
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
            self._writer = await self._connect()
        return self._writer

    async def _drop_writer(self) -> None:
        """Forget the writer's connection after an error: the next batch opens a new one."""
        writer, self._writer = self._writer, None
        if writer is not None:
            with anyio.CancelScope(shield=True):
                await _close_quietly(writer)

    async def _close_writer(self) -> None:
        await self._drop_writer()

    async def _connect(self) -> asyncpg.Connection:
        connection: asyncpg.Connection = await _driver().connect(self._url, timeout=CONNECT_TIMEOUT)
        return connection

    async def _fetch(self, query: str, *args: Any) -> list[Any]:
        try:
            return list(await self._pool.fetch(query, *args))
        except self._errors as exc:
            raise StorageError(f"the event log cannot be read: {_reason(exc)}") from exc


async def _prepare(connection: asyncpg.Connection, where: str, *, create: bool) -> None:
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
        await connection.execute(_SCHEMA)


async def _lock_head(writer: asyncpg.Connection, where: str) -> tuple[int, str]:
    """The log's head position and hash, locked until the transaction ends: whoever holds
    it is the only writer assigning positions."""
    row = await writer.fetchrow(_LOCK_HEAD)
    if row is None:
        raise CorruptLog(f"{where} has lost its log's head row")
    return row[0], row[1]


async def _close_quietly(connection: asyncpg.Connection) -> None:
    try:
        await connection.close(timeout=2)
    except Exception:
        connection.terminate()


def _reason(exc: BaseException) -> str:
    """An error of the driver or the network, in one line, without the connection string."""
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
