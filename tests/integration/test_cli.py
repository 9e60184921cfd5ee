"""The `tracker` command for real: events, replay, verify, export and import on a real log.

The log is a stopped server's store, so most of these run on both stores; the tests that
edit the SQLite file behind the command's back, or hand it files that are no log, are
SQLite's alone.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import sqlite3
import subprocess
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import msgspec
import pytest
from msgspec.structs import replace

from tests.integration.conftest import (
    ServerFactory,
    Store,
    assert_nothing_written,
    cli_events,
    cli_invocation,
    run_cli,
)
from tracker.events.records import canonical_bytes, chain_hash
from tracker.events.snapshot_files import delete_snapshots, read_snapshot, write_snapshot
from tracker.projections.model import SNAPSHOT_NAME

EVENT_FIELDS = {"position", "stream", "version", "type", "data", "actor", "recorded_at", "hash"}


@dataclass
class Log:
    """A populated, stopped server's store and what the API said while it ran."""

    store: Store
    owners: list[str]
    tokens: dict[str, str]
    histories: dict[str, list[dict[str, Any]]]
    """task id -> the API's history of it."""
    as_of: dict[int, dict[str, list[dict[str, Any]]]] = field(default_factory=dict)
    """position -> owner -> the API's `GET /api/tasks?as_of=position` tasks."""
    final: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    head: int = 0


@pytest.fixture(scope="module")
def log(module_servers: ServerFactory) -> Log:
    """Two guests' tasks created, changed and deleted on a real server, which is then stopped."""
    server = module_servers()
    alice, bob = server.guest(), server.guest()
    tasks: list[tuple[Any, str]] = []
    for guest, count in ((alice, 3), (bob, 2)):
        for n in range(count):
            time.sleep(0.005)  # distinct millisecond timestamps, for --until TIME
            tasks.append((guest, guest.create(f"{guest.id} task {n}", notes=f"n{n}")["id"]))
    for guest, task_id in tasks[::2]:
        time.sleep(0.005)
        guest.client.patch(f"/api/tasks/{task_id}", json={"done": True, "title": "done it"})
    guest, task_id = tasks[1]
    time.sleep(0.005)
    assert guest.client.delete(f"/api/tasks/{task_id}").status_code == 204
    time.sleep(0.005)
    alice.client.patch(f"/api/tasks/{tasks[0][1]}", json={"notes": "final words"})

    histories = {
        task_id: guest.client.get(f"/api/tasks/{task_id}/history").json()["events"]
        for guest, task_id in tasks
    }
    head = alice.client.get("/api/tasks").json()["position"]
    result = Log(
        store=server.store,
        owners=[alice.id, bob.id],
        tokens={alice.id: alice.token, bob.id: bob.token},
        histories=histories,
        head=head,
    )
    for position in range(head + 1):
        result.as_of[position] = {
            guest.id: guest.client.get("/api/tasks", params={"as_of": position}).json()["tasks"]
            for guest in (alice, bob)
        }
    result.final = {
        guest.id: guest.client.get("/api/tasks").json()["tasks"] for guest in (alice, bob)
    }
    assert server.stop() == 0
    return result


def copy_db(log: Log, target: Path) -> Path:
    """A copy of the stopped server's SQLite file (and its WAL, if any is left, and its
    snapshot)."""
    assert log.store.kind == "sqlite", "copy_db is for sqlite_only tests"
    target.mkdir(parents=True, exist_ok=True)
    for suffix in ("", "-wal", f"-snapshot-{SNAPSHOT_NAME}"):
        source = log.store.db.with_name(log.store.db.name + suffix)
        if source.exists():
            shutil.copy(source, target / f"tracker.db{suffix}")
    return target / "tracker.db"


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def events_of(log: Log) -> list[dict[str, Any]]:
    return cli_events(log.store)


def fails_at(result: Any, position: int) -> None:
    """`tracker verify` exited 1 and named `position` as the first bad one."""
    stderr = result.stderr.decode()
    assert result.returncode == 1, (result.returncode, result.stdout, stderr)
    assert re.search(rf"\bposition {position}\b", stderr), stderr


# events


