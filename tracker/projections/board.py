"""The board: every owner's live tasks, as the API shows them, kept current event by event."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec
from msgspec import UNSET

from tracker.clock import format_timestamp
from tracker.errors import CorruptLog, VersionJump
from tracker.events.types import (
    BaseEvent,
    TaskCreated,
    TaskDeleted,
    TaskUpdated,
    TimerEvent,
    TimerFinished,
    TimerPaused,
    TimerResumed,
    TimerStarted,
    TimerStopped,
)

TaskEvent = TaskCreated | TaskUpdated | TaskDeleted | TimerEvent

Applier = Callable[[Any, str, int, str], str | None]
"""Applies one event of a known type: `applier(event, stream, version, recorded_at)`;
returns the id of the task it changed, if any."""

TASK_STREAM_PREFIX = "task-"
_PREFIX_LENGTH = len(TASK_STREAM_PREFIX)


def task_stream(task_id: str) -> str:
    """The stream that holds a task's events."""
    return TASK_STREAM_PREFIX + task_id


def task_of(stream: str) -> str | None:
    """The id of the task whose events `stream` holds, if it holds a task's."""
    return stream[_PREFIX_LENGTH:] if stream.startswith(TASK_STREAM_PREFIX) else None


class Timer(msgspec.Struct, kw_only=True, gc=False):
    """A task's countdown (see the contract's Timer object)."""

    state: str
    duration_seconds: int
    remaining_seconds: float
    started_at: str
    ends_at: str | None = None
    finished_at: str | None = None


class Task(msgspec.Struct, kw_only=True, gc=False):
    """A task. `version` grows by one with every event of the task (its ETag)."""

    # gc=False: a task refers to nothing that could lead back to it, so the cycle
    # collector need not track the hundreds of thousands a board holds.

    id: str
    title: str
    notes: str
    done: bool
    version: int
    created_at: str
    updated_at: str
    tracked_seconds: float = 0.0
    timer: Timer | None = None


class RunClock(msgspec.Struct, array_like=True, gc=False):
    """What the supervisor and the views need of a timer run: which run, and while it
    runs, since when and until when (epoch seconds)."""

    run: str
    running_since: float | None
    ends_at: float


class TaskChange(msgspec.Struct, frozen=True):
    """What one event did to a task: its owner, and the task now (None once deleted)."""

    owner: str
    task_id: str
    task: Task | None
    timer_finished: bool = False
    """Whether its countdown reached zero in this change."""


