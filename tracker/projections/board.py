"""The board: every owner's live tasks, as the API shows them, kept current event by event."""

from __future__ import annotations

import msgspec

from tracker.errors import CorruptLog
from tracker.events.types import TaskCreated, TaskDeleted, TaskUpdated

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


class TaskChange(msgspec.Struct, frozen=True):
    """What one event did to a task: its owner, and the task now (None once deleted)."""

    owner: str
    task_id: str
    task: Task | None


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

    def change(self, task_id: str) -> TaskChange:
        """How a task now stands, for those told of changes."""
        owner = self.owners[task_id]
        return TaskChange(owner, task_id, self.task(owner, task_id))

    def apply(
        self, event: TaskCreated | TaskUpdated | TaskDeleted, stream: str, version: int, at: str
    ) -> str:
        """Apply one task event (the `version` of `stream`, recorded `at`); return the id
        of the task it changed."""
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
            owner = self.owners[task_id]
            owned = self.tasks[owner]
            del owned[task_id]
            if not owned:
                del self.tasks[owner]
            return task_id
        changed = self.live.get(task_id)
        if changed is None:
            raise _gone(task_id)
        if event.title is not msgspec.UNSET:
            changed.title = event.title
        if event.notes is not msgspec.UNSET:
            changed.notes = event.notes
        if event.done is not msgspec.UNSET:
            changed.done = event.done
        changed.version = version
        changed.updated_at = at
        return task_id


def _gone(task_id: str) -> CorruptLog:
    return CorruptLog(f"an event changes task {task_id!r}, which is gone")
