"""Group commit, whatever the database: appends queue up, and one writer decides and
commits them a batch at a time.

Every store keeps the same promise: positions are assigned by the writer (head + 1,
in the batch's transaction), so the log is gap-free and in commit order; a stale
expected version fails its own append, never the batch; and an appender resumes
only once its batch is committed, so an acknowledged append is durable.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence

import anyio
import msgspec

from tracker.clock import Clock, format_timestamp
from tracker.errors import StorageError, VersionConflict
from tracker.events import codec
from tracker.events.records import GENESIS_HASH, Recorded, canonical_bytes, chain_hash
from tracker.events.store import Append, CommitListener
from tracker.events.types import BaseEvent

logger = logging.getLogger(__name__)
VERSIONS_KEPT = 40_000
"""How many streams' head versions the writer keeps in memory. Past that it forgets
them and looks up again those a batch goes on (one indexed query per batch; a new
stream needs none). Kept for every stream ever written, the map grew with the log:
about 100 bytes a stream, and each time it doubled, growing it held the event loop
(24 ms at 175,000 streams). Under 43,690 entries, a dict grows no larger than 65,536
slots."""
Row = tuple[int, str, int, str, int, bytes, str, str, str]
"""An event's columns as a store writes them (`Recorded`'s fields, data as bytes)."""


class Pending:
    """One `append_all` call waiting for the writer: its appends, then its result or error."""

    __slots__ = ("actor", "appends", "error", "result")

    def __init__(self, appends: Sequence[Append], actor: str) -> None:
        self.appends = appends
        self.actor = actor
        self.result: list[Recorded] = []
        self.error: Exception | None = None


class _Batch:
    """The appends that will be committed together, and the event that says they were."""

    __slots__ = ("done", "items")

    def __init__(self) -> None:
        self.items: list[Pending] = []
        self.done = anyio.Event()


class CommitQueue:
    """Appends waiting for one writer (`submit` queues and waits; `run` is the writer),
    and whoever listens to what it commits (`publish`)."""

    def __init__(self) -> None:
        self._open = _Batch()
        self._wake = anyio.Event()
        self.closing = False
        self.broken: str | None = None
        """Why appends are refused for good (the writer or a projection failed)."""
        self.listeners: list[CommitListener] = []

    def publish(self, records: Sequence[Recorded]) -> None:
        """Hand committed `records` (in position order, after those published before) to
        every listener.

        If one fails, what listens (the read model) no longer matches the log: the
        records stand, but no write is taken until a restart rebuilds it from the log.
        """
        if not records:
            return
        for listener in self.listeners:
            try:
                listener(records)
            except Exception as exc:
                logger.exception("a commit listener failed: refusing writes from now on")
                self.broken = f"a projection failed at position {records[0].position}"
                self.broken += f" ({exc!r}); restart the server"

    def fail(self, batch: Sequence[Pending], exc: Exception) -> None:
        """The writer failed on `batch` by a bug: refuse it, and every write from now on."""
        logger.exception("the writer failed", exc_info=exc)
        self.broken = f"the writer failed ({exc!r})"
        for pending in batch:
            pending.error = StorageError(self.broken)

    async def submit(self, appends: Sequence[Append], actor: str) -> list[Recorded]:
        """Queue `appends` for the next batch and wait until it is committed."""
        if self.closing:
            raise StorageError("the event store is closed")
        if self.broken is not None:
            raise StorageError(f"the event store stopped taking writes: {self.broken}")
        pending = Pending(appends, actor)
        batch = self._open
        batch.items.append(pending)
        self._wake.set()
        await batch.done.wait()
        if pending.error is not None:
            raise pending.error
        return pending.result

    def close(self) -> None:
        """Take no more appends; `run` returns once those queued are committed."""
        self.closing = True
        self._wake.set()

    async def run(self, commit: Callable[[list[Pending]], Awaitable[None]]) -> None:
        """Hand whatever has queued up since the last commit to `commit`, as one batch;
        repeat until closed and drained. `commit` fills in every result or error."""
        while True:
            if not self._open.items:
                if self.closing:
                    return
                await self._wake.wait()
                self._wake = anyio.Event()
                continue
            batch, self._open = self._open, _Batch()
            with anyio.CancelScope(shield=True):
                await commit(batch.items)
            batch.done.set()


class GroupCommitLog:
    """What every store's writing side shares: the queue of appends, the log's head and
    the tip of its chain, and the stream versions the writer decides against.

    A store subclasses it and runs `self._queue.run(...)` with its own commit, which
    moves the head on with `_advance`.
    """

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._head = 0
        self._last_hash = GENESIS_HASH
        self._versions: dict[str, int] = {}
        self._queue = CommitQueue()

    @property
    def head(self) -> int:
        """The position of the last event this process knows of (0 for an empty log)."""
        return self._head

    @property
    def last_hash(self) -> str:
        """The hash of that event: the tip of the chain."""
        return self._last_hash

    def add_listener(self, listener: CommitListener) -> None:
        self._queue.listeners.append(listener)

    async def append(
        self, stream: str, expected_version: int | None, events: Sequence[BaseEvent], actor: str
    ) -> list[Recorded]:
        return await self.append_all([Append(stream, expected_version, events)], actor)

    async def append_all(self, appends: Sequence[Append], actor: str) -> list[Recorded]:
        return await self._queue.submit(appends, actor)

    def _decide(self, batch: Sequence[Pending]) -> tuple[list[Row], list[Recorded]]:
        recorded_at = format_timestamp(self._clock())
        return decide(batch, self._head, self._last_hash, self._versions, recorded_at)

    def _advance(self, records: Sequence[Recorded]) -> None:
        """Move the head on past `records` (committed, in order) and publish them."""
        if not records:
            return
        versions = self._versions
        if len(versions) + len(records) > VERSIONS_KEPT:
            versions.clear()
        for recorded in records:
            versions[recorded.stream] = recorded.version
        self._head, self._last_hash = records[-1].position, records[-1].hash
        self._queue.publish(records)


def decide(
    batch: Sequence[Pending],
    head: int,
    last_hash: str,
    versions: Mapping[str, int],
    recorded_at: str,
) -> tuple[list[Row], list[Recorded]]:
    """Check every append against the stream heads (`versions`, with the log at `head`
    and its chain at `last_hash`); record those that are accepted.

    Sets each pending append's `result` or `error`; returns the rows to write and
    their records, in position order.
    """
    in_batch: dict[str, int] = {}
    position = head
    previous = last_hash
    rows: list[Row] = []
    records: list[Recorded] = []
    for pending in batch:
        pending.error = _first_conflict(pending.appends, in_batch, versions)
        pending.result = []
        if pending.error is not None:
            continue
        actor = pending.actor
        for append in pending.appends:
            stream = append.stream
            version = in_batch.get(stream, versions.get(stream, 0))
            for event in append.events:
                position += 1
                version += 1
                data = codec.encode(event)
                type_ = type(event).__name__
                schema = event.schema
                previous = chain_hash(
                    previous,
                    canonical_bytes(
                        position, stream, version, type_, schema, data, actor, recorded_at
                    ),
                )
                rows.append(
                    (position, stream, version, type_, schema, data, actor, recorded_at, previous)
                )
                pending.result.append(
                    Recorded(
                        position,
                        stream,
                        version,
                        type_,
                        schema,
                        msgspec.Raw(data),
                        actor,
                        recorded_at,
                        previous,
                    )
                )
            in_batch[stream] = version
        records.extend(pending.result)
    return rows, records


def _first_conflict(
    appends: Sequence[Append], in_batch: Mapping[str, int], versions: Mapping[str, int]
) -> VersionConflict | None:
    """The first append whose stream is not at its expected version, counting the
    batch's earlier appends and this call's own earlier appends to the same stream."""
    seen: dict[str, int] = {}
    for append in appends:
        stream = append.stream
        actual = seen.get(stream, in_batch.get(stream, versions.get(stream, 0)))
        if append.expected_version is not None and actual != append.expected_version:
            return VersionConflict(stream, append.expected_version, actual)
        seen[stream] = actual + len(append.events)
    return None


def unknown_streams(
    batch: Sequence[Pending], versions: Mapping[str, int], *, every_stream: bool = False
) -> set[str]:
    """The streams the batch touches whose head version is not known yet.

    A stream expected to be new (expected version 0) is left out unless
    `every_stream`: it is taken to be at version 0, and if that guess is wrong, the
    unique key on (stream, version) refuses the insert and the store decides the
    batch again with every stream looked up.
    """
    return {
        append.stream
        for pending in batch
        for append in pending.appends
        if append.stream not in versions and (every_stream or append.expected_version != 0)
    }


def fail_all(batch: Sequence[Pending], error: Exception) -> None:
    """Give every append of the batch that has no error yet `error`."""
    for pending in batch:
        pending.error = pending.error or error
