"""Two real `tracker serve` processes on one PostgreSQL database: every guarantee holds
across instances (reads, live updates, positions, timers, sessions, throttling)."""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from tests.integration.conftest import (
    Guest,
    Server,
    ServerFactory,
    Store,
    cli_events,
    error_of,
    free_port,
    run_cli,
)
from tests.integration.test_live import live, receive, until
from tests.pgcluster import PostgresCluster

pytestmark = pytest.mark.slow

LEADS = "this instance leads"


@pytest.fixture
def servers(postgres_cluster: PostgresCluster, tmp_path: Path) -> Iterator[ServerFactory]:
    factory = ServerFactory(tmp_path, postgres_cluster.create_database)
    yield factory
    factory.close()


def instance_store(factory: ServerFactory, name: str) -> Store:
    """The factory's database, with a directory of this instance's own (for its output)."""
    directory = factory.directory / name
    directory.mkdir()
    return Store(directory / "tracker.db", factory.store.url)


def wait_for_log(server: Server, text: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while text not in server.log():
        assert time.monotonic() < deadline, f"{text!r} never logged:\n{server.log()}"
        time.sleep(0.05)


@pytest.fixture
def pair(servers: ServerFactory) -> tuple[Server, Server]:
    """Instance A (the leader: started first) and instance B, on one database."""
    a = servers(instance_store(servers, "a"))
    wait_for_log(a, LEADS)
    b = servers(instance_store(servers, "b"))
    return a, b


def seconds_of(timestamp: str) -> float:
    return datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()


def as_guest_on(server: Server, guest: Guest) -> httpx.Client:
    """The guest's session, used through another instance."""
    return server.client(guest.token)


def test_a_write_through_one_instance_is_read_through_the_other_within_100_ms(
    pair: tuple[Server, Server],
) -> None:
    a, b = pair
    guest = a.guest()
    on_b = as_guest_on(b, guest)
    delays = []
    for number in range(20):
        task = guest.create(f"task {number}")
        written = time.monotonic()
        while task["id"] not in {t["id"] for t in on_b.get("/api/tasks").json()["tasks"]}:
            assert time.monotonic() - written < 2, "instance B never saw the write"
        delays.append(time.monotonic() - written)
    assert max(delays) < 0.1, delays


def test_a_session_and_a_task_made_through_one_instance_work_at_once_on_the_other(
    pair: tuple[Server, Server],
) -> None:
    """No waiting between the calls: an instance that does not know a genuine token's
    principal, or a task, catches up with the log before it answers 401 or 404."""
    a, b = pair
    for _ in range(30):
        guest = a.guest()
        on_b = as_guest_on(b, guest)
        assert on_b.get("/api/auth/me").status_code == 200
        task = guest.create("made on A")
        assert on_b.get(f"/api/tasks/{task['id']}").status_code == 200
        renamed = on_b.patch(f"/api/tasks/{task['id']}", json={"title": "renamed on B"})
        assert renamed.status_code == 200, renamed.text
        other = on_b.post("/api/tasks", json={"title": "made on B"}).json()
        assert guest.client.get(f"/api/tasks/{other['id']}/history").status_code == 200


def test_each_instance_reads_its_own_writes_at_once(pair: tuple[Server, Server]) -> None:
    a, b = pair
    guest = a.guest()
    on_b = as_guest_on(b, guest)
    for client in (guest.client, on_b, guest.client, on_b):
        created = client.post("/api/tasks", json={"title": "mine"}).json()
        renamed = client.patch(f"/api/tasks/{created['id']}", json={"title": "renamed"})
        assert renamed.status_code == 200, renamed.text
        assert client.get(f"/api/tasks/{created['id']}").json()["title"] == "renamed"


def test_a_socket_on_one_instance_sees_the_changes_and_finishes_of_the_other(
    pair: tuple[Server, Server],
) -> None:
    a, b = pair
    guest = a.guest()
    with live(b, guest.token) as socket:
        assert receive(socket)["type"] == "snapshot"
        task = guest.create("watched from B")
        assert until(socket, "task")["task"]["id"] == task["id"]
        started = guest.client.post(
            f"/api/tasks/{task['id']}/timer/start", json={"duration_seconds": 1}
        ).json()
        finished = until(socket, "timer_finished")
        assert finished["task"]["id"] == task["id"]
        assert time.time() - seconds_of(started["timer"]["ends_at"]) < 1.0


def test_200_concurrent_appends_over_two_instances_are_gap_free_and_none_is_lost(
    pair: tuple[Server, Server],
) -> None:
    a, _ = pair
    guests = [a.guest() for _ in range(8)]

    def create(number: int) -> tuple[str, str]:
        """Task `number`, by one of the guests, through instance A or B in turn."""
        guest = guests[number % len(guests)]
        server = pair[number % 2]
        with httpx.Client(
            base_url=server.url, headers={"Authorization": f"Bearer {guest.token}"}, timeout=10
        ) as client:
            response = client.post("/api/tasks", json={"title": f"append {number}"})
        assert response.status_code == 201, response.text
        task_id: str = response.json()["id"]
        return guest.id, task_id

    with ThreadPoolExecutor(32) as pool:
        created = list(pool.map(create, range(200)))

    expected: dict[str, set[str]] = {}
    for owner, task_id in created:
        expected.setdefault(owner, set()).add(task_id)
    time.sleep(0.2)  # let each instance follow the other's last commits
    for server in pair:
        for guest in guests:
            seen = server.client(guest.token).get("/api/tasks").json()["tasks"]
            assert {task["id"] for task in seen} == expected[guest.id], server.url

    events = cli_events(a.store)
    assert [event["position"] for event in events] == list(range(1, len(events) + 1))
    created_streams = Counter(event["stream"] for event in events if event["type"] == "TaskCreated")
    assert set(created_streams) == {f"task-{task_id}" for _, task_id in created}
    assert set(created_streams.values()) == {1}
    verify = run_cli("verify", db=a.store)
    assert verify.returncode == 0, verify.stderr


def test_when_the_leader_is_killed_the_other_finishes_every_run_once_on_time(
    pair: tuple[Server, Server],
) -> None:
    a, b = pair
    guest = a.guest()
    on_b = as_guest_on(b, guest)
    overdue = [guest.create(f"overdue {n}") for n in range(3)]
    later = [guest.create(f"later {n}") for n in range(3)]
    ends: dict[str, float] = {}
    for task, seconds in [*((t, 1) for t in overdue), *((t, 4) for t in later)]:
        started = guest.client.post(
            f"/api/tasks/{task['id']}/timer/start", json={"duration_seconds": seconds}
        ).json()
        ends[task["id"]] = seconds_of(started["timer"]["ends_at"])
    a.kill()
    killed = time.time()
    time.sleep(1.2)  # the short runs fall due with no leader
    wait_for_log(b, LEADS, timeout=2)

    deadline = time.monotonic() + 8
    while True:
        tasks = {t["id"]: t for t in on_b.get("/api/tasks").json()["tasks"]}
        if all(tasks[task_id]["timer"]["state"] == "finished" for task_id in ends):
            break
        assert time.monotonic() < deadline, tasks
        time.sleep(0.1)

    for task_id, due in ends.items():
        history = on_b.get(f"/api/tasks/{task_id}/history").json()["events"]
        finishes = [event for event in history if event["type"] == "TimerFinished"]
        assert len(finishes) == 1, history
        assert finishes[0]["data"]["finished_at"] == pytest.approx(due, abs=0.001)
        recorded = seconds_of(finishes[0]["recorded_at"])
        if task_id in {task["id"] for task in later}:
            assert recorded - due < 0.5, (task_id, recorded - due)  # on time
        else:
            assert recorded - killed < 2.5, (task_id, recorded - killed)  # taken over in time


def test_when_the_leader_freezes_the_other_takes_over_and_finishes_on_time(
    pair: tuple[Server, Server],
) -> None:
    """A stopped (not dead) leader keeps its connection open: the database ends its
    silent session after 2 s, and with it the lead."""
    a, b = pair
    guest = a.guest()
    on_b = as_guest_on(b, guest)
    task = on_b.post("/api/tasks", json={"title": "while A sleeps"}).json()
    assert a.process is not None
    a.process.send_signal(signal.SIGSTOP)
    try:
        started = on_b.post(
            f"/api/tasks/{task['id']}/timer/start", json={"duration_seconds": 1}
        ).json()
        due = seconds_of(started["timer"]["ends_at"])
        deadline = time.monotonic() + 8
        while on_b.get(f"/api/tasks/{task['id']}").json()["timer"]["state"] != "finished":
            assert time.monotonic() < deadline, "nobody finished the timer"
            time.sleep(0.1)
        history = on_b.get(f"/api/tasks/{task['id']}/history").json()["events"]
        [finish] = [event for event in history if event["type"] == "TimerFinished"]
        assert finish["data"]["finished_at"] == pytest.approx(due, abs=0.001)
        assert seconds_of(finish["recorded_at"]) - due < 4.0
    finally:
        a.process.send_signal(signal.SIGCONT)
    time.sleep(1.5)  # A wakes to find it no longer leads; it must not finish the run again
    history = on_b.get(f"/api/tasks/{task['id']}/history").json()["events"]
    assert [event["type"] for event in history].count("TimerFinished") == 1


def test_a_session_logged_out_on_one_instance_is_refused_by_the_other(
    pair: tuple[Server, Server],
) -> None:
    a, b = pair
    guest = a.guest()
    on_b = as_guest_on(b, guest)
    assert on_b.get("/api/tasks").status_code == 200
    assert guest.client.post("/api/auth/logout").status_code == 204
    deadline = time.monotonic() + 1
    while (response := on_b.get("/api/tasks")).status_code == 200:
        assert time.monotonic() < deadline, "instance B still takes the revoked token"
        time.sleep(0.02)
    error_of(response, 401)


def test_failed_logins_are_counted_once_over_both_instances(
    pair: tuple[Server, Server],
) -> None:
    a, _ = pair
    account = {"username": "shared-limit", "password": "correct horse battery"}
    with a.client() as client:
        assert client.post("/api/auth/register", json=account).status_code == 201
    wrong = {"username": "shared-limit", "password": "wrong password!"}
    for number in range(5):
        with pair[number % 2].client() as client:
            error_of(client.post("/api/auth/login", json=wrong), 401)
    for server in pair:
        with server.client() as client:
            error_of(client.post("/api/auth/login", json=account), 429, "rate_limited")


@pytest.mark.sqlite_only  # it starts on an SQLite file of its own
def test_a_log_moves_from_sqlite_to_postgresql_and_back_byte_for_byte(
    start_server: ServerFactory, postgres_cluster: PostgresCluster, tmp_path: Path
) -> None:
    sqlite = Store(tmp_path / "tracker.db")
    server = start_server(sqlite.db)
    guest = server.guest()
    task = guest.create("moving house")
    guest.client.post(f"/api/tasks/{task['id']}/timer/start", json={"duration_seconds": 60})
    server.stop()
    original = run_cli("events", db=sqlite)
    assert original.returncode == 0
    assert original.stdout

    backup = tmp_path / "backup.ndjson"
    assert run_cli("export", str(backup), db=sqlite).returncode == 0
    postgres = Store(tmp_path / "unused.db", postgres_cluster.create_database())
    imported = run_cli("import", str(backup), db=postgres)
    assert imported.returncode == 0, imported.stderr
    assert run_cli("events", db=postgres).stdout == original.stdout
    assert run_cli("verify", db=postgres).returncode == 0

    again = tmp_path / "again.ndjson"
    assert run_cli("export", str(again), db=postgres).returncode == 0
    back = Store(tmp_path / "back.db")
    assert run_cli("import", str(again), db=back).returncode == 0
    assert run_cli("events", db=back).stdout == original.stdout


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ("CREATE TABLE customers (id int)", "another application's tables"),
        (
            "CREATE TABLE tracker_meta (key text PRIMARY KEY, value text);"
            " INSERT INTO tracker_meta VALUES ('application', 'tracker'),"
            " ('schema_version', '99')",
            "written by a newer Tracker (schema 99)",
        ),
        (
            "CREATE TABLE tracker_meta (key text PRIMARY KEY, value text);"
            " INSERT INTO tracker_meta VALUES ('application', 'billing')",
            "not a Tracker log",
        ),
    ],
)
def test_a_foreign_or_newer_database_is_refused_at_startup_and_left_alone(
    servers: ServerFactory, setup: str, message: str
) -> None:
    url = servers.store.url
    assert url is not None
    asyncio.run(_execute(url, setup))
    before = asyncio.run(_tables(url))
    server = servers(start=False)
    with pytest.raises(pytest.fail.Exception):
        server.start()
    assert message in server.log()
    assert "Traceback" not in server.log()
    assert asyncio.run(_tables(url)) == before


