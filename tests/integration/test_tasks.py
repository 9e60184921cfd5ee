"""The task endpoints against a real server: create, read, change, delete, history, as_of."""

from __future__ import annotations

import re
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from tests.integration.conftest import TIMESTAMP, Guest, Server, error_of

TASK_FIELDS = {
    "id",
    "title",
    "notes",
    "done",
    "version",
    "created_at",
    "updated_at",
    "tracked_seconds",
    "timer",
}
EVENT_FIELDS = {"position", "stream", "version", "type", "data", "actor", "recorded_at", "hash"}


def head(server: Server) -> int:
    """The server's log position."""
    response = httpx.get(f"{server.url}/healthz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    position: int = body["position"]
    return position


def history(guest: Guest, task_id: str) -> list[dict[str, Any]]:
    response = guest.client.get(f"/api/tasks/{task_id}/history")
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"events"}
    events: list[dict[str, Any]] = body["events"]
    return events


# Create


def test_create_answers_201_with_the_task_location_and_etag(guest: Guest) -> None:
    response = guest.client.post("/api/tasks", json={"title": "Write tests", "notes": "soon"})
    assert response.status_code == 201
    task = response.json()
    assert set(task) == TASK_FIELDS
    assert re.fullmatch(r"[A-Za-z0-9_-]{1,64}", task["id"])
    assert task["title"] == "Write tests"
    assert task["notes"] == "soon"
    assert task["done"] is False
    assert task["version"] == 1
    assert task["tracked_seconds"] == 0
    assert task["timer"] is None
    assert re.match(TIMESTAMP, task["created_at"])
    assert task["updated_at"] == task["created_at"]
    assert response.headers["location"] == f"/api/tasks/{task['id']}"
    assert response.headers["etag"] == '"1"'
    assert response.headers["content-type"].startswith("application/json")


def test_create_trims_the_title(guest: Guest) -> None:
    task = guest.create("  \t spaced out \n ")
    assert task["title"] == "spaced out"


def test_create_without_notes_has_empty_notes(guest: Guest) -> None:
    assert guest.create("no notes")["notes"] == ""


def test_location_of_a_new_task_serves_it(guest: Guest) -> None:
    response = guest.client.post("/api/tasks", json={"title": "find me"})
    fetched = guest.client.get(response.headers["location"])
    assert fetched.status_code == 200
    assert fetched.json() == response.json()


# List


def test_new_guest_has_no_tasks(guest: Guest) -> None:
    response = guest.client.get("/api/tasks")
    assert response.status_code == 200
    body = response.json()
    assert body["tasks"] == []
    assert isinstance(body["position"], int)


def test_list_is_oldest_first_with_the_log_position(server: Server, guest: Guest) -> None:
    created = [guest.create(f"task {n}") for n in range(5)]
    response = guest.client.get("/api/tasks")
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"tasks", "position"}
    assert [task["id"] for task in body["tasks"]] == [task["id"] for task in created]
    assert body["tasks"] == created
    assert body["position"] == head(server)


def test_list_shows_only_the_callers_tasks(guest: Guest, other: Guest) -> None:
    mine = guest.create("mine")
    other.create("theirs")
    assert [task["id"] for task in guest.client.get("/api/tasks").json()["tasks"]] == [mine["id"]]


def test_list_leaves_out_deleted_tasks(guest: Guest) -> None:
    keep, gone = guest.create("keep"), guest.create("gone")
    assert guest.client.delete(f"/api/tasks/{gone['id']}").status_code == 204
    assert guest.client.get("/api/tasks").json()["tasks"] == [keep]


# Get


def test_get_answers_the_task_with_its_version_as_etag(guest: Guest) -> None:
    task = guest.create("read me")
    response = guest.client.get(f"/api/tasks/{task['id']}")
    assert response.status_code == 200
    assert response.json() == task
    assert response.headers["etag"] == '"1"'


def test_get_of_an_unknown_id_is_not_found(guest: Guest) -> None:
    error_of(guest.client.get("/api/tasks/doesNotExist123"), 404, "not_found")


