"""Storage faults, through a real server: a full disk, and files that are not Tracker logs.

A full disk is the server process's file-size limit (RLIMIT_FSIZE) set to 0
from outside, while it runs: every write(2) of the process to a regular file
then fails with EFBIG (CPython ignores SIGXFSZ), as a disk with no room left
refuses new data. Lifting the limit is an operator freeing space: the same
process must take writes again, and every write it acknowledged must be there.
"""

from __future__ import annotations

import resource
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.conftest import (
    Guest,
    Server,
    ServerFactory,
    check_response,
    cli_events,
    error_of,
    free_port,
    run_cli,
)
from tests.integration.test_durability import assert_log_is_sound

pytestmark = [
    pytest.mark.skipif(
        not hasattr(resource, "prlimit"), reason="needs Linux's prlimit to fill the disk"
    ),
    # A full disk is the server's file-size limit, which a PostgreSQL log is not written
    # under; the foreign files are SQLite files.
    pytest.mark.sqlite_only,
]

FIXTURE_LOG = Path(__file__).parent.parent / "fixtures" / "log-v1.ndjson"
WAIT = 10.0
"""How long a condition the test waits for may take before the test fails."""


@contextmanager
def disk_full(server: Server) -> Iterator[None]:
    """Inside the block, the server's writes to files fail as on a full disk."""
    assert server.process is not None
    pid = server.process.pid
    soft, hard = resource.prlimit(pid, resource.RLIMIT_FSIZE)
    resource.prlimit(pid, resource.RLIMIT_FSIZE, (0, hard))
    try:
        yield
    finally:
        if server.running:
            resource.prlimit(pid, resource.RLIMIT_FSIZE, (soft, hard))


def no_room() -> None:
    """In a child process before it starts: a full disk from its first write on."""
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))


def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.02)


def assert_unavailable(response: httpx.Response) -> None:
    """The contract's 503 for an unwritable log: code, a message that says so, Retry-After."""
    error = error_of(response, 503, "unavailable")
    assert "cannot be written" in error["message"], error
    assert response.headers.get("retry-after"), response.headers


def head_of(server: Server) -> int:
    position: int = httpx.get(f"{server.url}/healthz").json()["position"]
    return position


# While the disk is full


def test_every_write_on_a_full_disk_is_a_503_and_nothing_is_written(
    start_server: ServerFactory,
) -> None:
    server = start_server(TRACKER_BCRYPT_ROUNDS="4")
    guest = server.guest()
    kept = guest.create("kept")
    timed = guest.create("timed")
    assert guest.client.post(
        f"/api/tasks/{timed['id']}/timer/start", json={"duration_seconds": 600}
    ).is_success
    head = head_of(server)
    before = guest.client.get("/api/events").json()
    anonymous = server.client()

    kept_url, timed_url = f"/api/tasks/{kept['id']}", f"/api/tasks/{timed['id']}"
    writes: list[tuple[httpx.Client, str, str, dict[str, Any] | None]] = [
        (guest.client, "POST", "/api/tasks", {"title": "refused"}),
        (guest.client, "PATCH", kept_url, {"title": "refused"}),
        (guest.client, "DELETE", kept_url, None),
        (guest.client, "POST", f"{kept_url}/timer/start", {"duration_seconds": 60}),
        (guest.client, "POST", f"{timed_url}/timer/pause", None),
        (guest.client, "POST", f"{timed_url}/timer/stop", None),
        (anonymous, "POST", "/api/auth/guest", None),
        (anonymous, "POST", "/api/auth/register", {"username": "ada", "password": "x" * 12}),
    ]

    with disk_full(server):
        for client, method, path, body in writes:
            assert_unavailable(client.request(method, path, json=body))
        assert head_of(server) == head

    assert guest.client.get("/api/events").json() == before
    titles = [task["title"] for task in guest.client.get("/api/tasks").json()["tasks"]]
    assert titles == ["kept", "timed"]


def test_reads_keep_working_while_the_disk_is_full(start_server: ServerFactory) -> None:
    server = start_server()
    guest = server.guest()
    task = guest.create("readable")
    guest.client.patch(f"/api/tasks/{task['id']}", json={"done": True})
    reads = ["/api/tasks", f"/api/tasks/{task['id']}/history", "/api/events", "/api/auth/me"]
    before = {path: guest.client.get(path).json() for path in reads}

    with disk_full(server):
        assert_unavailable(guest.client.post("/api/tasks", json={"title": "refused"}))
        for path in reads:
            response = guest.client.get(path)
            assert response.status_code == 200, (path, response.text)
            assert response.json() == before[path]
        served = guest.client.get(f"/api/tasks/{task['id']}")
        assert served.status_code == 200
        assert served.json()["done"] is True
        assert head_of(server) == before["/api/tasks"]["position"]


# Once there is room again


