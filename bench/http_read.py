"""http-read: GET /api/tasks of a guest with 50 tasks, against a bare endpoint of the same size.

Reads come from the in-memory read model; the cost is authentication (JWT),
encoding the tasks and the framework. The ceiling is bench/bare.py's GET
endpoint answering a constant body of exactly as many bytes. The two run side
by side and take turns under the load, so that both see the same machine.
"""

from __future__ import annotations

from bench.common import Figure, Goal, Options
from bench.servers import bare_server, request, start_guest, tracker_server
from bench.wrk import ROUNDS, Load, WrkResult, alternate, run_wrk, wrk_binary

NAME = "http-read"
TASKS = 50
GOAL = Goal(">=", 0.7, on="ratio")


def run(options: Options) -> list[Figure]:
    wrk_binary()  # fail before starting servers if it is missing
    load = Load(seconds=1) if options.smoke else Load(seconds=10)
    warmup = None if options.smoke else Load(seconds=2)
    rounds = 1 if options.smoke else ROUNDS
    with tracker_server(options.workdir / "http-read.db", options.workdir) as server:
        token = start_guest(server.url)
        auth = {"Authorization": f"Bearer {token}"}
        for number in range(TASKS):
            title = {"title": f"Task number {number}", "notes": "Some notes about it."}
            status, _, answer = request(server.url, "POST", "/api/tasks", title, auth)
            if status != 201:
                raise RuntimeError(f"POST /api/tasks answered {status}: {answer[:200]!r}")
        status, _, body = request(server.url, "GET", "/api/tasks", headers=auth)
        if status != 200:
            raise RuntimeError(f"GET /api/tasks answered {status}: {body[:200]!r}")
        with bare_server(options.workdir, get_bytes=len(body)) as bare:
            if warmup is not None:
                run_wrk(server, "/api/tasks", warmup, token=token)
                run_wrk(bare, "/blob", warmup, token=token)
            paired = alternate(
                lambda turn: run_wrk(server, "/api/tasks", turn, token=token),
                lambda turn: run_wrk(bare, "/blob", turn, token=token),
                load,
                rounds,
            )
    tracker, ceiling = paired.tracker, paired.ceiling
    return [
        Figure(
            NAME,
            f"GET /api/tasks ({TASKS} tasks)",
            tracker.requests_per_second,
            "req/s",
            ceiling=ceiling.requests_per_second,
            goal=GOAL,
            details={
                "load": vars(load),
                "rounds": rounds,
                "round_ratios": paired.round_ratios,
                "response_bytes": len(body),
                "tracker": tracker.as_json(),
                "bare": ceiling.as_json(),
            },
            note=_cpu_note(tracker, ceiling) + f"; ratio per round {paired.ratio_spread}",
        )
    ]


def _cpu_note(tracker: WrkResult, bare: WrkResult) -> str:
    """Whether the server or wrk was the busy one (see README: is wrk the bottleneck?)."""
    return f"tracker: {tracker.cpu_note()}; bare: {bare.cpu_note()}"