class Board:
    """Tasks per owner, in creation order, and who owns every task ever created."""

    def __init__(self) -> None:
        self.tasks: dict[str, dict[str, Task]] = {}
        """owner -> task id -> live task, oldest first."""
        self.owners: dict[str, str] = {}
        """task id -> owner, deleted tasks included (their history stays theirs)."""
        self.live: dict[str, Task] = {}
        """task id -> live task, whoever owns it."""
        self.owned_ever: dict[str, list[str]] = {}
        """owner -> every task id it ever had, deleted tasks included."""
        self.clocks: dict[str, RunClock] = {}
        """task id -> its timer's current run, while running or paused."""
        self.appliers: dict[type[BaseEvent], Applier] = {
            TaskCreated: self._create,
            TaskUpdated: self._update,
            TaskDeleted: self._delete,
            TimerStarted: self._start_timer,
            TimerPaused: self._pause_timer,
            TimerResumed: self._resume_timer,
            TimerStopped: self._stop_timer,
            TimerFinished: self._finish_timer,
        }
        """The applier of each task and timer event type (`apply` dispatches to them)."""

    def tasks_of(self, owner: str) -> list[Task]:
        """The owner's live tasks, oldest first."""
        return list(self.tasks.get(owner, {}).values())

    def task(self, owner: str, task_id: str) -> Task | None:
        """The owner's task, or None if it does not exist or belongs to someone else."""
        task = self.live.get(task_id)
        return task if task is not None and self.owners[task_id] == owner else None

    def owns_stream(self, owner: str, task_id: str) -> bool:
        """Whether the task, live or deleted, is the owner's."""
        return self.owners.get(task_id) == owner

    def streams_of(self, owner: str) -> list[str]:
        """Every task stream the owner ever had, deleted tasks included."""
        return [task_stream(task_id) for task_id in self.owned_ever.get(owner, ())]

    def transfer(self, giver: str, taker: str) -> None:
        """Give every task of `giver`, live or deleted, to `taker` (a guest registering)."""
        given = self.owned_ever.pop(giver, [])
        for task_id in given:
            self.owners[task_id] = taker
        self.owned_ever.setdefault(taker, []).extend(given)
        self.tasks.setdefault(taker, {}).update(self.tasks.pop(giver, {}))
        if not self.tasks[taker]:
            del self.tasks[taker]

    def index(self) -> None:
        """Rebuild the derived indexes (`live`, `owned_ever`) from `tasks` and `owners`."""
        self.live = {task.id: task for owned in self.tasks.values() for task in owned.values()}
        self.owned_ever = {}
        for task_id, owner in self.owners.items():
            self.owned_ever.setdefault(owner, []).append(task_id)

    def change(self, task_id: str, *, timer_finished: bool = False) -> TaskChange:
        """How a task now stands, for those told of changes."""
        owner = self.owners[task_id]
        return TaskChange(owner, task_id, self.task(owner, task_id), timer_finished)

    def apply(self, event: TaskEvent, stream: str, version: int, at: str) -> str:
        """Apply one task or timer event (the `version` of `stream`, recorded `at`); return
        the id of the task it changed."""
        task_id = self.appliers[type(event)](event, stream, version, at)
        assert task_id is not None  # every task applier names its task
        return task_id

    def _create(self, event: TaskCreated, stream: str, version: int, at: str) -> str:
        task_id, owner = event.task_id, event.owner
        if task_id in self.owners or stream != TASK_STREAM_PREFIX + task_id:
            raise CorruptLog(
                f"stream {stream!r} creates task {task_id!r}: a task is created once,"
                " by the first event of the stream named after it"
            )
        if version != 1:
            raise VersionJump(stream, version, 1)
        task = Task(
            id=task_id,
            title=event.title,
            notes=event.notes,
            done=False,
            version=version,
            created_at=at,
            updated_at=at,
        )
        self.owners[task_id] = owner
        self.owned_ever.setdefault(owner, []).append(task_id)
        self.live[task_id] = task
        self.tasks.setdefault(owner, {})[task_id] = task
        return task_id

    def _update(self, event: TaskUpdated, stream: str, version: int, at: str) -> str:
        task = self._changed(stream, version, at)
        if event.title is not UNSET:
            task.title = event.title
        if event.notes is not UNSET:
            task.notes = event.notes
        if event.done is not UNSET:
            task.done = event.done
        return task.id

    def _delete(self, event: TaskDeleted, stream: str, version: int, at: str) -> str:
        task_id = self._changed(stream, version, at).id
        del self.live[task_id]
        self.clocks.pop(task_id, None)
        owner = self.owners[task_id]
        owned = self.tasks[owner]
        del owned[task_id]
        if not owned:
            del self.tasks[owner]
        return task_id

    def _start_timer(self, event: TimerStarted, stream: str, version: int, at: str) -> str:
        task = self._changed(stream, version, at)
        task.timer = Timer(
            state="running",
            duration_seconds=event.duration_seconds,
            remaining_seconds=float(event.duration_seconds),
            started_at=format_timestamp(event.at),
            ends_at=format_timestamp(event.ends_at),
        )
        self.clocks[task.id] = RunClock(event.run, event.at, event.ends_at)
        return task.id

    def _resume_timer(self, event: TimerResumed, stream: str, version: int, at: str) -> str:
        task = self._changed(stream, version, at)
        timer, clock = self._run(task, event.run)
        timer.state, timer.ends_at = "running", format_timestamp(event.ends_at)
        clock.running_since, clock.ends_at = event.at, event.ends_at
        return task.id

    def _pause_timer(self, event: TimerPaused, stream: str, version: int, at: str) -> str:
        task = self._changed(stream, version, at)
        timer = self._halt(task, event.run, event.at)
        timer.state = "paused"
        return task.id

    def _stop_timer(self, event: TimerStopped, stream: str, version: int, at: str) -> str:
        task = self._changed(stream, version, at)
        self._halt(task, event.run, event.at)
        task.timer = None
        del self.clocks[task.id]
        return task.id

    def _finish_timer(self, event: TimerFinished, stream: str, version: int, at: str) -> str:
        task = self._changed(stream, version, at)
        timer = self._halt(task, event.run, event.finished_at)
        timer.state, timer.remaining_seconds = "finished", 0.0
        timer.finished_at = format_timestamp(event.finished_at)
        del self.clocks[task.id]
        return task.id

    def _changed(self, stream: str, version: int, at: str) -> Task:
        """The live task of `stream`, now at `version` (the next one) and updated `at`."""
        task = self.live.get(stream[_PREFIX_LENGTH:])
        if task is None:
            raise _gone(stream[_PREFIX_LENGTH:])
        if version != task.version + 1:
            raise VersionJump(stream, version, task.version + 1)
        task.version = version
        task.updated_at = at
        return task

    def _run(self, task: Task, run: str) -> tuple[Timer, RunClock]:
        """The task's timer and the clock of its current run, which must be `run`."""
        clock = self.clocks.get(task.id)
        if clock is None or clock.run != run or task.timer is None:
            raise CorruptLog(f"an event of timer run {run!r} that is not running")
        return task.timer, clock

    def _halt(self, task: Task, run: str, stopped_at: float) -> Timer:
        """Stop the clock of `run` at `stopped_at`: the time it ran is tracked, and what was
        left of it remains."""
        timer, clock = self._run(task, run)
        if clock.running_since is not None:
            task.tracked_seconds = round(task.tracked_seconds + stopped_at - clock.running_since, 3)
            timer.remaining_seconds = round(max(0.0, clock.ends_at - stopped_at), 3)
        clock.running_since = None
        timer.ends_at = None
        return timer

    def detached(self, task: Task, now: float) -> Task:
        """`view`, as a copy that later events will not change."""
        viewed = self.view(task, now)
        if viewed is not task:
            return viewed
        timer = msgspec.structs.replace(task.timer) if task.timer is not None else None
        return msgspec.structs.replace(task, timer=timer)

    def view(self, task: Task, now: float) -> Task:
        """The task as it stands at `now`: a running countdown's remaining and tracked time
        are computed from its due time, never counted, so they cannot drift."""
        clock = self.clocks.get(task.id)
        if clock is None or clock.running_since is None or task.timer is None:
            return task
        timer = msgspec.structs.replace(
            task.timer, remaining_seconds=round(max(0.0, clock.ends_at - now), 3)
        )
        tracked = round(task.tracked_seconds + max(0.0, now - clock.running_since), 3)
        return msgspec.structs.replace(task, tracked_seconds=tracked, timer=timer)


def _gone(task_id: str) -> CorruptLog:
    return CorruptLog(f"an event changes task {task_id!r}, which is gone")