@dataclass
class Outcome:
    """What one writer was told: titles acknowledged (with their task ids), titles refused."""

    created: dict[str, str] = field(default_factory=dict)
    refused: list[str] = field(default_factory=list)
    other: list[str] = field(default_factory=list)


def create_until(server: Server, guest: Guest, stop: threading.Event, outcome: Outcome) -> None:
    """Create tasks one after another until `stop`; note in `outcome` what each answer was."""
    with httpx.Client(
        base_url=server.url,
        headers={"Authorization": f"Bearer {guest.token}"},
        timeout=10.0,
        event_hooks={"response": [check_response]},
    ) as client:
        n = 0
        while not stop.is_set():
            n += 1
            title = f"{guest.id} {n}"
            response = client.post("/api/tasks", json={"title": title})
            if response.status_code == 201:
                outcome.created[title] = response.json()["id"]
            elif response.status_code == 503:
                assert_unavailable(response)
                outcome.refused.append(title)
            else:
                outcome.other.append(f"{response.status_code} {response.text}")


def test_the_same_server_takes_writes_again_once_there_is_room_and_keeps_every_ack(
    start_server: ServerFactory,
) -> None:
    server = start_server()
    assert server.process is not None
    pid = server.process.pid
    guests = [server.guest() for _ in range(4)]
    outcomes: list[Outcome] = [Outcome() for _ in guests]
    stop = threading.Event()

    with ThreadPoolExecutor(len(guests)) as pool:
        futures = [
            pool.submit(create_until, server, guest, stop, outcome)
            for guest, outcome in zip(guests, outcomes, strict=True)
        ]
        try:
            wait_for(lambda: all(len(o.created) >= 5 for o in outcomes), "writes before")
            with disk_full(server):
                wait_for(lambda: all(o.refused for o in outcomes), "every writer refused")
                position, refused = head_of(server), refusals(outcomes)
                wait_for(lambda: refusals(outcomes) >= refused + len(guests), "more refusals")
                assert head_of(server) == position, "a write went through a full disk"
            acked = [len(outcome.created) for outcome in outcomes]
            wait_for(
                lambda: all(len(o.created) >= n + 5 for o, n in zip(outcomes, acked, strict=True)),
                "writes after",
            )
        finally:
            stop.set()
        for future in futures:
            future.result(timeout=30)

    assert all(not outcome.other for outcome in outcomes), [o.other for o in outcomes]
    assert server.running
    assert server.process.pid == pid, "the server was restarted"
    assert_every_ack_kept(server, guests, outcomes)
    assert_log_is_sound(server)

    assert server.stop() == 0  # and a restart finds the same
    server.start()
    assert_every_ack_kept(server, guests, outcomes)
    assert_log_is_sound(server)


def refusals(outcomes: list[Outcome]) -> int:
    return sum(len(outcome.refused) for outcome in outcomes)


def assert_every_ack_kept(server: Server, guests: list[Guest], outcomes: list[Outcome]) -> None:
    """Every acknowledged task is there with its title; no refused one is."""
    for guest, outcome in zip(guests, outcomes, strict=True):
        tasks = server.client(guest.token).get("/api/tasks").json()["tasks"]
        titles = {task["title"]: task["id"] for task in tasks}
        assert titles == outcome.created, (set(titles) ^ set(outcome.created), outcome.refused)
        assert not set(titles) & set(outcome.refused)


def test_a_timer_that_falls_due_on_a_full_disk_finishes_at_its_due_time_once_there_is_room(
    start_server: ServerFactory,
) -> None:
    server = start_server()
    guest = server.guest()
    task = guest.create("countdown")
    started = guest.client.post(
        f"/api/tasks/{task['id']}/timer/start", json={"duration_seconds": 1}
    ).json()
    ends_at = started["timer"]["ends_at"]

    def timer() -> dict[str, Any]:
        timer: dict[str, Any] = guest.client.get(f"/api/tasks/{task['id']}").json()["timer"]
        return timer

    with disk_full(server):
        wait_for(lambda: timer()["remaining_seconds"] == 0, "the due time")
        time.sleep(0.5)  # the supervisor tries to finish it at the due time, and fails:
        assert timer()["state"] == "running", timer()  # it cannot be written...

    wait_for(lambda: timer()["state"] == "finished", "the finish")  # ... until there is room
    assert timer()["finished_at"] == ends_at
    events = guest.client.get(f"/api/tasks/{task['id']}/history").json()["events"]
    assert [event["type"] for event in events][-1] == "TimerFinished"
    assert sum(event["type"] == "TimerFinished" for event in events) == 1
    assert_log_is_sound(server)