async def _execute(url: str, sql: str) -> None:
    connection = await asyncpg.connect(url)
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


async def _tables(url: str) -> list[Any]:
    connection = await asyncpg.connect(url)
    try:
        return list(
            await connection.fetch(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1"
            )
        )
    finally:
        await connection.close()


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://tracker:hunter2-secret@127.0.0.1:{port}/tracker",
        "postgresql://tracker:hunter2/secret@127.0.0.1:{port}/tracker",
        "postgresql://tracker:hunter2#secret@127.0.0.1:{port}/tracker",
    ],
    ids=["refused", "a slash in the password", "a hash in the password"],
)
def test_an_unreachable_database_is_one_clear_line_without_the_password(
    tmp_path: Path, url: str
) -> None:
    result = run_cli("verify", db=Store(tmp_path / "unused.db", url.format(port=free_port())))
    assert result.returncode == 1
    assert b"PostgreSQL" in result.stderr
    assert b"hunter2" not in result.stderr
    assert b"secret" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_an_unreachable_database_is_one_clear_line_naming_where(
    tmp_path: Path,
) -> None:
    port = free_port()
    url = f"postgresql://tracker:hunter2-secret@127.0.0.1:{port}/tracker"
    result = run_cli("verify", db=Store(tmp_path / "unused.db", url))
    assert result.returncode == 1
    assert f"cannot connect to PostgreSQL at 127.0.0.1:{port}/tracker".encode() in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_verify_finds_an_edited_event_in_postgresql(pair: tuple[Server, Server]) -> None:
    a, b = pair
    guest = a.guest()
    for number in range(3):
        guest.create(f"task {number}")
    b.stop()
    a.stop()
    url = a.store.url
    assert url is not None
    asyncio.run(_execute(url, "UPDATE events SET data = '{\"x\":1}'::bytea WHERE position = 3"))

    result = run_cli("verify", db=a.store)

    assert result.returncode == 1
    assert b"position 3" in result.stderr
