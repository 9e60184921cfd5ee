"""The hub: per-principal queues that never make a publisher wait."""

from __future__ import annotations

import json

import anyio
import pytest

from tests.unit.support import FakeClock
from tracker.live import QUEUE_SIZE, Hub
from tracker.projections.board import RunClock, Task, TaskChange
from tracker.projections.model import ReadModel


def task(task_id: str) -> Task:
    return Task(
        id=task_id,
        title=task_id,
        notes="",
        done=False,
        version=1,
        created_at="2026-01-01T00:00:00.000Z",
        updated_at="2026-01-01T00:00:00.000Z",
    )


@pytest.fixture
def hub(clock: FakeClock) -> Hub:
    return Hub(ReadModel(), clock)


async def test_a_subscriber_starts_with_a_snapshot_and_gets_its_own_changes_only(hub: Hub) -> None:
    async with hub.subscribe("alice") as (_, inbox):
        hub.on_changes([TaskChange("bob", "b1", task("b1")), TaskChange("alice", "a1", task("a1"))])
        hub.on_changes([TaskChange("alice", "a1", None)])
        messages = [json.loads(inbox.receive_nowait()) for _ in range(3)]
        with pytest.raises(anyio.WouldBlock):
            inbox.receive_nowait()

    assert [m["type"] for m in messages] == ["snapshot", "task", "task_deleted"]
    assert messages[1]["task"]["id"] == "a1"
    assert messages[2]["id"] == "a1"


async def test_a_subscriber_that_falls_behind_is_disconnected_not_waited_for(hub: Hub) -> None:
    async with hub.subscribe("alice") as (_, slow), hub.subscribe("alice") as (_, fast):
        fast.receive_nowait()  # its snapshot; `slow` never reads anything
        for number in range(QUEUE_SIZE + 5):
            hub.publish("alice", f'{{"n": {number}}}'.encode())
            fast.receive_nowait()

        assert hub.connections == 1
        received = [slow.receive_nowait() for _ in range(QUEUE_SIZE)]
        with pytest.raises(anyio.EndOfStream):
            slow.receive_nowait()

    assert len(received) == QUEUE_SIZE


async def test_a_tick_carries_remaining_time_from_the_due_time(hub: Hub, clock: FakeClock) -> None:
    model = ReadModel()
    hub = Hub(model, clock)
    model.board.owners["t1"] = "alice"
    model.board.clocks["t1"] = RunClock("r1", clock() - 10, clock() + 2.5)
    model.board.owners["t2"] = "alice"
    model.board.clocks["t2"] = RunClock("r2", None, clock() + 99)  # paused: no tick

    async with hub.subscribe("alice") as (_, inbox):
        inbox.receive_nowait()  # the snapshot
        hub.tick()
        tick = json.loads(inbox.receive_nowait())

    assert tick["type"] == "tick"
    assert tick["timers"] == [{"id": "t1", "remaining_seconds": 2.5}]


async def test_closing_all_ends_every_subscription(hub: Hub) -> None:
    async with hub.subscribe("alice") as (_, inbox):
        inbox.receive_nowait()
        hub.close_all()
        with pytest.raises(anyio.EndOfStream):
            await inbox.receive()
