"""ChainChecker and the projections: a clean log passes; any edit of stored history is
caught at its first bad position.

Logs are written by the real store, tampered with through sqlite3 while closed, and
read back with `read_all`; each event goes through the chain check, then the read
model, as `tracker import` checks a backup (`tracker verify` runs both over the whole
log, and names the first bad position either found).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.unit.support import FakeClock, Row, collect, rechain, rewrite_log
from tracker.errors import BadEvent
from tracker.events.records import GENESIS_HASH
from tracker.events.sqlite import SQLiteStore
from tracker.events.types import GuestStarted, TaskCreated, TaskDeleted, TaskUpdated
from tracker.events.verify import ChainChecker
from tracker.projections.model import ReadModel


@pytest.fixture
async def log(db_path: Path, clock: FakeClock) -> Path:
    """Six events on three streams; task-t1 is at version 3."""
    async with SQLiteStore.open(db_path, clock) as store:
        await store.append("principal-g1", 0, [GuestStarted(principal_id="g1")], "system")
        await store.append("task-t1", 0, [TaskCreated(task_id="t1", owner="g1", title="One")], "g1")
        clock.advance(1)
        await store.append("task-t2", 0, [TaskCreated(task_id="t2", owner="g1", title="Two")], "g1")
        await store.append("task-t1", 1, [TaskUpdated(done=True)], "g1")
        clock.advance(1)
        await store.append("task-t1", 2, [TaskDeleted()], "g1")
        await store.append("task-t2", 1, [TaskUpdated(notes="n")], "g1")
    return db_path


async def check_log(path: Path) -> ChainChecker:
    checker, model = ChainChecker(), ReadModel()
    async with SQLiteStore.open(path) as store:
        for event in await collect(store.read_all()):
            checker.check(event)
            model.apply(event)
    return checker


async def test_a_clean_log_passes(log: Path) -> None:
    checker = await check_log(log)

    assert checker.position == 6
    async with SQLiteStore.open(log) as store:
        assert checker.hash == store.last_hash


async def test_an_empty_log_passes(db_path: Path) -> None:
    async with SQLiteStore.open(db_path):
        pass

    checker = await check_log(db_path)

    assert (checker.position, checker.hash) == (0, GENESIS_HASH)


def _edit_data(rows: list[Row]) -> list[Row]:
    rows[2][5] = rows[2][5].replace(b"Two", b"Ten")
    return rows


def _edit_actor(rows: list[Row]) -> list[Row]:
    rows[2][6] = "mallory"
    return rows


def _edit_time(rows: list[Row]) -> list[Row]:
    rows[2][7] = "2020-01-01T00:00:00.000Z"
    return rows


def _delete(rows: list[Row]) -> list[Row]:
    del rows[2]
    return rows


def _delete_and_rechain(rows: list[Row]) -> list[Row]:
    del rows[2]
    return rechain(rows)


def _delete_the_last(rows: list[Row]) -> list[Row]:
    return rows[:-1]


def _swap(rows: list[Row]) -> list[Row]:
    """Events 3 and 4 trade places (each keeps its content, positions stay in order)."""
    rows[2][1:], rows[3][1:] = rows[3][1:], rows[2][1:]
    return rows


def _insert(rows: list[Row]) -> list[Row]:
    """A forged event after 2, correctly chained to it; the rest moves up by one."""
    forged: Row = [
        3,
        "task-t9",
        1,
        "TaskCreated",
        1,
        b'{"type":"TaskCreated","task_id":"t9","owner":"g1","title":"Forged"}',
        "g1",
        rows[1][7],
        "",
    ]
    rechain([*(list(row) for row in rows[:2]), forged])
    for row in rows[2:]:
        row[0] += 1
    return [*rows[:2], forged, *rows[2:]]


def _insert_without_moving(rows: list[Row]) -> list[Row]:
    """A forged event squeezed in at position 2.5 would need a gap: put it at 7 instead."""
    return [*rows, [7, "task-t9", 1, "TaskDeleted", 1, b'{"type":"TaskDeleted"}', "g1", "", ""]]


def _version_gap(rows: list[Row]) -> list[Row]:
    """task-t1 jumps from version 2 to 4, with every hash recomputed to hide it."""
    rows[4][2] = 4
    return rechain(rows)


def _version_zero(rows: list[Row]) -> list[Row]:
    rows[2][2] = 0  # task-t2 starts at version 0
    return rechain(rows)


def _unknown_type(rows: list[Row]) -> list[Row]:
    rows[3][3] = "TaskArchived"
    return rechain(rows)


@pytest.mark.parametrize(
    ("tamper", "position", "reason"),
    [
        pytest.param(_edit_data, 3, "hash", id="edited-data"),
        pytest.param(_edit_actor, 3, "hash", id="edited-actor"),
        pytest.param(_edit_time, 3, "hash", id="edited-time"),
        pytest.param(_delete, 3, "deleted", id="deleted-row"),
        pytest.param(_delete_and_rechain, 3, "deleted", id="deleted-row-rehashed"),
        pytest.param(_swap, 3, "hash", id="swapped-rows"),
        pytest.param(_insert, 4, "hash", id="inserted-row"),
        pytest.param(_insert_without_moving, 7, "hash", id="appended-row"),
        pytest.param(_version_gap, 5, "version 4, expected 3", id="version-gap"),
        pytest.param(_version_zero, 3, "version 0, expected 1", id="version-from-zero"),
        pytest.param(_unknown_type, 4, "unknown type", id="unknown-type"),
    ],
)
async def test_tampered_history_is_caught_at_its_first_bad_position(
    log: Path, tamper: Callable[[list[Row]], list[Row]], position: int, reason: str
) -> None:
    rewrite_log(log, tamper)

    with pytest.raises(BadEvent) as bad:
        await check_log(log)

    assert bad.value.position == position
    assert reason in bad.value.reason


async def test_a_checker_that_refused_an_event_stays_where_it_was(log: Path) -> None:
    async with SQLiteStore.open(log) as store:
        events = await collect(store.read_all())
    checker = ChainChecker()
    checker.check(events[0])

    with pytest.raises(BadEvent):
        checker.check(events[2])

    assert checker.position == 1
    checker.check(events[1])
    assert checker.position == 2
