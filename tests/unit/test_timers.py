"""Timers with a fake clock: decisions, pause/resume arithmetic, and the supervisor."""

from __future__ import annotations

import contextlib
import itertools
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.support import START, FakeClock, collect
from tracker.auth import Passwords, Principal, TokenService
from tracker.clock import system_clock
from tracker.domain import CreateTask, Credentials, StartTimer
from tracker.errors import InvalidState, NotFound, StorageError
from tracker.events import codec
from tracker.events.sqlite import SQLiteStore
from tracker.events.types import TimerFinished
from tracker.projections.board import Task, task_stream
from tracker.projections.model import ReadModel
from tracker.service import Tracker
from tracker.timers import RETRY_SECONDS, TimerSupervisor


def ids() -> Callable[[], str]:
    counter = itertools.count(1)
    return lambda: f"id{next(counter)}"


class World:
    """A tracker on a real log with a fake clock, and its supervisor."""

    def __init__(self, tracker: Tracker, clock: FakeClock) -> None:
        self.tracker = tracker
        self.clock = clock
        self.supervisor = TimerSupervisor(tracker, clock, sleep=clock.sleep)
        tracker.model.add_listener(self.supervisor.on_changes)

    async def task(self, who: Principal, title: str = "t") -> str:
        return (await self.tracker.create_task(who, CreateTask(title=title))).id

    async def start(self, who: Principal, task_id: str, seconds: int) -> Task:
        return await self.tracker.start_timer(who, task_id, StartTimer(duration_seconds=seconds))

    async def advance(self, seconds: float) -> int:
        self.clock.advance(seconds)
        return await self.supervisor.finish_due()

    def state(self, who: Principal, task_id: str) -> str | None:
        """The task's timer state, if it has a timer."""
        timer = self.tracker.task(who, task_id).timer
        return None if timer is None else timer.state

    async def finishes(self, task_id: str) -> int:
        events = await self.tracker.store.read_stream(task_stream(task_id))
        return sum(event.type == "TimerFinished" for event in events)


@pytest.fixture
async def world(db_path: Path, clock: FakeClock) -> AsyncIterator[World]:
    async with SQLiteStore.open(db_path, clock) as store:
        model = await ReadModel.build(store)
        store.add_listener(model.on_commit)
        tokens = TokenService("k" * 64, system_clock, guest_ttl=3600, user_ttl=600)
        yield World(Tracker(store, model, tokens, Passwords(4), clock, make_id=ids()), clock)


@pytest.fixture
async def alice(world: World) -> Principal:
    return (await world.tracker.start_guest()).principal


async def test_a_started_timer_counts_down_from_its_due_time(
    world: World, alice: Principal
) -> None:
    task_id = await world.task(alice)
    started = await world.start(alice, task_id, 60)
    world.clock.advance(15.5)

    task = world.tracker.task(alice, task_id)

    assert started.timer is not None
    assert started.timer.state == "running"
    assert task.timer is not None
    assert task.timer.remaining_seconds == 44.5
    assert task.tracked_seconds == 15.5


async def test_pause_and_resume_keep_the_time_left_and_count_only_running_time(
    world: World, alice: Principal
) -> None:
    task_id = await world.task(alice)
    await world.start(alice, task_id, 60)
    world.clock.advance(10)
    paused = await world.tracker.pause_timer(alice, task_id)
    world.clock.advance(100)
    resumed = await world.tracker.resume_timer(alice, task_id)
    world.clock.advance(20)
    now = world.tracker.task(alice, task_id)

    assert paused.timer is not None
    assert paused.timer.state == "paused"
    assert paused.timer.remaining_seconds == 50
    assert paused.timer.ends_at is None
    assert resumed.timer is not None
    assert resumed.timer.remaining_seconds == 50
    assert now.timer is not None
    assert now.timer.remaining_seconds == 30
    assert now.tracked_seconds == 30


