"""Each owner's task list, encoded once and kept until one of its tasks changes.

Listing tasks is the busiest request there is, and encoding the tasks is most of
its work, while a list changes far less often than it is read: so the answer is
kept, per owner, and forgotten when the read model says one of the owner's tasks
changed (it is brought up to the log's position when that alone moved on). A list
with a running countdown is never kept (its remaining and tracked times change as
it is read), and the lists kept are bounded in size, the oldest forgotten first.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from tracker.clock import Clock
from tracker.projections.board import Board, Task, TaskChange

MAX_BYTES = 16 * 1024 * 1024
"""What the encoded lists kept may add up to."""

_encoder = msgspec.json.Encoder()


class TaskList(msgspec.Struct):
    """A principal's tasks, oldest first, and the log position they reflect."""

    tasks: list[Task]
    position: int


class _EncodedTaskList(msgspec.Struct):
    tasks: msgspec.Raw
    position: int


class _Kept(msgspec.Struct, gc=False):
    tasks: dict[str, Task]
    """The owner's live tasks when encoded (by identity: a guest's claim moves tasks in)."""
    count: int
    encoded: bytes
    """The tasks as a JSON array."""
    position: int
    body: bytes
    """A `TaskList` of them at `position`."""


class TaskLists:
    """Encoded lists of tasks, per owner, kept while they stay true."""

    def __init__(self, board: Board, clock: Clock, max_bytes: int = MAX_BYTES) -> None:
        self._board = board
        self._clock = clock
        self._max_bytes = max_bytes
        self._kept: dict[str, _Kept] = {}
        self._bytes = 0

    def encoded(self, owner: str, position: int) -> bytes:
        """The owner's live tasks as they stand now, oldest first, as a JSON `TaskList` at
        `position` (the read model's)."""
        owned = self._board.tasks.get(owner, {})
        kept = self._kept.get(owner)
        if kept is not None and kept.tasks is owned and kept.count == len(owned):
            if kept.position != position:
                kept.position = position
                kept.body = _encoder.encode(_EncodedTaskList(msgspec.Raw(kept.encoded), position))
            return kept.body
        board, now = self._board, self._clock()
        tasks = list(owned.values())
        views = [board.view(task, now) for task in tasks]
        encoded = _encoder.encode(views)
        body = _encoder.encode(_EncodedTaskList(msgspec.Raw(encoded), position))
        self.forget(owner)
        if owned and all(map(_is, views, tasks)):  # no countdown runs: it stays true
            self._keep(owner, _Kept(owned, len(owned), encoded, position, body))
        return body

    def on_changes(self, changes: Sequence[TaskChange]) -> None:
        """The read model's listener: forget the lists of the owners whose tasks changed."""
        for change in changes:
            self.forget(change.owner)

    def forget(self, owner: str) -> None:
        """Forget the owner's list, if kept."""
        kept = self._kept.pop(owner, None)
        if kept is not None:
            self._bytes -= len(kept.encoded) + len(kept.body)

    def _keep(self, owner: str, kept: _Kept) -> None:
        self._kept[owner] = kept
        self._bytes += len(kept.encoded) + len(kept.body)
        while self._bytes > self._max_bytes:
            self.forget(next(iter(self._kept)))  # the oldest kept


def _is(view: object, task: object) -> bool:
    return view is task
