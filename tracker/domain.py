"""Commands and the decisions they lead to: pure functions from state to new events.

Nothing here does I/O or knows of HTTP. The command Structs validate their own
fields (msgspec checks types and limits; `__post_init__` raises `Invalid` for
the rules msgspec cannot express), so the HTTP layer decodes request bodies straight into them.
"""

from __future__ import annotations

from typing import Annotated, TypeVar

import msgspec

from tracker.errors import Invalid, InvalidState, NotFound, VersionConflict
from tracker.events.types import (
    TaskCreated,
    TaskDeleted,
    TaskUpdated,
    TimerFinished,
    TimerPaused,
    TimerResumed,
    TimerStarted,
    TimerStopped,
)
from tracker.projections.board import RunClock, Task, task_stream

TITLE_MAX = 200
NOTES_MAX = 10_000

Title = Annotated[
    str,
    msgspec.Meta(
        description=f"1 to {TITLE_MAX} characters after trimming white space;"
        " no control characters."
    ),
]
Notes = Annotated[
    str,
    msgspec.Meta(
        max_length=NOTES_MAX,
        description=f"At most {NOTES_MAX} characters; no control characters"
        " but tab and line breaks.",
    ),
]

T = TypeVar("T")

_CONTROL = {chr(code) for code in (*range(0x20), *range(0x7F, 0xA0))}
"""C0 and C1 control characters and DEL."""
_TITLE_FORBIDDEN = frozenset(_CONTROL)
_NOTES_FORBIDDEN = frozenset(_CONTROL - {"\t", "\n", "\r"})
_NEVER_IN_TITLE = frozenset(_CONTROL - {"\t", "\n", "\r", "\v", "\f"})
"""Refused anywhere in a title, even at its edges, where white space is trimmed."""


def clean_title(title: str) -> str:
    """The title trimmed; `Invalid` unless it is 1 to 200 characters with no control characters."""
    # White space around the title goes; any other control character, or one inside it, is refused.
    if not _NEVER_IN_TITLE.isdisjoint(title):
        raise Invalid("title", "must not contain control characters")
    title = title.strip()
    if not _TITLE_FORBIDDEN.isdisjoint(title):
        raise Invalid("title", "must not contain control characters")
    if not title:
        raise Invalid("title", "must not be empty")
    if len(title) > TITLE_MAX:
        raise Invalid("title", f"must be at most {TITLE_MAX} characters after trimming")
    return title


def check_notes(notes: str) -> str:
    """The notes, unchanged; `Invalid` if too long or holding control characters but line breaks
    and tabs."""
    if len(notes) > NOTES_MAX:
        raise Invalid("notes", f"must be at most {NOTES_MAX} characters")
    if not _NOTES_FORBIDDEN.isdisjoint(notes):
        raise Invalid("notes", "must not contain control characters other than tab and newline")
    return notes


