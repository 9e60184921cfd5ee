"""The board: every owner's live tasks, as the API shows them, kept current event by event."""

from __future__ import annotations

import msgspec

from tracker.clock import format_timestamp
from tracker.errors import CorruptLog
from tracker.events.types import (
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

TASK_STREAM_PREFIX = "task-"


def task_stream(task_id: str) -> str:
    """The stream that holds a task's events."""
    return TASK_STREAM_PREFIX + task_id


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
        if isinstance(event, TaskCreated):
            task = Task(
                id=event.task_id,
                title=event.title,
                notes=event.notes,
                done=False,
                version=version,
                created_at=at,
                updated_at=at,
            )
            self.owners[event.task_id] = event.owner
            self.owned_ever.setdefault(event.owner, []).append(event.task_id)
            self.live[event.task_id] = task
            self.tasks.setdefault(event.owner, {})[event.task_id] = task
            return event.task_id
        task_id = stream.removeprefix(TASK_STREAM_PREFIX)
        if isinstance(event, TaskDeleted):
            if self.live.pop(task_id, None) is None:
                raise _gone(task_id)
            self.clocks.pop(task_id, None)
            owner = self.owners[task_id]
            owned = self.tasks[owner]
            del owned[task_id]
            if not owned:
                del self.tasks[owner]
            return task_id
        changed = self.live.get(task_id)
        if changed is None:
            raise _gone(task_id)
        if isinstance(event, TaskUpdated):
            if event.title is not msgspec.UNSET:
                changed.title = event.title
            if event.notes is not msgspec.UNSET:
                changed.notes = event.notes
            if event.done is not msgspec.UNSET:
                changed.done = event.done
        else:
            self._apply_timer(changed, event)
        changed.version = version
        changed.updated_at = at
        return task_id

    def _apply_timer(self, task: Task, event: TimerEvent) -> None:
        if isinstance(event, TimerStarted):
            task.timer = Timer(
                state="running",
                duration_seconds=event.duration_seconds,
                remaining_seconds=float(event.duration_seconds),
                started_at=format_timestamp(event.at),
                ends_at=format_timestamp(event.ends_at),
            )
            self.clocks[task.id] = RunClock(event.run, event.at, event.ends_at)
            return
        clock = self.clocks.get(task.id)
        if clock is None or clock.run != event.run or task.timer is None:
            raise CorruptLog(f"an event of timer run {event.run!r} that is not running")
        timer = task.timer
        if isinstance(event, TimerResumed):
            timer.state, timer.ends_at = "running", format_timestamp(event.ends_at)
            clock.running_since, clock.ends_at = event.at, event.ends_at
            return
        stopped_at = event.finished_at if isinstance(event, TimerFinished) else event.at
        if clock.running_since is not None:
            task.tracked_seconds = round(task.tracked_seconds + stopped_at - clock.running_since, 3)
            timer.remaining_seconds = round(max(0.0, clock.ends_at - stopped_at), 3)
        clock.running_since = None
        timer.ends_at = None
        if isinstance(event, TimerPaused):
            timer.state = "paused"
        elif isinstance(event, TimerStopped):
            task.timer = None
            del self.clocks[task.id]
        else:
            timer.state, timer.remaining_seconds = "finished", 0.0
            timer.finished_at = format_timestamp(event.finished_at)
            del self.clocks[task.id]

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