def test_events_prints_the_whole_log_as_ndjson(log: Log) -> None:
    result = run_cli("events", db=log.store)
    assert result.returncode == 0
    assert result.stdout.endswith(b"\n")
    lines = result.stdout.decode().splitlines()
    events = [json.loads(line) for line in lines]
    assert [event["position"] for event in events] == list(range(1, log.head + 1))
    for line, event in zip(lines, events, strict=True):
        assert "\n" not in line
        assert set(event) >= EVENT_FIELDS
    assert [event["type"] for event in events[:2]] == ["GuestStarted", "GuestStarted"]


def test_events_match_the_apis_history_of_every_task(log: Log) -> None:
    events = events_of(log)
    for task_id, history in log.histories.items():
        assert [event for event in events if event["stream"] == f"task-{task_id}"] == history


def test_events_stream_prints_only_that_stream(log: Log) -> None:
    task_id, history = next(iter(log.histories.items()))
    assert cli_events(log.store, "--stream", f"task-{task_id}") == history


def test_events_of_an_unknown_stream_print_nothing(log: Log) -> None:
    result = run_cli("events", "--stream", "task-nope", db=log.store)
    assert result.returncode == 0
    assert result.stdout == b""


@pytest.mark.parametrize("after", [0, 1, 5, -1])
def test_events_after_starts_after_that_position(log: Log, after: int) -> None:
    after = log.head if after < 0 else after
    positions = [event["position"] for event in cli_events(log.store, "--after", str(after))]
    assert positions == list(range(after + 1, log.head + 1))


def test_events_after_and_stream_combine(log: Log) -> None:
    task_id, history = next(iter(log.histories.items()))
    after = history[0]["position"]
    events = cli_events(log.store, "--stream", f"task-{task_id}", "--after", str(after))
    assert events == history[1:]


def test_events_output_is_stable_byte_for_byte(log: Log) -> None:
    assert run_cli("events", db=log.store).stdout == run_cli("events", db=log.store).stdout


def test_events_follow_prints_new_events_as_the_server_writes(
    start_server: ServerFactory,
) -> None:
    server = start_server()
    guest = server.guest()
    command, env = cli_invocation("events", "--follow", db=server.store)
    follower = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=server.db.parent,
    )
    lines: list[dict[str, Any]] = []
    got_three = threading.Event()

    def read() -> None:
        assert follower.stdout is not None
        for line in follower.stdout:
            lines.append(json.loads(line))
            if len(lines) >= 3:
                got_three.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        task = guest.create("followed")
        guest.client.patch(f"/api/tasks/{task['id']}", json={"done": True})
        assert got_three.wait(10), lines
    finally:
        follower.terminate()
        follower.wait(10)
        reader.join(10)
        assert follower.stdout is not None
        assert follower.stderr is not None
        follower.stdout.close()
        follower.stderr.close()
    assert [line["type"] for line in lines[:3]] == ["GuestStarted", "TaskCreated", "TaskUpdated"]
    assert [line["position"] for line in lines[:3]] == [1, 2, 3]


@pytest.mark.parametrize("command", ["events", "replay", "verify"])
@pytest.mark.sqlite_only
def test_missing_database_fails_cleanly_and_is_not_created(tmp_path: Path, command: str) -> None:
    missing = tmp_path / "missing.db"
    result = run_cli(command, db=missing)
    assert result.returncode == 1
    assert b"missing.db" in result.stderr
    assert result.stdout == b""
    assert not list(tmp_path.iterdir())


