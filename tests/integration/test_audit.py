"""The audit endpoint through a real server: paging, filters, NDJSON, ownership, admins, secrets."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.integration.conftest import Guest, Server, ServerFactory, error_of

PASSWORD = "correct horse"
ADMIN = "root_admin"


@pytest.fixture(scope="module")
def server(module_servers: ServerFactory) -> Server:
    """One server for the module, with an admin account name and cheap bcrypt."""
    return module_servers(TRACKER_BCRYPT_ROUNDS="4", TRACKER_ADMINS=f"someone, {ADMIN.upper()}")


def events_page(client: httpx.Client, **params: Any) -> dict[str, Any]:
    response = client.get("/api/events", params=params)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    page: dict[str, Any] = response.json()
    assert set(page) == {"events", "next_after"}
    return page


def every_page(client: httpx.Client, limit: int, **params: Any) -> list[dict[str, Any]]:
    """Every event, page by page, following `next_after`."""
    events: list[dict[str, Any]] = []
    after = 0
    while True:
        page = events_page(client, after=after, limit=limit, **params)
        assert len(page["events"]) <= limit
        events.extend(page["events"])
        if page["next_after"] is None:
            return events
        after = page["next_after"]


def ndjson(client: httpx.Client, **params: Any) -> list[dict[str, Any]]:
    response = client.get("/api/events", params=params, headers={"Accept": "application/x-ndjson"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/x-ndjson")
    assert response.text.endswith("\n") or response.text == ""
    return [json.loads(line) for line in response.text.splitlines()]


def register(server: Server, username: str, token: str | None = None) -> str:
    response = server.client(token).post(
        "/api/auth/register", json={"username": username, "password": PASSWORD}
    )
    assert response.status_code == 201, response.text
    access_token: str = response.json()["access_token"]
    return access_token


def busy_guest(guest: Guest, tasks: int = 3) -> list[str]:
    """A guest with some history: tasks created, one renamed, one with a timer, one deleted."""
    ids = [guest.create(f"task {n}")["id"] for n in range(tasks)]
    guest.client.patch(f"/api/tasks/{ids[0]}", json={"title": "renamed"})
    guest.client.post(f"/api/tasks/{ids[1]}/timer/start", json={"duration_seconds": 600})
    guest.client.delete(f"/api/tasks/{ids[-1]}")
    return ids


def test_pages_follow_next_after_through_every_own_event_in_order(guest: Guest) -> None:
    ids = busy_guest(guest, tasks=4)

    events = every_page(guest.client, limit=2)

    assert [e["type"] for e in events] == [
        "GuestStarted",
        *["TaskCreated"] * 4,
        "TaskUpdated",
        "TimerStarted",
        "TaskDeleted",
    ]
    positions = [e["position"] for e in events]
    assert positions == sorted(set(positions))
    assert {e["stream"] for e in events} == {f"principal-{guest.id}"} | {f"task-{i}" for i in ids}
    assert set(events[0]) == {
        "position", "stream", "version", "type", "data", "actor", "recorded_at", "hash", "schema"
    }  # fmt: skip


def test_a_page_that_is_not_full_is_the_last(guest: Guest) -> None:
    guest.create()
    page = events_page(guest.client)
    assert len(page["events"]) == 2
    assert page["next_after"] is None
    assert events_page(guest.client, after=page["events"][-1]["position"])["events"] == []


def test_type_and_stream_filters(guest: Guest) -> None:
    ids = busy_guest(guest)

    created = every_page(guest.client, limit=1000, type="TaskCreated")
    assert [e["data"]["task_id"] for e in created] == ids

    stream = every_page(guest.client, limit=1000, stream=f"task-{ids[1]}")
    assert [e["type"] for e in stream] == ["TaskCreated", "TimerStarted"]
    assert [e["version"] for e in stream] == [1, 2]


def test_another_principals_events_never_appear(guest: Guest, other: Guest) -> None:
    theirs = busy_guest(other)
    busy_guest(guest)

    for events in (every_page(guest.client, limit=1000), ndjson(guest.client)):
        assert all(e["actor"] in (guest.id, "system") for e in events)
        assert not {e["stream"] for e in events} & {f"task-{i}" for i in theirs}
    assert events_page(guest.client, stream=f"task-{theirs[0]}")["events"] == []
    assert events_page(guest.client, stream=f"principal-{other.id}")["events"] == []


def test_ndjson_streams_the_same_events_as_the_pages(guest: Guest) -> None:
    busy_guest(guest, tasks=5)

    streamed = ndjson(guest.client)

    assert streamed == every_page(guest.client, limit=3)
    assert ndjson(guest.client, type="TaskDeleted", after=0) == every_page(
        guest.client, limit=10, type="TaskDeleted"
    )
    assert len(ndjson(guest.client, limit=2)) == 2


def test_ndjson_streams_more_than_a_chunk_and_a_read_page(server: Server, guest: Guest) -> None:
    task = guest.create("busy")
    for n in range(300):
        guest.client.patch(f"/api/tasks/{task['id']}", json={"notes": "x" * 200 + str(n)})

    streamed = ndjson(guest.client)

    assert len(streamed) == 302
    assert [e["version"] for e in streamed[1:]] == list(range(1, 302))


def test_registering_brings_the_guest_history_along(server: Server, guest: Guest) -> None:
    ids = busy_guest(guest)
    token = register(server, "claimer_audit", guest.token)
    user = server.client(token)

    events = every_page(user, limit=1000)

    streams = {e["stream"] for e in events}
    assert f"principal-{guest.id}" in streams  # GuestStarted and GuestClaimed
    assert {f"task-{i}" for i in ids} <= streams
    assert "username-claimer_audit" in streams
    assert [e["type"] for e in events].count("GuestClaimed") == 1


def test_password_hashes_never_leave_the_server(server: Server) -> None:
    token = register(server, "secretive_one")
    client = server.client(token)

    for events in (every_page(client, limit=1000), ndjson(client)):
        [registered] = [e for e in events if e["type"] == "UserRegistered"]
        assert registered["data"]["password_hash"] == "[redacted]"
        assert registered["data"]["username"] == "secretive_one"
    for accept in ("application/json", "application/x-ndjson"):
        assert "$2b$" not in client.get("/api/events", headers={"Accept": accept}).text


def test_an_admin_sees_every_event_and_still_no_secret(server: Server, other: Guest) -> None:
    theirs = busy_guest(other)
    register(server, "someone_else_entirely")
    admin = server.client(register(server, ADMIN.lower()))

    everything = every_page(admin, limit=1000)

    positions = [e["position"] for e in everything]
    assert positions == list(range(1, len(positions) + 1))  # the whole log, gap-free
    assert {f"task-{i}" for i in theirs} <= {e["stream"] for e in everything}
    assert ndjson(admin) == everything
    registered = [e for e in everything if e["type"] == "UserRegistered"]
    assert len(registered) >= 2
    assert {e["data"]["password_hash"] for e in registered} == {"[redacted]"}
    assert events_page(admin, stream=f"task-{theirs[0]}")["events"][0]["type"] == "TaskCreated"


def test_a_user_not_named_admin_sees_only_their_own(server: Server) -> None:
    user = server.client(register(server, "root_admin_not"))
    events = every_page(user, limit=1000)
    assert {e["stream"] for e in events} == {"username-root_admin_not"}


@pytest.mark.parametrize(
    "params",
    [
        {"limit": "0"},
        {"limit": "1001"},
        {"limit": "ten"},
        {"after": "-1"},
        {"after": "1.5"},
        {"type": "NoSuchEvent"},
        {"limit": "9" * 40},
    ],
)
def test_bad_query_parameters_are_a_clear_400(guest: Guest, params: dict[str, str]) -> None:
    error = error_of(guest.client.get("/api/events", params=params), 400, "bad_request")
    assert next(iter(params)) in error["message"]


def test_the_limits_are_inclusive(guest: Guest) -> None:
    for limit in ("1", "1000"):
        assert guest.client.get("/api/events", params={"limit": limit}).status_code == 200


def test_without_credentials_it_is_401(server: Server) -> None:
    error_of(server.client().get("/api/events"), 401, "unauthorized")
    error_of(
        server.client().get("/api/events", headers={"Accept": "application/x-ndjson"}),
        401,
        "unauthorized",
    )


@pytest.mark.parametrize("query", ["as_of=" + "9" * 40, "as_of=-1", "as_of=1e3", "as_of="])
def test_time_travel_to_a_position_that_is_not_one_is_400(guest: Guest, query: str) -> None:
    error_of(guest.client.get(f"/api/tasks?{query}"), 400, "bad_request")
