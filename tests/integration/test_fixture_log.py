"""Logs written by earlier versions stay readable: every fixture in tests/fixtures/ is
imported, verified, replayed and served by today's code.

`log-v1.ndjson` was written (by `python -m tests.fixtures.make_log`) with schema 1 of
every event type. When an event type changes, its upcaster must keep this test green;
the fixture itself is never regenerated. (Its one password hash is of a throwaway
fixture password, at bcrypt's lowest cost.)
"""

from __future__ import annotations

import json
from pathlib import Path

import msgspec
import pytest

from tests.integration.conftest import ServerFactory, Store, run_cli
from tracker.events import codec
from tracker.events.records import Recorded
from tracker.events.types import EVENT_TYPES

FIXTURES = Path(__file__).parent.parent / "fixtures"
LOGS = sorted(FIXTURES.glob("log-v*.ndjson"))


@pytest.fixture(params=LOGS, ids=[log.stem for log in LOGS])
def fixture_log(request: pytest.FixtureRequest) -> Path:
    path: Path = request.param
    return path


@pytest.fixture
def restored(fixture_log: Path, start_server: ServerFactory) -> Store:
    """The fixture imported into a new store (of each kind)."""
    store = start_server.new_store("restored")
    result = run_cli("import", str(fixture_log), db=store)
    assert result.returncode == 0, result.stderr
    return store


def events_of(fixture_log: Path) -> list[bytes]:
    lines = fixture_log.read_bytes().splitlines()
    return lines[1:-1]  # without the header and the end line


def test_the_fixture_holds_every_event_type(fixture_log: Path) -> None:
    types = {json.loads(line)["type"] for line in events_of(fixture_log)}
    assert types == set(EVENT_TYPES)


def test_every_event_of_the_fixture_decodes_through_the_codec(fixture_log: Path) -> None:
    for line in events_of(fixture_log):
        recorded = msgspec.json.decode(line, type=Recorded)
        event = codec.decode(recorded)
        assert type(event).__name__ == recorded.type


def test_the_fixture_imports_verifies_and_prints_back_byte_for_byte(
    fixture_log: Path, restored: Store
) -> None:
    verified = run_cli("verify", db=restored)
    assert verified.returncode == 0, verified.stderr
    assert verified.stdout.startswith(b"ok: ")

    printed = run_cli("events", db=restored)
    assert printed.stdout.splitlines() == events_of(fixture_log)


@pytest.mark.parametrize("until", [None, 12])
def test_the_fixture_replays_to_the_state_it_was_written_with(
    fixture_log: Path, restored: Store, until: int | None
) -> None:
    suffix = "" if until is None else f"-{until}"
    expected = fixture_log.with_name(f"{fixture_log.stem}.replay{suffix}.json").read_bytes()
    args = ["replay"] if until is None else ["replay", "--until", str(until)]

    replayed = run_cli(*args, db=restored)

    assert replayed.returncode == 0, replayed.stderr
    assert json.loads(replayed.stdout) == json.loads(expected)


def test_a_server_starts_on_the_fixture_and_finishes_its_overdue_timer(
    fixture_log: Path, restored: Store, start_server: ServerFactory
) -> None:
    written = [json.loads(line) for line in events_of(fixture_log)]
    last_start = [event for event in written if event["type"] == "TimerStarted"][-1]

    start_server(restored).stop()

    finishes = [
        event["data"]
        for event in map(json.loads, run_cli("events", db=restored).stdout.splitlines())
        if event["type"] == "TimerFinished" and event["data"]["run"] == last_start["data"]["run"]
    ]
    # The fixture's last run fell due long ago: finished once, at its due time.
    assert [finish["finished_at"] for finish in finishes] == [last_start["data"]["ends_at"]]
    assert run_cli("verify", db=restored).returncode == 0
