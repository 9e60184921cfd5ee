"""What every event store offers: the small protocol the rest of Tracker is written against.

SQLite is the embedded store today; a server database is another implementation
of the same protocol, not a rewrite.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Protocol

import anyio
import msgspec
from anyio.abc import TaskStatus

from tracker.events.reading import ReplayCallback
from tracker.events.records import Recorded
from tracker.events.types import BaseEvent
from tracker.events.verify import ChainReport

CommitListener = Callable[[Sequence[Recorded]], None]
"""Called with every committed batch, in position order, before its appenders resume."""


class Append(msgspec.Struct, frozen=True):
    """Events for one stream, to be written only if the stream is at `expected_version`.

    `expected_version` 0 means the stream must be new; None skips the check.
    """

    stream: str
    expected_version: int | None
    events: Sequence[BaseEvent]


class Snapshot(msgspec.Struct, frozen=True):
    """A cached projection state, valid only for the log whose event `position` has `hash`."""

    name: str
    position: int
    hash: str
    format: int
    data: bytes | bytearray
    """Bytes as loaded; saved, it may be the buffer a model encodes its snapshots into."""


class EventStore(Protocol):
    """An append-only log of events with a gap-free global position."""

    @property
    def head(self) -> int:
        """The position of the last committed event (0 for an empty log)."""
        ...

    def add_listener(self, listener: CommitListener) -> None:
        """Call `listener` with every batch committed from now on."""
        ...

    async def follow(self) -> None:
        """Call the listeners with what other processes commit to the log, for ever
        (until cancelled); a store written by one process only has nothing to do."""
        ...

    async def catch_up(self) -> int:
        """Call the listeners with whatever other processes committed that they have not
        seen yet, now; return how many events that was (0 for a store written by one
        process only)."""
        ...

    async def lead(
        self,
        work: Callable[[], Awaitable[None]],
        *,
        task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Run `work` while this process leads the processes that share the log (it
        alone, say, finishes timers), for ever (until cancelled). `task_status` is told
        once it is known whether this process leads now (and `work` is about to begin)."""
        ...

    async def append(
        self, stream: str, expected_version: int | None, events: Sequence[BaseEvent], actor: str
    ) -> list[Recorded]:
        """Append to one stream atomically; `VersionConflict` if it moved on."""
        ...

    async def append_all(self, appends: Sequence[Append], actor: str) -> list[Recorded]:
        """Append to several streams in one transaction: all are written, or none."""
        ...

    def read_all(
        self,
        after: int = 0,
        until: int | None = None,
        streams: Sequence[str] | None = None,
        *,
        types: Sequence[str] | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[Recorded]:
        """Every event after `after` (up to `until`; of `streams` and `types` only; at most
        `limit` of them), in order, in constant memory."""
        ...

    async def replay(
        self, callback: ReplayCallback, after: int = 0, until: int | None = None
    ) -> int:
        """Hand every event after `after` (up to `until`) to `callback`, a page at a time,
        in order, decoded as the `ReplayRow` a projection needs; return how many."""
        ...

    async def check_chain(self, until: int) -> ChainReport:
        """Check gap-free positions, the hash chain and stream versions up to `until`."""
        ...

    async def read_stream(self, stream: str) -> list[Recorded]:
        """One stream's events, in version order."""
        ...

    async def event_at(self, position: int) -> Recorded | None:
        """The event at `position`, if there is one."""
        ...

    async def save_snapshot(self, snapshot: Snapshot) -> None:
        """Keep `snapshot`, replacing any earlier one of the same name."""
        ...

    async def load_snapshot(self, name: str) -> Snapshot | None:
        """The snapshot saved under `name`, if any."""
        ...