# Patch


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"title": "renamed"}, {"title": "renamed"}),
        ({"title": "  renamed  "}, {"title": "renamed"}),
        ({"notes": "new notes"}, {"notes": "new notes"}),
        ({"notes": ""}, {"notes": ""}),
        ({"done": True}, {"done": True}),
        (
            {"title": "all", "notes": "of them", "done": True},
            {"title": "all", "notes": "of them", "done": True},
        ),
    ],
    ids=["title", "title-trimmed", "notes", "notes-emptied", "done", "all-three"],
)
def test_patch_changes_the_fields_given_and_bumps_the_version(
    guest: Guest, change: dict[str, Any], expected: dict[str, Any]
) -> None:
    task = guest.create("original", notes="old notes")
    response = guest.client.patch(f"/api/tasks/{task['id']}", json=change)
    assert response.status_code == 200, response.text
    patched = response.json()
    assert patched == {**task, **expected, "version": 2, "updated_at": patched["updated_at"]}
    assert patched["updated_at"] >= task["updated_at"]
    assert response.headers["etag"] == '"2"'
    assert guest.client.get(f"/api/tasks/{task['id']}").json() == patched


def test_patch_done_back_to_false(guest: Guest) -> None:
    task = guest.create("toggle")
    guest.client.patch(f"/api/tasks/{task['id']}", json={"done": True})
    response = guest.client.patch(f"/api/tasks/{task['id']}", json={"done": False})
    assert response.json()["done"] is False
    assert response.json()["version"] == 3


@pytest.mark.parametrize(
    "change",
    [{}, {"title": "same"}, {"title": "  same "}, {"notes": "n"}, {"done": False}],
    ids=["empty", "same-title", "same-title-padded", "same-notes", "same-done"],
)
def test_noop_patch_changes_nothing_and_keeps_the_version(
    guest: Guest, change: dict[str, Any]
) -> None:
    task = guest.create("same", notes="n")
    response = guest.client.patch(f"/api/tasks/{task['id']}", json=change)
    assert response.status_code == 200
    assert response.json() == task
    assert response.headers["etag"] == '"1"'
    assert [event["type"] for event in history(guest, task["id"])] == ["TaskCreated"]


def test_patch_records_only_the_fields_that_changed(guest: Guest) -> None:
    task = guest.create("same", notes="n")
    guest.client.patch(f"/api/tasks/{task['id']}", json={"title": "same", "notes": "changed"})
    last = history(guest, task["id"])[-1]
    assert last["type"] == "TaskUpdated"
    assert last["data"] == {"type": "TaskUpdated", "notes": "changed"}


def test_patch_of_an_unknown_id_is_not_found(guest: Guest) -> None:
    error_of(guest.client.patch("/api/tasks/nope", json={"done": True}), 404, "not_found")


# Delete


def test_delete_answers_204_then_the_task_is_not_found(guest: Guest) -> None:
    task = guest.create("doomed")
    response = guest.client.delete(f"/api/tasks/{task['id']}")
    assert response.status_code == 204
    assert response.content == b""
    error_of(guest.client.get(f"/api/tasks/{task['id']}"), 404, "not_found")


def test_delete_twice_is_not_found_the_second_time(guest: Guest) -> None:
    task = guest.create("doomed")
    assert guest.client.delete(f"/api/tasks/{task['id']}").status_code == 204
    error_of(guest.client.delete(f"/api/tasks/{task['id']}"), 404, "not_found")


def test_patch_of_a_deleted_task_is_not_found(guest: Guest) -> None:
    task = guest.create("doomed")
    guest.client.delete(f"/api/tasks/{task['id']}")
    error_of(guest.client.patch(f"/api/tasks/{task['id']}", json={"done": True}), 404)


# If-Match


@pytest.mark.parametrize("if_match", ['"1"', "1", "*"])
def test_patch_with_a_matching_if_match_succeeds(guest: Guest, if_match: str) -> None:
    task = guest.create("guarded")
    response = guest.client.patch(
        f"/api/tasks/{task['id']}", json={"title": "changed"}, headers={"If-Match": if_match}
    )
    assert response.status_code == 200, response.text
    assert response.json()["version"] == 2


def test_patch_with_the_etag_just_read_succeeds(guest: Guest) -> None:
    task = guest.create("guarded")
    guest.client.patch(f"/api/tasks/{task['id']}", json={"done": True})
    etag = guest.client.get(f"/api/tasks/{task['id']}").headers["etag"]
    response = guest.client.patch(
        f"/api/tasks/{task['id']}", json={"done": False}, headers={"If-Match": etag}
    )
    assert response.status_code == 200
    assert response.headers["etag"] == '"3"'


