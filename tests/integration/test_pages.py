"""The HTML pages over HTTP: what the browser gets before any script runs."""

from __future__ import annotations

import html
import json
import re

import httpx
import pytest

from tests.integration.conftest import Guest, Server

INITIAL_STATE = re.compile(
    r'<script type="application/json" id="initial-state">(?P<json>.*?)</script>', re.DOTALL
)


def board_of(server: Server, guest: Guest) -> str:
    response = guest.client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert response.headers["cache-control"] == "no-store"
    return response.text


def test_the_board_renders_the_tasks_and_the_state_the_scripts_start_from(
    server: Server, guest: Guest
) -> None:
    task = guest.create("Write the report", notes="by Friday")
    guest.client.post(f"/api/tasks/{task['id']}/timer/start", json={"duration_seconds": 5400})

    page = board_of(server, guest)

    assert 'data-id="{}"'.format(task["id"]) in page
    assert "Write the report" in page
    assert re.search(r'role="timer"[^>]*>1:(29:59|30:00)<', page)  # h:mm:ss past an hour
    match = INITIAL_STATE.search(page)
    assert match is not None
    state = json.loads(match["json"])
    assert state["principal"]["id"] == guest.id
    assert [t["id"] for t in state["tasks"]] == [task["id"]]
    assert state["tasks"][0]["timer"]["state"] == "running"


def test_a_title_that_closes_the_script_element_stays_inside_it(
    server: Server, guest: Guest
) -> None:
    hostile = "</script><script>alert(1)</script><!--"
    guest.create(hostile)

    page = board_of(server, guest)

    assert hostile not in page
    assert "<script>" not in page  # every script of the page comes from /static
    match = INITIAL_STATE.search(page)
    assert match is not None
    assert json.loads(match["json"])["tasks"][0]["title"] == hostile
    assert html.escape(hostile, quote=False) in page  # the card shows it as text


def test_every_script_of_every_page_is_a_module_from_the_server(server: Server) -> None:
    with httpx.Client(base_url=server.url) as client:
        for path in ("/", "/login", "/register", "/docs"):
            response = client.get(path)
            assert response.status_code == 200, path
            csp = response.headers["content-security-policy"]
            assert "script-src 'self'" in csp
            assert "unsafe-inline" not in csp
            for tag in re.findall(r"<script[^>]*>", response.text):
                assert 'type="module" src="/static/js/' in tag or "application/json" in tag, tag
            assert "onclick=" not in response.text


def test_the_register_page_tells_a_guest_their_tasks_come_along(
    server: Server, guest: Guest
) -> None:
    guest.create("one")
    guest.create("two")

    page = guest.client.get("/register").text
    assert "Your 2 tasks from this guest session move to your new account" in page

    login = guest.client.get("/login").text
    assert "leaves them behind" in login


@pytest.mark.parametrize("path", ["/login", "/register"])
def test_an_account_form_cannot_put_the_password_in_an_address(server: Server, path: str) -> None:
    page = server.client().get(path).text

    form = re.search(r"<form id=\"account-form\"[^>]*>", page)
    assert form is not None
    assert 'method="post"' in form[0]  # never a GET with the password in the query
    assert re.search(r'<button type="submit"[^>]*\bdisabled\b', page)  # until the script binds it
