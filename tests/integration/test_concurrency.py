"""A hundred writers on one task at once, through a real server: none lost, one winner.

`test_tasks.py` checks the same promises with a handful of threads; here every
request is its own thread and HTTP connection, released together by a barrier,
so that the group-committing writer sees them all in one or two batches.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from tests.integration.conftest import Guest, Server, error_of

WRITERS = 100

pytestmark = pytest.mark.slow


def in_parallel(
    server: Server, guest: Guest, request: Callable[[httpx.Client, int], httpx.Response]
) -> list[httpx.Response]:
    """`request(client, n)` for n in 0..WRITERS-1, each on its own thread and connection,
    all let go at once; the responses in the order of n."""
    clients = [server.client(guest.token, timeout=30.0) for _ in range(WRITERS)]
    for client in clients:  # connect first, so the barrier releases requests, not handshakes
        assert client.get("/api/auth/me").status_code == 200
    start = threading.Barrier(WRITERS)

    def run(n: int) -> httpx.Response:
        start.wait(timeout=30)
        return request(clients[n], n)

    with ThreadPoolExecutor(WRITERS) as pool:
        return list(pool.map(run, range(WRITERS)))


def history(guest: Guest, task_id: str) -> list[dict[str, Any]]:
    response = guest.client.get(f"/api/tasks/{task_id}/history")
    assert response.status_code == 200, response.text
    events: list[dict[str, Any]] = response.json()["events"]
    return events


def test_a_hundred_patches_with_the_same_if_match_let_exactly_one_win(
    server: Server, guest: Guest
) -> None:
    task = guest.create("contended", notes="before")
    etag = guest.client.get(f"/api/tasks/{task['id']}").headers["etag"]

    def patch(client: httpx.Client, n: int) -> httpx.Response:
        return client.patch(
            f"/api/tasks/{task['id']}",
            json={"title": f"winner {n}", "notes": f"notes of {n}"},
            headers={"If-Match": etag},
        )

    responses = in_parallel(server, guest, patch)

    won = [response for response in responses if response.status_code == 200]
    assert len(won) == 1, sorted(response.status_code for response in responses)
    for response in responses:
        if response is not won[0]:
            error_of(response, 412, "version_conflict")
    winner = won[0].json()
    assert winner["version"] == task["version"] + 1
    assert won[0].headers["etag"] == f'"{winner["version"]}"'

    events = history(guest, task["id"])
    updates = [event for event in events if event["type"] == "TaskUpdated"]
    assert len(updates) == 1, updates
    assert [event["version"] for event in events] == list(range(1, winner["version"] + 1))
    assert updates[0]["data"]["title"] == winner["title"]
    current = guest.client.get(f"/api/tasks/{task['id']}").json()
    assert (current["title"], current["notes"], current["version"]) == (
        winner["title"],
        winner["notes"],
        winner["version"],
    )


def test_a_hundred_patches_without_if_match_are_all_recorded(server: Server, guest: Guest) -> None:
    task = guest.create("contended")

    def patch(client: httpx.Client, n: int) -> httpx.Response:
        return client.patch(
            f"/api/tasks/{task['id']}", json={"title": f"title {n}", "notes": f"notes {n}"}
        )

    responses = in_parallel(server, guest, patch)

    for n, response in enumerate(responses):
        assert response.status_code == 200, response.text
        body = response.json()  # each writer reads its own write
        assert (body["title"], body["notes"]) == (f"title {n}", f"notes {n}")
    versions = sorted(response.json()["version"] for response in responses)
    assert versions == list(range(task["version"] + 1, task["version"] + WRITERS + 1))

    events = history(guest, task["id"])
    assert [event["version"] for event in events] == list(range(1, task["version"] + WRITERS + 1))
    updates = [event for event in events if event["type"] == "TaskUpdated"]
    assert len(updates) == WRITERS
    assert sorted(event["data"]["title"] for event in updates) == sorted(
        f"title {n}" for n in range(WRITERS)
    )
    assert sorted(event["data"]["notes"] for event in updates) == sorted(
        f"notes {n}" for n in range(WRITERS)
    )
    positions = [event["position"] for event in events]
    assert positions == sorted(positions)
    by_version = {response.json()["version"]: response.json()["title"] for response in responses}
    assert all(by_version[event["version"]] == event["data"]["title"] for event in updates)
    final = guest.client.get(f"/api/tasks/{task['id']}").json()
    assert final["version"] == task["version"] + WRITERS
    assert final["title"] == updates[-1]["data"]["title"]