class CreateTask(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Create a task."""

    title: Title
    notes: Notes = ""

    def __post_init__(self) -> None:
        self.title = clean_title(self.title)
        check_notes(self.notes)


class UpdateTask(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Change any of a task's title, notes and done flag; absent fields stay as they are."""

    title: Title | msgspec.UnsetType = msgspec.UNSET
    notes: Notes | msgspec.UnsetType = msgspec.UNSET
    done: bool | msgspec.UnsetType = msgspec.UNSET

    def __post_init__(self) -> None:
        if self.title is not msgspec.UNSET:
            self.title = clean_title(self.title)
        if self.notes is not msgspec.UNSET:
            check_notes(self.notes)


USERNAME_PATTERN = r"^[A-Za-z0-9_.-]{3,32}$"
PASSWORD_MIN_BYTES = 8
PASSWORD_MAX_BYTES = 72
"""bcrypt reads no more than 72 bytes: a longer password is refused, never truncated."""

Username = Annotated[
    str,
    msgspec.Meta(
        min_length=3,
        max_length=32,
        pattern=USERNAME_PATTERN,
        description="3 to 32 letters, digits, '_', '.' or '-'; unique whatever the case.",
    ),
]
Password = Annotated[
    str,
    msgspec.Meta(
        description=f"{PASSWORD_MIN_BYTES} to {PASSWORD_MAX_BYTES} bytes once encoded as UTF-8"
        " (a new one without NUL characters)."
    ),
]


class Credentials(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A username and password, to register or to log in."""

    username: Username
    password: Password

    def __post_init__(self) -> None:
        size = len(self.password.encode("utf-8", "surrogatepass"))
        if not PASSWORD_MIN_BYTES <= size <= PASSWORD_MAX_BYTES:
            raise Invalid(
                "password",
                f"must be {PASSWORD_MIN_BYTES} to {PASSWORD_MAX_BYTES} bytes of UTF-8"
                f" (this one is {size})",
            )


class NewCredentials(Credentials, kw_only=True):
    """Credentials to register with: a new password must also hold no NUL character
    (bcrypt cycles the bytes of its key and a NUL after them, so "\0" * 8 and "\0" * 9
    would be one password). Logging in does not check it: an account made before the
    rule still logs in."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if "\x00" in self.password:
            raise Invalid("password", "must not contain NUL characters")


def create_task(task_id: str, owner: str, command: CreateTask) -> list[TaskCreated]:
    """A new task always starts as written."""
    return [TaskCreated(task_id=task_id, owner=owner, title=command.title, notes=command.notes)]


def update_task(
    task: Task | None, command: UpdateTask, expected_version: int | None = None
) -> list[TaskUpdated]:
    """Record only the fields that really change; nothing at all if none does."""
    task = _existing(task, expected_version)
    changes = TaskUpdated(
        title=_changed(task.title, command.title),
        notes=_changed(task.notes, command.notes),
        done=_changed(task.done, command.done),
    )
    if changes == TaskUpdated():
        return []
    return [changes]


def delete_task(task: Task | None, expected_version: int | None = None) -> list[TaskDeleted]:
    """A task that exists can always be deleted."""
    _existing(task, expected_version)
    return [TaskDeleted()]


def _existing(task: Task | None, expected_version: int | None) -> Task:
    if task is None:
        raise NotFound("no such task")
    if expected_version is not None and expected_version != task.version:
        raise VersionConflict(task_stream(task.id), expected_version, task.version)
    return task


def _changed(current: T, wanted: T | msgspec.UnsetType) -> T | msgspec.UnsetType:
    return msgspec.UNSET if wanted is msgspec.UNSET or wanted == current else wanted


# Timers

MAX_DURATION = 604_800


class StartTimer(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Start a countdown on a task."""

    duration_seconds: Annotated[
        int, msgspec.Meta(ge=1, le=MAX_DURATION, description="1 second to 7 days.")
    ]


def start_timer(
    task: Task | None, clock: RunClock | None, command: StartTimer, run: str, now: float
) -> list[TimerStarted]:
    """A new run, unless one is running or paused (a finished timer starts anew)."""
    task = _existing(task, None)
    if clock is not None:
        raise InvalidState("the timer is already running or paused: stop it first")
    at = round(now, 3)
    return [
        TimerStarted(
            run=run,
            duration_seconds=command.duration_seconds,
            at=at,
            ends_at=round(at + command.duration_seconds, 3),
        )
    ]


def pause_timer(task: Task | None, clock: RunClock | None, now: float) -> list[TimerPaused]:
    """Only a running countdown pauses."""
    _existing(task, None)
    if clock is None or clock.running_since is None:
        raise InvalidState("the timer is not running")
    return [TimerPaused(run=clock.run, at=round(now, 3))]


def resume_timer(task: Task | None, clock: RunClock | None, now: float) -> list[TimerResumed]:
    """Only a paused countdown resumes, with the time it had left."""
    task = _existing(task, None)
    if clock is None or clock.running_since is not None or task.timer is None:
        raise InvalidState("the timer is not paused")
    at = round(now, 3)
    return [TimerResumed(run=clock.run, at=at, ends_at=round(at + task.timer.remaining_seconds, 3))]


def stop_timer(task: Task | None, clock: RunClock | None, now: float) -> list[TimerStopped]:
    """A running or paused countdown can always be stopped."""
    _existing(task, None)
    if clock is None:
        raise InvalidState("there is no running or paused timer")
    return [TimerStopped(run=clock.run, at=round(now, 3))]


def finish_timer(clock: RunClock | None, run: str, due: float) -> list[TimerFinished]:
    """The run that is still running and due at `due` finishes then; anything else is stale."""
    if clock is None or clock.run != run or clock.running_since is None or clock.ends_at != due:
        return []
    return [TimerFinished(run=run, finished_at=due)]
