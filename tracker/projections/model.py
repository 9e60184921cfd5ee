"""The read model: every projection, fed from the log in position order, and its snapshots.

It is rebuilt at startup (from the newest valid snapshot, then caught up from
the log) and kept current by the store's commit listener, so every read is an
in-memory lookup and a client always reads its own writes.
"""

from __future__ import annotations

import gc
import logging
import sys
from collections.abc import AsyncIterable, Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager

import msgspec

from tracker.errors import BadEvent, CorruptLog
from tracker.events import codec
from tracker.events.records import Recorded, ReplayRow
from tracker.events.store import EventStore, Snapshot
from tracker.events.types import (
    BaseEvent,
    GuestClaimed,
    GuestStarted,
    SessionRevoked,
    UserRegistered,
)
from tracker.projections.board import (
    Applier,
    Board,
    RunClock,
    Task,
    TaskChange,
    task_of,
)
from tracker.projections.identity import Identities, IdentityEvent

logger = logging.getLogger(__name__)

SNAPSHOT_NAME = "read-model"
SNAPSHOT_FORMAT = 4
"""Bump whenever a projection changes what it derives: older snapshots are then rebuilt."""


ChangeListener = Callable[[Sequence[TaskChange]], None]
_snapshot_encoder = msgspec.msgpack.Encoder()


class _State(msgspec.Struct, array_like=True):
    position: int
    tasks: dict[str, dict[str, Task]]
    """The board's own: decoded, it is the board's at once (maps keep their order)."""
    owners: dict[str, str]
    clocks: dict[str, RunClock]
    identities: Identities


class ReadModel:
    """The board and the identities, as of `position`."""

    def __init__(self) -> None:
        self.board = Board()
        self.identities = Identities()
        self.position = 0
        self.snapshot_position = 0
        """The position of the snapshot this model was loaded from (0: none)."""
        self._listeners: list[ChangeListener] = []
        self._appliers: dict[type[BaseEvent], Applier] = {
            **self.board.appliers,
            GuestStarted: self._apply_identity,
            UserRegistered: self._apply_identity,
            SessionRevoked: self._apply_identity,
            GuestClaimed: self._apply_claim,
        }

    def add_listener(self, listener: ChangeListener) -> None:
        """Call `listener` with the task changes of every batch applied from now on."""
        self._listeners.append(listener)

    def on_commit(self, records: Sequence[Recorded]) -> None:
        """The store's commit listener: apply every committed batch at once."""
        self.apply_all(records)

    def apply_all(self, records: Sequence[Recorded]) -> list[TaskChange]:
        """Apply committed events in position order; tell listeners how each task now stands."""
        self.apply_rows(list(map(_replay_row, records)))
        changed: dict[str, bool] = {}  # task id -> whether its timer finished
        for recorded in records:
            task_id = task_of(recorded.stream)
            if task_id is not None:
                finished = recorded.type == "TimerFinished"
                changed[task_id] = changed.get(task_id, False) or finished
        changes = [
            self.board.change(task_id, timer_finished=finished)
            for task_id, finished in changed.items()
        ]
        if changes:
            for listener in self._listeners:
                listener(changes)
        return changes

    def apply(self, recorded: Recorded) -> str | None:
        """Apply one event, which must come right after `position`; return the id of the
        task it changed (the task its stream is of), if any."""
        self.apply_rows([_replay_row(recorded)])
        return task_of(recorded.stream)

    def apply_rows(self, rows: Iterable[ReplayRow]) -> None:
        """Apply replayed events in order, the first right after `position` (a replay's
        fast path: `BadEvent` names the first one that cannot be applied)."""
        appliers = self._appliers
        last = self.position
        try:
            for position, stream, version, recorded_at, event in rows:
                if position != last + 1:
                    raise _gap(last, position)
                appliers[type(event)](event, stream, version, recorded_at)
                last = position
        except BadEvent:
            raise
        except CorruptLog as exc:
            raise BadEvent(last + 1, str(exc)) from exc
        finally:
            self.position = last

    def _apply_identity(self, event: IdentityEvent, stream: str, version: int, at: str) -> None:
        self.identities.apply(event, stream, version)

    def _apply_claim(self, event: GuestClaimed, stream: str, version: int, at: str) -> None:
        self.identities.apply(event, stream, version)
        self.board.transfer(event.guest_id, event.user_id)

    async def catch_up(self, store: EventStore, until: int | None = None) -> int:
        """Apply every event after `position` (up to `until`); return how many."""
        return await store.replay(self.apply_rows, after=self.position, until=until)

    # Snapshots

    def dump(self) -> bytes:
        """The model's whole state as bytes (deterministic for a given log)."""
        return _snapshot_encoder.encode(self._state())

    def dump_into(self, buffer: bytearray) -> None:
        """`dump()`, into `buffer` (resized to fit): a buffer kept from one snapshot to the
        next has its memory in place, where fresh memory for tens of megabytes costs a
        page fault every 4 KiB, while the event loop waits."""
        _snapshot_encoder.encode_into(self._state(), buffer)

    def _state(self) -> _State:
        return _State(
            position=self.position,
            tasks=self.board.tasks,
            owners=self.board.owners,
            clocks=self.board.clocks,
            identities=self.identities,
        )

    @classmethod
    def load(cls, data: bytes | bytearray) -> ReadModel:
        """A model from `dump()` bytes."""
        state = msgspec.msgpack.decode(data, type=_State)
        model = cls()
        model.position = state.position
        model.board.tasks = state.tasks
        model.board.owners = state.owners
        model.board.clocks = state.clocks
        model.board.index()
        model.identities = state.identities
        return model

    async def save_snapshot(
        self, store: EventStore, buffer: bytearray | None = None
    ) -> Snapshot | None:
        """Save the current state as the snapshot (nothing for an empty log), encoded into
        `buffer` if given: the snapshot's data is then that buffer, until its next use."""
        data = bytearray() if buffer is None else buffer
        position = self.position
        self.dump_into(data)  # with the position, before any await
        if position == 0:
            return None
        event = await store.event_at(position)
        if event is None:
            raise CorruptLog(f"the log has no event at {position}")
        snapshot = Snapshot(SNAPSHOT_NAME, position, event.hash, SNAPSHOT_FORMAT, data)
        await store.save_snapshot(snapshot)
        return snapshot

    @classmethod
    async def from_snapshot(cls, store: EventStore) -> ReadModel:
        """The newest valid snapshot, or an empty model if none can be trusted."""
        snapshot = await store.load_snapshot(SNAPSHOT_NAME)
        if snapshot is None:
            return cls()
        reason = await snapshot_problem(store, snapshot)
        if reason is None:
            try:
                model = cls.load(snapshot.data)
            except msgspec.DecodeError as exc:
                reason = f"it cannot be read ({exc})"
            else:
                if model.position == snapshot.position:
                    model.snapshot_position = snapshot.position
                    return model
                reason = f"its state is at {model.position}, not {snapshot.position}"
        logger.warning("ignoring the snapshot: %s; rebuilding from the log", reason)
        return cls()

    @classmethod
    async def build(cls, store: EventStore, until: int | None = None) -> ReadModel:
        """The model from the snapshot (when valid and not past `until`) and the log."""
        model = await cls.from_snapshot(store)
        if until is not None and model.position > until:
            model = cls()
        with replaying():
            await model.catch_up(store, until)
        return model


