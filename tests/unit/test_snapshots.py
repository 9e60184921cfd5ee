"""SnapshotKeeper: saves the read model every so many events, off the write path."""

from __future__ import annotations

import logging

import anyio
import pytest

from tracker import snapshots
from tracker.errors import StorageError
from tracker.events.sqlite import SQLiteStore
from tracker.events.store import Snapshot
from tracker.events.types import GuestStarted, TaskCreated, TaskDeleted
from tracker.projections.model import SNAPSHOT_NAME, ReadModel
from tracker.snapshots import SnapshotKeeper


async def guests(store: SQLiteStore, *names: str) -> None:
    for name in names:
        await store.append(f"principal-{name}", 0, [GuestStarted(principal_id=name)], "system")


async def live_model(store: SQLiteStore) -> ReadModel:
    model = await ReadModel.build(store)
    store.add_listener(model.on_commit)
    return model


async def wait_for_snapshot(store: SQLiteStore, position: int) -> Snapshot:
    with anyio.fail_after(5):
        while True:
            snapshot = await store.load_snapshot(SNAPSHOT_NAME)
            if snapshot is not None and snapshot.position >= position:
                return snapshot
            await anyio.sleep(0.01)


async def test_save_keeps_the_model_as_it_stands(store: SQLiteStore) -> None:
    model = await live_model(store)
    keeper = SnapshotKeeper(store, model, every=0)
    await guests(store, "a", "b", "c")

    await keeper.save()

    snapshot = await store.load_snapshot(SNAPSHOT_NAME)
    assert snapshot is not None
    assert snapshot.position == 3
    assert (await ReadModel.from_snapshot(store)).dump() == model.dump()


async def test_each_save_keeps_the_model_whether_it_grew_or_shrank(store: SQLiteStore) -> None:
    model = await live_model(store)
    keeper = SnapshotKeeper(store, model, every=0)
    await guests(store, "a")
    await tasks_of(store, "a", range(20), notes="n" * 5_000)

    grown = await saved_by(keeper, store)
    assert grown == model.dump()
    for number in range(15):
        await store.append(f"task-t{number}", 1, [TaskDeleted()], "a")
    shrunk = await saved_by(keeper, store)

    assert shrunk == model.dump()
    assert len(shrunk) < len(grown)


async def saved_by(keeper: SnapshotKeeper, store: SQLiteStore) -> bytes:
    await keeper.save()
    snapshot = await store.load_snapshot(SNAPSHOT_NAME)
    assert snapshot is not None
    return bytes(snapshot.data)


async def test_the_buffer_is_grown_to_the_likely_size_before_encoding(
    store: SQLiteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = await live_model(store)
    keeper = SnapshotKeeper(store, model, every=0)
    await guests(store, "a")
    await tasks_of(store, "a", range(10))
    sizes_when_encoding: list[int] = []
    dump_into = model.dump_into

    def watched_dump_into(buffer: bytearray) -> None:
        sizes_when_encoding.append(len(buffer))
        dump_into(buffer)

    monkeypatch.setattr(model, "dump_into", watched_dump_into)
    await keeper.save()
    first = len(model.dump())
    await tasks_of(store, "a", range(10, 20))  # twice the tasks: about twice the size
    await keeper.save()

    assert sizes_when_encoding[0] == 10 * snapshots.FIRST_GUESS_BYTES_PER_TASK
    assert sizes_when_encoding[1] == first * 2


async def tasks_of(store: SQLiteStore, owner: str, numbers: range, notes: str = "") -> None:
    for number in numbers:
        created = TaskCreated(task_id=f"t{number}", owner=owner, title="x", notes=notes)
        await store.append(f"task-t{number}", 0, [created], owner)


async def test_save_does_nothing_while_the_model_is_where_its_snapshot_is(
    store: SQLiteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    await guests(store, "a")
    await (await ReadModel.build(store)).save_snapshot(store)
    model = await live_model(store)
    keeper = SnapshotKeeper(store, model, every=0)
    saved: list[Snapshot] = []
    monkeypatch.setattr(store, "save_snapshot", saved.append)

    await keeper.save()

    assert model.snapshot_position == 1
    assert saved == []


async def test_a_model_rebuilt_without_a_snapshot_is_saved_at_the_next_chance(
    store: SQLiteStore,
) -> None:
    await guests(store, "a", "b")
    model = await live_model(store)
    keeper = SnapshotKeeper(store, model, every=0)

    await keeper.save()

    snapshot = await store.load_snapshot(SNAPSHOT_NAME)
    assert snapshot is not None
    assert snapshot.position == 2


async def test_a_snapshot_is_saved_every_so_many_events(store: SQLiteStore) -> None:
    model = await live_model(store)
    keeper = SnapshotKeeper(store, model, every=3)

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(keeper.run)
        await guests(store, "a", "b")
        await anyio.sleep(0.05)
        assert await store.load_snapshot(SNAPSHOT_NAME) is None
        await guests(store, "c")
        assert (await wait_for_snapshot(store, 3)).position == 3
        await guests(store, "d", "e", "f")
        assert (await wait_for_snapshot(store, 6)).position == 6
        tasks.cancel_scope.cancel()


async def test_commits_while_a_snapshot_waits_for_a_quiet_moment_bring_on_no_other(
    store: SQLiteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(snapshots, "QUIET_SECONDS", 0.05)
    model = await live_model(store)
    keeper = SnapshotKeeper(store, model, every=3)
    saved: list[int] = []
    save = store.save_snapshot

    async def save_and_note(snapshot: Snapshot) -> None:
        saved.append(snapshot.position)
        await save(snapshot)

    monkeypatch.setattr(store, "save_snapshot", save_and_note)

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(keeper.run)
        await guests(store, "a", "b", "c")  # due
        await anyio.sleep(0.01)
        await guests(store, "d")  # while the keeper waits for a quiet moment
        first = await wait_for_snapshot(store, 3)  # at 4 (at 3 if "d" came after it)
        await guests(store, "e")  # not yet 3 events on
        await anyio.sleep(0.3)
        tasks.cancel_scope.cancel()

    assert saved == [first.position]


async def test_with_every_0_snapshots_are_saved_only_when_asked(store: SQLiteStore) -> None:
    model = await live_model(store)
    keeper = SnapshotKeeper(store, model, every=0)

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(keeper.run)
        await guests(store, *"abcdefgh")
        await anyio.sleep(0.05)
        tasks.cancel_scope.cancel()

    assert await store.load_snapshot(SNAPSHOT_NAME) is None


async def test_a_snapshot_that_cannot_be_saved_is_only_logged(
    store: SQLiteStore, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    model = await live_model(store)
    keeper = SnapshotKeeper(store, model, every=0)
    await guests(store, "a")

    async def full_disk(snapshot: Snapshot) -> None:
        raise StorageError("database or disk is full")

    monkeypatch.setattr(store, "save_snapshot", full_disk)
    with caplog.at_level(logging.WARNING, logger="tracker.snapshots"):
        await keeper.save()

    assert "disk is full" in caplog.text
    monkeypatch.undo()
    await keeper.save()  # and it tries again next time
    assert await store.load_snapshot(SNAPSHOT_NAME) is not None