@pytest.mark.parametrize(
    ("setup", "command"),
    [
        ("none", "pause"),
        ("none", "resume"),
        ("none", "stop"),
        ("running", "start"),
        ("running", "resume"),
        ("paused", "start"),
        ("paused", "pause"),
        ("finished", "pause"),
        ("finished", "resume"),
        ("finished", "stop"),
    ],
)
async def test_every_invalid_transition_is_invalid_state(
    world: World, alice: Principal, setup: str, command: str
) -> None:
    task_id = await world.task(alice)
    if setup != "none":
        await world.start(alice, task_id, 5)
    if setup == "paused":
        await world.tracker.pause_timer(alice, task_id)
    if setup == "finished":
        await world.advance(5)

    act = (
        world.start(alice, task_id, 5)
        if command == "start"
        else getattr(world.tracker, f"{command}_timer")(alice, task_id)
    )
    with pytest.raises(InvalidState):
        await act


async def test_stopping_removes_the_timer_and_keeps_the_tracked_time(
    world: World, alice: Principal
) -> None:
    task_id = await world.task(alice)
    await world.start(alice, task_id, 60)
    world.clock.advance(7)

    stopped = await world.tracker.stop_timer(alice, task_id)

    assert stopped.timer is None
    assert stopped.tracked_seconds == 7
    await world.advance(60)
    assert await world.finishes(task_id) == 0


async def test_the_supervisor_finishes_a_run_at_its_due_time(
    world: World, alice: Principal
) -> None:
    task_id = await world.task(alice)
    await world.start(alice, task_id, 30)

    assert await world.advance(29.9) == 0
    world.clock.advance(5)  # noticed late: it still finishes at its due time
    assert await world.supervisor.finish_due() == 1

    task = world.tracker.task(alice, task_id)
    assert task.timer is not None
    assert task.timer.state == "finished"
    assert task.timer.finished_at == task.timer.started_at.replace("00.000", "30.000")
    assert task.tracked_seconds == 30
    assert await world.finishes(task_id) == 1


async def test_the_running_supervisor_sleeps_until_the_earliest_due_time(
    world: World, alice: Principal
) -> None:
    late, early = await world.task(alice, "late"), await world.task(alice, "early")

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(world.supervisor.run)
        await world.start(alice, late, 100)
        await world.start(alice, early, 10)  # earlier than what the sleeper waits for
        world.clock.advance(9.5)
        await anyio.sleep(0.05)
        assert (world.state(alice, early), world.state(alice, late)) == ("running", "running")

        world.clock.advance(0.5)
        await _eventually(lambda: world.state(alice, early) == "finished")
        assert world.state(alice, late) == "running"

        world.clock.advance(90)
        await _eventually(lambda: world.state(alice, late) == "finished")
        tasks.cancel_scope.cancel()
    assert await world.finishes(early) == await world.finishes(late) == 1


async def test_a_slow_finish_does_not_hold_up_the_next_due_run(
    world: World, alice: Principal, monkeypatch: pytest.MonkeyPatch
) -> None:
    slow, next_one = await world.task(alice, "slow"), await world.task(alice, "next")
    release = anyio.Event()
    finish_timer = world.tracker.finish_timer

    async def stalled_for_slow(task_id: str, run: str, due: float) -> bool:
        if task_id == slow:
            await release.wait()  # say, its commit waits for a busy disk
        return await finish_timer(task_id, run, due)

    monkeypatch.setattr(world.tracker, "finish_timer", stalled_for_slow)

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(world.supervisor.run)
        await world.start(alice, slow, 10)
        await world.start(alice, next_one, 11)
        world.clock.advance(10)
        await anyio.sleep(0.05)
        world.clock.advance(1)
        await _eventually(lambda: world.state(alice, next_one) == "finished")
        assert world.state(alice, slow) == "running"

        release.set()
        await _eventually(lambda: world.state(alice, slow) == "finished")
        tasks.cancel_scope.cancel()
    assert await world.finishes(slow) == await world.finishes(next_one) == 1


