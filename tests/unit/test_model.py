"""The read model: fed from the log in position order, dumped to and rebuilt from snapshots."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import msgspec
import pytest

from tests.unit.support import FakeClock, record
from tracker.errors import BadEvent, CorruptLog
from tracker.events.reading import ReplayCallback
from tracker.events.records import Recorded
from tracker.events.sqlite import SQLiteStore
from tracker.events.store import Snapshot
from tracker.events.types import (
    GuestStarted,
    SessionRevoked,
    TaskCreated,
    TaskDeleted,
    TaskUpdated,
)
from tracker.projections.board import TaskChange
from tracker.projections.model import SNAPSHOT_FORMAT, SNAPSHOT_NAME, ReadModel, replay_board


async def fill(store: SQLiteStore, clock: FakeClock, prefix: str = "") -> None:
    """Two guests (the first time), four tasks, updates and deletions: 10 events, then 8."""
    for guest in () if prefix else ("g1", "g2"):
        await store.append(f"principal-{guest}", 0, [GuestStarted(principal_id=guest)], "system")
    for number, owner in enumerate(["g1", "g2", "g1", "g1"], start=1):
        task_id = f"{prefix}t{number}"
        created = TaskCreated(task_id=task_id, owner=owner, title=f"Task {number}")
        await store.append(f"task-{task_id}", 0, [created], owner)
        clock.advance(1)
    await store.append(f"task-{prefix}t1", 1, [TaskUpdated(done=True)], "g1")
    await store.append(f"task-{prefix}t3", 1, [TaskUpdated(title="Three", notes="n")], "g1")
    await store.append(f"task-{prefix}t2", 1, [TaskDeleted()], "g2")
    await store.append(f"task-{prefix}t4", 1, [TaskDeleted()], "g1")


@pytest.fixture
async def filled(store: SQLiteStore, clock: FakeClock) -> SQLiteStore:
    await fill(store, clock)
    return store


async def full_replay(store: SQLiteStore) -> ReadModel:
    model = ReadModel()
    await model.catch_up(store)
    return model


# Applying


async def test_catching_up_builds_every_owners_tasks_and_every_principal(
    filled: SQLiteStore,
) -> None:
    model = ReadModel()

    assert await model.catch_up(filled) == 10

    assert model.position == 10
    assert [(t.id, t.title, t.done) for t in model.board.tasks_of("g1")] == [
        ("t1", "Task 1", True),
        ("t3", "Three", False),
    ]
    assert model.board.tasks_of("g2") == []
    assert model.board.owners == {"t1": "g1", "t2": "g2", "t3": "g1", "t4": "g1"}
    assert model.identities.kinds == {"g1": "guest", "g2": "guest"}
    assert model.identities.kind_of("nobody") is None


async def test_catching_up_stops_at_until_and_resumes_later(filled: SQLiteStore) -> None:
    model = ReadModel()

    assert await model.catch_up(filled, until=4) == 4
    assert [t.id for t in model.board.tasks_of("g1")] == ["t1"]
    assert await model.catch_up(filled) == 6
    assert model.dump() == (await full_replay(filled)).dump()


@pytest.mark.parametrize("position", [3, 1], ids=["gap", "repeat"])
def test_applying_anything_but_the_next_position_is_a_corrupt_log(position: int) -> None:
    model = ReadModel()
    model.apply(record(GuestStarted(principal_id="g1"), position=1))

    with pytest.raises(CorruptLog, match="gap"):
        model.apply(record(GuestStarted(principal_id="g2"), position=position))

    assert model.position == 1


def test_an_identity_event_that_is_not_the_next_of_its_stream_is_a_corrupt_log() -> None:
    model = ReadModel()
    model.apply(record(GuestStarted(principal_id="g1"), stream="principal-g1", position=1))
    revoked = SessionRevoked(jti="j1", expires_at=1_800_000_000)

    with pytest.raises(BadEvent, match="'principal-g1' jumps to version 3, expected 2") as bad:
        model.apply(record(revoked, stream="principal-g1", version=3, position=2))

    assert (bad.value.position, model.position) == (2, 1)


def test_an_identity_event_changes_no_task() -> None:
    model = ReadModel()

    assert model.apply(record(GuestStarted(principal_id="g1"))) is None
    assert model.identities.kind_of("g1") == "guest"


def test_listeners_hear_the_task_changes_of_each_batch() -> None:
    model = ReadModel()
    heard: list[Sequence[TaskChange]] = []
    model.add_listener(heard.append)
    guest = record(GuestStarted(principal_id="g1"), position=1, stream="principal-g1")
    created = record(TaskCreated(task_id="t1", owner="g1", title="T"), position=2, stream="task-t1")

    model.on_commit([guest])
    model.on_commit([created])

    assert len(heard) == 1
    ((change,),) = heard
    assert (change.owner, change.task_id, change.task is not None) == ("g1", "t1", True)


def _batch(*events: TaskCreated | TaskUpdated | TaskDeleted) -> list[Recorded]:
    return [
        record(event, position=number, stream="task-t1", version=number)
        for number, event in enumerate(events, start=1)
    ]


def test_listeners_hear_once_per_task_how_it_stands_after_the_batch() -> None:
    model = ReadModel()
    heard: list[Sequence[TaskChange]] = []
    model.add_listener(heard.append)

    model.on_commit(
        _batch(
            TaskCreated(task_id="t1", owner="g1", title="T"),
            TaskUpdated(title="U"),
            TaskUpdated(done=True),
        )
    )

    ((change,),) = heard
    assert change.task is not None
    assert (change.task.title, change.task.done, change.task.version) == ("U", True, 3)


def test_listeners_hear_of_a_task_deleted_within_the_batch_as_gone() -> None:
    model = ReadModel()
    heard: list[Sequence[TaskChange]] = []
    model.add_listener(heard.append)

    changes = model.apply_all(
        _batch(TaskCreated(task_id="t1", owner="g1", title="T"), TaskDeleted())
    )

    assert changes == [TaskChange("g1", "t1", None)]
    assert heard == [changes]


# Dumping and loading


async def test_a_dumped_model_loads_back_equal(filled: SQLiteStore) -> None:
    model = await full_replay(filled)

    loaded = ReadModel.load(model.dump())

    assert loaded.position == model.position
    assert loaded.board.tasks == model.board.tasks
    assert loaded.board.owners == model.board.owners
    assert loaded.identities.kinds == model.identities.kinds
    assert loaded.dump() == model.dump()


async def test_dumping_into_a_used_buffer_gives_the_same_bytes_as_dump(
    filled: SQLiteStore,
) -> None:
    model = await full_replay(filled)
    buffer = bytearray(b"left over from a larger snapshot" * 10_000)

    model.dump_into(buffer)

    assert buffer == model.dump()


def test_an_empty_model_dumps_and_loads() -> None:
    assert ReadModel.load(ReadModel().dump()).dump() == ReadModel().dump()


async def test_an_empty_model_saves_no_snapshot(store: SQLiteStore) -> None:
    assert await ReadModel().save_snapshot(store) is None
    assert await store.load_snapshot(SNAPSHOT_NAME) is None


# Building from a snapshot


class Spy:
    """A store that remembers where every read of the whole log started."""

    def __init__(self, store: SQLiteStore) -> None:
        self._store = store
        self.read_from: list[int] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def read_all(self, after: int = 0, **kwargs: Any) -> AsyncIterator[Recorded]:
        self.read_from.append(after)
        return self._store.read_all(after, **kwargs)

    async def replay(
        self, callback: ReplayCallback, after: int = 0, until: int | None = None
    ) -> int:
        self.read_from.append(after)
        return await self._store.replay(callback, after, until)


async def test_build_starts_from_a_valid_snapshot_and_catches_up(
    store: SQLiteStore, clock: FakeClock
) -> None:
    await fill(store, clock)
    snapshot = await (await full_replay(store)).save_snapshot(store)
    await fill(store, clock, prefix="later-")
    spy = Spy(store)

    model = await ReadModel.build(spy)  # type: ignore[arg-type]

    assert snapshot is not None
    assert snapshot.position == 10
    assert spy.read_from == [10]
    assert model.position == store.head == 18
    assert model.dump() == (await full_replay(store)).dump()


async def test_build_up_to_a_position_past_the_snapshot_starts_from_it(
    store: SQLiteStore, clock: FakeClock
) -> None:
    await fill(store, clock)
    await (await full_replay(store)).save_snapshot(store)
    await fill(store, clock, prefix="later-")
    spy = Spy(store)

    model = await ReadModel.build(spy, until=14)  # type: ignore[arg-type]

    assert spy.read_from == [10]
    assert model.position == 14


async def test_build_up_to_a_position_before_the_snapshot_ignores_it(filled: SQLiteStore) -> None:
    await (await full_replay(filled)).save_snapshot(filled)
    spy = Spy(filled)

    model = await ReadModel.build(spy, until=4)  # type: ignore[arg-type]

    assert spy.read_from == [0]
    assert model.position == 4


def _wrong_format(snapshot: Snapshot, other_log: Snapshot) -> Snapshot:
    return msgspec.structs.replace(snapshot, format=SNAPSHOT_FORMAT + 1)


def _another_logs_snapshot(snapshot: Snapshot, other_log: Snapshot) -> Snapshot:
    return other_log


def _wrong_hash(snapshot: Snapshot, other_log: Snapshot) -> Snapshot:
    return msgspec.structs.replace(snapshot, hash="0" * 64)


def _past_the_end(snapshot: Snapshot, other_log: Snapshot) -> Snapshot:
    return msgspec.structs.replace(snapshot, position=99)


def _garbage(snapshot: Snapshot, other_log: Snapshot) -> Snapshot:
    return msgspec.structs.replace(snapshot, data=b"\xc1 not msgpack at all")


def _empty_data(snapshot: Snapshot, other_log: Snapshot) -> Snapshot:
    return msgspec.structs.replace(snapshot, data=b"")


def _wrong_shape(snapshot: Snapshot, other_log: Snapshot) -> Snapshot:
    return msgspec.structs.replace(snapshot, data=msgspec.msgpack.encode({"position": 10}))


def _state_at_another_position(snapshot: Snapshot, other_log: Snapshot) -> Snapshot:
    model = ReadModel.load(snapshot.data)
    model.position = 7
    return msgspec.structs.replace(snapshot, data=model.dump())


@pytest.mark.parametrize(
    "spoil",
    [
        _wrong_format,
        _another_logs_snapshot,
        _wrong_hash,
        _past_the_end,
        _garbage,
        _empty_data,
        _wrong_shape,
        _state_at_another_position,
    ],
)
async def test_a_snapshot_that_cannot_be_trusted_is_ignored_and_the_model_rebuilt(
    store: SQLiteStore,
    clock: FakeClock,
    tmp_path: Path,
    spoil: Callable[[Snapshot, Snapshot], Snapshot],
) -> None:
    async with SQLiteStore.open(tmp_path / "other.db", FakeClock(0.0)) as other:
        await fill(other, FakeClock(0.0), prefix="other-")
        other_log = await (await full_replay(other)).save_snapshot(other)
    await fill(store, clock)
    snapshot = await (await full_replay(store)).save_snapshot(store)
    assert snapshot is not None
    assert other_log is not None
    await store.save_snapshot(spoil(snapshot, other_log))
    spy = Spy(store)

    model = await ReadModel.build(spy)  # type: ignore[arg-type]

    assert spy.read_from == [0]
    assert model.dump() == (await full_replay(store)).dump()
    assert [t.id for t in model.board.tasks_of("g1")] == ["t1", "t3"]


# Replaying a board


async def test_replay_board_shows_some_streams_as_they_stood(filled: SQLiteStore) -> None:
    events = filled.read_all(until=8, streams=["task-t1", "task-t3", "task-t4"])

    board = await replay_board(events)

    assert [(t.id, t.title, t.done, t.version) for t in board.tasks_of("g1")] == [
        ("t1", "Task 1", True, 2),
        ("t3", "Three", False, 2),
        ("t4", "Task 4", False, 1),
    ]
    assert board.tasks_of("g2") == []


async def test_replay_board_of_the_whole_log_is_the_live_board(filled: SQLiteStore) -> None:
    board = await replay_board(filled.read_all())

    assert board.tasks == (await full_replay(filled)).board.tasks
    assert board.owners == (await full_replay(filled)).board.owners
