"""The embedded event store: one SQLite file, written by one group-committing writer.

Appends from many requests wait in one queue. The writer drains it, checks
every append's expected version against the stream heads it keeps in memory,
writes the accepted ones in one `BEGIN IMMEDIATE` transaction and commits once
(WAL, `synchronous=FULL`: one fsync for the whole batch). Only then are the
waiting appenders resumed, so an acknowledged append is durable. A stale
expected version fails that append alone, never the batch.

The writer assigns positions itself (head + 1, inside the transaction), so the
log is gap-free and in commit order.
"""

from __future__ import annotations

import fcntl
import functools
import logging
import os
import sqlite3
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import IO, Any

import aiosqlite
import anyio
import anyio.to_process
import msgspec
from anyio.abc import TaskStatus

from tracker.background import background
from tracker.clock import Clock, system_clock
from tracker.errors import BadEvent, CorruptLog, StorageError
from tracker.events import snapshot_files
from tracker.events.batching import (
    GroupCommitLog,
    Pending,
    Row,
    fail_all,
    unknown_streams,
)
from tracker.events.reading import (
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
from tracker.throttle import MemoryAttempts

logger = logging.getLogger(__name__)

APPLICATION_ID = 0x54524B52  # "TRKR": marks a file as a Tracker log
SCHEMA_VERSION = 1
WRITER_CACHE_KIB = 64 * 1024
"""The writer's page cache: the (stream, version) index of a busy log stays in memory."""
READER_CACHE_KIB = 8 * 1024
"""The page cache of the reader (replays, histories, the event feed, snapshots). A
replay reads every page once, and a cache as large as the writer's would only keep
the log's tail in memory after it; a history or a page of events touches a few index
pages, which 8 MiB holds."""

_SCHEMA = f"""
CREATE TABLE events (
    position     INTEGER PRIMARY KEY,
    stream       TEXT    NOT NULL,
    version      INTEGER NOT NULL,
    type         TEXT    NOT NULL,
    schema       INTEGER NOT NULL,
    data         BLOB    NOT NULL,
    actor        TEXT    NOT NULL,
    recorded_at  TEXT    NOT NULL,
    hash         TEXT    NOT NULL,
    UNIQUE (stream, version)
);
-- Snapshots are files beside the database now; the table stays for older Trackers,
-- which save theirs in it.
CREATE TABLE snapshots (
    name      TEXT PRIMARY KEY,
    position  INTEGER NOT NULL,
    hash      TEXT    NOT NULL,
    format    INTEGER NOT NULL,
    data      BLOB    NOT NULL
);
PRAGMA application_id = {APPLICATION_ID};
PRAGMA user_version = {SCHEMA_VERSION};
"""

_COLUMNS = "position, stream, version, type, schema, data, actor, recorded_at, hash"
_REPLAY_COLUMNS = "position, stream, version, type, schema, data, recorded_at"


def _data_begins_with(prefix: bytes) -> str:
    return f"substr(data, 1, {len(prefix)}) = X'{prefix.hex()}'"


_REPLAY_PAGE = f"""
SELECT '[' || coalesce(group_concat(
    CASE WHEN ({embeddable(_data_begins_with)}) AND json_valid(text)
         THEN rtrim(json_array(position, stream, version, recorded_at), ']') || ',' || text || ']'
         ELSE 'null' END), '') || ']'
FROM (SELECT position, stream, version, type, schema, data, CAST(data AS TEXT) AS text,
             recorded_at
      FROM events WHERE position > ? AND position <= ? ORDER BY position LIMIT ?)
"""
"""A replay page as one JSON document, each event's data embedded as it is stored (SQLite
checks that it is one valid JSON value, and parses or builds no other JSON but the
envelope), when `embeddable`; else a null stands in its place."""
_CANONICAL = """
CAST(rtrim(json_array(position, stream, version, type, schema, actor, recorded_at), ']')
     || ',' || CAST(data AS TEXT) || ']' AS BLOB)
"""
"""An event's `canonical_bytes` as SQLite renders them (the same, for every event Tracker
writes: strings as JSON, and the data as it is stored)."""
_FIRST_NOT_FOLLOWING = f"""
SELECT position FROM events
WHERE position > ? AND position <= ? AND NOT follows(position, {_CANONICAL}, hash)
ORDER BY position LIMIT 1
"""
_NEXT_EVENT = (
    f"SELECT {_COLUMNS} FROM events WHERE position > ? AND position <= ? ORDER BY position LIMIT 1"
)
_INSERT = f"INSERT INTO events ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
_ROWS_PER_STATEMENT = 256
"""Rows of one multi-row INSERT (9 parameters each, far below SQLite's limit)."""


@functools.cache
def _insert_rows(count: int) -> str:
    return f"INSERT INTO events ({_COLUMNS}) VALUES " + ",".join(
        ["(?, ?, ?, ?, ?, ?, ?, ?, ?)"] * count
    )


def _flatten(rows: Sequence[tuple[Any, ...]]) -> list[Any]:
    return [value for row in rows for value in row]


class SQLiteStore(GroupCommitLog):
    """The `EventStore` on one SQLite file. Open it with `SQLiteStore.open(path)`."""

    def __init__(
        self,
        writer: aiosqlite.Connection,
        reader: aiosqlite.Connection,
        clock: Clock,
        path: Path,
    ) -> None:
        super().__init__(clock)
        self._writer = writer
        self._reader = reader
        self._attempts = MemoryAttempts()
        self.path = path
        """The database file (its snapshots are kept beside it)."""

    @classmethod
    @asynccontextmanager
    async def open(
        cls,
        path: str | Path,
        clock: Clock = system_clock,
        *,
        create: bool = True,
        exclusive: bool = True,
    ) -> AsyncIterator[SQLiteStore]:
        """Open (and create, if new) the log at `path`, run its writer, close it on exit.

        `exclusive` (for anything that writes) holds a lock on the file while open:
        two writers on one log would each miss the other's events.
        """
        path = Path(path)
        if not create and not path.exists():
            raise CorruptLog(f"{path} does not exist")
        connections: list[aiosqlite.Connection] = []
        lock = await anyio.to_thread.run_sync(_lock, path) if exclusive else None
        try:
            new = await anyio.to_thread.run_sync(_identify, path, lock is not None)
            if new and not create:
                raise CorruptLog(f"{path} is empty: it holds no Tracker log")
            writer = await _connect(path, connections, WRITER_CACHE_KIB)
            # The writer's commits checkpoint the WAL, as SQLite does by default (a
            # commit that finds 1,000 pages in it copies them into the file): with a
            # connection of its own checkpointing beside it, each commit's fsync waited
            # behind the checkpoint's writes (1.3-1.6 ms per commit of 100 events,
            # against 1.0).
            await _prepare(writer, path, new=new)
            if new:  # the snapshots of a log that was here before are not this log's
                await anyio.to_thread.run_sync(snapshot_files.delete_snapshots, path)
            reader = await _connect(path, connections, READER_CACHE_KIB)
            store = cls(writer, reader, clock, path)
            await store._load_head()
            # On leaving, the writer finishes what it was given, then stops.
            async with background(store._run, store._close):
                yield store
        finally:
            with anyio.CancelScope(shield=True):
                for connection in reversed(connections):
                    await _close(connection)
            if lock is not None:
                lock.close()

    @property
    def attempts(self) -> MemoryAttempts:
        """Login attempts, counted in this process: the only one serving the log."""
        return self._attempts

    async def follow(self) -> None:
        """Nothing to follow: only the process holding the file's lock writes it."""
        await anyio.sleep_forever()

    async def catch_up(self) -> int:
        """Nothing to catch up with: every commit to the file was this process's own."""
        return 0

    async def lead(
        self,
        work: Callable[[], Awaitable[None]],
        *,
        task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """The process holding the file's lock is the only one: it leads."""
        task_status.started()
        await work()

    async def read_all(
        self,
        after: int = 0,
        until: int | None = None,
        streams: Sequence[str] | None = None,
        *,
        types: Sequence[str] | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[Recorded]:
        async for rows in self._row_pages(_COLUMNS, after, until, streams, types, limit):
            for row in rows:
                yield record(row)

    async def check_chain(self, until: int) -> ChainReport:
        """Check positions, the hash chain and stream versions up to `until`, in a worker
        process: on a machine with a core to spare, it runs beside a replay."""
        try:
            return await anyio.to_process.run_sync(check_chain_file, str(self.path), until)
        except anyio.BrokenWorkerProcess:  # no worker process to be had: check it here
            logger.warning("no worker process for the chain check; checking in a thread")
            return await anyio.to_thread.run_sync(check_chain_file, str(self.path), until)

    async def replay(
        self, callback: ReplayCallback, after: int = 0, until: int | None = None
    ) -> int:
        rows = replay_rows(self._built_page, self._lean_page, after, until)
        return await replay_pages(rows, callback)

    async def _built_page(self, after: int, until: int, size: int) -> Sequence[ReplayRow] | None:
        """A replay page as SQLite builds it, in C on the database's thread (which lets go
        of the GIL meanwhile); None if it cannot (data that is not UTF-8, a damaged file)."""
        try:
            rows = await self._reader.execute_fetchall(_REPLAY_PAGE, (after, until, size))
        except sqlite3.Error:
            return None
        return decode_replay_page(next(iter(rows))[0])

    async def _lean_page(self, after: int, until: int, size: int) -> Sequence[LeanRow]:
        rows = self._row_pages(_REPLAY_COLUMNS, after, until, None, limit=size)
        return [row async for page in rows for row in page]

    async def _row_pages(
        self,
        columns: str,
        after: int,
        until: int | None,
        streams: Sequence[str] | None,
        types: Sequence[str] | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[list[Any]]:
        """Rows of `columns` (position first), a page at a time, in position order."""
        where = ["position > ?"]
        filters: list[Any] = []
        if until is not None:
            where.append("position <= ?")
            filters.append(until)
        for column, values in (("stream", streams), ("type", types)):
            if values is not None:
                where.append(f"{column} IN (SELECT value FROM json_each(?))")
                filters.append(msgspec.json.encode(list(values)).decode())
        conditions = " AND ".join(where)
        query = f"SELECT {columns} FROM events WHERE {conditions} ORDER BY position LIMIT ?"

        async def read(last: int, size: int) -> list[Any]:
            return await self._read(query, (last, *filters, size))

        async for rows in pages(read, after, limit):
            yield rows

    async def read_stream(self, stream: str) -> list[Recorded]:
        rows = await self._read(
            f"SELECT {_COLUMNS} FROM events WHERE stream = ? ORDER BY version", (stream,)
        )
        return [record(row) for row in rows]

    async def event_at(self, position: int) -> Recorded | None:
        rows = await self._read(f"SELECT {_COLUMNS} FROM events WHERE position = ?", (position,))
        return record(rows[0]) if rows else None

    async def save_snapshot(self, snapshot: Snapshot) -> None:
        try:
            await anyio.to_thread.run_sync(snapshot_files.write_snapshot, self.path, snapshot)
        except OSError as exc:
            raise StorageError(f"cannot save the snapshot: {exc}") from exc

    async def load_snapshot(self, name: str) -> Snapshot | None:
        return await anyio.to_thread.run_sync(snapshot_files.read_snapshot, self.path, name)

    async def delete_snapshots(self) -> None:
        """Forget every snapshot (they are caches: the next start rebuilds them)."""
        try:
            await anyio.to_thread.run_sync(snapshot_files.delete_snapshots, self.path)
        except OSError as exc:
            raise StorageError(f"cannot delete snapshots: {exc}") from exc

    async def import_log(self, chunks: AsyncIterable[Sequence[Recorded]]) -> int:
        """Restore already-verified events into this empty log, all in one transaction.

        If `chunks` raises, nothing is written. Returns how many events were restored.
        """
        if self._head != 0:
            raise CorruptLog("the database is not empty: import restores into an empty one only")
        count = 0
        last: Recorded | None = None
        await self._writer.execute("BEGIN IMMEDIATE")
        try:
            async for chunk in chunks:
                await self._writer.executemany(_INSERT, [record_row(record) for record in chunk])
                count += len(chunk)
                last = chunk[-1] if chunk else last
            await self._writer.execute("COMMIT")
        except BaseException:
            with anyio.CancelScope(shield=True):
                await _rollback(self._writer)
            raise
        if last is not None:
            self._head, self._last_hash = last.position, last.hash
            self._versions.clear()
        return count

    # The writer

    def _close(self) -> None:
        self._queue.close()

    async def _run(self) -> None:
        await self._queue.run(self._commit)

    async def _commit(self, batch: list[Pending]) -> None:
        """Write the batch's acceptable appends in one transaction; fill in every result."""
        try:
            await self._load_versions(batch)
            rows, records = self._decide(batch)
            if rows:
                try:
                    await self._write_rows(rows)
                except sqlite3.IntegrityError:
                    # A stream taken to be new was not, or another process wrote to
                    # the file: learn the real heads and decide once more.
                    await self._load_head()
                    self._versions.clear()
                    await self._load_versions(batch, every_stream=True)
                    rows, records = self._decide(batch)
                    if rows:
                        await self._write_rows(rows)
        except sqlite3.Error as exc:
            fail_all(batch, StorageError(f"the event log cannot be written: {exc}"))
            return
        except Exception as exc:  # a bug: refuse every write from now on, loudly
            self._queue.fail(batch, exc)
            return
        self._advance(records)

    async def _write_rows(self, rows: Sequence[Row]) -> None:
        """Insert `rows` atomically and durably.

        Up to `_ROWS_PER_STATEMENT` rows go in one multi-row INSERT: one statement
        is one implicit transaction, so the whole batch costs a single call to
        the database thread and a single fsync.
        """
        if len(rows) <= _ROWS_PER_STATEMENT:
            await self._writer.execute(_insert_rows(len(rows)), _flatten(rows))
            return
        await self._writer.execute("BEGIN IMMEDIATE")
        try:
            await self._writer.executemany(_INSERT, rows)
            await self._writer.execute("COMMIT")
        except BaseException:
            with anyio.CancelScope(shield=True):
                await _rollback(self._writer)
            raise

    async def _load_versions(self, batch: list[Pending], *, every_stream: bool = False) -> None:
        """Learn the head version of the streams the batch touches that are not cached yet."""
        unknown = unknown_streams(batch, self._versions, every_stream=every_stream)
        if not unknown:
            return
        async with self._writer.execute(
            "SELECT stream, MAX(version) FROM events"
            " WHERE stream IN (SELECT value FROM json_each(?)) GROUP BY stream",
            (msgspec.json.encode(sorted(unknown)).decode(),),
        ) as cursor:
            found: dict[str, int] = {row[0]: row[1] for row in await cursor.fetchall()}
        for stream in unknown:
            self._versions[stream] = found.get(stream, 0)

    async def _load_head(self) -> None:
        async with self._writer.execute(
            "SELECT position, hash FROM events ORDER BY position DESC LIMIT 1"
        ) as cursor:
            row = await cursor.fetchone()
        self._head, self._last_hash = (row[0], row[1]) if row else (0, GENESIS_HASH)

    async def _read(self, query: str, params: Sequence[Any]) -> list[Any]:
        try:
            async with self._reader.execute(query, params) as cursor:
                return list(await cursor.fetchall())
        except sqlite3.Error as exc:
            raise StorageError(f"the event log cannot be read: {exc}") from exc


def check_chain_file(path: str, until: int) -> ChainReport:
    """The chain check of the log at `path` up to `until`, run in this (worker) process.

    SQLite walks the log, renders each event's canonical bytes and hands them to the
    checker's quick `follows`, up to the first event that does not follow (or that it
    cannot render). That one is read whole and checked closely: it is bad, or it was
    rendered otherwise than `canonical_bytes` would (no event Tracker writes is), and
    the walk goes on after it.
    """
    checker = ChainChecker()
    connection = sqlite3.connect(Path(path).resolve().as_uri() + "?mode=ro", uri=True)
    connection.create_function("follows", 3, checker.follows)
    try:
        while True:
            try:
                stop = connection.execute(_FIRST_NOT_FOLLOWING, (checker.position, until))
                if stop.fetchone() is None:
                    return checker.report()
            except sqlite3.Error:
                pass  # a column it cannot render: the next event is read whole
            try:
                row = connection.execute(_NEXT_EVENT, (checker.position, until)).fetchone()
            except sqlite3.Error as exc:
                raise StorageError(f"the event log cannot be read: {exc}") from exc
            if row is None:
                return checker.report()
            checker.check_row(row)
    except BadEvent as bad:
        return checker.report(bad)
    finally:
        connection.close()


def _lock(path: Path) -> IO[bytes]:
    """An exclusive `flock` on the database file, or `StorageError` if another process holds
    it. (SQLite's own locks are `fcntl` byte ranges, which `flock` does not touch.)

    A new database is created here, readable by this user alone (SQLite gives its WAL
    the same mode): it holds the password hashes.
    """
    descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    handle = open(descriptor, "ab")  # noqa: SIM115 - held for as long as the store is open
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise StorageError(
            f"{path} is in use by another Tracker process (a server or an import)"
        ) from None
    return handle


async def _connect(
    path: Path, opened: list[aiosqlite.Connection], cache_kib: int
) -> aiosqlite.Connection:
    """A new connection to `path` with a page cache of `cache_kib`, added to `opened` at
    once, so that it is closed even if what follows is cancelled."""
    try:
        connection = await aiosqlite.connect(path, isolation_level=None)
    except sqlite3.Error as exc:
        raise StorageError(f"cannot open {path}: {exc}") from exc
    opened.append(connection)
    try:
        await connection.execute("PRAGMA busy_timeout = 5000")
        await connection.execute(f"PRAGMA cache_size = -{cache_kib}")
    except sqlite3.OperationalError as exc:  # the disk, not the file (e.g. no room for the WAL)
        raise StorageError(f"cannot open {path}: {exc}") from exc
    except sqlite3.DatabaseError as exc:
        raise CorruptLog(f"{path} is not an SQLite database: {exc}") from exc
    return connection


def _identify(path: Path, locked: bool) -> bool:
    """True for a new (empty) database, False for a Tracker log this version reads,
    `CorruptLog` for anything else.

    It looks without writing, so that a file it refuses is left as it was: a writable
    connection would roll back another program's unfinished transaction (a hot
    journal) on reading, or checkpoint its WAL into the file on closing. With no WAL
    or journal beside it and the file `locked` (no Tracker can start writing it), the
    file is all there is, and it is read as it lies (which does not create them
    either); else read-only, through them.
    """
    if not path.exists():
        return True
    beside = (path.with_name(path.name + suffix) for suffix in ("-wal", "-journal"))
    alone = locked and not any(file.exists() for file in beside)
    mode = "immutable=1" if alone else "mode=ro"
    try:
        connection = sqlite3.connect(f"{path.resolve().as_uri()}?{mode}", uri=True, timeout=5)
    except sqlite3.Error as exc:
        raise StorageError(f"cannot open {path}: {exc}") from exc
    try:
        application_id = _pragma(connection, "application_id")
        user_version = _pragma(connection, "user_version")
        tables = _count_tables(connection)
    except sqlite3.OperationalError as exc:
        if exc.sqlite_errorname == "SQLITE_READONLY_ROLLBACK":
            raise CorruptLog(
                f"{path} is not a Tracker log: it has a rollback journal of an interrupted"
                " write (a Tracker log keeps a WAL)"
            ) from exc
        raise StorageError(f"cannot open {path}: {exc}") from exc
    except sqlite3.DatabaseError as exc:
        raise CorruptLog(f"{path} is not an SQLite database: {exc}") from exc
    finally:
        connection.close()
    if application_id == 0 and tables == 0:
        return True
    if application_id != APPLICATION_ID:
        raise CorruptLog(f"{path} is not a Tracker log (it holds another application's data)")
    if user_version > SCHEMA_VERSION:
        raise CorruptLog(
            f"{path} was written by a newer Tracker (schema {user_version}); "
            f"this version reads schema {SCHEMA_VERSION} and older"
        )
    return False


def _pragma(connection: sqlite3.Connection, name: str) -> int:
    row = connection.execute(f"PRAGMA {name}").fetchone()
    return int(row[0]) if row else 0


def _count_tables(connection: sqlite3.Connection) -> int:
    row = connection.execute("SELECT count(*) FROM sqlite_master").fetchone()
    return int(row[0]) if row else 0


async def _prepare(connection: aiosqlite.Connection, path: Path, *, new: bool) -> None:
    """Keep the log in WAL mode, synced in full; in a new file, create the schema in one
    transaction, so that a start that fails (on a full disk) leaves the file new."""
    try:
        await connection.execute("PRAGMA journal_mode = WAL")
        await connection.execute("PRAGMA synchronous = FULL")
        if new:
            await connection.executescript(f"BEGIN IMMEDIATE;\n{_SCHEMA}\nCOMMIT;")
    except sqlite3.Error as exc:
        raise StorageError(f"cannot prepare the log in {path}: {exc}") from exc


async def _close(connection: aiosqlite.Connection) -> None:
    try:
        await connection.close()
    except sqlite3.Error:
        logger.warning("closing the database failed", exc_info=True)


async def _rollback(connection: aiosqlite.Connection) -> None:
    try:
        await connection.execute("ROLLBACK")
    except sqlite3.Error:
        logger.warning("rollback failed", exc_info=True)
