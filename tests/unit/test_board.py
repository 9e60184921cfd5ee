"""The board projection: every owner's live tasks, in creation order, event by event."""

from __future__ import annotations

import pytest

from tests.unit.support import record
from tracker.errors import CorruptLog
from tracker.events.types import TaskCreated, TaskDeleted, TaskUpdated
from tracker.projections.board import Board, Task, TaskChange, task_stream

T0 = "2026-01-01T00:00:00.000Z"
T1 = "2026-01-01T00:00:01.000Z"


class Log:
    """Feeds a board the records a store would have written."""

    def __init__(self) -> None:
        self.board = Board()
        self.position = 0
        self.versions: dict[str, int] = {}

    def create(self, task_id: str, owner: str, title: str = "t", at: str = T0) -> str:
        return self._apply(task_id, TaskCreated(task_id=task_id, owner=owner, title=title), at)

    def update(self, task_id: str, event: TaskUpdated, at: str = T1) -> str:
        return self._apply(task_id, event, at)

    def delete(self, task_id: str, at: str = T1) -> str:
        return self._apply(task_id, TaskDeleted(), at)

    def _apply(self, task_id: str, event: TaskCreated | TaskUpdated | TaskDeleted, at: str) -> str:
        stream = task_stream(task_id)
        self.position += 1
        self.versions[stream] = self.versions.get(stream, 0) + 1
        recorded = record(
            event,
            position=self.position,
            stream=stream,
            version=self.versions[stream],
            recorded_at=at,
        )
        return self.board.apply(event, recorded.stream, recorded.version, recorded.recorded_at)


@pytest.fixture
def log() -> Log:
    return Log()


def test_a_task_stream_is_named_after_its_task() -> None:
    assert task_stream("abc") == "task-abc"


def test_a_created_task_starts_open_at_version_1(log: Log) -> None:
    assert log.create("t1", "alice", "Buy milk", at=T0) == "t1"

    expected = Task(
        id="t1",
        title="Buy milk",
        notes="",
        done=False,
        version=1,
        created_at=T0,
        updated_at=T0,
    )
    assert log.board.task("alice", "t1") == expected
    assert log.board.change("t1") == TaskChange("alice", "t1", expected)


def test_tasks_are_kept_per_owner_in_creation_order(log: Log) -> None:
    log.create("t1", "alice")
    log.create("t2", "bob")
    log.create("t3", "alice")
    log.create("t4", "alice")

    assert [t.id for t in log.board.tasks_of("alice")] == ["t1", "t3", "t4"]
    assert [t.id for t in log.board.tasks_of("bob")] == ["t2"]
    assert log.board.tasks_of("carol") == []


def test_an_update_changes_only_the_fields_it_carries(log: Log) -> None:
    log.create("t1", "alice", "Buy milk", at=T0)

    assert log.update("t1", TaskUpdated(done=True), at=T1) == "t1"

    task = log.board.task("alice", "t1")
    assert task is not None
    assert (task.title, task.notes, task.done) == ("Buy milk", "", True)
    assert (task.version, task.created_at, task.updated_at) == (2, T0, T1)


def test_an_update_can_change_every_field(log: Log) -> None:
    log.create("t1", "alice", "Buy milk")

    log.update("t1", TaskUpdated(title="Buy oats", notes="rolled", done=True))

    task = log.board.task("alice", "t1")
    assert task is not None
    assert (task.title, task.notes, task.done, task.version) == ("Buy oats", "rolled", True, 2)


def test_updates_keep_the_creation_order(log: Log) -> None:
    log.create("t1", "alice")
    log.create("t2", "alice")

    log.update("t1", TaskUpdated(title="first, changed"))

    assert [t.id for t in log.board.tasks_of("alice")] == ["t1", "t2"]


def test_a_deleted_task_is_gone_from_the_board(log: Log) -> None:
    log.create("t1", "alice")
    log.create("t2", "alice")

    assert log.delete("t1") == "t1"

    assert log.board.change("t1") == TaskChange("alice", "t1", None)
    assert log.board.task("alice", "t1") is None
    assert [t.id for t in log.board.tasks_of("alice")] == ["t2"]


def test_an_owner_whose_last_task_is_deleted_has_no_tasks(log: Log) -> None:
    log.create("t1", "alice")

    log.delete("t1")

    assert log.board.tasks_of("alice") == []
    assert "alice" not in log.board.tasks


def test_a_deleted_task_stays_its_owners(log: Log) -> None:
    log.create("t1", "alice")
    log.delete("t1")

    assert log.board.owners == {"t1": "alice"}
    assert log.board.owns_stream("alice", "t1")
    assert not log.board.owns_stream("bob", "t1")


def test_streams_of_lists_every_task_an_owner_ever_had(log: Log) -> None:
    log.create("t1", "alice")
    log.create("t2", "bob")
    log.create("t3", "alice")
    log.delete("t1")

    assert log.board.streams_of("alice") == ["task-t1", "task-t3"]
    assert log.board.streams_of("bob") == ["task-t2"]
    assert log.board.streams_of("carol") == []


def test_another_owners_task_is_not_found(log: Log) -> None:
    log.create("t1", "alice")

    assert log.board.task("bob", "t1") is None
    assert log.board.task("alice", "t2") is None


@pytest.mark.parametrize("event", [TaskUpdated(done=True), TaskDeleted()], ids=["update", "delete"])
def test_an_event_for_a_task_that_was_never_created_is_a_corrupt_log(
    log: Log, event: TaskUpdated | TaskDeleted
) -> None:
    with pytest.raises(CorruptLog, match="t9"):
        log._apply("t9", event, T1)


@pytest.mark.parametrize("event", [TaskUpdated(done=True), TaskDeleted()], ids=["update", "delete"])
def test_an_event_for_a_deleted_task_is_a_corrupt_log(
    log: Log, event: TaskUpdated | TaskDeleted
) -> None:
    log.create("t1", "alice")
    log.delete("t1")

    with pytest.raises(CorruptLog):
        log._apply("t1", event, T1)


def test_an_event_that_is_not_the_next_of_its_stream_is_a_corrupt_log(log: Log) -> None:
    log.create("t1", "alice")
    log.versions["task-t1"] += 1  # version 2 goes missing

    with pytest.raises(CorruptLog, match="'task-t1' jumps to version 3, expected 2"):
        log.update("t1", TaskUpdated(done=True))


def test_a_task_stream_that_does_not_begin_at_version_1_is_a_corrupt_log(log: Log) -> None:
    log.versions["task-t1"] = 1

    with pytest.raises(CorruptLog, match="'task-t1' jumps to version 2, expected 1"):
        log.create("t1", "alice")


@pytest.mark.parametrize(
    ("stream", "task_id"), [("task-t1", "t1"), ("task-t2", "t1")], ids=["again", "elsewhere"]
)
def test_a_task_is_created_once_by_the_first_event_of_its_own_stream(
    log: Log, stream: str, task_id: str
) -> None:
    log.create("t1", "alice")
    created = TaskCreated(task_id=task_id, owner="bob", title="t")

    with pytest.raises(CorruptLog, match="a task is created once"):
        log.board.apply(created, stream, 1, T1)

    assert log.board.owners == {"t1": "alice"}
