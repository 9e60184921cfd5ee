"""login-load: GET /api/tasks latency while 20 logins a second are hashing (bcrypt cost 12).

A paced thread logs in 20 times a second with the right password while wrk
reads the task list with a light load (1 thread, 4 connections), so the
latency measured is that of a server whose CPU is shared with bcrypt, not of
one saturated by wrk.
"""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from bench.common import Figure, Goal, Options
from bench.servers import request, tracker_server
from bench.wrk import Load, run_wrk, wrk_binary

NAME = "login-load"
LOGINS_PER_SECOND = 20
P99_GOAL = Goal("<", 20)
CREDENTIALS = {"username": "bench-user", "password": "a long enough password"}


def run(options: Options) -> list[Figure]:
    wrk_binary()
    load = Load(threads=1, connections=4, seconds=2 if options.smoke else 10)
    with tracker_server(options.workdir / "login-load.db", options.workdir) as server:
        status, _, body = request(server.url, "POST", "/api/auth/register", CREDENTIALS)
        if status != 201:
            raise RuntimeError(f"register answered {status}: {body[:200]!r}")
        token = json.loads(body)["access_token"]
        for number in range(50):
            auth = {"Authorization": f"Bearer {token}"}
            request(server.url, "POST", "/api/tasks", {"title": f"Task {number}"}, auth)
        quiet = run_wrk(server, "/api/tasks", load, token=token)
        stop = threading.Event()
        answers: dict[int, int] = {}
        pacer = threading.Thread(target=_log_in_steadily, args=(server.url, stop, answers))
        pacer.start()
        try:
            time.sleep(1)  # let the logins get going
            busy = run_wrk(server, "/api/tasks", load, token=token)
        finally:
            stop.set()
            pacer.join()
    details = {"load": vars(load), "login_statuses": answers, "quiet": quiet.as_json()}
    return [
        Figure(NAME, "GET /api/tasks p50, logins hashing", busy.p50_ms, "ms", details=details),
        Figure(
            NAME,
            "GET /api/tasks p99, logins hashing",
            busy.p99_ms,
            "ms",
            goal=P99_GOAL,
            details={"busy": busy.as_json()},
            note=f"quiet p99 {quiet.p99_ms:.1f} ms; login answers {answers}",
        ),
    ]


def _log_in_steadily(url: str, stop: threading.Event, answers: dict[int, int]) -> None:
    """Start LOGINS_PER_SECOND logins a second (each on its own thread) until `stop`."""
    lock = threading.Lock()

    def one() -> None:
        status, _, _ = request(url, "POST", "/api/auth/login", CREDENTIALS, timeout=60)
        with lock:
            answers[status] = answers.get(status, 0) + 1

    with ThreadPoolExecutor(max_workers=64) as pool:
        interval = 1 / LOGINS_PER_SECOND
        next_at = time.monotonic()
        while not stop.is_set():
            pool.submit(one)
            next_at += interval
            time.sleep(max(0.0, next_at - time.monotonic()))
