"""Every event store, on a real database: positions, versions, group commit, reading,
snapshots, import, the chain check. The tests that take `store` run once on an SQLite
file and once on a PostgreSQL database (one test case for every store); those that
open a file themselves are about the SQLite store alone."""

from __future__ import annotations

import sqlite3
import stat
import threading
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from pathlib import Path

import anyio
import anyio.lowlevel
import asyncpg
import msgspec
import pytest

from tests.pgcluster import PostgresCluster
from tests.unit.support import FakeClock, collect
from tracker.clock import format_timestamp
from tracker.errors import BadEvent, CorruptLog, StorageError, VersionConflict
from tracker.events import batching, codec, reading, snapshot_files
from tracker.events import sqlite as sqlite_store
from tracker.events.postgres import PostgresStore
from tracker.events.reading import READ_PAGE
from tracker.events.records import GENESIS_HASH, Recorded, ReplayRow, expected_hash
from tracker.events.sqlite import SCHEMA_VERSION, SQLiteStore, check_chain_file
from tracker.events.store import Append, Snapshot
from tracker.events.types import (
    BaseEvent,
    GuestStarted,
    TaskCreated,
    TaskDeleted,
    TaskUpdated,
    TimerFinished,
    TimerStarted,
)
from tracker.events.verify import ChainChecker

Store = SQLiteStore | PostgresStore


@pytest.fixture(params=["sqlite", "postgres"])
async def store(
    request: pytest.FixtureRequest, db_path: Path, clock: FakeClock
) -> AsyncIterator[Store]:
    """A new, empty log: an SQLite file, or a database of the run's PostgreSQL cluster."""
    if request.param == "sqlite":
        async with SQLiteStore.open(db_path, clock) as local:
            yield local
        return
    cluster: PostgresCluster = request.getfixturevalue("postgres_cluster")
    async with PostgresStore.open(cluster.create_database(), clock) as remote:
        yield remote


async def tamper(store: Store, db_path: Path, statements: dict[str, str]) -> None:
    """Change the log behind the store's back, with the statement for its database."""
    if isinstance(store, SQLiteStore):
        with sqlite3.connect(db_path) as other:
            other.execute(statements["sqlite"])
        other.close()
        return
    remote = await asyncpg.connect(store._url)
    try:
        await remote.execute(statements["postgres"])
    finally:
        await remote.close()


def on_both(statement: str) -> dict[str, str]:
    """`tamper`'s statements, when SQLite and PostgreSQL take the same one."""
    return {"sqlite": statement, "postgres": statement}


def marks(*names: str) -> list[BaseEvent]:
    """Events that say who wrote them."""
    return [GuestStarted(principal_id=name) for name in names]


def marker(event: Recorded) -> str:
    return bytes(event.data).decode().split('"principal_id":"')[1].rstrip('"}')


def check_chain(events: Sequence[Recorded]) -> None:
    checker = ChainChecker()
    for event in events:
        checker.check(event)


# Appending


async def test_a_new_log_is_empty(store: Store) -> None:
    assert store.head == 0
    assert store.last_hash == GENESIS_HASH
    assert await collect(store.read_all()) == []


async def test_appends_get_positions_from_1_and_versions_per_stream(store: Store) -> None:
    await store.append("a", 0, marks("a1", "a2"), "alice")
    await store.append("b", 0, marks("b1"), "bob")
    await store.append("a", 2, marks("a3"), "alice")

    log = await collect(store.read_all())

    assert [(e.position, e.stream, e.version) for e in log] == [
        (1, "a", 1),
        (2, "a", 2),
        (3, "b", 1),
        (4, "a", 3),
    ]
    assert store.head == 4


async def test_an_append_returns_the_records_as_stored(store: Store, clock: FakeClock) -> None:
    returned = await store.append("a", 0, [GuestStarted(principal_id="g1")], "alice")

    assert returned == await collect(store.read_all())
    (event,) = returned
    assert (event.type, event.schema, bytes(event.data), event.actor) == (
        "GuestStarted",
        1,
        b'{"type":"GuestStarted","principal_id":"g1"}',
        "alice",
    )
    assert event.recorded_at == format_timestamp(clock())


async def test_every_event_is_chained_to_the_one_before(store: Store) -> None:
    await store.append("a", 0, marks("1", "2"), "x")
    await store.append("b", None, marks("3"), "x")

    log = await collect(store.read_all())

    previous = GENESIS_HASH
    for event in log:
        assert event.hash == expected_hash(previous, event)
        previous = event.hash
    assert store.last_hash == previous


async def test_an_append_with_no_events_writes_nothing(store: Store) -> None:
    assert await store.append("a", 0, [], "x") == []
    assert store.head == 0


@pytest.mark.parametrize(
    ("expected", "actual"),
    [(0, 2), (1, 2), (3, 2)],
    ids=["new-but-exists", "behind", "ahead"],
)
async def test_a_stale_expected_version_is_a_conflict_and_writes_nothing(
    store: Store, expected: int, actual: int
) -> None:
    await store.append("a", 0, marks("1", "2"), "x")

    with pytest.raises(VersionConflict) as conflict:
        await store.append("a", expected, marks("late"), "x")

    assert (conflict.value.stream, conflict.value.expected, conflict.value.actual) == (
        "a",
        expected,
        actual,
    )
    assert store.head == 2
    assert len(await collect(store.read_all())) == 2