def test_patch_with_a_stale_if_match_is_a_version_conflict(guest: Guest) -> None:
    task = guest.create("guarded")
    guest.client.patch(f"/api/tasks/{task['id']}", json={"title": "someone else"})
    response = guest.client.patch(
        f"/api/tasks/{task['id']}", json={"title": "mine"}, headers={"If-Match": '"1"'}
    )
    error_of(response, 412, "version_conflict")
    current = guest.client.get(f"/api/tasks/{task['id']}").json()
    assert current["title"] == "someone else"
    assert current["version"] == 2


def test_patch_with_a_future_if_match_is_a_version_conflict(guest: Guest) -> None:
    task = guest.create("guarded")
    response = guest.client.patch(
        f"/api/tasks/{task['id']}", json={"done": True}, headers={"If-Match": '"7"'}
    )
    error_of(response, 412, "version_conflict")


def test_noop_patch_with_a_stale_if_match_is_still_a_conflict(guest: Guest) -> None:
    task = guest.create("guarded")
    guest.client.patch(f"/api/tasks/{task['id']}", json={"done": True})
    response = guest.client.patch(f"/api/tasks/{task['id']}", json={}, headers={"If-Match": '"1"'})
    error_of(response, 412, "version_conflict")


@pytest.mark.parametrize(
    "if_match",
    ['W/"1"', '"one"', "abc", '"1', '1"', '"-1"', '"1", "2"', '""', "1.0"],
)
def test_patch_with_a_malformed_if_match_is_412(guest: Guest, if_match: str) -> None:
    task = guest.create("guarded")
    response = guest.client.patch(
        f"/api/tasks/{task['id']}", json={"done": True}, headers={"If-Match": if_match}
    )
    error_of(response, 412, "version_conflict")
    assert guest.client.get(f"/api/tasks/{task['id']}").json()["version"] == 1


@pytest.mark.parametrize("if_match", ['"²"', "²"])
def test_patch_with_a_superscript_digit_if_match_is_412(guest: Guest, if_match: str) -> None:
    task = guest.create("guarded")
    response = guest.client.patch(
        f"/api/tasks/{task['id']}",
        json={"done": True},
        headers={b"If-Match": if_match.encode("latin-1")},
    )
    error_of(response, 412, "version_conflict")


def test_patch_with_a_huge_if_match_is_412(guest: Guest) -> None:
    task = guest.create("guarded")
    response = guest.client.patch(
        f"/api/tasks/{task['id']}", json={"done": True}, headers={"If-Match": f'"{"9" * 40}"'}
    )
    error_of(response, 412, "version_conflict")


def test_patch_with_an_if_match_of_5000_digits_is_412(guest: Guest) -> None:
    task = guest.create("guarded")
    response = guest.client.patch(
        f"/api/tasks/{task['id']}", json={"done": True}, headers={"If-Match": f'"{"9" * 5000}"'}
    )
    error_of(response, 412, "version_conflict")


def test_delete_with_a_matching_if_match_succeeds(guest: Guest) -> None:
    task = guest.create("guarded")
    response = guest.client.delete(f"/api/tasks/{task['id']}", headers={"If-Match": '"1"'})
    assert response.status_code == 204


def test_delete_with_a_stale_if_match_is_412_and_keeps_the_task(guest: Guest) -> None:
    task = guest.create("guarded")
    guest.client.patch(f"/api/tasks/{task['id']}", json={"done": True})
    response = guest.client.delete(f"/api/tasks/{task['id']}", headers={"If-Match": '"1"'})
    error_of(response, 412, "version_conflict")
    assert guest.client.get(f"/api/tasks/{task['id']}").status_code == 200


def test_delete_with_a_malformed_if_match_is_412(guest: Guest) -> None:
    task = guest.create("guarded")
    response = guest.client.delete(f"/api/tasks/{task['id']}", headers={"If-Match": "v1"})
    error_of(response, 412, "version_conflict")
    assert guest.client.get(f"/api/tasks/{task['id']}").status_code == 200


# History


