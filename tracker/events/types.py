"""The facts Tracker records: one frozen, tagged msgspec Struct per event type.

An event's `type` tag is its name in the log. Its data is everything the
projections need to rebuild state; the envelope (stream, version, actor, time)
lives in `tracker.events.records.Recorded`.
"""

from __future__ import annotations

from typing import ClassVar

import msgspec


class BaseEvent(msgspec.Struct, frozen=True, tag_field="type", kw_only=True):
    """Base of every event. `schema` is bumped whenever a type's fields change."""

    schema: ClassVar[int] = 1


# Identity


class GuestStarted(BaseEvent, frozen=True, tag=True):
    """A visitor began working as a guest; the guest's id is the principal id."""

    principal_id: str


class UserRegistered(BaseEvent, frozen=True, tag=True):
    """An account was created. Its stream is named after the lower-cased username,
    which makes usernames unique; the password hash never leaves the server."""

    principal_id: str
    username: str
    password_hash: str


class GuestClaimed(BaseEvent, frozen=True, tag=True):
    """A guest registered: its tasks, timers and history now belong to the user."""

    guest_id: str
    user_id: str


class SessionRevoked(BaseEvent, frozen=True, tag=True):
    """A session token was logged out; it stays refused until it would have expired."""

    jti: str
    expires_at: int


# Tasks


class TaskCreated(BaseEvent, frozen=True, tag=True):
    """A task was created by its owner."""

    task_id: str
    owner: str
    title: str
    notes: str = ""


class TaskUpdated(BaseEvent, frozen=True, tag=True):
    """Some of a task's fields changed; fields that did not change are absent."""

    title: str | msgspec.UnsetType = msgspec.UNSET
    notes: str | msgspec.UnsetType = msgspec.UNSET
    done: bool | msgspec.UnsetType = msgspec.UNSET


class TaskDeleted(BaseEvent, frozen=True, tag=True):
    """A task was deleted. Its stream stays in the log; its history stays readable."""


# Timers (on the task's stream; times are epoch seconds, to the millisecond)


class TimerStarted(BaseEvent, frozen=True, tag=True):
    """A countdown run began: it is due at `ends_at` unless paused or stopped first."""

    run: str
    duration_seconds: int
    at: float
    ends_at: float


class TimerPaused(BaseEvent, frozen=True, tag=True):
    """The running countdown was paused at `at`."""

    run: str
    at: float


class TimerResumed(BaseEvent, frozen=True, tag=True):
    """The paused countdown runs again from `at`; it is now due at `ends_at`."""

    run: str
    at: float
    ends_at: float


class TimerStopped(BaseEvent, frozen=True, tag=True):
    """The countdown was stopped before it reached zero; the task has no timer again."""

    run: str
    at: float


class TimerFinished(BaseEvent, frozen=True, tag=True):
    """The countdown reached zero at `finished_at` (its due time, even if noticed later)."""

    run: str
    finished_at: float


TimerEvent = TimerStarted | TimerPaused | TimerResumed | TimerStopped | TimerFinished

Event = (
    GuestStarted
    | UserRegistered
    | GuestClaimed
    | SessionRevoked
    | TaskCreated
    | TaskUpdated
    | TaskDeleted
    | TimerStarted
    | TimerPaused
    | TimerResumed
    | TimerStopped
    | TimerFinished
)
"""Every event type; the union the codec decodes."""

EVENT_TYPES: dict[str, type[BaseEvent]] = {
    cls.__name__: cls
    for cls in (
        GuestStarted,
        UserRegistered,
        GuestClaimed,
        SessionRevoked,
        TaskCreated,
        TaskUpdated,
        TaskDeleted,
        TimerStarted,
        TimerPaused,
        TimerResumed,
        TimerStopped,
        TimerFinished,
    )
}
