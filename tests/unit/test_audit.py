"""What the audit trail shows: secrets redacted, everything else untouched; query limits."""

from __future__ import annotations

import msgspec
import pytest

from tests.unit.support import record
from tracker.audit import MAX_LIMIT, REDACTED, EventQuery, redacted
from tracker.errors import BadRequest
from tracker.events.types import TaskCreated, UserRegistered


def test_a_password_hash_is_redacted_and_the_rest_kept() -> None:
    event = UserRegistered(principal_id="u1", username="ada", password_hash="$2b$12$secret")
    original = record(event, stream="username-ada")

    shown = redacted(original)

    data = msgspec.json.decode(shown.data)
    assert data == {"type": "UserRegistered", "principal_id": "u1", "username": "ada",
                    "password_hash": REDACTED}  # fmt: skip
    assert msgspec.structs.replace(shown, data=original.data) == original


def test_an_event_without_secrets_is_shown_as_stored() -> None:
    original = record(TaskCreated(task_id="t1", owner="u1", title="hello"))
    assert redacted(original) is original


@pytest.mark.parametrize(
    "fields",
    [{"after": -1}, {"limit": 0}, {"limit": MAX_LIMIT + 1}, {"type": "Nonsense"}],
)
def test_a_query_out_of_bounds_is_a_bad_request(fields: dict[str, object]) -> None:
    with pytest.raises(BadRequest):
        EventQuery(**fields)  # type: ignore[arg-type]


def test_the_query_bounds_are_inclusive() -> None:
    EventQuery(after=0, limit=1, type="TimerFinished")
    EventQuery(limit=MAX_LIMIT)