def test_history_lists_the_tasks_events_in_order(guest: Guest) -> None:
    task = guest.create("story", notes="begins")
    guest.client.patch(f"/api/tasks/{task['id']}", json={"title": "story 2"})
    guest.client.patch(f"/api/tasks/{task['id']}", json={"done": True})
    events = history(guest, task["id"])
    assert [event["type"] for event in events] == ["TaskCreated", "TaskUpdated", "TaskUpdated"]
    assert [event["version"] for event in events] == [1, 2, 3]
    positions = [event["position"] for event in events]
    assert positions == sorted(positions)
    assert len(set(positions)) == 3
    for event in events:
        assert set(event) >= EVENT_FIELDS
        assert event["stream"] == f"task-{task['id']}"
        assert event["actor"] == guest.id
        assert re.match(TIMESTAMP, event["recorded_at"])
        assert re.fullmatch(r"[0-9a-f]{64}", event["hash"])
    assert events[0]["data"] == {
        "type": "TaskCreated",
        "task_id": task["id"],
        "owner": guest.id,
        "title": "story",
        "notes": "begins",
    }
    assert events[1]["data"] == {"type": "TaskUpdated", "title": "story 2"}
    assert events[2]["data"] == {"type": "TaskUpdated", "done": True}


def test_history_is_still_there_after_delete(guest: Guest) -> None:
    task = guest.create("ephemeral")
    guest.client.patch(f"/api/tasks/{task['id']}", json={"notes": "x"})
    guest.client.delete(f"/api/tasks/{task['id']}")
    events = history(guest, task["id"])
    assert [event["type"] for event in events] == ["TaskCreated", "TaskUpdated", "TaskDeleted"]
    assert events[-1]["version"] == 3


def test_history_of_an_unknown_task_is_not_found(guest: Guest) -> None:
    error_of(guest.client.get("/api/tasks/neverExisted/history"), 404, "not_found")


# Another owner's task: never reveal it exists


@pytest.mark.parametrize(
    ("method", "suffix", "body"),
    [
        ("GET", "", None),
        ("PATCH", "", {"title": "hijacked"}),
        ("DELETE", "", None),
        ("GET", "/history", None),
    ],
    ids=["get", "patch", "delete", "history"],
)
def test_another_owners_task_is_not_found(
    guest: Guest, other: Guest, method: str, suffix: str, body: dict[str, Any] | None
) -> None:
    task = other.create("private")
    response = guest.client.request(method, f"/api/tasks/{task['id']}{suffix}", json=body)
    missing = guest.client.request(method, f"/api/tasks/doesNotExist{suffix}", json=body)
    error_of(response, 404, "not_found")
    assert response.json() == missing.json()
    still = other.client.get(f"/api/tasks/{task['id']}")
    assert still.status_code == 200
    assert still.json() == task


def test_another_owners_task_with_if_match_is_not_found(guest: Guest, other: Guest) -> None:
    task = other.create("private")
    response = guest.client.patch(
        f"/api/tasks/{task['id']}", json={"done": True}, headers={"If-Match": '"1"'}
    )
    error_of(response, 404, "not_found")


def test_another_owners_deleted_task_history_is_not_found(guest: Guest, other: Guest) -> None:
    task = other.create("private")
    other.client.delete(f"/api/tasks/{task['id']}")
    error_of(guest.client.get(f"/api/tasks/{task['id']}/history"), 404, "not_found")


# as_of


def test_as_of_shows_the_tasks_as_they_stood_at_that_position(guest: Guest) -> None:
    first = guest.create("first", notes="v1")
    after_first = guest.client.get("/api/tasks").json()["position"]
    guest.client.patch(f"/api/tasks/{first['id']}", json={"title": "first, renamed"})
    after_rename = guest.client.get("/api/tasks").json()["position"]
    second = guest.create("second")
    guest.client.delete(f"/api/tasks/{first['id']}")

    then = guest.client.get("/api/tasks", params={"as_of": after_first})
    assert then.status_code == 200
    assert then.json() == {"tasks": [first], "position": after_first}

    later = guest.client.get("/api/tasks", params={"as_of": after_rename}).json()
    assert [task["title"] for task in later["tasks"]] == ["first, renamed"]
    assert later["tasks"][0]["version"] == 2

    now = guest.client.get("/api/tasks").json()
    assert guest.client.get("/api/tasks", params={"as_of": now["position"]}).json() == now
    assert now["tasks"] == [second]


def test_as_of_zero_is_empty(guest: Guest) -> None:
    guest.create("later")
    response = guest.client.get("/api/tasks", params={"as_of": 0})
    assert response.json() == {"tasks": [], "position": 0}