async def test_a_finish_the_store_refused_is_tried_again_with_its_due_time(
    world: World, alice: Principal, monkeypatch: pytest.MonkeyPatch
) -> None:
    task_id = await world.task(alice)
    await world.start(alice, task_id, 10)
    refusals = [StorageError("the disk is full")]
    finish_timer = world.tracker.finish_timer

    async def refused_once(task_id: str, run: str, due: float) -> bool:
        if refusals:
            raise refusals.pop()
        return await finish_timer(task_id, run, due)

    monkeypatch.setattr(world.tracker, "finish_timer", refused_once)

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(world.supervisor.run)
        world.clock.advance(10)
        await _eventually(lambda: not refusals)
        await anyio.sleep(0.05)
        assert await world.finishes(task_id) == 0  # not tried again in a busy loop

        world.clock.advance(RETRY_SECONDS)
        await _eventually(lambda: world.state(alice, task_id) == "finished")
        tasks.cancel_scope.cancel()
    timer = world.tracker.task(alice, task_id).timer
    assert timer is not None
    assert timer.finished_at == timer.started_at.replace("00.000", "10.000")
    assert await world.finishes(task_id) == 1


async def _eventually(condition: Callable[[], bool]) -> None:
    with anyio.fail_after(5):
        while True:
            if condition():
                return
            await anyio.sleep(0.005)


async def test_many_timers_finish_in_due_order_each_once(world: World, alice: Principal) -> None:
    tasks = [await world.task(alice, f"t{n}") for n in range(20)]
    for seconds, task_id in zip(range(20, 0, -1), tasks, strict=True):
        await world.start(alice, task_id, seconds)

    finished = [await world.advance(1) for _ in range(25)]

    assert finished[:20] == [1] * 20
    assert sum(finished) == 20
    for task_id in tasks:
        assert await world.finishes(task_id) == 1


async def test_a_run_paused_before_its_due_time_is_not_finished(
    world: World, alice: Principal
) -> None:
    task_id = await world.task(alice)
    await world.start(alice, task_id, 10)
    world.clock.advance(9.999)
    await world.tracker.pause_timer(alice, task_id)

    assert await world.advance(100) == 1  # its old due time came: nothing to do
    assert await world.finishes(task_id) == 0
    task = world.tracker.task(alice, task_id)
    assert task.timer is not None
    assert task.timer.state == "paused"


async def test_a_pause_racing_the_due_time_leaves_exactly_one_outcome(
    world: World, alice: Principal
) -> None:
    task_id = await world.task(alice)
    await world.start(alice, task_id, 10)
    world.clock.advance(10)

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(world.supervisor.finish_due)
        tasks.start_soon(_pause_quietly, world.tracker, alice, task_id)

    events = [e.type for e in await world.tracker.store.read_stream(task_stream(task_id))]
    assert events[-1] in ("TimerFinished", "TimerPaused")
    assert events.count("TimerFinished") + events.count("TimerPaused") == 1


async def _pause_quietly(tracker: Tracker, who: Principal, task_id: str) -> None:
    with contextlib.suppress(InvalidState):  # the finish won
        await tracker.pause_timer(who, task_id)


async def test_a_restarted_timer_is_a_new_run_and_the_old_due_time_is_ignored(
    world: World, alice: Principal
) -> None:
    task_id = await world.task(alice)
    await world.start(alice, task_id, 10)
    await world.advance(10)
    await world.start(alice, task_id, 20)

    assert await world.advance(10) == 0
    assert await world.advance(10) == 1
    assert await world.finishes(task_id) == 2


async def test_recovery_finishes_overdue_runs_at_their_due_time_and_keeps_paused_ones(
    db_path: Path, clock: FakeClock
) -> None:
    async with SQLiteStore.open(db_path, clock) as store:
        model = await ReadModel.build(store)
        store.add_listener(model.on_commit)
        tokens = TokenService("k" * 64, system_clock, guest_ttl=3600, user_ttl=600)
        tracker = Tracker(store, model, tokens, Passwords(4), clock, make_id=ids())
        alice = (await tracker.start_guest()).principal
        world = World(tracker, clock)
        overdue, later, paused = [await world.task(alice, n) for n in ("a", "b", "c")]
        await world.start(alice, overdue, 10)
        await world.start(alice, later, 1000)
        await world.start(alice, paused, 10)
        await tracker.pause_timer(alice, paused)

    clock.advance(500)  # the server was down
    async with SQLiteStore.open(db_path, clock) as store:
        model = await ReadModel.build(store)
        store.add_listener(model.on_commit)
        tracker = Tracker(store, model, tokens, Passwords(4), clock, make_id=ids())
        world = World(tracker, clock)
        assert world.supervisor.schedule_running() == 2
        assert await world.supervisor.finish_due() == 1

        finished = model.board.live[overdue]
        assert finished.timer is not None
        assert finished.timer.state == "finished"
        assert finished.tracked_seconds == 10  # not the 500 s the server was down
        log = await collect(store.read_all())
        assert [e.actor for e in log if e.type == "TimerFinished"] == ["system"]
        assert model.board.live[paused].timer is not None
        assert await world.advance(500) == 1
        assert await world.finishes(later) == 1
        assert await world.finishes(paused) == 0