def _replay_row(recorded: Recorded) -> ReplayRow:
    return (
        recorded.position,
        recorded.stream,
        recorded.version,
        recorded.recorded_at,
        codec.decode(recorded),
    )


def _gap(last: int, found: int) -> BadEvent:
    return BadEvent(last + 1, f"expected event {last + 1}, found {found}: the log has a gap")


async def snapshot_problem(store: EventStore, snapshot: Snapshot) -> str | None:
    """Why `snapshot` was not taken of this log by this version, or None if it was."""
    if snapshot.format != SNAPSHOT_FORMAT:
        return f"it has format {snapshot.format}, not {SNAPSHOT_FORMAT}"
    event = await store.event_at(snapshot.position)
    if event is None:
        return f"it is at position {snapshot.position}, past the end of the log"
    if event.hash != snapshot.hash:
        return f"the log's event {snapshot.position} is not the one it was taken at"
    return None


GIL_SWITCH_SECONDS = 0.0001
"""How long a thread waits for the GIL before it asks the busy one to hand it over, during a
replay and (set by the app) all the time a server runs: the default is 5 ms."""


@contextmanager
def replaying() -> Iterator[None]:
    """The interpreter's settings for a replay, as long as it runs.

    The cycle collector is paused: a replay allocates only objects that cannot form
    cycles, by the hundred thousand, and the collector would walk them again and again
    for nothing. And the GIL changes hands sooner: the database's thread builds the next
    page while this one applies the page before, and each of the few times a page it
    needs the GIL back, it would wait a whole switch interval (5 ms by default) for
    this busy thread to let go of it.
    """
    collecting, switch_interval = gc.isenabled(), sys.getswitchinterval()
    gc.disable()
    sys.setswitchinterval(min(switch_interval, GIL_SWITCH_SECONDS))
    try:
        yield
    finally:
        sys.setswitchinterval(switch_interval)
        if collecting:
            gc.enable()


async def replay_board(records: AsyncIterable[Recorded]) -> Board:
    """A board built from some streams' events alone (say, one owner's, up to a position)."""
    board = Board()
    async for recorded in records:
        event = codec.decode(recorded)
        if isinstance(event, GuestClaimed):
            board.transfer(event.guest_id, event.user_id)
        elif not isinstance(event, IdentityEvent):
            board.apply(event, recorded.stream, recorded.version, recorded.recorded_at)
    return board