def test_as_of_before_the_guest_existed_is_empty(server: Server, guest: Guest) -> None:
    before = head(server)
    fresh = server.guest()
    fresh.create("new")
    assert fresh.client.get("/api/tasks", params={"as_of": before}).json()["tasks"] == []


def test_as_of_does_not_show_another_owners_tasks(guest: Guest, other: Guest) -> None:
    other.create("theirs")
    position = guest.client.get("/api/tasks").json()["position"]
    assert guest.client.get("/api/tasks", params={"as_of": position}).json()["tasks"] == []


@pytest.mark.parametrize(
    "as_of",
    [
        "",
        "abc",
        "-1",
        "1.5",
        "1e3",
        " 1",
        "0x10",
        "+1",
        "9" * 19,
        "99999999999999",
        "\x00",
    ],
    ids=lambda value: repr(value),
)
def test_bad_as_of_is_a_bad_request(guest: Guest, as_of: str) -> None:
    error_of(guest.client.get("/api/tasks", params={"as_of": as_of}), 400, "bad_request")


@pytest.mark.parametrize("query", ["as_of=%ff", "as_of=%c3%28", "as_of=1%00", "as_of=%"])
def test_as_of_with_broken_percent_encoding_is_a_bad_request(guest: Guest, query: str) -> None:
    error_of(guest.client.get(f"/api/tasks?{query}"), 400, "bad_request")


@pytest.mark.parametrize("as_of", ["²", "1²"])
def test_as_of_with_a_superscript_digit_is_a_bad_request(guest: Guest, as_of: str) -> None:
    error_of(guest.client.get("/api/tasks", params={"as_of": as_of}), 400, "bad_request")


def test_as_of_past_the_head_is_a_bad_request(server: Server, guest: Guest) -> None:
    position = head(server)
    error_of(guest.client.get("/api/tasks", params={"as_of": position + 1000}), 400, "bad_request")


# Odd routes and methods still answer in the contract's shape


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/api/nothing-here", 404),
        ("PUT", "/api/tasks", 405),
        ("DELETE", "/api/tasks", 405),
        ("POST", "/api/tasks/abc", 405),
        ("GET", "/api/tasks/abc/history/more", 404),
        ("OPTIONS", "/api/tasks", 405),
        ("POST", "/healthz", 405),
    ],
)
def test_unknown_routes_and_methods_answer_contract_errors(
    guest: Guest, method: str, path: str, status: int
) -> None:
    error_of(guest.client.request(method, path), status)


def test_healthz_reports_the_position(server: Server, guest: Guest) -> None:
    before = head(server)
    guest.create("moves the head")
    assert head(server) == before + 1


# Concurrent writers to one task


def test_concurrent_patches_without_if_match_all_apply(server: Server, guest: Guest) -> None:
    task = guest.create("contended")
    start = threading.Barrier(6)

    def rename(worker: int) -> list[int]:
        versions = []
        with server.client(guest.token) as client:
            start.wait()
            for n in range(8):
                response = client.patch(
                    f"/api/tasks/{task['id']}", json={"title": f"worker {worker} edit {n}"}
                )
                assert response.status_code == 200, response.text
                versions.append(response.json()["version"])
        return versions

    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(rename, range(6)))
    for versions in results:
        assert versions == sorted(versions)
    assert sorted(version for versions in results for version in versions) == list(range(2, 50))
    events = history(guest, task["id"])
    assert [event["version"] for event in events] == list(range(1, 50))
    final = guest.client.get(f"/api/tasks/{task['id']}").json()
    assert final["version"] == 49
    assert final["title"] == events[-1]["data"]["title"]


def test_concurrent_patches_with_the_same_if_match_let_exactly_one_win(
    server: Server, guest: Guest
) -> None:
    task = guest.create("contended")
    start = threading.Barrier(8)

    def attempt(worker: int) -> int:
        with server.client(guest.token) as client:
            start.wait()
            response = client.patch(
                f"/api/tasks/{task['id']}",
                json={"title": f"winner {worker}"},
                headers={"If-Match": '"1"'},
            )
            if response.status_code == 412:
                error_of(response, 412, "version_conflict")
            return response.status_code

    with ThreadPoolExecutor(8) as pool:
        statuses = sorted(pool.map(attempt, range(8)))
    assert statuses == [200] + [412] * 7
    assert guest.client.get(f"/api/tasks/{task['id']}").json()["version"] == 2
