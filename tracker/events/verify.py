"""Checking a log event by event: gap-free positions and an unbroken hash chain.

(That every stream's versions run on without a gap is for the projections to
check: they apply every event of a stream in turn.)
"""

from __future__ import annotations

import msgspec

from tracker.errors import BadEvent
from tracker.events import codec
from tracker.events.records import (
    GENESIS_HASH,
    Recorded,
    RecordRow,
    canonical_bytes,
    chain_hash,
    record_row,
)


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

    def check(self, event: Recorded) -> None:
        """Check the next event against everything seen before it, and that its data decodes."""
        self.check_row(record_row(event))
        codec.decode(event)  # BadEvent if it cannot be read

    def follows(self, position: int, canonical: bytes, hash_: str) -> bool:
        """Whether an event, given by its position, `canonical_bytes` and hash, comes right
        after the last one checked, chained to it; if so, it is the last one checked now.
        (The quick check of an event whose columns need not be read one by one.)"""
        try:
            if position != self.position + 1 or hash_ != chain_hash(self.hash, canonical):
                return False
        except TypeError:  # not bytes: a damaged row, for `check_row` to name
            return False
        self.position, self.hash = position, hash_
        return True

    def check_row(self, row: RecordRow) -> None:
        """Check the next event's position and hash (not its data: a projection that
        applies the event decodes it anyway)."""
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
        self.position = position
        self.hash = hash_

    def report(self, bad: BadEvent | None = None) -> ChainReport:
        """Where the check stands, with the first bad event it found."""
        if bad is None:
            return ChainReport(self.position, self.hash)
        return ChainReport(self.position, self.hash, bad.position, bad.reason)