# Live and replayed agree, timers and claims included

timer_steps = st.lists(
    st.one_of(
        st.tuples(st.just("create"), st.integers(0, 1)),
        st.tuples(st.just("start"), st.integers(0, 9), st.integers(1, 5)),
        st.tuples(st.sampled_from(["pause", "resume", "stop", "delete"]), st.integers(0, 9)),
        st.tuples(st.just("advance"), st.sampled_from([0.5, 1.0, 2.5, 10.0])),
        st.tuples(st.just("register"), st.integers(0, 1)),
        st.just(("snapshot",)),
    ),
    max_size=25,
)


@settings(max_examples=40, deadline=None, database=None)
@given(steps=timer_steps)
async def test_live_timers_and_claims_replay_to_the_same_state_with_one_finish_per_run(
    tmp_path_factory: pytest.TempPathFactory, steps: list[tuple[Any, ...]]
) -> None:
    path = tmp_path_factory.mktemp("timers") / "tracker.db"
    clock = FakeClock()
    async with SQLiteStore.open(path, clock) as store:
        model = await ReadModel.build(store)
        store.add_listener(model.on_commit)
        tokens = TokenService("k" * 64, system_clock, guest_ttl=3600, user_ttl=600)
        world = World(Tracker(store, model, tokens, Passwords(4), clock, make_id=ids()), clock)
        owners = [(await world.tracker.start_guest()).principal for _ in range(2)]
        tasks: list[tuple[int, str]] = []  # (owner index, task id), deleted ones included
        for step in steps:
            await _take(world, owners, tasks, step)
        replayed = ReadModel()
        await replayed.catch_up(store)
        from_snapshot = await ReadModel.build(store)
        events = await collect(store.read_all())

    live = model.dump()
    assert replayed.dump() == live
    assert from_snapshot.dump() == live
    finishes = Counter(
        event.run for event in map(codec.decode, events) if isinstance(event, TimerFinished)
    )
    assert all(count == 1 for count in finishes.values())
    for task in model.board.live.values():
        assert 0 <= task.tracked_seconds <= clock.now - START


async def _take(
    world: World, owners: list[Principal], tasks: list[tuple[int, str]], step: tuple[Any, ...]
) -> None:
    """Carry out one step of a generated script; refusals the domain gives are fine."""
    kind = step[0]
    if kind == "create":
        tasks.append((step[1], await world.task(owners[step[1]])))
    elif kind == "advance":
        world.clock.advance(step[1])
        await world.supervisor.finish_due()
    elif kind == "snapshot":
        await world.tracker.model.save_snapshot(world.tracker.store)
    elif kind == "register":
        guest = owners[step[1]]
        if guest.kind == "guest":
            credentials = Credentials(username=f"user{guest.id}", password="a good password")
            session = await world.tracker.register(credentials, guest)
            owners[step[1]] = await world.tracker.authenticate(session.token)
    elif tasks:
        index, task_id = tasks[step[1] % len(tasks)]
        who = owners[index]
        with contextlib.suppress(InvalidState, NotFound):
            if kind == "start":
                await world.start(who, task_id, step[2])
            elif kind == "delete":
                await world.tracker.delete_task(who, task_id, None)
            else:
                await getattr(world.tracker, f"{kind}_timer")(who, task_id)
