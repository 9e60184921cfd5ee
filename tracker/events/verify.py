"""Checking a log event by event: gap-free positions, an unbroken hash chain, stream versions."""

from __future__ import annotations

from tracker.errors import CorruptLog
from tracker.events import codec
from tracker.events.records import GENESIS_HASH, Recorded, expected_hash


class BadEvent(CorruptLog):
    """The log is wrong at `position`, for `reason`."""

    def __init__(self, position: int, reason: str) -> None:
        super().__init__(f"position {position}: {reason}")
        self.position = position
        self.reason = reason


class ChainChecker:
    """Feed it a log's events in order; it raises `BadEvent` at the first one that is wrong."""

    def __init__(self) -> None:
        self.position = 0
        self.hash = GENESIS_HASH
        self._versions: dict[str, int] = {}

    def check(self, event: Recorded) -> None:
        """Check the next event against everything seen before it."""
        expected_position = self.position + 1
        if event.position != expected_position:
            raise BadEvent(
                expected_position,
                f"expected event {expected_position}, found {event.position}"
                " (an event was deleted, inserted or moved)",
            )
        if event.hash != expected_hash(self.hash, event):
            raise BadEvent(
                event.position,
                "its hash does not match its content and the event before it"
                " (an event was edited, inserted or moved)",
            )
        version = self._versions.get(event.stream, 0) + 1
        if event.version != version:
            raise BadEvent(
                event.position,
                f"stream {event.stream!r} jumps to version {event.version}, expected {version}",
            )
        try:
            codec.decode(event)
        except CorruptLog as exc:
            raise BadEvent(event.position, str(exc)) from exc
        self._versions[event.stream] = version
        self.position = event.position
        self.hash = event.hash
