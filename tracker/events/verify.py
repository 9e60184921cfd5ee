"""Checking a log event by event: gap-free positions, an unbroken hash chain, stream versions."""

from __future__ import annotations

import msgspec

from tracker.errors import CorruptLog
from tracker.events import codec
from tracker.events.records import (
    GENESIS_HASH,
    Recorded,
    RecordRow,
    canonical_bytes,
    chain_hash,
    record_row,
)


class BadEvent(CorruptLog):
    """The log is wrong at `position`, for `reason`."""

    def __init__(self, position: int, reason: str) -> None:
        super().__init__(f"position {position}: {reason}")
        self.position = position
        self.reason = reason


class ChainReport(msgspec.Struct, frozen=True):
    """How far a chain check got (`position`, `hash`), and its first bad event, if any."""

    position: int
    hash: str
    bad_position: int | None = None
    reason: str = ""

    def problem(self) -> BadEvent | None:
        """The first bad event as an error, or None if the chain is sound."""
        if self.bad_position is None:
            return None
        return BadEvent(self.bad_position, self.reason)


class ChainChecker:
    """Feed it a log's events in order; it raises `BadEvent` at the first one that is wrong."""

    def __init__(self) -> None:
        self.position = 0
        self.hash = GENESIS_HASH
        self._versions: dict[str, int] = {}

    def check(self, event: Recorded) -> None:
        """Check the next event against everything seen before it, and that its data decodes."""
        self.check_row(record_row(event))
        try:
            codec.decode(event)
        except CorruptLog as exc:
            raise BadEvent(event.position, str(exc)) from exc

    def check_row(self, row: RecordRow) -> None:
        """Check the next event's position, hash and stream version (not its data: a
        projection that applies the event decodes it anyway)."""
        position, stream, version, type_, schema, data, actor, recorded_at, hash_ = row
        expected_position = self.position + 1
        if position != expected_position:
            raise BadEvent(
                expected_position,
                f"expected event {expected_position}, found {position}"
                " (an event was deleted, inserted or moved)",
            )
        canonical = canonical_bytes(
            position, stream, version, type_, schema, data, actor, recorded_at
        )
        if hash_ != chain_hash(self.hash, canonical):
            raise BadEvent(
                position,
                "its hash does not match its content and the event before it"
                " (an event was edited, inserted or moved)",
            )
        expected_version = self._versions.get(stream, 0) + 1
        if version != expected_version:
            raise BadEvent(
                position,
                f"stream {stream!r} jumps to version {version}, expected {expected_version}",
            )
        self._versions[stream] = version
        self.position = position
        self.hash = hash_

    def report(self, bad: BadEvent | None = None) -> ChainReport:
        """Where the check stands, with the first bad event it found."""
        if bad is None:
            return ChainReport(self.position, self.hash)
        return ChainReport(self.position, self.hash, bad.position, bad.reason)
