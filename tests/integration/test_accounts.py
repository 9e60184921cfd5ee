"""Accounts through a real server: register, login, logout, throttling, and a guest's claim."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from tests.integration.conftest import Server, ServerFactory, error_of

PASSWORD = "correct horse"


@pytest.fixture(scope="module")
def server(module_servers: ServerFactory) -> Server:
    """One server for the module, with cheap bcrypt so that registering is quick."""
    return module_servers(TRACKER_BCRYPT_ROUNDS="4")


_counter = iter(range(1_000_000))


def new_name(prefix: str = "user") -> str:
    return f"{prefix}{next(_counter)}"


def register(
    server: Server, username: str, password: str = PASSWORD, token: str | None = None
) -> httpx.Response:
    return server.client(token).post(
        "/api/auth/register", json={"username": username, "password": password}
    )


def login(server: Server, username: str, password: str = PASSWORD) -> httpx.Response:
    return server.client().post(
        "/api/auth/login", json={"username": username, "password": password}
    )


def token_of(response: httpx.Response) -> str:
    token: str = response.json()["access_token"]
    return token


def test_registering_answers_an_auth_result_and_sets_the_cookie(server: Server) -> None:
    name = new_name("Ada")
    response = register(server, name)

    assert response.status_code == 201
    body = response.json()
    assert body["user"]["kind"] == "user"
    assert body["user"]["username"] == name
    assert body["token_type"] == "bearer"
    assert body["expires_at"].endswith("Z")
    cookie = response.headers["set-cookie"].lower()
    for attribute in ("httponly", "samesite=lax", "path=/", "max-age=86400"):
        assert attribute in cookie


def test_a_username_is_unique_whatever_its_case(server: Server) -> None:
    name = new_name("Grace")
    assert register(server, name).status_code == 201

    error_of(register(server, name.upper()), 409, "username_taken")


@pytest.mark.parametrize(
    ("username", "ok"),
    [
        ("abc", True),
        ("ab", False),
        ("a" * 32, True),
        ("a" * 33, False),
        ("dot.dash-under_9", True),
        ("with space", False),
        ("émile", False),
        ("semi;colon", False),
    ],
)
def test_username_rules(server: Server, username: str, ok: bool) -> None:
    response = register(server, username)  # each valid name is used once in this module
    if ok:
        assert response.status_code == 201, response.text
    else:
        assert error_of(response, 422, "validation_error")["details"][0]["field"] == "username"


@pytest.mark.parametrize(
    ("password", "ok"),
    [
        ("x" * 7, False),
        ("x" * 8, True),
        ("x" * 72, True),
        ("x" * 73, False),
        ("é" * 36, True),  # 72 bytes
        ("é" * 36 + "x", False),  # 73 bytes: never truncated silently
        ("\x00" * 8, False),  # bcrypt could not tell it from "\x00" * 9
        ("long enough\x00", False),
    ],
)
def test_password_length_counts_utf8_bytes(server: Server, password: str, ok: bool) -> None:
    response = register(server, new_name(), password)
    if ok:
        assert response.status_code == 201, response.text
        assert login(server, response.json()["user"]["username"], password).status_code == 200
    else:
        assert error_of(response, 422, "validation_error")["details"][0]["field"] == "password"


def test_a_password_with_a_nul_is_refused_at_registration_only(server: Server) -> None:
    name = new_name()
    register(server, name)

    # An account made before the rule would still log in: a NUL is only a wrong password.
    error_of(login(server, name, PASSWORD + "\x00"), 401, "invalid_credentials")


def test_login_with_the_right_password_whatever_the_username_case(server: Server) -> None:
    name = new_name("Linus")
    register(server, name)

    response = login(server, name.lower())

    assert response.status_code == 200
    assert response.json()["user"]["username"] == name
    me = server.client(token_of(response)).get("/api/auth/me").json()
    assert me == response.json()["user"]


def test_an_unknown_username_and_a_wrong_password_answer_the_same(server: Server) -> None:
    name = new_name()
    register(server, name)

    wrong = login(server, name, "not the password")
    unknown = login(server, new_name("nobody"), "not the password")

    assert error_of(wrong, 401, "invalid_credentials") == error_of(
        unknown, 401, "invalid_credentials"
    )


def test_repeated_failures_for_one_username_are_throttled(server: Server) -> None:
    name = new_name()
    register(server, name)
    for _ in range(5):
        error_of(login(server, name, "wrong password"), 401, "invalid_credentials")

    throttled = login(server, name)

    error_of(throttled, 429, "rate_limited")
    assert int(throttled.headers["retry-after"]) > 0


def test_logout_revokes_that_token_only(server: Server) -> None:
    name = new_name()
    first = token_of(register(server, name))
    second = token_of(login(server, name))

    assert server.client(first).post("/api/auth/logout").status_code == 204

    error_of(server.client(first).get("/api/auth/me"), 401, "unauthorized")
    assert server.client(second).get("/api/auth/me").status_code == 200


def test_a_revoked_token_stays_revoked_after_a_restart(start_server: Any) -> None:
    server = start_server(TRACKER_BCRYPT_ROUNDS="4")
    token = token_of(register(server, new_name()))
    server.client(token).post("/api/auth/logout")

    server.stop()
    server.start()

    error_of(server.client(token).get("/api/auth/me"), 401, "unauthorized")


def test_registering_as_a_guest_keeps_its_tasks_and_history(server: Server) -> None:
    guest = server.guest()
    kept = guest.create("kept")
    gone = guest.create("deleted before registering")
    guest.client.delete(f"/api/tasks/{gone['id']}")
    position_before = guest.client.get("/api/tasks").json()["position"]

    user = token_of(register(server, new_name(), token=guest.token))
    client = server.client(user)

    assert [task["id"] for task in client.get("/api/tasks").json()["tasks"]] == [kept["id"]]
    assert client.get(f"/api/tasks/{kept['id']}").json()["title"] == "kept"
    history = client.get(f"/api/tasks/{gone['id']}/history").json()["events"]
    assert [event["type"] for event in history] == ["TaskCreated", "TaskDeleted"]
    past = client.get(f"/api/tasks?as_of={position_before}").json()["tasks"]
    assert [task["id"] for task in past] == [kept["id"]]
    error_of(guest.client.get("/api/tasks"), 401, "unauthorized")


def test_one_users_tasks_are_not_found_for_another(server: Server) -> None:
    alice = server.client(token_of(register(server, new_name("alice"))))
    bob = server.client(token_of(register(server, new_name("bob"))))
    task = alice.post("/api/tasks", json={"title": "alice's"}).json()

    for response in (
        bob.get(f"/api/tasks/{task['id']}"),
        bob.patch(f"/api/tasks/{task['id']}", json={"done": True}),
        bob.get(f"/api/tasks/{task['id']}/history"),
        bob.delete(f"/api/tasks/{task['id']}"),
    ):
        error_of(response, 404, "not_found")
    assert bob.get("/api/tasks").json()["tasks"] == []


def test_a_cookie_guest_cannot_be_claimed_from_another_site(server: Server) -> None:
    guest = server.guest()
    with httpx.Client(base_url=server.url) as browser:
        browser.cookies.set("tracker_session", guest.token)
        response = browser.post(
            "/api/auth/register",
            json={"username": new_name(), "password": PASSWORD},
            headers={"Origin": "https://evil.example"},
        )
    error_of(response, 403, "forbidden")


def test_no_response_ever_carries_a_password_hash(server: Server) -> None:
    name = new_name()
    registered = register(server, name)
    logged_in = login(server, name)
    client = server.client(token_of(logged_in))
    task = client.post("/api/tasks", json={"title": "t"}).json()
    bodies = [
        registered.text,
        logged_in.text,
        client.get("/api/auth/me").text,
        client.get("/api/tasks").text,
        client.get(f"/api/tasks/{task['id']}/history").text,
        client.get("/").text,
    ]
    for body in bodies:
        assert "$2b$" not in body
    assert "$2b$" not in server.log()


def test_a_guest_registering_keeps_its_running_timer_which_still_finishes(
    server: Server,
) -> None:
    guest = server.guest()
    task = guest.create("brew")
    guest.client.post(f"/api/tasks/{task['id']}/timer/start", json={"duration_seconds": 2})

    user = server.client(token_of(register(server, new_name(), token=guest.token)))
    running = user.get(f"/api/tasks/{task['id']}").json()
    assert running["timer"]["state"] == "running"

    time.sleep(2.5)
    finished = user.get(f"/api/tasks/{task['id']}").json()
    assert finished["timer"]["state"] == "finished"
    assert finished["tracked_seconds"] == 2


@pytest.mark.parametrize(
    ("owner_kind", "intruder_kind"),
    [("guest", "guest"), ("user", "user"), ("user", "guest"), ("guest", "user")],
)
def test_ownership_matrix(server: Server, owner_kind: str, intruder_kind: str) -> None:
    def principal(kind: str) -> httpx.Client:
        if kind == "guest":
            return server.guest().client
        return server.client(token_of(register(server, new_name(kind))))

    owner, intruder = principal(owner_kind), principal(intruder_kind)
    task = owner.post("/api/tasks", json={"title": "mine"}).json()
    owner.post(f"/api/tasks/{task['id']}/timer/start", json={"duration_seconds": 60})
    base = f"/api/tasks/{task['id']}"
    attempts = [
        intruder.get(base),
        intruder.patch(base, json={"title": "theirs"}),
        intruder.get(f"{base}/history"),
        intruder.post(f"{base}/timer/start", json={"duration_seconds": 5}),
        intruder.post(f"{base}/timer/pause"),
        intruder.post(f"{base}/timer/resume"),
        intruder.post(f"{base}/timer/stop"),
        intruder.delete(base),
    ]
    for response in attempts:
        error_of(response, 404, "not_found")
        assert "mine" not in response.text
    assert intruder.get("/api/tasks").json()["tasks"] == []
    assert owner.get(base).json()["timer"]["state"] == "running"