async def test_expecting_a_version_of_a_stream_that_does_not_exist_is_a_conflict(
    store: Store,
) -> None:
    with pytest.raises(VersionConflict):
        await store.append("nowhere", 1, marks("x"), "x")


async def test_no_expected_version_skips_the_check(store: Store) -> None:
    await store.append("a", None, marks("1"), "x")
    await store.append("a", None, marks("2"), "x")

    assert [e.version for e in await store.read_stream("a")] == [1, 2]


async def test_append_all_writes_every_stream_in_one_go(store: Store) -> None:
    await store.append("a", 0, marks("a1"), "x")

    written = await store.append_all(
        [Append("a", 1, marks("a2")), Append("b", 0, marks("b1", "b2"))], "x"
    )

    assert [(e.position, e.stream, e.version) for e in written] == [
        (2, "a", 2),
        (3, "b", 1),
        (4, "b", 2),
    ]


async def test_one_conflict_in_append_all_writes_nothing_at_all(store: Store) -> None:
    await store.append("a", 0, marks("a1"), "x")

    with pytest.raises(VersionConflict) as conflict:
        await store.append_all([Append("b", 0, marks("b1")), Append("a", 0, marks("a2"))], "x")

    assert conflict.value.stream == "a"
    assert store.head == 1
    assert await store.read_stream("b") == []


async def test_two_appends_to_one_stream_in_append_all_are_checked_in_sequence(
    store: Store,
) -> None:
    with pytest.raises(VersionConflict):
        await store.append_all([Append("a", 0, marks("1")), Append("a", 0, marks("2"))], "x")


async def test_a_closed_store_refuses_appends(db_path: Path) -> None:
    async with SQLiteStore.open(db_path) as store:
        pass

    with pytest.raises(StorageError):
        await store.append("a", 0, marks("1"), "x")


async def test_a_log_that_cannot_be_written_raises_storage_error_and_stays_usable(
    store: Store,
) -> None:
    await store.append("a", 0, marks("1"), "x")
    # No unprivileged way to make the database read-only when root: the writer's
    # connection refuses writes instead (until it is given back, or replaced).
    if isinstance(store, SQLiteStore):
        await store._writer.execute("PRAGMA query_only = 1")
    else:
        assert store._writer is not None
        await store._writer.execute("SET default_transaction_read_only = on")

    with pytest.raises(StorageError):
        await store.append("a", 1, marks("2"), "x")

    assert store.head == 1
    if isinstance(store, SQLiteStore):
        await store._writer.execute("PRAGMA query_only = 0")
    written = await store.append("a", 1, marks("2"), "x")
    assert [(e.position, e.version) for e in written] == [(2, 2)]


async def test_commits_copy_the_wal_back_into_the_file_while_the_store_is_open(
    db_path: Path,
) -> None:
    page = "x" * 4000
    wal_path = anyio.Path(db_path.with_name(db_path.name + "-wal"))
    async with SQLiteStore.open(db_path) as store:
        before = (await anyio.Path(db_path).stat()).st_size
        for index in range(1500):  # about 6 MB of events: 1,500 pages, over the 1,000
            event = TaskCreated(task_id=f"t{index}", owner="o", title="t", notes=page)
            await store.append(f"task-{index}", 0, [event], "o")
        copied = (await anyio.Path(db_path).stat()).st_size - before
        wal = (await wal_path.stat()).st_size

    assert copied > 3_000_000  # checkpointed while open, not only on closing
    assert wal < 6_000_000  # and the WAL was reused, not grown with every commit


async def test_closing_right_after_an_append_was_queued_does_not_hang(db_path: Path) -> None:
    hung = False

    async def unstick(store: Store) -> None:
        nonlocal hung
        await anyio.sleep(0.5)
        hung = True
        store._queue._wake.set()  # let the test end, and its threads with it

    async with anyio.create_task_group() as tasks:
        async with SQLiteStore.open(db_path) as store:
            tasks.start_soon(store.append, "a", 0, marks("1"), "x")
            await anyio.lowlevel.checkpoint()  # the append is queued; the writer has not run yet
            tasks.start_soon(unstick, store)
        tasks.cancel_scope.cancel()

    assert not hung
    assert store.head == 1


def _worker_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if "connection_worker" in t.name}


async def test_a_store_left_by_cancellation_still_closes_its_connections(db_path: Path) -> None:
    before = _worker_threads()
    with anyio.move_on_after(0.05):
        async with SQLiteStore.open(db_path) as store:
            await anyio.sleep(5)
    try:
        for _ in range(50):
            if not _worker_threads() - before:
                break
            await anyio.sleep(0.01)
        assert not _worker_threads() - before
    finally:
        with anyio.CancelScope(shield=True):  # clean up what the store left behind
            await store._writer.close()
            await store._reader.close()


# Group commit


