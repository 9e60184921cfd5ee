"""The hub: fans task changes, ticks and finished timers out to each principal's sockets.

Every subscriber (one WebSocket) has a small bounded queue of encoded messages.
Publishing never waits: a subscriber whose queue is full has fallen behind and
is disconnected, so a slow or stalled client cannot delay anyone else. One
ticker per process sends every principal with running timers a `tick` a second,
with remaining times computed from their due times (no drift).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import anyio
import msgspec
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from tracker.clock import Clock, format_timestamp
from tracker.projections.board import Task, TaskChange
from tracker.projections.model import ReadModel

logger = logging.getLogger(__name__)

QUEUE_SIZE = 64
"""Messages a subscriber may have waiting before it counts as stalled."""
TICK_SECONDS = 1.0


class SnapshotMessage(msgspec.Struct, tag="snapshot", tag_field="type"):
    tasks: list[Task]
    position: int


class TaskMessage(msgspec.Struct, tag="task", tag_field="type"):
    task: Task


class TaskDeletedMessage(msgspec.Struct, tag="task_deleted", tag_field="type"):
    id: str


class TimerFinishedMessage(msgspec.Struct, tag="timer_finished", tag_field="type"):
    task: Task


class Remaining(msgspec.Struct):
    id: str
    remaining_seconds: float


class TickMessage(msgspec.Struct, tag="tick", tag_field="type"):
    server_time: str
    timers: list[Remaining]


class PongMessage(msgspec.Struct, tag="pong", tag_field="type"):
    pass


class PingMessage(msgspec.Struct, tag="ping", tag_field="type", forbid_unknown_fields=True):
    """The one message a client may send: `{"type": "ping"}`."""


_encoder = msgspec.json.Encoder()

Outbox = MemoryObjectSendStream[bytes]


class Hub:
    """Subscribers per principal, fed from the read model's changes and the ticker."""

    def __init__(self, model: ReadModel, clock: Clock) -> None:
        self._model = model
        self._clock = clock
        self._subscribers: dict[str, set[Outbox]] = {}

    @asynccontextmanager
    async def subscribe(
        self, principal_id: str
    ) -> AsyncIterator[tuple[Outbox, MemoryObjectReceiveStream[bytes]]]:
        """A queue of this principal's messages, starting with a snapshot (and its outbox,
        to answer this subscriber alone)."""
        send, receive = anyio.create_memory_object_stream[bytes](QUEUE_SIZE)
        board, now = self._model.board, self._clock()
        tasks = [board.view(task, now) for task in board.tasks_of(principal_id)]
        send.send_nowait(_encoder.encode(SnapshotMessage(tasks, self._model.position)))
        self._subscribers.setdefault(principal_id, set()).add(send)
        try:
            async with receive:
                yield send, receive
        finally:
            send.close()
            self._drop(principal_id, send)

    def reply(self, principal_id: str, outbox: Outbox, message: bytes) -> None:
        """Queue `message` for one subscriber only (a pong)."""
        self._offer(principal_id, outbox, message)

    @property
    def connections(self) -> int:
        return sum(len(outboxes) for outboxes in self._subscribers.values())

    def close_all(self) -> None:
        """End every subscription (shutdown): their sockets close with 1001."""
        for outboxes in list(self._subscribers.values()):
            for outbox in list(outboxes):
                outbox.close()
        self._subscribers.clear()

    def on_changes(self, changes: Sequence[TaskChange]) -> None:
        """The read model's listener: tell each owner's subscribers what changed."""
        now = self._clock()
        for change in changes:
            if change.owner not in self._subscribers:
                continue
            message: msgspec.Struct
            if change.task is None:
                message = TaskDeletedMessage(change.task_id)
            else:
                task = self._model.board.view(change.task, now)
                message = TimerFinishedMessage(task) if change.timer_finished else TaskMessage(task)
            self.publish(change.owner, _encoder.encode(message))

    def publish(self, principal_id: str, message: bytes) -> None:
        """Queue `message` for every subscriber of the principal, never waiting."""
        for outbox in list(self._subscribers.get(principal_id, ())):
            self._offer(principal_id, outbox, message)

    async def run_ticker(self) -> None:
        """One `tick` a second to every subscribed principal with a running timer."""
        while True:
            target = (self._clock() // TICK_SECONDS + 1) * TICK_SECONDS
            await anyio.sleep(target - self._clock())
            if (early := target - self._clock()) > 0:  # a sleep may end a little early
                await anyio.sleep(early)
            self.tick()

    def tick(self) -> None:
        """Send this second's remaining times (computed from due times) to whoever waits."""
        board, now = self._model.board, self._clock()
        running: dict[str, list[Remaining]] = {}
        for task_id, clock in board.clocks.items():
            owner = board.owners.get(task_id)
            if clock.running_since is None or owner not in self._subscribers:
                continue
            remaining = round(max(0.0, clock.ends_at - now), 3)
            running.setdefault(owner, []).append(Remaining(task_id, remaining))
        server_time = format_timestamp(now)
        for owner, timers in running.items():
            self.publish(owner, _encoder.encode(TickMessage(server_time, timers)))

    def _offer(self, principal_id: str, outbox: Outbox, message: bytes) -> None:
        try:
            outbox.send_nowait(message)
        except anyio.WouldBlock:
            logger.info("a live client of %s fell behind: disconnecting it", principal_id)
            outbox.close()
            self._drop(principal_id, outbox)
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            self._drop(principal_id, outbox)

    def _drop(self, principal_id: str, outbox: Outbox) -> None:
        outboxes = self._subscribers.get(principal_id)
        if outboxes is not None:
            outboxes.discard(outbox)
            if not outboxes:
                del self._subscribers[principal_id]


def pong() -> bytes:
    return _encoder.encode(PongMessage())
