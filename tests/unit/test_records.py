"""The hash chain: every event's hash covers the hash before it and the event's canonical bytes."""

from __future__ import annotations

import hashlib
from typing import Any

import msgspec
import pytest

from tests.unit.support import record
from tracker.events.records import (
    GENESIS_HASH,
    Recorded,
    canonical_bytes,
    chain_hash,
    expected_hash,
)
from tracker.events.types import TaskCreated

PREVIOUS = "ab" * 32


def an_event() -> Recorded:
    return record(
        TaskCreated(task_id="t1", owner="g1", title="Buy milk"),
        position=7,
        stream="task-t1",
        version=1,
        actor="g1",
        recorded_at="2026-01-01T00:00:00.123Z",
        previous_hash=PREVIOUS,
    )


def test_the_first_event_follows_a_hash_of_64_zeros() -> None:
    assert GENESIS_HASH == "0" * 64


def test_canonical_bytes_are_every_field_but_the_hash_as_one_json_array() -> None:
    canonical = canonical_bytes(
        7, "task-t1", 1, "TaskDeleted", 1, b'{"type":"TaskDeleted"}', "g1", "T"
    )

    assert canonical == b'[7,"task-t1",1,"TaskDeleted",1,"g1","T",{"type":"TaskDeleted"}]'


def test_the_stored_data_bytes_are_hashed_as_written() -> None:
    spaced = canonical_bytes(1, "s", 1, "TaskDeleted", 1, b'{ "type" : "TaskDeleted" }', "a", "T")

    assert spaced.endswith(b'{ "type" : "TaskDeleted" }]')


def test_the_hash_is_hex_sha256_of_the_previous_hash_then_the_canonical_bytes() -> None:
    event = an_event()
    canonical = canonical_bytes(
        event.position,
        event.stream,
        event.version,
        event.type,
        event.schema,
        bytes(event.data),
        event.actor,
        event.recorded_at,
    )

    assert (
        expected_hash(PREVIOUS, event) == hashlib.sha256(PREVIOUS.encode() + canonical).hexdigest()
    )
    assert expected_hash(PREVIOUS, event) == chain_hash(PREVIOUS, canonical) == event.hash


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("position", 8),
        ("stream", "task-t2"),
        ("version", 2),
        ("type", "TaskUpdated"),
        ("schema", 2),
        ("data", msgspec.Raw(b'{"type":"TaskCreated","task_id":"t1","owner":"g1","title":"X"}')),
        ("actor", "mallory"),
        ("recorded_at", "2026-01-01T00:00:00.124Z"),
    ],
)
def test_changing_any_field_changes_the_hash(field: str, value: Any) -> None:
    event = an_event()
    edited = msgspec.structs.replace(event, **{field: value})

    assert expected_hash(PREVIOUS, edited) != event.hash


def test_a_different_previous_hash_changes_the_hash() -> None:
    assert expected_hash(GENESIS_HASH, an_event()) != an_event().hash


def test_the_stored_hash_is_not_part_of_what_it_covers() -> None:
    event = an_event()
    rehashed = msgspec.structs.replace(event, hash="f" * 64)

    assert expected_hash(PREVIOUS, rehashed) == event.hash
