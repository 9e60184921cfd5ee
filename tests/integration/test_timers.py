"""Timers through a real server: on time with nobody watching, and across a crash."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import pytest

from tests.integration.conftest import Guest, Server, error_of


def start(guest: Guest, task_id: str, seconds: int) -> dict[str, Any]:
    response = guest.client.post(
        f"/api/tasks/{task_id}/timer/start", json={"duration_seconds": seconds}
    )
    assert response.status_code == 200, response.text
    task: dict[str, Any] = response.json()
    return task


def seconds_of(timestamp: str) -> float:
    return datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()


def test_a_timer_finishes_on_time_with_no_client_connected(guest: Guest) -> None:
    task = guest.create("tea")
    started = start(guest, task["id"], 2)
    due = seconds_of(started["timer"]["ends_at"])

    time.sleep(2.6)
    finished = guest.client.get(f"/api/tasks/{task['id']}").json()

    assert finished["timer"]["state"] == "finished"
    assert finished["timer"]["finished_at"] == started["timer"]["ends_at"]
    assert finished["timer"]["remaining_seconds"] == 0
    assert finished["tracked_seconds"] == 2
    history = guest.client.get(f"/api/tasks/{task['id']}/history").json()["events"]
    finish = [event for event in history if event["type"] == "TimerFinished"]
    assert len(finish) == 1
    assert finish[0]["actor"] == "system"
    assert seconds_of(finish[0]["recorded_at"]) - due < 0.5  # noticed on time


@pytest.mark.parametrize(
    ("seconds", "ok"), [(0, False), (1, True), (604_800, True), (604_801, False)]
)
def test_duration_limits(guest: Guest, seconds: int, ok: bool) -> None:
    task = guest.create()
    response = guest.client.post(
        f"/api/tasks/{task['id']}/timer/start", json={"duration_seconds": seconds}
    )
    if ok:
        assert response.status_code == 200
    else:
        assert error_of(response, 422, "validation_error")["details"][0]["field"] == (
            "duration_seconds"
        )


@pytest.mark.parametrize(
    "value",
    ["1" + "0" * 30, "1e400", "-1e400", "-1", "1.5", '"5"', "true", "null", "[5]", '{"s": 5}'],
)
def test_a_duration_that_is_not_a_whole_number_in_range_is_422(guest: Guest, value: str) -> None:
    task = guest.create()
    response = guest.client.post(
        f"/api/tasks/{task['id']}/timer/start",
        content='{"duration_seconds": ' + value + "}",
        headers={"Content-Type": "application/json"},
    )

    assert error_of(response, 422, "validation_error")["details"][0]["field"] == (
        "duration_seconds"
    )
    assert guest.client.get(f"/api/tasks/{task['id']}").json()["timer"] is None


def test_timer_transitions_answer_409_when_they_do_not_apply(guest: Guest) -> None:
    task = guest.create()
    for action in ("pause", "resume", "stop"):
        error_of(guest.client.post(f"/api/tasks/{task['id']}/timer/{action}"), 409, "invalid_state")
    start(guest, task["id"], 60)
    error_of(
        guest.client.post(f"/api/tasks/{task['id']}/timer/start", json={"duration_seconds": 5}),
        409,
        "invalid_state",
    )
    assert guest.client.post(f"/api/tasks/{task['id']}/timer/pause").json()["timer"]["state"] == (
        "paused"
    )
    stopped = guest.client.post(f"/api/tasks/{task['id']}/timer/stop").json()
    assert stopped["timer"] is None


def test_another_principals_timer_is_not_found(guest: Guest, other: Guest) -> None:
    task = guest.create()
    start(guest, task["id"], 60)
    for action in ("pause", "resume", "stop"):
        error_of(other.client.post(f"/api/tasks/{task['id']}/timer/{action}"), 404, "not_found")
    error_of(
        other.client.post(f"/api/tasks/{task['id']}/timer/start", json={"duration_seconds": 5}),
        404,
        "not_found",
    )


def test_timers_survive_a_crash(start_server: Any) -> None:
    server: Server = start_server()
    guest = server.guest()
    overdue, later, paused = (guest.create(name)["id"] for name in ("overdue", "later", "paused"))
    due = start(guest, overdue, 1)["timer"]["ends_at"]
    start(guest, later, 6)
    start(guest, paused, 1)
    guest.client.post(f"/api/tasks/{paused}/timer/pause")

    server.kill()  # SIGKILL, before the 1-second run is due
    time.sleep(1.5)  # it falls due while the server is down
    server.start()
    client = server.client(guest.token)

    finished = client.get(f"/api/tasks/{overdue}").json()
    assert finished["timer"]["state"] == "finished"
    assert finished["timer"]["finished_at"] == due  # its true due time
    assert client.get(f"/api/tasks/{paused}").json()["timer"]["state"] == "paused"
    assert client.get(f"/api/tasks/{later}").json()["timer"]["state"] == "running"
    time.sleep(5)
    assert client.get(f"/api/tasks/{later}").json()["timer"]["state"] == "finished"
    for task_id, finishes in ((overdue, 1), (later, 1), (paused, 0)):
        history = client.get(f"/api/tasks/{task_id}/history").json()["events"]
        assert sum(event["type"] == "TimerFinished" for event in history) == finishes
