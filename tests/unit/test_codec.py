"""Events to stored bytes and back: round trips, refusals, and upcasting of old schemas."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.support import record
from tracker.errors import CorruptLog
from tracker.events import codec
from tracker.events.types import (
    EVENT_TYPES,
    BaseEvent,
    GuestClaimed,
    GuestStarted,
    SessionRevoked,
    TaskCreated,
    TaskDeleted,
    TaskUpdated,
    TimerFinished,
    TimerPaused,
    TimerResumed,
    TimerStarted,
    TimerStopped,
    UserRegistered,
)

ONE_OF_EACH: list[BaseEvent] = [
    GuestStarted(principal_id="g1"),
    UserRegistered(principal_id="u1", username="Ada", password_hash="$2b$04$abc"),
    GuestClaimed(guest_id="g1", user_id="u1"),
    SessionRevoked(jti="j1", expires_at=1_800_000_000),
    TaskCreated(task_id="t1", owner="g1", title="Buy milk", notes="2 litres"),
    TaskCreated(task_id="t2", owner="g1", title="No notes"),
    TaskUpdated(),
    TaskUpdated(title="New"),
    TaskUpdated(notes="", done=False),
    TaskUpdated(title="All", notes="of them", done=True),
    TaskDeleted(),
    TimerStarted(run="r1", duration_seconds=60, at=1_800_000_000.123, ends_at=1_800_000_060.123),
    TimerPaused(run="r1", at=1_800_000_010.5),
    TimerResumed(run="r1", at=1_800_000_020.0, ends_at=1_800_000_069.623),
    TimerStopped(run="r1", at=1_800_000_030.0),
    TimerFinished(run="r2", finished_at=1_800_000_090.0),
]


def test_the_examples_cover_every_event_type() -> None:
    assert {type(event).__name__ for event in ONE_OF_EACH} == set(EVENT_TYPES)


@pytest.mark.parametrize("event", ONE_OF_EACH, ids=repr)
def test_every_event_type_round_trips_through_a_stored_record(event: BaseEvent) -> None:
    assert codec.decode(record(event)) == event


@pytest.mark.parametrize(
    ("event", "stored"),
    [
        (TaskDeleted(), b'{"type":"TaskDeleted"}'),
        (TaskUpdated(done=True), b'{"type":"TaskUpdated","done":true}'),
        (GuestStarted(principal_id="g1"), b'{"type":"GuestStarted","principal_id":"g1"}'),
    ],
)
def test_events_are_stored_as_compact_json_with_their_type_tag(
    event: BaseEvent, stored: bytes
) -> None:
    assert codec.encode(event) == stored


def test_unchanged_fields_are_absent_from_a_stored_update() -> None:
    assert b"title" not in codec.encode(TaskUpdated(notes="n"))


@settings(max_examples=50, deadline=None, database=None)
@given(title=st.text(), notes=st.text(), done=st.booleans())
def test_arbitrary_titles_and_notes_round_trip(title: str, notes: str, done: bool) -> None:
    created = TaskCreated(task_id="t1", owner="o", title=title, notes=notes)
    updated = TaskUpdated(title=title, notes=notes, done=done)

    assert codec.decode(record(created)) == created
    assert codec.decode(record(updated)) == updated


def test_an_unknown_type_is_a_corrupt_log() -> None:
    with pytest.raises(CorruptLog, match="unknown type 'TaskArchived'"):
        codec.decode(record(TaskDeleted(), type_="TaskArchived"))


def test_a_schema_newer_than_this_version_reads_is_a_corrupt_log() -> None:
    with pytest.raises(CorruptLog, match="newer"):
        codec.decode(record(TaskDeleted(), schema=TaskDeleted.schema + 1))


def test_an_older_schema_without_an_upcaster_is_a_corrupt_log(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(TaskDeleted, "schema", 2)

    with pytest.raises(CorruptLog, match="no upcaster for TaskDeleted schema 1"):
        codec.decode(record(TaskDeleted(), schema=1))


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b'{"type":"TaskCreated"', id="truncated-json"),
        pytest.param(b'{"type":"TaskCreated","task_id":"t1"}', id="missing-fields"),
        pytest.param(b'{"type":"GuestStarted","principal_id":7}', id="wrong-field-type"),
        pytest.param(b'{"type":"TaskNope"}', id="unknown-tag-in-data"),
        pytest.param(b"[]", id="not-an-object"),
    ],
)
def test_data_that_does_not_decode_is_a_corrupt_log(data: bytes) -> None:
    broken = msgspec.structs.replace(record(TaskDeleted()), data=msgspec.Raw(data))

    with pytest.raises(CorruptLog):
        codec.decode(broken)


def test_a_record_whose_type_disagrees_with_its_data_is_a_corrupt_log() -> None:
    with pytest.raises(CorruptLog):
        codec.decode(record(TaskDeleted(), type_="GuestStarted"))


# Upcasting: pretend TaskCreated is at schema 3, where schema 1 called the title
# "name" and schema 2 had no notes yet.


def _rename_name_to_title(data: dict[str, Any]) -> dict[str, Any]:
    data = dict(data)
    data["title"] = data.pop("name")
    return data


def _add_empty_notes(data: dict[str, Any]) -> dict[str, Any]:
    return data | {"notes": data.get("notes", "(added by upcaster)")}


@pytest.fixture
def task_created_at_schema_3(monkeypatch: pytest.MonkeyPatch) -> None:
    """TaskCreated at schema 3, with upcasters from 1 and 2; monkeypatch undoes all of it."""
    monkeypatch.setattr(TaskCreated, "schema", 3)
    monkeypatch.setitem(codec.UPCASTERS, ("TaskCreated", 1), _rename_name_to_title)
    monkeypatch.setitem(codec.UPCASTERS, ("TaskCreated", 2), _add_empty_notes)


def _stored(schema: int, data: dict[str, Any]) -> Any:
    raw = msgspec.json.encode({"type": "TaskCreated", **data})
    return msgspec.structs.replace(
        record(TaskDeleted(), type_="TaskCreated", schema=schema), data=msgspec.Raw(raw)
    )


@pytest.mark.usefixtures("task_created_at_schema_3")
def test_an_old_event_is_upcast_through_every_later_schema() -> None:
    old = _stored(1, {"task_id": "t1", "owner": "o", "name": "Old title"})

    assert codec.decode(old) == TaskCreated(
        task_id="t1", owner="o", title="Old title", notes="(added by upcaster)"
    )


@pytest.mark.usefixtures("task_created_at_schema_3")
def test_upcasting_starts_at_the_stored_schema() -> None:
    middle = _stored(2, {"task_id": "t1", "owner": "o", "title": "T"})

    assert codec.decode(middle) == TaskCreated(
        task_id="t1", owner="o", title="T", notes="(added by upcaster)"
    )


@pytest.mark.usefixtures("task_created_at_schema_3")
def test_an_event_at_the_current_schema_is_not_upcast() -> None:
    current = _stored(3, {"task_id": "t1", "owner": "o", "title": "T", "notes": "n"})

    assert codec.decode(current) == TaskCreated(task_id="t1", owner="o", title="T", notes="n")


@pytest.mark.usefixtures("task_created_at_schema_3")
def test_an_upcast_result_that_does_not_validate_is_a_corrupt_log() -> None:
    old = _stored(1, {"task_id": "t1", "name": "no owner"})

    with pytest.raises(CorruptLog, match="cannot be read"):
        codec.decode(old)
