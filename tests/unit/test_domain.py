"""Commands in, events out: the decisions of `tracker.domain`, and the limits its commands keep.

Commands are decoded from JSON the way the HTTP layer decodes request bodies.
msgspec enforces types, unknown fields and declared lengths (`ValidationError`);
the rules it cannot express come out of `__post_init__` as `Invalid`.
"""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from tracker.domain import (
    NOTES_MAX,
    TITLE_MAX,
    CreateTask,
    UpdateTask,
    create_task,
    delete_task,
    update_task,
)
from tracker.errors import Invalid, NotFound, VersionConflict
from tracker.events.types import TaskCreated, TaskDeleted, TaskUpdated
from tracker.projections.board import Task

NOW = "2026-01-01T00:00:00.000Z"


def a_task(**changes: Any) -> Task:
    fields: dict[str, Any] = {
        "id": "t1",
        "title": "Buy milk",
        "notes": "semi-skimmed",
        "done": False,
        "version": 3,
        "created_at": NOW,
        "updated_at": NOW,
    }
    return Task(**(fields | changes))


def create(body: Any) -> CreateTask:
    return msgspec.json.decode(msgspec.json.encode(body), type=CreateTask)


def update(body: Any) -> UpdateTask:
    return msgspec.json.decode(msgspec.json.encode(body), type=UpdateTask)


# Creating


def test_creating_a_task_records_task_created_for_its_owner() -> None:
    events = create_task("t1", "alice", create({"title": "Buy milk", "notes": "2 litres"}))

    assert events == [TaskCreated(task_id="t1", owner="alice", title="Buy milk", notes="2 litres")]


def test_notes_default_to_empty() -> None:
    assert create({"title": "Buy milk"}).notes == ""


@pytest.mark.parametrize(
    ("title", "stored"),
    [
        ("a", "a"),
        ("  padded  ", "padded"),
        ("\t\n tabs and newlines around \r\n", "tabs and newlines around"),
        ("inner   spaces stay", "inner   spaces stay"),
        ("x" * TITLE_MAX, "x" * TITLE_MAX),
        ("   " + "x" * TITLE_MAX + "   ", "x" * TITLE_MAX),
        ("é" * TITLE_MAX, "é" * TITLE_MAX),
        ("🦆 ducks", "🦆 ducks"),
    ],
)
def test_a_valid_title_is_stored_trimmed(title: str, stored: str) -> None:
    assert create({"title": title}).title == stored


@pytest.mark.parametrize(
    "title",
    [
        pytest.param("", id="empty"),
        pytest.param("   ", id="only-spaces"),
        pytest.param("\t\n", id="only-white-space"),
        pytest.param("x" * (TITLE_MAX + 1), id="201-characters"),
        pytest.param(" " + "x" * (TITLE_MAX + 1) + " ", id="201-after-trimming"),
        pytest.param("a\x00b", id="nul"),
        pytest.param("a\tb", id="inner-tab"),
        pytest.param("a\nb", id="inner-newline"),
        pytest.param("a\rb", id="inner-carriage-return"),
        pytest.param("a\x1bb", id="escape"),
        pytest.param("a\x7fb", id="delete"),
    ],
)
def test_an_invalid_title_is_refused(title: str) -> None:
    with pytest.raises(Invalid) as refused:
        create({"title": title})

    assert refused.value.field == "title"


@pytest.mark.parametrize("control", ["\x80", "\x85", "\x9b"])
def test_a_title_with_a_c1_control_character_is_refused(control: str) -> None:
    with pytest.raises(Invalid):
        create({"title": f"a{control}b"})


@pytest.mark.parametrize(
    "notes",
    [
        pytest.param("", id="empty"),
        pytest.param("x" * NOTES_MAX, id="10000-characters"),
        pytest.param("line one\nline two", id="newline"),
        pytest.param("line one\r\nline two", id="crlf"),
        pytest.param("col\tcol", id="tab"),
        pytest.param("  kept as written  ", id="not-trimmed"),
    ],
)
def test_valid_notes_are_kept_exactly(notes: str) -> None:
    assert create({"title": "t", "notes": notes}).notes == notes
    assert update({"notes": notes}).notes == notes


@pytest.mark.parametrize("control", ["\x00", "\x07", "\x0b", "\x0c", "\x1b", "\x7f"])
def test_notes_with_other_control_characters_are_refused(control: str) -> None:
    with pytest.raises(Invalid) as refused:
        create({"title": "t", "notes": f"a{control}b"})

    assert refused.value.field == "notes"


