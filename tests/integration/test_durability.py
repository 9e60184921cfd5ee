"""Durability: what the server acknowledged survives SIGKILL, and a clean stop keeps a snapshot.

The writers here are real threads with real HTTP clients; the server is killed
while they write (and while the timers they start fall due). Every 2xx they
received is a promise the restarted server must keep.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from msgspec.structs import replace

from tests.integration.conftest import (
    Guest,
    Server,
    ServerFactory,
    check_response,
    cli_events,
    run_cli,
)
from tracker.events.snapshot_files import read_snapshot, write_snapshot
from tracker.events.store import Snapshot
from tracker.projections.model import SNAPSHOT_NAME

WRITERS = 8
WRITE_SECONDS = 1.5
KILLS = 20
"""SIGKILLs in a row, each at a random moment of the writing."""
TIMER_SECONDS = 1
"""Every third task gets a timer this short, so that runs fall due around the kills."""


@dataclass
class Acks:
    """What one writer was told: task id -> (version, title) of its last 2xx."""

    tasks: dict[str, tuple[int, str]] = field(default_factory=dict)
    deleted: set[str] = field(default_factory=set)
    in_doubt: set[str] = field(default_factory=set)
    """Tasks whose deletion was sent but never answered: it may or may not have happened."""
    requests: int = 0
    refused: list[str] = field(default_factory=list)

    def take(self, response: httpx.Response, status: int) -> dict[str, Any] | None:
        """Count the request; the task it answered if it got `status` (a promise to keep),
        else None, with the refusal noted."""
        self.requests += 1
        if response.status_code != status:
            request = response.request
            self.refused.append(
                f"{request.method} {request.url.path} {response.status_code} {response.text}"
            )
            return None
        task: dict[str, Any] = response.json()
        self.tasks[task["id"]] = (task["version"], task["title"])
        return task


def write_until(server: Server, guest: Guest, stop: threading.Event, name: str) -> Acks:
    """Create tasks and rename them until `stop`, or until the server goes away."""
    acks = Acks()
    client = httpx.Client(
        base_url=server.url,
        headers={"Authorization": f"Bearer {guest.token}"},
        timeout=5.0,
        event_hooks={"response": [check_response]},
    )
    with client:
        n = 0
        while not stop.is_set():
            n += 1
            try:
                task = acks.take(client.post("/api/tasks", json={"title": f"{name} task {n}"}), 201)
                if task is None:
                    continue
                if n % 3 == 0:
                    path = f"/api/tasks/{task['id']}/timer/start"
                    task = acks.take(
                        client.post(path, json={"duration_seconds": TIMER_SECONDS}), 200
                    )
                    if task is None:
                        continue
                for rename in range(3):
                    title = f"{name} task {n} rename {rename}"
                    renamed = acks.take(
                        client.patch(f"/api/tasks/{task['id']}", json={"title": title}), 200
                    )
                    if renamed is None:
                        break
                    task = renamed
                if n % 5 == 0:
                    acks.in_doubt.add(task["id"])
                    response = client.delete(f"/api/tasks/{task['id']}")
                    acks.requests += 1
                    acks.in_doubt.discard(task["id"])
                    if response.status_code == 204:
                        acks.deleted.add(task["id"])
                        del acks.tasks[task["id"]]
            except httpx.TransportError:
                return acks  # the server is gone
    return acks


def under_load(
    server: Server,
    guests: list[Guest],
    interrupt: Callable[[], None],
    seconds: float = WRITE_SECONDS,
) -> list[Acks]:
    """Run one writer per guest for `seconds`, call `interrupt` mid-stream, collect their
    acks."""
    stop = threading.Event()
    with ThreadPoolExecutor(len(guests)) as pool:
        futures = [
            pool.submit(write_until, server, guest, stop, f"w{index}")
            for index, guest in enumerate(guests)
        ]
        time.sleep(seconds)
        interrupt()
        stop.set()
        return [future.result(timeout=30) for future in futures]


def assert_acknowledged_writes_kept(server: Server, guests: list[Guest], acks: list[Acks]) -> int:
    """Every acknowledged task is there at (at least) its acknowledged version. Returns a count."""
    checked = 0
    for guest, acked in zip(guests, acks, strict=True):
        client = server.client(guest.token)
        response = client.get("/api/tasks")
        assert response.status_code == 200
        tasks = {task["id"]: task for task in response.json()["tasks"]}
        for task_id, (version, title) in acked.tasks.items():
            if task_id in acked.in_doubt and task_id not in tasks:
                continue
            assert task_id in tasks, f"acknowledged task {task_id} ({title}) is gone"
            task = tasks[task_id]
            assert task["version"] >= version, (task, version)
            if task["version"] == version:
                assert task["title"] == title
            checked += 1
        for task_id in acked.deleted:
            assert task_id not in tasks, f"acknowledged deletion of {task_id} was undone"
            history = client.get(f"/api/tasks/{task_id}/history")
            assert history.json()["events"][-1]["type"] == "TaskDeleted"
    return checked


def assert_log_is_sound(server: Server) -> None:
    """`tracker verify` passes and `tracker events` is gap-free up to the server's head
    (or beyond it: the server goes on finishing timers that fell due meanwhile)."""
    head = httpx.get(f"{server.url}/healthz").json()["position"]
    result = run_cli("verify", db=server.store)
    assert result.returncode == 0, result.stderr
    positions = [event["position"] for event in cli_events(server.store)]
    assert positions == list(range(1, len(positions) + 1))
    assert positions[-1] >= head


def timer_runs(server: Server) -> tuple[dict[str, str], Counter[str], set[str]]:
    """From the log: each started run's stream, how often each run finished, and the
    streams of deleted tasks."""
    events = cli_events(server.store)
    started = {
        event["data"]["run"]: event["stream"] for event in events if event["type"] == "TimerStarted"
    }
    finishes = Counter(event["data"]["run"] for event in events if event["type"] == "TimerFinished")
    deleted = {event["stream"] for event in events if event["type"] == "TaskDeleted"}
    return started, finishes, deleted


def assert_each_run_finished_at_most_once(server: Server) -> None:
    """No timer run has two `TimerFinished`, and none finishes a run that never started."""
    started, finishes, _ = timer_runs(server)
    assert set(finishes) <= set(started)
    assert [run for run, count in finishes.items() if count > 1] == []


@pytest.mark.slow
def test_acknowledged_writes_and_timers_survive_20_sigkills_in_a_row(
    start_server: ServerFactory,
) -> None:
    moments = random.Random()  # a fresh seed each run: the moments differ every time
    server = start_server()
    guests = [server.guest() for _ in range(WRITERS)]
    promised = [Acks() for _ in guests]  # every cycle's acknowledgements, all still owed
    for _kill in range(KILLS):
        acks = under_load(server, guests, server.kill, moments.uniform(0.2, WRITE_SECONDS))
        assert not server.running
        assert all(not acked.refused for acked in acks), [acked.refused for acked in acks]
        for owed, acked in zip(promised, acks, strict=True):
            owed.tasks.update(acked.tasks)
            owed.deleted |= acked.deleted
            owed.in_doubt |= acked.in_doubt
        server.start()
        assert_acknowledged_writes_kept(server, guests, promised)
        assert_log_is_sound(server)
        assert_each_run_finished_at_most_once(server)
    assert sum(len(owed.tasks) for owed in promised) > KILLS * WRITERS, "the writers barely wrote"

    time.sleep(TIMER_SECONDS + 1)  # the runs still running at the last kill fall due
    started, finishes, deleted = timer_runs(server)
    assert len(started) > KILLS, "the writers barely started timers"
    unfinished = [
        run for run, stream in started.items() if stream not in deleted and not finishes[run]
    ]
    assert unfinished == []
    assert_each_run_finished_at_most_once(server)
    assert server.stop() == 0
    result = run_cli("verify", db=server.store)
    assert result.returncode == 0, result.stderr


@pytest.mark.slow
def test_acknowledged_writes_survive_sigterm_under_load(start_server: ServerFactory) -> None:
    server = start_server()
    guests = [server.guest() for _ in range(WRITERS // 2)]
    status: list[int] = []
    acks = under_load(server, guests, lambda: status.append(server.stop()))
    assert status == [0]
    for acked in acks:  # a request caught by the shutdown may be refused (503), never a 500
        assert all(" 503 " in f" {refusal} " for refusal in acked.refused), acked.refused
    server.start()
    assert_acknowledged_writes_kept(server, guests, acks)
    assert_log_is_sound(server)


# A clean stop: everything kept, and the next start begins from the snapshot


def populate(server: Server) -> tuple[list[Guest], dict[str, list[dict[str, Any]]]]:
    guests = [server.guest(), server.guest()]
    for guest in guests:
        tasks = [guest.create(f"{guest.id} {n}", notes=f"notes {n}") for n in range(4)]
        guest.client.patch(f"/api/tasks/{tasks[0]['id']}", json={"done": True})
        guest.client.patch(f"/api/tasks/{tasks[1]['id']}", json={"title": "renamed"})
        guest.client.delete(f"/api/tasks/{tasks[2]['id']}")
    return guests, state_of(server, guests)


def state_of(server: Server, guests: list[Guest]) -> dict[str, list[dict[str, Any]]]:
    return {
        guest.id: server.client(guest.token).get("/api/tasks").json()["tasks"] for guest in guests
    }


def snapshot_of(db: Path) -> Snapshot | None:
    return read_snapshot(db, SNAPSHOT_NAME)


def doctor_snapshot(db: Path, **changes: Any) -> None:
    snapshot = snapshot_of(db)
    assert snapshot is not None
    write_snapshot(db, replace(snapshot, **changes))


def head_of(server: Server) -> int:
    position: int = httpx.get(f"{server.url}/healthz").json()["position"]
    return position


@pytest.mark.sqlite_only  # reads or doctors the snapshot file beside the SQLite file
def test_clean_stop_writes_a_snapshot_at_the_head(start_server: ServerFactory) -> None:
    server = start_server()
    populate(server)
    head = head_of(server)
    assert server.stop() == 0
    snapshot = snapshot_of(server.db)
    assert snapshot is not None
    assert snapshot.position == head
    assert snapshot.hash == cli_events(server.store)[-1]["hash"]
    assert f"snapshot saved at position {head}" in server.log()


@pytest.mark.sqlite_only  # reads or doctors the snapshot file beside the SQLite file
def test_clean_stop_after_crash_recovery_writes_a_snapshot(start_server: ServerFactory) -> None:
    server = start_server()
    populate(server)
    head = head_of(server)
    server.kill()
    assert snapshot_of(server.db) is None
    server.start()
    assert server.stop() == 0
    snapshot = snapshot_of(server.db)
    assert snapshot is not None
    assert snapshot.position == head


def test_restart_after_sigterm_keeps_everything(start_server: ServerFactory) -> None:
    server = start_server()
    guests, before = populate(server)
    head = head_of(server)
    assert server.stop() == 0
    server.start()
    assert head_of(server) == head
    assert state_of(server, guests) == before
    assert "ignoring the snapshot" not in server.log()
    assert f"read model ready at position {head}" in server.log()
    for guest in guests:  # and it carries on writing where it stopped
        assert server.client(guest.token).post("/api/tasks", json={"title": "next"}).is_success
    assert head_of(server) == head + 2


@pytest.mark.sqlite_only  # reads or doctors the snapshot file beside the SQLite file
def test_restart_after_sigterm_starts_from_the_snapshot(start_server: ServerFactory) -> None:
    """Doctor the snapshot (not the log): the restarted server shows the doctored state,
    so it must have loaded the snapshot rather than replayed the log."""
    server = start_server()
    guests, _ = populate(server)
    assert server.stop() == 0
    snapshot = snapshot_of(server.db)
    assert snapshot is not None
    state = msgspec.msgpack.decode(snapshot.data)
    owner, owned = next(iter(state[1].items()))  # the board's tasks: owner -> id -> task
    task = next(iter(owned.values()))
    task["title"] = "only in the snapshot"
    write_snapshot(server.db, replace(snapshot, data=msgspec.msgpack.encode(state)))

    server.start()
    guest = next(guest for guest in guests if guest.id == owner)
    served = server.client(guest.token).get(f"/api/tasks/{task['id']}").json()
    assert served["title"] == "only in the snapshot"
    assert "ignoring the snapshot" not in server.log()
    # ... which is exactly what `tracker verify` exists to catch.
    assert server.stop() == 0
    result = run_cli("verify", db=server.store)
    assert result.returncode == 1
    assert b"snapshot differs from a full replay" in result.stderr


@pytest.mark.sqlite_only  # reads or doctors the snapshot file beside the SQLite file
def test_unreadable_snapshot_is_ignored_and_the_log_replayed(start_server: ServerFactory) -> None:
    server = start_server()
    guests, before = populate(server)
    assert server.stop() == 0
    doctor_snapshot(server.db, data=b"\xc1 not msgpack")
    server.start()
    assert state_of(server, guests) == before
    assert "ignoring the snapshot" in server.log()


@pytest.mark.sqlite_only  # reads or doctors the snapshot file beside the SQLite file
def test_snapshot_of_another_log_is_ignored(start_server: ServerFactory) -> None:
    server = start_server()
    guests, before = populate(server)
    assert server.stop() == 0
    doctor_snapshot(server.db, hash="0" * 64)
    server.start()
    assert state_of(server, guests) == before
    assert "ignoring the snapshot" in server.log()


@pytest.mark.sqlite_only  # reads or doctors the snapshot file beside the SQLite file
def test_snapshot_plus_tail_after_a_kill(start_server: ServerFactory) -> None:
    """Stop cleanly (snapshot), write more, SIGKILL (no new snapshot): both halves come back."""
    server = start_server()
    guests, _ = populate(server)
    assert server.stop() == 0
    snapshot_at = snapshot_of(server.db)
    assert snapshot_at is not None
    server.start()
    for guest in guests:
        client = server.client(guest.token)
        created = client.post("/api/tasks", json={"title": "after the snapshot"}).json()
        client.patch(f"/api/tasks/{created['id']}", json={"done": True})
    after = state_of(server, guests)
    head = head_of(server)
    assert head > snapshot_at.position
    server.kill()
    assert snapshot_of(server.db) == snapshot_at
    server.start()
    assert head_of(server) == head
    assert state_of(server, guests) == after
    assert "ignoring the snapshot" not in server.log()
    result = run_cli("verify", db=server.store)
    assert result.returncode == 0, result.stderr
    assert f"snapshot at {snapshot_at.position} matches".encode() in result.stdout


def test_sigterm_with_idle_keepalive_clients_exits_promptly(start_server: ServerFactory) -> None:
    server = start_server()
    guest = server.guest()
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {guest.token}"}) as c:
        assert c.get("/api/tasks").status_code == 200  # leaves a keep-alive connection open
        started = time.monotonic()
        assert server.stop() == 0
        assert time.monotonic() - started < 5