def test_a_server_stopped_while_the_disk_is_full_exits_cleanly_and_loses_nothing(
    start_server: ServerFactory,
) -> None:
    server = start_server()
    guest = server.guest()
    created = [guest.create(f"task {n}") for n in range(5)]
    before = guest.client.get("/api/tasks").json()
    with disk_full(server):
        assert_unavailable(guest.client.post("/api/tasks", json={"title": "refused"}))
        assert server.stop() == 0  # its snapshot cannot be saved: it says so and goes
    server.start()
    assert server.client(guest.token).get("/api/tasks").json() == before
    assert len(before["tasks"]) == len(created)
    assert_log_is_sound(server)


# Starting on a full disk


@pytest.mark.parametrize("existing", [False, True], ids=["new log", "existing log"])
def test_serve_on_a_full_disk_refuses_to_start_and_starts_once_there_is_room(
    start_server: ServerFactory, tmp_path: Path, existing: bool
) -> None:
    db = tmp_path / "tracker.db"
    if existing:
        assert run_cli("import", str(FIXTURE_LOG), db=db).returncode == 0
    events = cli_events(db) if existing else []

    result = run_cli("serve", "--port", str(free_port()), db=db, timeout=30, preexec_fn=no_room)

    assert result.returncode == 1, result
    message = result.stderr.decode()
    assert message.startswith("tracker: cannot "), message
    assert "disk I/O error" in message or "disk is full" in message, message
    server = start_server(db)
    assert server.guest().create("after the fault")["title"] == "after the fault"
    assert_log_is_sound(server)
    assert cli_events(db)[: len(events)] == events


# Files that are not Tracker logs


def another_apps_database(path: Path) -> None:
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
        connection.execute("INSERT INTO customers (name) VALUES ('Ada')")
    connection.close()


def a_text_file(path: Path) -> None:
    path.write_text("position,stream\n1,a\n" * 100)


def a_newer_trackers_log(path: Path) -> None:
    assert run_cli("import", str(FIXTURE_LOG), db=path).returncode == 0
    connection = sqlite3.connect(path)
    connection.execute("PRAGMA user_version = 2")
    connection.close()


def crash_while_writing(path: Path, *statements: str, journal: str = "WAL") -> None:
    """Run `statements` on `path` in another process that dies before it closes the file,
    leaving its write in a WAL (not yet copied into the file) or a hot rollback journal."""
    script = f"""
import os, sqlite3, sys
connection = sqlite3.connect(sys.argv[1], isolation_level=None)
connection.execute("PRAGMA journal_mode = {journal}")
connection.execute("PRAGMA wal_autocheckpoint = 0")
connection.execute("PRAGMA cache_size = 1")  # spill: a rollback journal is written at once
for statement in sys.argv[2:]:
    connection.execute(statement)
os._exit(0)
"""
    subprocess.run([sys.executable, "-c", script, str(path), *statements], check=True)


def another_apps_database_left_by_a_crash(path: Path) -> None:
    crash_while_writing(
        path,
        "CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)",
        "INSERT INTO customers (name) VALUES ('Ada')",
    )
    assert path.with_name(f"{path.name}-wal").stat().st_size > 0


def another_apps_unfinished_transaction(path: Path) -> None:
    another_apps_database(path)
    crash_while_writing(
        path,
        "BEGIN",
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 500)"
        " INSERT INTO customers (name) SELECT hex(randomblob(500)) FROM n",
        journal="DELETE",
    )
    assert path.with_name(f"{path.name}-journal").stat().st_size > 0


def a_newer_trackers_log_left_by_a_crash(path: Path) -> None:
    assert run_cli("import", str(FIXTURE_LOG), db=path).returncode == 0
    crash_while_writing(path, "PRAGMA user_version = 2")
    assert path.with_name(f"{path.name}-wal").stat().st_size > 0


def files_of(directory: Path) -> dict[str, bytes]:
    """Every file's bytes, but SQLite's shared-memory index (rebuilt by any reader)."""
    return {
        path.name: b"" if path.name.endswith("-shm") else path.read_bytes()
        for path in sorted(directory.iterdir())
    }


@pytest.mark.parametrize(
    ("make", "says"),
    [
        (another_apps_database, "not a Tracker log"),
        (a_text_file, "not an SQLite database"),
        (a_newer_trackers_log, "written by a newer Tracker (schema 2)"),
        (another_apps_database_left_by_a_crash, "not a Tracker log"),
        (another_apps_unfinished_transaction, "not a Tracker log"),
        (a_newer_trackers_log_left_by_a_crash, "written by a newer Tracker (schema 2)"),
    ],
)
def test_serve_refuses_a_file_that_is_not_a_tracker_log_and_leaves_it_untouched(
    tmp_path: Path, make: Callable[[Path], None], says: str
) -> None:
    directory = tmp_path / "data"
    directory.mkdir()
    db = directory / "tracker.db"
    make(db)
    before = files_of(directory)

    result = run_cli("serve", "--port", str(free_port()), db=db, timeout=30)

    assert result.returncode == 1, result
    lines = result.stderr.decode().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("tracker: "), lines
    assert says in lines[0], lines
    assert files_of(directory) == before
