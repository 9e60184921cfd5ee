"""`/ws` through a real server: snapshot, changes from other clients, ticks, finished timers."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from tests.integration.conftest import Guest, Server


@contextmanager
def live(server: Server, token: str | None) -> Iterator[ClientConnection]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    url = server.url.replace("http://", "ws://") + "/ws"
    with connect(url, additional_headers=headers, open_timeout=5) as socket:
        yield socket


def receive(socket: ClientConnection, timeout: float = 3) -> dict[str, Any]:
    message: dict[str, Any] = json.loads(socket.recv(timeout=timeout))
    return message


def until(socket: ClientConnection, kind: str, timeout: float = 5) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        message = receive(socket, max(0.01, deadline - time.monotonic()))
        if message["type"] == kind:
            return message


def closing_code(socket: ClientConnection) -> int | None:
    """Read until the server closes the socket; the code it closed with."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            socket.recv(timeout=5)
        except ConnectionClosed as closed:
            return closed.rcvd.code if closed.rcvd else None
    raise AssertionError("the socket stayed open")


def test_a_client_gets_a_snapshot_then_changes_ticks_and_the_finish(
    server: Server, guest: Guest
) -> None:
    task = guest.create("watched")
    with live(server, guest.token) as socket:
        snapshot = receive(socket)
        assert snapshot["type"] == "snapshot"
        assert [t["id"] for t in snapshot["tasks"]] == [task["id"]]

        guest.client.patch(f"/api/tasks/{task['id']}", json={"title": "renamed"})
        assert until(socket, "task")["task"]["title"] == "renamed"

        started = guest.client.post(
            f"/api/tasks/{task['id']}/timer/start", json={"duration_seconds": 2}
        ).json()
        tick = until(socket, "tick")
        assert tick["timers"][0]["id"] == task["id"]
        assert 0 < tick["timers"][0]["remaining_seconds"] <= 2
        finished = until(socket, "timer_finished")
        late = time.time() - _seconds(started["timer"]["ends_at"])
        assert finished["task"]["timer"]["state"] == "finished"
        assert late < 1.0


def test_another_principal_sees_nothing(server: Server, guest: Guest, other: Guest) -> None:
    with live(server, other.token) as socket:
        assert receive(socket)["tasks"] == []
        guest.create("not yours")
        socket.send('{"type": "ping"}')
        assert receive(socket)["type"] == "pong"  # and nothing about the other's task


def test_without_credentials_the_socket_closes_with_4401(server: Server) -> None:
    with live(server, None) as socket:
        assert closing_code(socket) == 4401


@pytest.mark.parametrize("frame", ["not json", '{"type": "dance"}', b"\x00binary"])
def test_anything_but_a_ping_closes_with_1008(server: Server, guest: Guest, frame: Any) -> None:
    with live(server, guest.token) as socket:
        receive(socket)
        socket.send(frame)
        assert closing_code(socket) == 1008


def test_a_frame_over_4_kib_closes_with_1009(server: Server, guest: Guest) -> None:
    with live(server, guest.token) as socket:
        receive(socket)
        socket.send('{"type": "ping", "pad": "' + "x" * 5000 + '"}')
        assert closing_code(socket) == 1009


def _seconds(timestamp: str) -> float:
    return datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()


def test_a_graceful_stop_closes_live_sockets_with_1001(start_server: Any) -> None:
    server: Server = start_server()
    guest = server.guest()
    with live(server, guest.token) as socket:
        receive(socket)
        assert server.process is not None
        server.process.terminate()
        assert closing_code(socket) == 1001
    assert server.process.wait(timeout=10) == 0
