"""The hub: fans task changes, ticks and finished timers out to each principal's sockets.

Every subscriber (one WebSocket) has a small bounded queue of encoded messages.
Publishing never waits: a subscriber whose queue is full has fallen behind and
is disconnected, so a slow or stalled client cannot delay anyone else. One
ticker per process sends every principal with running timers a `tick` a second,
with remaining times computed from their due times (no drift).

Thousands of sockets wait here at once, so a waiting subscriber holds as few
objects as it can (a deque, and one event only while its queue is empty): every
object that lives from one tick to the next is one more for the cycle collector
to walk, and its full passes stall the whole process.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager

import anyio
import msgspec

from tracker.clock import Clock, format_timestamp
from tracker.errors import TrackerError
from tracker.projections.board import Task, TaskChange
from tracker.projections.model import ReadModel

logger = logging.getLogger(__name__)

QUEUE_SIZE = 64
"""Messages a subscriber may have waiting before it counts as stalled."""
MAX_SOCKETS_PER_PRINCIPAL = 20
"""Live connections one principal may hold at once: plenty of tabs and devices, while
one token cannot pin thousands of sockets (and their queues) on the server."""
STALL_SECONDS = 10.0
"""How long a subscriber dropped for falling behind may take to read what its socket
still holds, before its connection is given up (a client that reads nothing would keep
it, and its place among its principal's sockets, for ever)."""
TICK_SECONDS = 1.0
TICK_BATCH = 20
"""Subscribed principals looked at in a tick before other work gets a turn."""


class TooManySockets(TrackerError):
    """The principal already holds `MAX_SOCKETS_PER_PRINCIPAL` live connections."""

    def __init__(self) -> None:
        super().__init__(f"at most {MAX_SOCKETS_PER_PRINCIPAL} live connections per principal")


class SnapshotMessage(msgspec.Struct, tag="snapshot", tag_field="type"):
    tasks: list[Task]
    position: int


class TaskMessage(msgspec.Struct, tag="task", tag_field="type"):
    task: Task


class TaskDeletedMessage(msgspec.Struct, tag="task_deleted", tag_field="type"):
    id: str


class TimerFinishedMessage(msgspec.Struct, tag="timer_finished", tag_field="type"):
    task: Task


# gc=False: a tick is built for every subscribed principal each second and refers to
# nothing that could lead back to it; the cycle collector need not count it.
class Remaining(msgspec.Struct, gc=False):
    id: str
    remaining_seconds: float


class TickMessage(msgspec.Struct, tag="tick", tag_field="type", gc=False):
    server_time: str
    timers: list[Remaining]


class PongMessage(msgspec.Struct, tag="pong", tag_field="type"):
    pass


class PingMessage(msgspec.Struct, tag="ping", tag_field="type", forbid_unknown_fields=True):
    """The one message a client may send: `{"type": "ping"}`."""


_encoder = msgspec.json.Encoder()


def encode(message: msgspec.Struct) -> str:
    """A message as the text of a WebSocket frame."""
    return _encoder.encode(message).decode()


class Subscription:
    """One subscriber's bounded queue of messages, read by its socket's forwarding task.

    `offer` never waits; `close` ends the iteration once what is queued has been read.
    """

    __slots__ = ("_closed", "_messages", "_wakeup", "abandon", "principal_id")

    def __init__(self, principal_id: str) -> None:
        self.principal_id = principal_id
        self.abandon: Callable[[], None] | None = None
        """Gives up the subscriber's connection at once (set by whoever serves it): for a
        subscriber that fell behind and does not even take a close."""
        self._messages: deque[str] = deque()
        self._closed = False
        self._wakeup: anyio.Event | None = None
        """Set when a message comes or the subscription closes, while the reader waits."""

    def offer(self, message: str) -> bool:
        """Queue `message` unless the subscription is closed or its queue is full; whether
        it was queued."""
        if self._closed or len(self._messages) >= QUEUE_SIZE:
            return False
        self._messages.append(message)
        self._wake()
        return True

    def close(self) -> None:
        """Take no more messages; the reader gets those already queued, then stops."""
        self._closed = True
        self._wake()

    @property
    def closed(self) -> bool:
        return self._closed

    def receive_nowait(self) -> str:
        """The next message: `anyio.WouldBlock` if none is queued yet, `anyio.EndOfStream`
        once closed and drained."""
        if self._messages:
            return self._messages.popleft()
        raise anyio.EndOfStream if self._closed else anyio.WouldBlock

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> str:
        """The next message, waiting for one; the iteration ends once closed and drained."""
        while not self._messages:
            if self._closed:
                raise StopAsyncIteration
            self._wakeup = anyio.Event()
            await self._wakeup.wait()
        return self._messages.popleft()

    def _wake(self) -> None:
        if self._wakeup is not None:
            self._wakeup.set()
            self._wakeup = None


class Hub:
    """Subscribers per principal, fed from the read model's changes and the ticker."""

    def __init__(self, model: ReadModel, clock: Clock) -> None:
        self._model = model
        self._clock = clock
        self._subscribers: dict[str, set[Subscription]] = {}
        self._open: dict[str, int] = {}
        """Subscriptions entered and not yet left, per principal: also those the hub has
        ended or dropped, until their socket is done with them."""
        self._stalled: dict[Subscription, float] = {}
        """Subscriptions dropped for falling behind and not yet left: when each was."""

    @asynccontextmanager
    async def subscribe(self, principal_id: str) -> AsyncIterator[Subscription]:
        """A queue of this principal's messages, starting with a snapshot.

        `TooManySockets` if the principal already holds `MAX_SOCKETS_PER_PRINCIPAL`.
        """
        if self._open.get(principal_id, 0) >= MAX_SOCKETS_PER_PRINCIPAL:
            raise TooManySockets
        subscription = Subscription(principal_id)
        board, now = self._model.board, self._clock()
        tasks = [board.view(task, now) for task in board.tasks_of(principal_id)]
        subscription.offer(encode(SnapshotMessage(tasks, self._model.position)))
        self._open[principal_id] = self._open.get(principal_id, 0) + 1
        self._subscribers.setdefault(principal_id, set()).add(subscription)
        try:
            yield subscription
        finally:
            subscription.close()
            subscription.abandon = None  # it refers back to the connection: no cycle left
            self._stalled.pop(subscription, None)
            self._drop(subscription)
            self._leave(principal_id)

    def reply(self, subscription: Subscription, message: str) -> None:
        """Queue `message` for one subscriber only (a pong)."""
        self._offer(subscription, message)

    @property
    def connections(self) -> int:
        return sum(len(subscriptions) for subscriptions in self._subscribers.values())

    def close_all(self) -> None:
        """End every subscription (shutdown): their sockets close with 1001."""
        for subscriptions in self._subscribers.values():
            for subscription in subscriptions:
                subscription.close()
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
            self.publish(change.owner, encode(message))

    def publish(self, principal_id: str, message: str) -> None:
        """Queue `message` for every subscriber of the principal, never waiting."""
        for subscription in list(self._subscribers.get(principal_id, ())):
            self._offer(subscription, message)

    async def run_ticker(self) -> None:
        """One `tick` a second to every subscribed principal with a running timer."""
        while True:
            now = self._clock()  # read once: a second boundary may pass between two readings
            target = (now // TICK_SECONDS + 1) * TICK_SECONDS
            await anyio.sleep(target - now)
            if (early := target - self._clock()) > 0:  # a sleep may end a little early
                await anyio.sleep(early)
            await self.tick()

    async def tick(self) -> None:
        """Send this second's remaining times (computed from due times) to whoever waits.

        Only the subscribed principals' tasks are looked at, and in batches, with other
        work let in between: a timer that finishes meanwhile need not wait for thousands
        of ticks to go out first.
        """
        board, now = self._model.board, self._clock()
        self._give_up_stalled(now)
        server_time = format_timestamp(now)
        for number, owner in enumerate(list(self._subscribers), start=1):
            timers = [
                Remaining(task_id, round(max(0.0, clock.ends_at - now), 3))
                for task_id in board.tasks.get(owner, ())
                if (clock := board.clocks.get(task_id)) is not None
                and clock.running_since is not None
            ]
            if timers:
                self.publish(owner, encode(TickMessage(server_time, timers)))
            if number % TICK_BATCH == 0:
                await anyio.lowlevel.checkpoint()

    def _offer(self, subscription: Subscription, message: str) -> None:
        if not subscription.offer(message):
            if not subscription.closed:
                logger.info(
                    "a live client of %s fell behind: disconnecting it", subscription.principal_id
                )
                subscription.close()
                self._stalled[subscription] = self._clock()
            self._drop(subscription)

    def _give_up_stalled(self, now: float) -> None:
        """Give up the connections of subscribers dropped for falling behind that have not
        taken their last messages (and the close) within `STALL_SECONDS`."""
        for subscription, since in list(self._stalled.items()):
            if now - since >= STALL_SECONDS:
                del self._stalled[subscription]
                if subscription.abandon is not None:
                    logger.info(
                        "a live client of %s reads nothing: giving it up", subscription.principal_id
                    )
                    subscription.abandon()

    def _leave(self, principal_id: str) -> None:
        if (still_open := self._open[principal_id] - 1) > 0:
            self._open[principal_id] = still_open
        else:
            del self._open[principal_id]

    def _drop(self, subscription: Subscription) -> None:
        subscriptions = self._subscribers.get(subscription.principal_id)
        if subscriptions is not None:
            subscriptions.discard(subscription)
            if not subscriptions:
                del self._subscribers[subscription.principal_id]


def pong() -> str:
    return encode(PongMessage())
