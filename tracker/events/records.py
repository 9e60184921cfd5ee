"""The envelope of a stored event, and how its hash chains it to the one before."""

from __future__ import annotations

import hashlib

import msgspec

from tracker.events.types import Event

GENESIS_HASH = "0" * 64
"""The `previous hash` of the first event in a log."""


class Recorded(msgspec.Struct, frozen=True, gc=False):
    """One event of the log: its global position, its stream and version in it, its
    type and schema version, its data, who caused it, when, and its chained hash."""

    # `data` keeps the exact JSON bytes that were written: serving an event never
    # re-encodes it, and its hash stays checkable.

    position: int
    stream: str
    version: int
    type: str
    schema: int
    data: msgspec.Raw
    actor: str
    recorded_at: str
    hash: str


RecordRow = tuple[int, str, int, str, int, bytes, str, str, str]
"""Every column of an event, in `Recorded`'s field order, without building a `Recorded`."""

LeanRow = tuple[int, str, int, str, int, bytes, str]
"""What rebuilding state needs of a stored event, and nothing more: position, stream,
version, type, schema, data (the stored JSON) and recorded_at (no actor, no hash)."""

ReplayRow = tuple[int, str, int, str, Event]
"""A `LeanRow` with its data decoded: position, stream, version, recorded_at and the
event (whose class is its type; upcast to the current schema)."""


_canonical_encoder = msgspec.json.Encoder()


def canonical_bytes(
    position: int,
    stream: str,
    version: int,
    type_: str,
    schema: int,
    data: bytes,
    actor: str,
    recorded_at: str,
) -> bytes:
    """The bytes an event's hash covers: every field but the hash, in a fixed order."""
    return _canonical_encoder.encode(
        (position, stream, version, type_, schema, actor, recorded_at, msgspec.Raw(data))
    )


def chain_hash(previous_hash: str, canonical: bytes) -> str:
    """Hex SHA-256 over the previous event's hash and this event's canonical bytes."""
    return hashlib.sha256(previous_hash.encode("ascii") + canonical).hexdigest()


def record_row(record: Recorded) -> RecordRow:
    """Every column of `record`, in order (as the store writes it and the chain covers it)."""
    return (
        record.position,
        record.stream,
        record.version,
        record.type,
        record.schema,
        bytes(record.data),
        record.actor,
        record.recorded_at,
        record.hash,
    )


def expected_hash(previous_hash: str, event: Recorded) -> str:
    """The hash `event` must carry if it follows an event whose hash is `previous_hash`."""
    return chain_hash(previous_hash, canonical_bytes(*record_row(event)[:-1]))
