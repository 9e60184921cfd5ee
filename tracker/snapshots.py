"""Keeping the read model's snapshot fresh, so a restart replays only the log's tail."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import anyio

from tracker.errors import TrackerError
from tracker.events.records import Recorded
from tracker.events.store import EventStore
from tracker.projections.model import ReadModel

logger = logging.getLogger(__name__)

QUIET_SECONDS = 1.0
LAG_LIMIT = 10


class SnapshotKeeper:
    """Saves a snapshot every `every` events (0: only at shutdown), at a quiet moment."""

    def __init__(self, store: EventStore, model: ReadModel, *, every: int) -> None:
        self._store = store
        self._model = model
        self._every = every
        self._saved_at = model.snapshot_position
        self._due = anyio.Event()
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
        try:
            snapshot = await self._model.save_snapshot(self._store)
        except TrackerError as exc:
            logger.warning("could not save a snapshot (%s): trying once more", exc)
            try:
                snapshot = await self._model.save_snapshot(self._store)
            except TrackerError as again:
                logger.warning("could not save a snapshot: %s", again)
                return
        if snapshot is not None:
            self._saved_at = snapshot.position
            logger.info("snapshot saved at position %d", snapshot.position)