@pytest.mark.parametrize("decode", [create, update], ids=["create", "update"])
def test_notes_over_10000_characters_are_refused_by_the_decoder(decode: Any) -> None:
    body = {"title": "t", "notes": "x" * (NOTES_MAX + 1)}
    with pytest.raises(msgspec.ValidationError, match=r"\$\.notes"):
        decode(body)


@pytest.mark.parametrize(
    ("decode", "body", "problem"),
    [
        (create, {}, "missing required field `title`"),
        (create, {"title": "t", "owner": "mallory"}, "unknown field `owner`"),
        (create, {"title": 5}, r"\$\.title"),
        (create, {"title": None}, r"\$\.title"),
        (create, {"title": "t", "notes": None}, r"\$\.notes"),
        (create, ["t"], "Expected `object`"),
        (update, {"version": 9}, "unknown field `version`"),
        (update, {"title": None}, r"\$\.title"),
        (update, {"done": "yes"}, r"\$\.done"),
        (update, {"done": 1}, r"\$\.done"),
    ],
)
def test_malformed_commands_are_refused_by_the_decoder(
    decode: Any, body: Any, problem: str
) -> None:
    with pytest.raises(msgspec.ValidationError, match=problem):
        decode(body)


def test_the_title_rules_apply_to_updates_too() -> None:
    assert update({"title": "  New  "}).title == "New"
    with pytest.raises(Invalid):
        update({"title": "   "})


def test_an_empty_update_leaves_every_field_unset() -> None:
    command = update({})

    assert command.title is msgspec.UNSET
    assert command.notes is msgspec.UNSET
    assert command.done is msgspec.UNSET


# Updating


@pytest.mark.parametrize(
    ("body", "recorded"),
    [
        ({"title": "Buy oat milk"}, TaskUpdated(title="Buy oat milk")),
        ({"notes": ""}, TaskUpdated(notes="")),
        ({"done": True}, TaskUpdated(done=True)),
        (
            {"title": "Buy oat milk", "notes": "barista", "done": True},
            TaskUpdated(title="Buy oat milk", notes="barista", done=True),
        ),
        ({"title": "Buy milk", "done": True}, TaskUpdated(done=True)),
        ({"title": "  Buy milk ", "notes": "whole"}, TaskUpdated(notes="whole")),
    ],
)
def test_an_update_records_only_the_fields_that_change(
    body: dict[str, Any], recorded: TaskUpdated
) -> None:
    assert update_task(a_task(), update(body)) == [recorded]


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"title": "Buy milk"},
        {"title": "  Buy milk  "},
        {"notes": "semi-skimmed", "done": False},
    ],
)
def test_an_update_that_changes_nothing_records_nothing(body: dict[str, Any]) -> None:
    assert update_task(a_task(), update(body)) == []


def test_an_update_at_the_expected_version_is_decided() -> None:
    assert update_task(a_task(version=3), update({"done": True}), 3) == [TaskUpdated(done=True)]


def test_an_update_at_a_stale_version_is_a_version_conflict() -> None:
    with pytest.raises(VersionConflict) as conflict:
        update_task(a_task(version=3), update({"done": True}), 2)

    assert (conflict.value.stream, conflict.value.expected, conflict.value.actual) == (
        "task-t1",
        2,
        3,
    )


def test_a_stale_version_is_refused_even_when_nothing_would_change() -> None:
    with pytest.raises(VersionConflict):
        update_task(a_task(version=3), update({}), 1)


def test_updating_a_missing_task_is_not_found() -> None:
    with pytest.raises(NotFound):
        update_task(None, update({"done": True}))


def test_updating_a_missing_task_is_not_found_whatever_the_expected_version() -> None:
    with pytest.raises(NotFound):
        update_task(None, update({"done": True}), 1)


# Deleting


def test_deleting_a_task_records_task_deleted() -> None:
    assert delete_task(a_task()) == [TaskDeleted()]


def test_deleting_at_the_expected_version_is_decided() -> None:
    assert delete_task(a_task(version=3), 3) == [TaskDeleted()]


def test_deleting_at_a_stale_version_is_a_version_conflict() -> None:
    with pytest.raises(VersionConflict):
        delete_task(a_task(version=3), 4)


def test_deleting_a_missing_task_is_not_found() -> None:
    with pytest.raises(NotFound):
        delete_task(None)
