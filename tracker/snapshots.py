"""Keeping the read model's snapshot fresh, so a restart replays only the log's tail."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import anyio
import anyio.lowlevel

from tracker.errors import TrackerError
from tracker.events.records import Recorded
from tracker.events.store import EventStore
from tracker.projections.model import ReadModel

logger = logging.getLogger(__name__)

QUIET_SECONDS = 1.0
LAG_LIMIT = 10
ROOM_STEP = 1 << 20
"""How much the encoding buffer grows at a time, between turns of the event loop."""
FIRST_GUESS_BYTES_PER_TASK = 128
"""How large a snapshot is per task ever created, until one was saved (tasks with short
titles: 130)."""

_ZEROS = memoryview(bytes(ROOM_STEP))


class SnapshotKeeper:
    """Saves a snapshot every `every` events (0: only at shutdown), at a quiet moment."""

    def __init__(self, store: EventStore, model: ReadModel, *, every: int) -> None:
        self._store = store
        self._model = model
        self._every = every
        self._saved_at = model.snapshot_position
        self._due = anyio.Event()
        self._buffer = bytearray()
        """What snapshots are encoded into, kept from one to the next (see `_make_room`)."""
        self._saved_size = 0
        self._saved_tasks = 0
        if every:
            store.add_listener(self._on_commit)

    def _on_commit(self, records: Sequence[Recorded]) -> None:
        if self._model.position - self._saved_at >= self._every:
            self._due.set()

    async def run(self) -> None:
        """Wait until a snapshot is due and the log is quiet, save it, repeat (until cancelled).

        Encoding the model holds the event loop for a moment (tens of milliseconds
        for a hundred thousand tasks), so it waits for a second without commits,
        unless the snapshot has fallen `LAG_LIMIT` intervals behind.
        """
        while True:
            await self._due.wait()
            while self._model.position - self._saved_at < self._every * LAG_LIMIT:
                seen = self._model.position
                await anyio.sleep(QUIET_SECONDS)
                if self._model.position == seen:
                    break
            await self.save()
            # Only now: the commits while it waited said the snapshot was due, and it was
            # just saved. (If saving failed, the next commit says so again.)
            self._due = anyio.Event()

    async def save(self) -> None:
        """Save a snapshot now if the model moved since the last one; failures only log."""
        if self._model.position == self._saved_at:
            return
        await self._make_room()
        tasks = self._tasks()  # as the snapshot will hold them: it is taken without a wait
        try:
            snapshot = await self._model.save_snapshot(self._store, self._buffer)
        except TrackerError as exc:
            logger.warning("could not save a snapshot (%s): trying once more", exc)
            try:
                snapshot = await self._model.save_snapshot(self._store, self._buffer)
            except TrackerError as again:
                logger.warning("could not save a snapshot: %s", again)
                return
        if snapshot is not None:
            self._saved_at, self._saved_size = snapshot.position, len(snapshot.data)
            self._saved_tasks = tasks
            logger.info("snapshot saved at position %d", snapshot.position)

    async def _make_room(self) -> None:
        """Grow the buffer to the snapshot's likely size a step at a time, the event loop
        running in between, rather than all at once inside the encoder.

        Fresh memory costs a page fault every 4 KiB: on a virtual machine, growing the
        buffer for 150,000 tasks inside the encoder held the loop for 100-200 ms.
        """
        tasks = self._tasks()
        if self._saved_tasks:
            expected = self._saved_size * tasks // self._saved_tasks
        else:
            expected = tasks * FIRST_GUESS_BYTES_PER_TASK
        while len(self._buffer) < expected:
            self._buffer += _ZEROS[: expected - len(self._buffer)]
            await anyio.lowlevel.checkpoint()

    def _tasks(self) -> int:
        """Every task ever created (deleted ones keep a line in the snapshot): what a
        snapshot's size grows with."""
        return len(self._model.board.owners)