async def test_concurrent_appenders_are_group_committed_without_gaps_or_double_writes(
    store: Store,
) -> None:
    """200 appenders on 5 streams: each guesses a version, and retries with the one it is told."""
    batches: list[list[Recorded]] = []
    store.add_listener(lambda records: batches.append(list(records)))
    committed: dict[str, tuple[int | None, list[Recorded]]] = {}
    conflicted: dict[str, tuple[str, int | None, VersionConflict]] = {}

    async def appender(number: int) -> None:
        stream = f"s{number % 5}"
        expected = None if number % 10 == 0 else (number // 5) % 3
        for attempt in range(4):
            name = f"{number}.{attempt}"
            try:
                records = await store.append(stream, expected, marks(name), "x")
            except VersionConflict as conflict:
                conflicted[name] = (stream, expected, conflict)
                expected = conflict.actual
                continue
            # The commit listener saw this append before the appender resumed.
            assert batches[-1][-1].position >= records[-1].position
            committed[name] = (expected, records)
            return

    async with anyio.create_task_group() as tasks:
        for number in range(200):
            tasks.start_soon(appender, number)

    log = await collect(store.read_all())
    assert [e.position for e in log] == list(range(1, len(log) + 1))
    assert store.head == len(log)
    assert Counter(marker(e) for e in log) == Counter(committed.keys())
    assert not set(conflicted) & set(committed)
    for stream, expected, conflict in conflicted.values():
        assert (conflict.stream, conflict.expected) == (stream, expected)
        assert conflict.actual != expected
    for stream in {e.stream for e in log}:
        assert [e.version for e in log if e.stream == stream] == list(
            range(1, sum(e.stream == stream for e in log) + 1)
        )
    for expected, (record,) in committed.values():
        if expected is not None:
            assert record.version == expected + 1
    assert [e for batch in batches for e in batch] == log
    assert max(len(batch) for batch in batches) > 1, "no two appends were ever committed together"
    assert conflicted, "no append ever lost a race"
    check_chain(log)


async def test_commit_listeners_get_each_batch_in_position_order(store: Store) -> None:
    seen: list[list[int]] = []
    store.add_listener(lambda records: seen.append([e.position for e in records]))

    await store.append("a", 0, marks("1", "2"), "x")
    await store.append_all([Append("b", 0, marks("3")), Append("c", 0, marks("4"))], "x")

    assert seen == [[1, 2], [3, 4]]


async def test_a_failing_listener_keeps_that_commit_and_refuses_later_writes(
    store: Store,
) -> None:
    def broken(records: Sequence[Recorded]) -> None:
        raise RuntimeError("listener bug")

    store.add_listener(broken)

    assert len(await store.append("a", 0, marks("1"), "x")) == 1
    with pytest.raises(StorageError, match="projection failed"):
        await store.append("a", 1, marks("2"), "x")
    assert store.head == 1


async def test_a_second_writer_on_the_same_file_is_refused(db_path: Path) -> None:
    async with SQLiteStore.open(db_path):
        with pytest.raises(StorageError, match="in use"):
            async with SQLiteStore.open(db_path):
                pass
        async with SQLiteStore.open(db_path, exclusive=False) as reader:
            assert reader.head == 0


# Reading


async def test_read_all_pages_through_a_log_longer_than_a_page(store: Store) -> None:
    total = 2 * READ_PAGE + 7
    for start in range(0, total, 1000):
        names = [str(number) for number in range(start, min(start + 1000, total))]
        await store.append(f"s{start}", 0, marks(*names), "x")

    log = await collect(store.read_all())
    tail = await collect(store.read_all(after=READ_PAGE - 1))

    assert [e.position for e in log] == list(range(1, total + 1))
    assert [marker(e) for e in log] == [str(number) for number in range(total)]
    assert [e.position for e in tail] == list(range(READ_PAGE, total + 1))


@pytest.mark.parametrize("total", [0, 1, 2, 3, 4, 6, 7])
async def test_paging_neither_loses_nor_repeats_an_event_at_page_edges(
    store: Store, monkeypatch: pytest.MonkeyPatch, total: int
) -> None:
    monkeypatch.setattr(reading, "READ_PAGE", 3)
    await store.append("a", 0, marks(*(str(number) for number in range(total))), "x")
    seen: list[ReplayRow] = []

    log = await collect(store.read_all())
    count = await store.replay(seen.extend)

    assert [e.position for e in log] == list(range(1, total + 1))
    assert seen == [replay_row(e) for e in log]
    assert count == total


def replay_row(event: Recorded) -> ReplayRow:
    """What a replay hands over of `event`."""
    return event.position, event.stream, event.version, event.recorded_at, codec.decode(event)


EVERY_KIND = [
    GuestStarted(principal_id="g1"),
    TaskCreated(task_id="t1", owner="g1", title='Caf\u00e9 \u2615 "quoted" \\ </script>'),
    TaskUpdated(notes="line one\nline two\ttab \x01 \u2028"),
    TaskUpdated(done=True),
    TimerStarted(run="r1", duration_seconds=60, at=1_800_000_000.125, ends_at=1_800_000_060.125),
    TimerFinished(run="r1", finished_at=1_800_000_060.125),
    TaskDeleted(),
]


async def test_a_replay_hands_over_every_kind_of_event_as_it_was_appended(store: Store) -> None:
    await store.append("a", 0, EVERY_KIND, "x")
    seen: list[ReplayRow] = []

    await store.replay(seen.extend)

    assert [row[4] for row in seen] == EVERY_KIND
    assert seen == [replay_row(e) for e in await collect(store.read_all())]


@pytest.mark.parametrize(
    "damage",
    [
        on_both("UPDATE events SET type = 'TaskDeleted' WHERE position = 2"),
        {"sqlite": "UPDATE events SET data = CAST('{\"type\":\"TaskDeleted\"}' AS BLOB)"
                   " WHERE position = 2",
         "postgres": "UPDATE events SET data = convert_to('{\"type\":\"TaskDeleted\"}', 'UTF8')"
                     " WHERE position = 2"},
    ],
    ids=["the type", "the data's tag"],
)  # fmt: skip
async def test_an_event_whose_type_and_data_disagree_is_refused_in_its_turn(
    store: Store, db_path: Path, damage: dict[str, str]
) -> None:
    await store.append("a", 0, marks("1", "2", "3"), "x")
    await tamper(store, db_path, damage)
    seen: list[int] = []

    with pytest.raises(BadEvent) as bad:
        await store.replay(lambda rows: seen.extend(row[0] for row in rows))

    assert (bad.value.position, seen) == (2, [1])


async def test_a_replay_upcasts_an_event_of_an_older_schema(
    store: Store, db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    await store.append("a", 0, marks("1", "2", "3"), "x")
    await tamper(store, db_path, on_both("UPDATE events SET schema = 0 WHERE position = 2"))
    monkeypatch.setitem(
        codec.UPCASTERS, ("GuestStarted", 0), lambda old: {**old, "principal_id": "upcast"}
    )
    seen: list[ReplayRow] = []

    await store.replay(seen.extend)

    assert [row[4] for row in seen] == marks("1", "upcast", "3")


@pytest.mark.parametrize(
    ("damage", "positions", "reason"),
    [
        ({"sqlite": "UPDATE events SET data = X'FF7B7D' WHERE position = 4",
          "postgres": "UPDATE events SET data = '\\xff7b7d'::bytea WHERE position = 4"},
         [1, 2, 3], "cannot be read"),
        ({"sqlite": "UPDATE events SET data = CAST('not json' AS BLOB) WHERE position = 4",
          "postgres": "UPDATE events SET data = 'not json'::bytea WHERE position = 4"},
         [1, 2, 3], "cannot be read"),
        ({"sqlite": "UPDATE events SET data = CAST('{\"type\":\"GuestStarted\",'"
                    " || '\"principal_id\":\"3\"}],[5,\"a\",5,\"t\",{\"type\":\"TaskDeleted\"}'"
                    " AS BLOB) WHERE position = 4",
          "postgres": "UPDATE events SET data = convert_to('{\"type\":\"GuestStarted\",'"
                      " || '\"principal_id\":\"3\"}],[5,\"a\",5,\"t\",{\"type\":\"TaskDeleted\"}',"
                      " 'UTF8') WHERE position = 4"},
         [1, 2, 3], "cannot be read"),
    ],
    ids=["data that is not UTF-8", "data that is not JSON", "data that is more than one value"],
)  # fmt: skip
async def test_replay_refuses_a_damaged_event_in_its_turn(
    store: Store,
    db_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    damage: dict[str, str],
    positions: list[int],
    reason: str,
) -> None:
    monkeypatch.setattr(reading, "READ_PAGE", 2)
    await store.append("a", 0, marks(*(str(number) for number in range(6))), "x")
    await tamper(store, db_path, damage)
    seen: list[int] = []

    with pytest.raises(BadEvent, match=reason) as bad:
        await store.replay(lambda rows: seen.extend(row[0] for row in rows))

    assert (bad.value.position, seen) == (4, positions)


async def test_replay_hands_over_the_events_around_a_gap_for_the_projection_to_refuse(
    store: Store, db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(reading, "READ_PAGE", 2)
    await store.append("a", 0, marks(*(str(number) for number in range(6))), "x")
    await tamper(store, db_path, on_both("DELETE FROM events WHERE position = 4"))
    seen: list[int] = []

    assert await store.replay(lambda rows: seen.extend(row[0] for row in rows)) == 5

    assert seen == [1, 2, 3, 5, 6]


def garble_a_middle_page(path: Path) -> None:
    """Overwrite pages in the middle of the database file with garbage (the table's, most
    of them: the table is a megabyte of events, its index a few pages)."""
    with path.open("r+b") as file:
        file.seek(4096 * (path.stat().st_size // 4096 // 2))
        file.write(b"\xa5" * 4096 * 4)


async def test_replay_of_a_damaged_file_is_a_storage_error(db_path: Path) -> None:
    async with SQLiteStore.open(db_path) as store:
        for number in range(40):
            await store.append(f"s{number}", 0, marks(*(["x" * 500] * 50)), "x")
    garble_a_middle_page(db_path)

    async with SQLiteStore.open(db_path, create=False) as store:
        with pytest.raises(StorageError, match="cannot be read"):
            await store.replay(lambda rows: None)


async def test_replay_calls_back_every_event_in_order_and_counts_them(
    store: Store,
) -> None:
    await store.append("a", 0, marks("1", "2", "3", "4"), "x")
    seen: list[int] = []

    assert await store.replay(lambda rows: seen.extend(r[0] for r in rows), after=1, until=3) == 2
    assert seen == [2, 3]


async def test_a_failing_callback_stops_replay(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(reading, "READ_PAGE", 2)
    await store.append("a", 0, marks(*(str(number) for number in range(10))), "x")
    seen: list[int] = []

    def callback(rows: Iterable[ReplayRow]) -> None:
        for row in rows:
            if row[0] == 3:
                raise ValueError("projection bug")
            seen.append(row[0])

    with pytest.raises(ValueError, match="projection bug"):
        await store.replay(callback)

    assert seen == [1, 2]


@pytest.fixture
async def three_streams(store: Store) -> Store:
    await store.append("a", 0, marks("1"), "x")
    await store.append("b", 0, marks("2"), "x")
    await store.append("a", 1, marks("3"), "x")
    await store.append("c", 0, marks("4"), "x")
    await store.append("b", 1, marks("5"), "x")
    return store


@pytest.mark.parametrize(
    ("after", "until", "streams", "positions"),
    [
        (0, None, None, [1, 2, 3, 4, 5]),
        (2, None, None, [3, 4, 5]),
        (0, 3, None, [1, 2, 3]),
        (1, 4, None, [2, 3, 4]),
        (0, 0, None, []),
        (5, None, None, []),
        (4, 2, None, []),
        (0, None, ["a"], [1, 3]),
        (0, None, ["a", "c"], [1, 3, 4]),
        (1, 4, ["a", "b"], [2, 3]),
        (0, None, ["nowhere"], []),
        (0, None, [], []),
    ],
)
async def test_read_all_selects_by_position_and_stream(
    three_streams: Store,
    after: int,
    until: int | None,
    streams: list[str] | None,
    positions: list[int],
) -> None:
    events = await collect(three_streams.read_all(after=after, until=until, streams=streams))

    assert [e.position for e in events] == positions


@pytest.mark.parametrize(
    ("types", "limit", "streams", "positions"),
    [
        (["GuestStarted"], None, None, [1, 2, 3, 4, 5]),
        (["TaskDeleted"], None, None, []),
        (None, 2, None, [1, 2]),
        (None, 0, None, []),
        (None, 9, ["b"], [2, 5]),
        (["GuestStarted", "TaskDeleted"], 1, ["a", "c"], [1]),
    ],
)
async def test_read_all_selects_by_type_and_stops_at_the_limit(
    three_streams: Store,
    types: list[str] | None,
    limit: int | None,
    streams: list[str] | None,
    positions: list[int],
) -> None:
    events = await collect(three_streams.read_all(streams=streams, types=types, limit=limit))

    assert [e.position for e in events] == positions


async def test_a_limit_larger_than_a_read_page_reads_on(store: Store) -> None:
    await store.append_all([Append(f"s{n}", 0, marks(str(n))) for n in range(READ_PAGE + 10)], "x")

    events = await collect(store.read_all(after=3, limit=READ_PAGE + 2))

    assert [e.position for e in events] == list(range(4, READ_PAGE + 6))


async def test_read_stream_gives_one_stream_in_version_order(three_streams: Store) -> None:
    assert [(e.position, e.version) for e in await three_streams.read_stream("b")] == [
        (2, 1),
        (5, 2),
    ]
    assert await three_streams.read_stream("nowhere") == []


async def test_event_at_finds_one_position(three_streams: Store) -> None:
    event = await three_streams.event_at(3)

    assert event is not None
    assert (event.stream, event.version) == ("a", 2)
    assert await three_streams.event_at(0) is None
    assert await three_streams.event_at(6) is None


# Reopening


async def test_a_reopened_log_keeps_its_head_chain_and_stream_versions(
    db_path: Path, clock: FakeClock
) -> None:
    async with SQLiteStore.open(db_path, clock) as store:
        await store.append("a", 0, marks("1", "2"), "x")
        await store.append("b", 0, marks("3"), "x")
        head, last_hash = store.head, store.last_hash

    async with SQLiteStore.open(db_path, clock) as store:
        assert (store.head, store.last_hash) == (head, last_hash)
        with pytest.raises(VersionConflict):
            await store.append("a", 1, marks("stale"), "x")
        written = await store.append("a", 2, marks("4"), "x")
        log = await collect(store.read_all())

    assert [(e.position, e.version) for e in written] == [(4, 3)]
    check_chain(log)


async def test_expecting_a_new_stream_that_exists_from_before_a_reopen_is_a_conflict(
    db_path: Path, clock: FakeClock
) -> None:
    async with SQLiteStore.open(db_path, clock) as store:
        await store.append("old", 0, marks("1"), "x")

    async with SQLiteStore.open(db_path, clock) as store:
        results = await _gather(
            store.append("old", 0, marks("again"), "x"),
            store.append("fresh", 0, marks("2"), "x"),
        )
        log = await collect(store.read_all())

    assert isinstance(results[0], VersionConflict)
    assert results[0].actual == 1
    assert [(e.stream, e.version) for e in log] == [("old", 1), ("fresh", 1)]
    check_chain(log)


async def test_versions_forgotten_past_the_limit_are_looked_up_again(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(batching, "VERSIONS_KEPT", 3)
    for stream in "abcdef":
        await store.append(stream, 0, marks(stream), "x")
    await store.append("a", 1, marks("a2"), "x")

    results = await _gather(
        store.append("b", 1, marks("b2"), "x"),
        store.append("c", 0, marks("c again"), "x"),
        store.append("d", 2, marks("d3"), "x"),
        store.append("a", 2, marks("a3"), "x"),
    )

    assert [type(result) for result in results[1:3]] == [VersionConflict, VersionConflict]
    log = await collect(store.read_all())
    assert [(e.stream, e.version) for e in log[6:]] == [("a", 2), ("b", 2), ("a", 3)]
    check_chain(log)
    assert len(store._versions) <= 3 + 2  # the limit, and a batch past it


async def _gather(*appends: object) -> list[object]:
    """Run appends concurrently (so they share a batch); each result or exception, in order."""
    results: list[object] = [None] * len(appends)

    async def run(index: int, append: object) -> None:
        try:
            results[index] = await append  # type: ignore[misc]
        except VersionConflict as exc:
            results[index] = exc

    async with anyio.create_task_group() as tasks:
        for index, append in enumerate(appends):
            tasks.start_soon(run, index, append)
    return results


async def test_opening_a_missing_log_without_create_refuses(tmp_path: Path) -> None:
    path = tmp_path / "missing.db"

    with pytest.raises(CorruptLog):
        async with SQLiteStore.open(path, create=False):
            pass

    assert not path.exists()


def _files(directory: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in directory.iterdir()}


def _another_apps_database(path: Path) -> None:
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
        connection.execute("INSERT INTO customers (name) VALUES ('Ada')")
    connection.close()


def _foreign_application_id(path: Path) -> None:
    connection = sqlite3.connect(path)
    connection.execute("PRAGMA application_id = 42")
    connection.close()


def _random_bytes(path: Path) -> None:
    path.write_bytes(bytes(range(256)) * 16)


def _text_file(path: Path) -> None:
    path.write_text("position,stream\n1,a\n")


@pytest.mark.parametrize(
    "make", [_another_apps_database, _foreign_application_id, _random_bytes, _text_file]
)
async def test_a_file_that_is_not_a_tracker_log_is_refused_and_left_untouched(
    tmp_path: Path, make: Callable[[Path], None]
) -> None:
    path = tmp_path / "other.db"
    make(path)
    before = _files(tmp_path)

    with pytest.raises(CorruptLog):
        async with SQLiteStore.open(path):
            pass

    assert _files(tmp_path) == before


async def test_a_log_from_a_newer_tracker_is_refused(db_path: Path) -> None:
    async with SQLiteStore.open(db_path) as store:
        await store.append("a", 0, marks("1"), "x")
    connection = sqlite3.connect(db_path)
    connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    connection.close()

    with pytest.raises(CorruptLog, match="newer"):
        async with SQLiteStore.open(db_path):
            pass


async def test_a_second_store_on_the_same_file_is_noticed_and_the_append_decided_again(
    db_path: Path,
) -> None:
    async with (
        SQLiteStore.open(db_path) as first,
        SQLiteStore.open(db_path, exclusive=False) as second,  # bypassing the lock
    ):
        await first.append("a", 0, marks("1"), "x")
        await first.append("b", 0, marks("2"), "x")  # learns b's version
        await second.append("b", None, marks("3"), "x")  # first's head and b are now stale

        with pytest.raises(VersionConflict):
            await first.append("b", 1, marks("stale"), "x")
        written = await first.append("b", 2, marks("4"), "x")

        assert [(e.position, e.version) for e in written] == [(4, 3)]
        check_chain(await collect(first.read_all()))


# Snapshots


async def test_a_saved_snapshot_is_loaded_back(store: Store) -> None:
    snapshot = Snapshot("model", 3, "ab" * 32, 1, b"\x00state")

    await store.save_snapshot(snapshot)

    assert await store.load_snapshot("model") == snapshot
    assert await store.load_snapshot("other") is None


async def test_saving_a_snapshot_replaces_the_one_of_the_same_name(store: Store) -> None:
    await store.save_snapshot(Snapshot("model", 3, "a" * 64, 1, b"old"))
    await store.save_snapshot(Snapshot("other", 1, "b" * 64, 1, b"other"))
    newer = Snapshot("model", 9, "c" * 64, 2, b"new")

    await store.save_snapshot(newer)

    assert await store.load_snapshot("model") == newer
    assert await store.load_snapshot("other") == Snapshot("other", 1, "b" * 64, 1, b"other")


async def test_snapshots_can_be_forgotten(store: Store) -> None:
    await store.save_snapshot(Snapshot("model", 3, "a" * 64, 1, b"old"))

    await store.delete_snapshots()

    assert await store.load_snapshot("model") is None


async def test_a_snapshot_in_a_reused_buffer_is_saved_as_it_stands(store: Store) -> None:
    buffer = bytearray(b"first state")
    await store.save_snapshot(Snapshot("model", 3, "a" * 64, 1, buffer))

    buffer[:] = b"changed after the save"

    loaded = await store.load_snapshot("model")
    assert loaded is not None
    assert loaded.data == b"first state"


async def test_an_sqlite_snapshot_is_a_file_beside_the_database_not_in_it(
    db_path: Path,
) -> None:
    async with SQLiteStore.open(db_path) as store:
        await store.append("a", 0, marks("1"), "x")
        before = _database_bytes(db_path)

        await store.save_snapshot(Snapshot("model", 1, "a" * 64, 1, bytes(4 << 20)))

        assert _database_bytes(db_path) == before
    assert snapshot_files.snapshot_path(db_path, "model").stat().st_size > 4 << 20


def _database_bytes(db_path: Path) -> int:
    """The size of the database with its WAL."""
    wal = db_path.with_name(db_path.name + "-wal")
    return db_path.stat().st_size + (wal.stat().st_size if wal.exists() else 0)


async def test_a_save_cut_short_leaves_the_last_snapshot_and_the_next_save_tidies_up(
    db_path: Path,
) -> None:
    saved = Snapshot("model", 1, "a" * 64, 1, b"saved")
    async with SQLiteStore.open(db_path) as store:
        await store.append("a", 0, marks("1"), "x")
        await store.save_snapshot(saved)
        path = snapshot_files.snapshot_path(db_path, "model")
        cut_short = path.with_name(f"{path.name}.0badf00d.tmp")
        cut_short.write_bytes(b"half a snapshot")

        assert await store.load_snapshot("model") == saved

        await store.save_snapshot(msgspec.structs.replace(saved, data=b"next"))

        assert not cut_short.exists()
        assert sorted(db_path.parent.glob(f"{db_path.name}-snapshot-*")) == [path]


@pytest.mark.parametrize(
    "content",
    [b"", b"\x00\x00\x00\x09not a msgpack header", b"\xff" * 64],
    ids=["empty", "garbled-header", "random-bytes"],
)
async def test_a_snapshot_file_that_is_not_one_is_ignored_with_a_warning(
    db_path: Path, content: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    async with SQLiteStore.open(db_path) as store:
        snapshot_files.snapshot_path(db_path, "model").write_bytes(content)

        assert await store.load_snapshot("model") is None

    assert "not a snapshot" in caplog.text


async def test_a_new_log_removes_the_snapshots_of_one_that_was_there_before(
    db_path: Path,
) -> None:
    async with SQLiteStore.open(db_path) as store:
        await store.append("a", 0, marks("1"), "x")
        await store.save_snapshot(Snapshot("model", 1, "a" * 64, 1, b"old log"))
    await anyio.Path(db_path).unlink()

    async with SQLiteStore.open(db_path) as store:
        assert await store.load_snapshot("model") is None
    assert not snapshot_files.snapshot_path(db_path, "model").exists()


async def test_a_new_database_its_wal_and_its_snapshots_are_readable_by_their_owner_alone(
    db_path: Path,
) -> None:
    async with SQLiteStore.open(db_path) as store:
        await store.append("a", 0, marks("1"), "x")
        await store.save_snapshot(Snapshot("model", 1, "a" * 64, 1, b"password hashes"))
        wal = db_path.with_name(db_path.name + "-wal")
        snapshot = snapshot_files.snapshot_path(db_path, "model")

        modes = {file.name: stat.S_IMODE(file.stat().st_mode) for file in (db_path, wal, snapshot)}

    assert set(modes.values()) == {0o600}, modes


async def test_a_snapshot_file_that_cannot_be_read_is_ignored_with_a_warning(
    db_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with SQLiteStore.open(db_path) as store:
        snapshot_files.snapshot_path(db_path, "model").mkdir()

        assert await store.load_snapshot("model") is None

    assert "ignoring the snapshot" in caplog.text


async def test_a_snapshot_file_of_another_name_is_ignored(db_path: Path) -> None:
    async with SQLiteStore.open(db_path) as store:
        await store.save_snapshot(Snapshot("other", 1, "a" * 64, 1, b"other"))
        other = snapshot_files.snapshot_path(db_path, "other")
        other.rename(snapshot_files.snapshot_path(db_path, "model"))

        assert await store.load_snapshot("model") is None


# Import


@pytest.fixture
async def source_log(tmp_path: Path) -> list[Recorded]:
    async with SQLiteStore.open(tmp_path / "source.db", FakeClock(1_000_000.0)) as source:
        await source.append("a", 0, marks("1", "2"), "x")
        await source.append("b", 0, [TaskUpdated(done=True), TaskDeleted()], "y")
        await source.append("a", 2, marks("3"), "x")
        return await collect(source.read_all())


async def chunks_of(events: list[Recorded], size: int = 2) -> AsyncIterator[list[Recorded]]:
    for start in range(0, len(events), size):
        yield events[start : start + size]


async def test_import_restores_a_log_into_an_empty_store(
    store: Store, source_log: list[Recorded]
) -> None:
    assert await store.import_log(chunks_of(source_log)) == 5

    assert await collect(store.read_all()) == source_log
    assert (store.head, store.last_hash) == (5, source_log[-1].hash)
    written = await store.append("a", 3, marks("4"), "x")
    assert [(e.position, e.version) for e in written] == [(6, 4)]
    check_chain(await collect(store.read_all()))


async def test_import_into_a_log_that_is_not_empty_is_refused(
    store: Store, source_log: list[Recorded]
) -> None:
    await store.append("z", 0, marks("mine"), "x")

    with pytest.raises(CorruptLog, match="not empty"):
        await store.import_log(chunks_of(source_log))

    assert store.head == 1


async def test_an_import_that_fails_part_way_writes_nothing(
    store: Store, source_log: list[Recorded]
) -> None:
    async def failing() -> AsyncIterator[list[Recorded]]:
        yield source_log[:2]
        yield source_log[2:4]
        raise OSError("the backup file is truncated")

    with pytest.raises(OSError, match="truncated"):
        await store.import_log(failing())

    assert store.head == 0
    assert await collect(store.read_all()) == []
    assert await store.import_log(chunks_of(source_log)) == 5


async def test_the_chain_check_reaches_the_tip_it_is_given(three_streams: Store) -> None:
    report = await three_streams.check_chain(three_streams.head)
    assert (report.position, report.hash) == (5, three_streams.last_hash)
    assert report.bad_position is None

    partial = await three_streams.check_chain(3)
    log = await collect(three_streams.read_all(until=3))
    assert (partial.position, partial.hash) == (3, log[-1].hash)


async def test_the_chain_check_names_the_first_edited_event(db_path: Path) -> None:
    async with SQLiteStore.open(db_path, FakeClock()) as store:
        await store.append("a", 0, marks("1", "2", "3"), "x")
    with sqlite3.connect(db_path) as connection:
        connection.execute("UPDATE events SET actor = 'mallory' WHERE position = 2")
    connection.close()

    async with SQLiteStore.open(db_path, FakeClock(), exclusive=False) as store:
        report = await store.check_chain(store.head)

    assert (report.position, report.bad_position) == (1, 2)
    assert "hash does not match" in report.reason


async def test_the_chain_check_of_a_file_looks_closely_at_events_sqlite_renders_otherwise(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with SQLiteStore.open(db_path, FakeClock()) as store:
        await store.append("a", 0, marks(*(str(number) for number in range(7))), "x")
        tip = store.last_hash
    # As if SQLite rendered no event as `canonical_bytes` does: each is read and checked whole.
    monkeypatch.setattr(
        "tracker.events.sqlite._FIRST_NOT_FOLLOWING",
        sqlite_store._FIRST_NOT_FOLLOWING.replace("',' ||", "', ' ||"),
    )

    report = check_chain_file(str(db_path), 7)

    assert (report.position, report.hash, report.bad_position) == (7, tip, None)


async def test_the_chain_check_of_a_file_names_an_event_sqlite_cannot_render(
    db_path: Path,
) -> None:
    async with SQLiteStore.open(db_path, FakeClock()) as store:
        await store.append("a", 0, marks("1", "2", "3", "4"), "x")
    with sqlite3.connect(db_path) as connection:
        connection.execute("UPDATE events SET actor = CAST(actor AS BLOB) WHERE position = 3")
    connection.close()

    report = check_chain_file(str(db_path), 4)

    assert (report.position, report.bad_position) == (2, 3)
    assert "hash does not match" in report.reason


# Login attempts in PostgreSQL


async def test_postgresql_login_attempts_are_counted_by_the_database_for_every_key(
    postgres_cluster: PostgresCluster, clock: FakeClock
) -> None:
    async with PostgresStore.open(postgres_cluster.create_database(), clock) as store:
        attempts = store.attempts
        for _ in range(3):
            assert await attempts.take("username:ann", 3, 60.0, 0.0) is None
        wait = await attempts.take("username:ann", 3, 60.0, 0.0)
        assert wait is not None
        assert 59.0 < wait <= 60.0  # from the database's clock, not the caller's `now`
        assert await attempts.take("username:bob", 3, 60.0, 0.0) is None
        await attempts.give_back("username:ann")
        assert await attempts.take("username:ann", 3, 60.0, 0.0) is None
        await attempts.forget("username:ann")
        assert await attempts.take("username:ann", 1, 60.0, 0.0) is None


async def test_postgresql_login_attempts_without_the_database_are_a_storage_error(
    postgres_cluster: PostgresCluster, clock: FakeClock
) -> None:
    async with PostgresStore.open(postgres_cluster.create_database(), clock) as store:
        attempts = store.attempts
    # The store is closed, and its connections with it.
    with pytest.raises(StorageError, match="cannot count the login attempt"):
        await attempts.take("username:ann", 3, 60.0, 0.0)
    with pytest.raises(StorageError):
        await attempts.forget("username:ann")