@pytest.mark.sqlite_only
def test_export_of_a_missing_database_fails_cleanly(tmp_path: Path) -> None:
    result = run_cli("export", str(tmp_path / "backup.ndjson"), db=tmp_path / "missing.db")
    assert result.returncode == 1
    assert sorted(path.name for path in tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", ["events", "verify", "replay", "export"])
@pytest.mark.sqlite_only
def test_a_file_that_is_no_database_fails_cleanly(tmp_path: Path, command: str) -> None:
    path = tmp_path / "tracker.db"
    content = b"this is not a database at all" * 100
    path.write_bytes(content)
    args = [str(tmp_path / "backup.ndjson")] if command == "export" else []
    result = run_cli(command, *args, db=path)
    assert result.returncode == 1, result
    assert result.stderr.startswith(b"tracker:")
    assert b"not an SQLite database" in result.stderr
    assert path.read_bytes() == content


@pytest.mark.parametrize("command", ["events", "verify"])
@pytest.mark.sqlite_only
def test_read_only_commands_leave_an_empty_file_alone(tmp_path: Path, command: str) -> None:
    path = tmp_path / "tracker.db"
    path.write_bytes(b"")
    result = run_cli(command, db=path)
    assert result.returncode in (0, 1)
    assert path.read_bytes() == b""


@pytest.mark.sqlite_only
def test_another_applications_sqlite_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE notes (body TEXT)")
    connection.close()
    result = run_cli("events", db=path)
    assert result.returncode == 1
    assert b"not a Tracker log" in result.stderr


# replay


def replay(log: Log, *args: str, db: Store | None = None) -> dict[str, Any]:
    result = run_cli("replay", *args, db=db or log.store)
    assert result.returncode == 0, result.stderr
    state: dict[str, Any] = json.loads(result.stdout)
    return state


def test_replay_prints_every_owners_tasks_at_the_head(log: Log) -> None:
    state = replay(log)
    assert state["position"] == log.head
    assert {owner: tasks for owner, tasks in state["owners"].items() if tasks} == {
        owner: tasks for owner, tasks in log.final.items() if tasks
    }


@pytest.mark.parametrize("index", [0, 1, 2])
def test_replay_until_a_position_matches_the_api_as_of(log: Log, index: int) -> None:
    position = [3, log.head // 2, log.head - 1][index]
    owner = log.owners[index % 2]
    state = replay(log, "--until", str(position), f"--owner={owner}")
    assert state == {"position": position, "owners": {owner: log.as_of[position][owner]}}


def test_replay_until_zero_is_empty(log: Log) -> None:
    assert replay(log, "--until", "0") == {"position": 0, "owners": {}}


def test_replay_until_past_the_head_stops_at_the_head(log: Log) -> None:
    assert replay(log, "--until", str(log.head + 100))["position"] == log.head


def test_replay_owner_shows_only_that_owner(log: Log) -> None:
    owner = log.owners[0]
    state = replay(log, f"--owner={owner}")
    assert state["owners"] == {owner: log.final[owner]}


def test_replay_of_an_unknown_owner_is_empty(log: Log) -> None:
    assert replay(log, "--owner", "nobody")["owners"] == {"nobody": []}


def test_replay_takes_an_owner_id_that_starts_with_a_dash(log: Log) -> None:
    # Ids are URL-safe base64: one in 64 starts with "-", which argparse takes for an option.
    assert replay(log, "--owner=-d5Hx0pQe3L2kFz9")["owners"] == {"-d5Hx0pQe3L2kFz9": []}


def test_replay_until_a_time_stops_at_the_last_event_recorded_by_then(log: Log) -> None:
    events = events_of(log)
    moments = sorted({event["recorded_at"] for event in events})
    for moment in (moments[2], moments[len(moments) // 2]):
        expected = max(event["position"] for event in events if event["recorded_at"] <= moment)
        state = replay(log, "--until", moment)
        assert state["position"] == expected
        owner = log.owners[1]
        tasks = replay(log, "--until", moment, f"--owner={owner}")["owners"][owner]
        assert tasks == log.as_of[expected][owner]


def test_replay_until_a_time_with_an_offset_is_the_same_instant(log: Log) -> None:
    events = events_of(log)
    moment = events[len(events) // 2]["recorded_at"]
    instant = datetime.fromisoformat(moment.replace("Z", "+00:00"))
    shifted = instant.astimezone(UTC).astimezone(timezone(timedelta(hours=2)))
    assert shifted.isoformat().endswith("+02:00")
    assert replay(log, "--until", shifted.isoformat()) == replay(log, "--until", moment)


def test_replay_until_before_the_first_event_is_empty(log: Log) -> None:
    assert replay(log, "--until", "2000-01-01T00:00:00Z") == {"position": 0, "owners": {}}


def test_replay_until_far_future_is_the_head(log: Log) -> None:
    assert replay(log, "--until", "2999-01-01T00:00:00.000Z")["position"] == log.head


@pytest.mark.parametrize("until", ["yesterday", "2026-13-01T00:00:00Z", "-5", "1.5"])
def test_replay_until_garbage_fails_cleanly(log: Log, until: str) -> None:
    result = run_cli("replay", "--until", until, db=log.store)
    assert result.returncode != 0
    assert b"--until" in result.stderr
    assert result.stdout == b""


@pytest.mark.parametrize("until", ["²", "9" * 5000], ids=["superscript", "5000-digits"])
def test_replay_until_an_unparsable_number_fails_cleanly(log: Log, until: str) -> None:
    result = run_cli("replay", "--until", until, db=log.store)
    assert result.returncode != 0


# verify


def test_verify_passes_a_clean_log_and_checks_the_snapshot(log: Log) -> None:
    result = run_cli("verify", db=log.store)
    assert result.returncode == 0, result.stderr
    out = result.stdout.decode()
    assert f"ok: {log.head} events" in out
    assert f"snapshot at {log.head} matches" in out


@pytest.mark.sqlite_only
def test_the_snapshot_is_written_at_shutdown(log: Log, tmp_path: Path) -> None:
    db = copy_db(log, tmp_path)
    snapshot = read_snapshot(db, SNAPSHOT_NAME)
    assert snapshot is not None
    events = events_of(log)
    assert (snapshot.position, snapshot.hash) == (log.head, events[-1]["hash"])


def edit_event_data(db: Path, position: int) -> None:
    with sqlite3.connect(db) as connection:
        (data,) = connection.execute(
            "SELECT data FROM events WHERE position = ?", (position,)
        ).fetchone()
        document = json.loads(bytes(data))
        document["title"] = document["title"].upper()[::-1]
        connection.execute(
            "UPDATE events SET data = ? WHERE position = ?",
            (json.dumps(document, separators=(",", ":")).encode(), position),
        )
    connection.close()


def edit_event_column(db: Path, position: int, column: str, value: Any) -> None:
    with sqlite3.connect(db) as connection:
        connection.execute(f"UPDATE events SET {column} = ? WHERE position = ?", (value, position))
    connection.close()


def delete_event(db: Path, position: int) -> None:
    with sqlite3.connect(db) as connection:
        connection.execute("DELETE FROM events WHERE position = ?", (position,))
    connection.close()


def swap_events(db: Path, position: int) -> None:
    with sqlite3.connect(db) as connection:
        connection.execute("UPDATE events SET position = -1 WHERE position = ?", (position,))
        connection.execute(
            "UPDATE events SET position = ? WHERE position = ?", (position, position + 1)
        )
        connection.execute("UPDATE events SET position = ? WHERE position = -1", (position + 1,))
    connection.close()


def insert_event(db: Path, position: int) -> None:
    """Slip a well-formed event in at `position`, correctly chained to the one before it."""
    with sqlite3.connect(db) as connection:
        connection.execute(
            "UPDATE events SET position = -position WHERE position >= ?", (position,)
        )
        connection.execute("UPDATE events SET position = 1 - position WHERE position < 0")
        (previous, actor, recorded_at) = connection.execute(
            "SELECT hash, actor, recorded_at FROM events WHERE position = ?", (position - 1,)
        ).fetchone()
        data = json.dumps(
            {"type": "TaskCreated", "task_id": "smuggled", "owner": actor, "title": "planted"},
            separators=(",", ":"),
        ).encode()
        digest = chain_hash(
            previous,
            canonical_bytes(
                position, "task-smuggled", 1, "TaskCreated", 1, data, actor, recorded_at
            ),
        )
        connection.execute(
            "INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (position, "task-smuggled", 1, "TaskCreated", 1, data, actor, recorded_at, digest),
        )
    connection.close()


def first_task_created(log: Log) -> int:
    events = events_of(log)
    position: int = next(event["position"] for event in events if event["type"] == "TaskCreated")
    return position


@pytest.mark.sqlite_only
def test_verify_names_an_edited_event(log: Log, tmp_path: Path) -> None:
    db = copy_db(log, tmp_path)
    position = first_task_created(log) + 1
    edit_event_data(db, position)
    fails_at(run_cli("verify", db=db), position)


@pytest.mark.parametrize(
    ("column", "value"),
    [("actor", "system"), ("recorded_at", "2020-01-01T00:00:00.000Z"), ("stream", "task-x")],
)
@pytest.mark.sqlite_only
def test_verify_names_an_event_with_an_edited_envelope(
    log: Log, tmp_path: Path, column: str, value: str
) -> None:
    db = copy_db(log, tmp_path)
    position = first_task_created(log) + 2
    edit_event_column(db, position, column, value)
    fails_at(run_cli("verify", db=db), position)


@pytest.mark.sqlite_only
def test_verify_names_a_deleted_event(log: Log, tmp_path: Path) -> None:
    db = copy_db(log, tmp_path)
    delete_event(db, 4)
    fails_at(run_cli("verify", db=db), 4)


@pytest.mark.sqlite_only
def test_verify_names_a_deleted_last_event_via_the_snapshot(log: Log, tmp_path: Path) -> None:
    db = copy_db(log, tmp_path)
    delete_event(db, log.head)
    fails_at(run_cli("verify", db=db), log.head)


@pytest.mark.sqlite_only
def test_verify_names_swapped_events(log: Log, tmp_path: Path) -> None:
    db = copy_db(log, tmp_path)
    swap_events(db, 5)
    fails_at(run_cli("verify", db=db), 5)


@pytest.mark.sqlite_only
def test_verify_names_an_inserted_event(log: Log, tmp_path: Path) -> None:
    db = copy_db(log, tmp_path)
    insert_event(db, 6)
    # The planted event itself chains correctly; the one it displaced no longer does.
    fails_at(run_cli("verify", db=db), 7)


@pytest.mark.sqlite_only
def test_verify_names_an_event_appended_with_a_bad_hash(log: Log, tmp_path: Path) -> None:
    db = copy_db(log, tmp_path)
    with sqlite3.connect(db) as connection:
        row = connection.execute("SELECT * FROM events WHERE position = ?", (log.head,)).fetchone()
        connection.execute(
            "INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (log.head + 1, "task-extra", 1, *row[3:8], "f" * 64),
        )
    connection.close()
    fails_at(run_cli("verify", db=db), log.head + 1)


def corrupt_snapshot(db: Path, how: str) -> None:
    snapshot = read_snapshot(db, SNAPSHOT_NAME)
    assert snapshot is not None
    if how == "state":
        state = msgspec.msgpack.decode(snapshot.data)
        owned = next(iter(state[1].values()))  # the board's tasks: owner -> id -> task
        next(iter(owned.values()))["title"] = "rewritten history"
        corrupt = replace(snapshot, data=msgspec.msgpack.encode(state))
    elif how == "bytes":
        corrupt = replace(snapshot, data=bytes(snapshot.data)[:-3] + b"\xc1")
    elif how == "hash":
        corrupt = replace(snapshot, hash="0" * 64)
    elif how == "position":
        corrupt = replace(snapshot, position=snapshot.position + 10)
    write_snapshot(db, corrupt)


@pytest.mark.parametrize("how", ["state", "bytes"])
@pytest.mark.sqlite_only
def test_verify_names_a_corrupt_snapshot(log: Log, tmp_path: Path, how: str) -> None:
    db = copy_db(log, tmp_path)
    corrupt_snapshot(db, how)
    result = run_cli("verify", db=db)
    fails_at(result, log.head)
    assert b"snapshot" in result.stderr


@pytest.mark.sqlite_only
def test_verify_names_a_snapshot_whose_hash_was_altered(log: Log, tmp_path: Path) -> None:
    db = copy_db(log, tmp_path)
    corrupt_snapshot(db, "hash")
    result = run_cli("verify", db=db)
    fails_at(result, log.head)
    assert b"snapshot" in result.stderr


@pytest.mark.sqlite_only
def test_verify_names_a_snapshot_past_the_end_of_the_log(log: Log, tmp_path: Path) -> None:
    db = copy_db(log, tmp_path)
    corrupt_snapshot(db, "position")
    result = run_cli("verify", db=db)
    fails_at(result, log.head + 10)
    assert b"snapshot" in result.stderr


@pytest.mark.sqlite_only
def test_verify_passes_without_a_snapshot(log: Log, tmp_path: Path) -> None:
    db = copy_db(log, tmp_path)
    delete_snapshots(db)
    result = run_cli("verify", db=db)
    assert result.returncode == 0
    assert b"snapshot" not in result.stdout


# export and import


def export(log: Log, target: Path) -> Path:
    result = run_cli("export", str(target), db=log.store)
    assert result.returncode == 0, result.stderr
    assert f"exported {log.head} events".encode() in result.stderr
    return target


def test_export_writes_header_events_and_end_line(log: Log, tmp_path: Path) -> None:
    lines = export(log, tmp_path / "backup.ndjson").read_bytes().splitlines()
    header, *events, end = (json.loads(line) for line in lines)
    assert header["tracker_export"] == 1
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$", header["exported_at"])
    assert events == events_of(log)
    assert end == {"end": {"events": log.head, "head": log.head, "hash": events[-1]["hash"]}}


def test_export_then_import_restores_the_log_byte_for_byte(
    log: Log, tmp_path: Path, start_server: ServerFactory
) -> None:
    backup = export(log, tmp_path / "backup.ndjson")
    restored = start_server.new_store("restored")
    result = run_cli("import", str(backup), db=restored)
    assert result.returncode == 0, result.stderr
    assert f"imported {log.head} events".encode() in result.stderr
    assert run_cli("events", db=restored).stdout == run_cli("events", db=log.store).stdout
    assert run_cli("verify", db=restored).returncode == 0
    assert replay(log, db=restored) == replay(log)


def test_export_to_stdout_and_import_from_stdin(log: Log, start_server: ServerFactory) -> None:
    exported = run_cli("export", "-", db=log.store)
    assert exported.returncode == 0
    restored = start_server.new_store("restored")
    result = run_cli("import", "-", db=restored, input=exported.stdout)
    assert result.returncode == 0, result.stderr
    assert run_cli("events", db=restored).stdout == run_cli("events", db=log.store).stdout


def test_a_restored_log_serves_the_same_tasks_to_the_same_tokens(
    log: Log, tmp_path: Path, start_server: ServerFactory
) -> None:
    backup = export(log, tmp_path / "backup.ndjson")
    restored = start_server.new_store("restored")
    assert run_cli("import", str(backup), db=restored).returncode == 0
    server = start_server(restored)
    for owner, token in log.tokens.items():
        assert server.client(token).get("/api/tasks").json()["tasks"] == log.final[owner]


def test_export_refuses_to_overwrite_a_file(log: Log, tmp_path: Path) -> None:
    target = tmp_path / "backup.ndjson"
    target.write_bytes(b"precious")
    result = run_cli("export", str(target), db=log.store)
    assert result.returncode != 0
    assert b"exists" in result.stderr
    assert target.read_bytes() == b"precious"


def test_import_refuses_a_non_empty_database(
    log: Log, tmp_path: Path, start_server: ServerFactory
) -> None:
    backup = export(log, tmp_path / "backup.ndjson")
    target = start_server.new_store("target")
    assert run_cli("import", str(backup), db=target).returncode == 0
    events_before = run_cli("events", db=target).stdout
    before = digest(target.db) if target.kind == "sqlite" else None
    result = run_cli("import", str(backup), db=target)
    assert result.returncode == 1
    assert b"not empty" in result.stderr
    if before is not None:
        assert digest(target.db) == before
    assert run_cli("events", db=target).stdout == events_before


def refused(backup: Path, stores: ServerFactory, *messages: str) -> None:
    """Importing `backup` into a new store fails with exit 1, says why, leaves nothing."""
    target = stores.new_store("target")
    result = run_cli("import", str(backup), db=target)
    stderr = result.stderr.decode()
    assert result.returncode == 1, (result.returncode, stderr)
    for message in messages:
        assert message in stderr, stderr
    assert_nothing_written(target)


def test_import_refuses_a_backup_truncated_mid_line(
    log: Log, tmp_path: Path, start_server: ServerFactory
) -> None:
    backup = export(log, tmp_path / "backup.ndjson")
    data = backup.read_bytes()
    lines = data.splitlines(keepends=True)
    cut = sum(len(line) for line in lines[:4]) + len(lines[4]) // 2
    backup.write_bytes(data[:cut])
    refused(backup, start_server, "line 5", "truncated")


def test_import_refuses_a_backup_without_its_end_line(
    log: Log, tmp_path: Path, start_server: ServerFactory
) -> None:
    backup = export(log, tmp_path / "backup.ndjson")
    lines = backup.read_bytes().splitlines(keepends=True)
    backup.write_bytes(b"".join(lines[:-1]))
    refused(backup, start_server, f"line {len(lines)}", "truncated")


def test_import_refuses_a_backup_missing_an_event(
    log: Log, tmp_path: Path, start_server: ServerFactory
) -> None:
    backup = export(log, tmp_path / "backup.ndjson")
    lines = backup.read_bytes().splitlines(keepends=True)
    backup.write_bytes(b"".join(lines[:3] + lines[4:]))
    refused(backup, start_server, "line 4")


def test_import_refuses_a_tampered_line(
    log: Log, tmp_path: Path, start_server: ServerFactory
) -> None:
    backup = export(log, tmp_path / "backup.ndjson")
    lines = backup.read_bytes().splitlines(keepends=True)
    target = next(
        index for index, line in enumerate(lines) if b'"type":"TaskCreated"' in line and index > 2
    )
    lines[target] = lines[target].replace(b" task ", b" TASK ")
    assert b" TASK " in lines[target]
    backup.write_bytes(b"".join(lines))
    refused(backup, start_server, f"line {target + 1}")


def test_import_refuses_a_line_that_is_not_json(
    log: Log, tmp_path: Path, start_server: ServerFactory
) -> None:
    backup = export(log, tmp_path / "backup.ndjson")
    lines = backup.read_bytes().splitlines(keepends=True)
    lines[2] = b"{not json\n"
    backup.write_bytes(b"".join(lines))
    refused(backup, start_server, "line 3")


def test_import_refuses_a_tampered_end_line(
    log: Log, tmp_path: Path, start_server: ServerFactory
) -> None:
    backup = export(log, tmp_path / "backup.ndjson")
    lines = backup.read_bytes().splitlines(keepends=True)
    end = json.loads(lines[-1])
    end["end"]["events"] += 1
    lines[-1] = json.dumps(end).encode() + b"\n"
    backup.write_bytes(b"".join(lines))
    refused(backup, start_server, "end line")


def test_import_refuses_data_after_the_end_line(
    log: Log, tmp_path: Path, start_server: ServerFactory
) -> None:
    backup = export(log, tmp_path / "backup.ndjson")
    lines = backup.read_bytes().splitlines(keepends=True)
    backup.write_bytes(b"".join([*lines, lines[1]]))
    refused(backup, start_server, f"line {len(lines) + 1}")


def test_import_refuses_an_empty_file(tmp_path: Path, start_server: ServerFactory) -> None:
    backup = tmp_path / "backup.ndjson"
    backup.write_bytes(b"")
    refused(backup, start_server, "empty")


def test_import_refuses_a_file_with_a_foreign_header(
    tmp_path: Path, start_server: ServerFactory
) -> None:
    backup = tmp_path / "backup.ndjson"
    backup.write_bytes(b'{"tracker_export": 99, "exported_at": "2026-01-01T00:00:00.000Z"}\n')
    refused(backup, start_server, "line 1")


@pytest.mark.sqlite_only
def test_failed_import_keeps_an_existing_signing_key(tmp_path: Path) -> None:
    key = tmp_path / "tracker.db.secret"
    key.write_text("the key every issued token was signed with\n")
    backup = tmp_path / "backup.ndjson"
    backup.write_bytes(b"")
    result = run_cli("import", str(backup), db=tmp_path / "tracker.db")
    assert result.returncode == 1
    assert not (tmp_path / "tracker.db").exists()
    assert key.read_text() == "the key every issued token was signed with\n"


def test_import_of_a_missing_file_fails_cleanly(
    tmp_path: Path, start_server: ServerFactory
) -> None:
    target = start_server.new_store("target")
    result = run_cli("import", str(tmp_path / "nope.ndjson"), db=target)
    assert result.returncode != 0
    assert b"nope.ndjson" in result.stderr
    assert_nothing_written(target)


def test_import_of_a_backup_of_an_empty_log_makes_an_empty_log(
    tmp_path: Path, start_server: ServerFactory
) -> None:
    target = start_server.new_store("target")
    backup = tmp_path / "backup.ndjson"
    assert run_cli("import", "-", db=target, input=b"").returncode == 1
    assert_nothing_written(target)
    header = b'{"tracker_export":1,"exported_at":"2026-01-01T00:00:00.000Z"}\n'
    backup.write_bytes(header + b'{"end":{"events":0,"head":0,"hash":""}}\n')
    result = run_cli("import", str(backup), db=target)
    assert result.returncode == 0, result.stderr
    assert run_cli("events", db=target).stdout == b""
