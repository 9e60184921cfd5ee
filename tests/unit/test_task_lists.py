"""Encoded task lists: the answer to GET /api/tasks, kept per owner while it stays true."""

from __future__ import annotations

import msgspec
import pytest

from tests.unit.support import FakeClock, record
from tracker.events.types import (
    BaseEvent,
    GuestClaimed,
    GuestStarted,
    TaskCreated,
    TaskUpdated,
    TimerStarted,
    UserRegistered,
)
from tracker.http.task_lists import TaskList, TaskLists
from tracker.projections.model import ReadModel


class Log:
    """A read model fed event by event, with the task lists listening to it."""

    def __init__(self, clock: FakeClock, max_bytes: int = 1 << 20) -> None:
        self.model = ReadModel()
        self.clock = clock
        self.lists = TaskLists(self.model.board, clock, max_bytes)
        self.model.add_listener(self.lists.on_changes)
        self.versions: dict[str, int] = {}

    def append(self, stream: str, event: BaseEvent) -> None:
        version = self.versions[stream] = self.versions.get(stream, 0) + 1
        self.model.apply_all(
            [record(event, position=self.model.position + 1, stream=stream, version=version)]
        )

    def create(self, task_id: str, owner: str) -> None:
        self.append(f"task-{task_id}", TaskCreated(task_id=task_id, owner=owner, title=task_id))

    def listed(self, owner: str) -> TaskList:
        """The owner's list as the lists answer it, checked against one built afresh."""
        answer = msgspec.json.decode(self.lists.encoded(owner, self.model.position), type=TaskList)
        board, now = self.model.board, self.clock()
        fresh = [board.view(task, now) for task in board.tasks_of(owner)]
        assert answer == TaskList(fresh, self.model.position)
        return answer


@pytest.fixture
def log(clock: FakeClock) -> Log:
    log = Log(clock)
    log.append("principal-g1", GuestStarted(principal_id="g1"))
    log.create("t1", "g1")
    log.create("t2", "g1")
    return log


def test_the_answer_is_a_task_list_at_the_given_position(log: Log) -> None:
    assert [task.id for task in log.listed("g1").tasks] == ["t1", "t2"]
    assert log.lists.encoded("nobody", 3) == b'{"tasks":[],"position":3}'


def test_a_list_is_encoded_once_while_nothing_changes(log: Log) -> None:
    first = log.lists.encoded("g1", log.model.position)

    assert log.lists.encoded("g1", log.model.position) is first


def test_a_list_follows_the_log_position_that_another_owners_write_moves(log: Log) -> None:
    log.listed("g1")
    log.append("principal-g2", GuestStarted(principal_id="g2"))
    log.create("t3", "g2")

    assert log.listed("g1").position == log.model.position


def test_a_list_is_forgotten_when_one_of_its_tasks_changes(log: Log) -> None:
    log.listed("g1")
    log.append("task-t2", TaskUpdated(title="Renamed", done=True))

    assert [(t.title, t.done) for t in log.listed("g1").tasks] == [("t1", False), ("Renamed", True)]


def test_a_list_with_a_running_countdown_is_never_kept(log: Log, clock: FakeClock) -> None:
    started = TimerStarted(run="r", duration_seconds=60, at=clock(), ends_at=clock() + 60)
    log.append("task-t1", started)
    first = log.listed("g1").tasks[0].timer
    clock.advance(10)

    later = log.listed("g1").tasks[0].timer

    assert first is not None
    assert later is not None
    assert later.remaining_seconds == first.remaining_seconds - 10


def test_a_claim_moves_a_guests_tasks_into_the_users_kept_list(log: Log) -> None:
    log.append("username-ada", UserRegistered(principal_id="u1", username="ada", password_hash="h"))
    log.create("t3", "u1")
    assert [task.id for task in log.listed("u1").tasks] == ["t3"]

    log.append("principal-g1", GuestClaimed(guest_id="g1", user_id="u1"))

    assert [task.id for task in log.listed("u1").tasks] == ["t3", "t1", "t2"]


def test_the_oldest_lists_are_forgotten_past_the_size_bound(clock: FakeClock) -> None:
    log = Log(clock, max_bytes=1000)
    for number in range(10):
        log.create(f"t{number}", f"owner{number}")
        log.listed(f"owner{number}")

    kept = log.lists._kept
    assert 0 < len(kept) < 10
    assert list(kept) == [f"owner{number}" for number in range(10 - len(kept), 10)]
    assert sum(len(k.encoded) + len(k.body) for k in kept.values()) <= 1000
