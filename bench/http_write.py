"""http-write: POST /api/tasks under wrk, against a bare Starlette endpoint of the same shape.

A real `tracker serve` on a fresh database; one guest creates tasks as fast as
64 connections allow. Every request is durable (group commit) before it is
answered. The ceiling is bench/bare.py's POST endpoint, which reads the same JSON
body and answers a body of the same size, under the same uvicorn settings. The
two run side by side and take turns under the load, so that both see the same
machine.
"""

from __future__ import annotations

from bench.common import Figure, Goal, Options
from bench.servers import bare_server, request, start_guest, tracker_server
from bench.wrk import ROUNDS, Load, WrkResult, alternate, run_wrk, wrk_binary

NAME = "http-write"
BODY = '{"title":"bench"}'
RATIO_GOAL = Goal(">=", 0.5, on="ratio")
P99_GOAL = Goal("<", 25)


def run(options: Options) -> list[Figure]:
    wrk_binary()  # fail before starting servers if it is missing
    load = Load(seconds=1) if options.smoke else Load(seconds=10)
    warmup = None if options.smoke else Load(seconds=2)
    rounds = 1 if options.smoke else ROUNDS
    with tracker_server(options.workdir / "http-write.db", options.workdir) as server:
        token = start_guest(server.url)
        auth = {"Authorization": f"Bearer {token}"}
        status, _, body = request(server.url, "POST", "/api/tasks", {"title": "bench"}, auth)
        if status != 201:
            raise RuntimeError(f"POST /api/tasks answered {status}: {body[:200]!r}")
        with bare_server(options.workdir, post_bytes=len(body)) as bare:
            if warmup is not None:
                run_wrk(server, "/api/tasks", warmup, method="POST", body=BODY, token=token)
                run_wrk(bare, "/echo", warmup, method="POST", body=BODY, token=token)
            paired = alternate(
                lambda turn: run_wrk(
                    server, "/api/tasks", turn, method="POST", body=BODY, token=token
                ),
                lambda turn: run_wrk(bare, "/echo", turn, method="POST", body=BODY, token=token),
                load,
                rounds,
            )
    tracker, ceiling = paired.tracker, paired.ceiling
    details = {
        "load": vars(load),
        "rounds": rounds,
        "round_ratios": paired.round_ratios,
        "response_bytes": len(body),
        "tracker": tracker.as_json(),
        "bare": ceiling.as_json(),
    }
    return [
        Figure(
            NAME,
            "POST /api/tasks",
            tracker.requests_per_second,
            "req/s",
            ceiling=ceiling.requests_per_second,
            goal=RATIO_GOAL,
            details=details,
            note=_cpu_note(tracker, ceiling) + f"; ratio per round {paired.ratio_spread}",
        ),
        Figure(
            NAME,
            "p99 latency (all rounds)",
            tracker.p99_ms,
            "ms",
            goal=P99_GOAL,
            details={"p50_ms": tracker.p50_ms, "bare_p99_ms": ceiling.p99_ms},
        ),
        Figure(
            NAME,
            "p99 latency (worst round)",
            tracker.worst_round_p99_ms,
            "ms",
            details={"bare_ms": ceiling.worst_round_p99_ms},
            note="one round's requests alone: a single pause of the server weighs five times"
            " as much",
        ),
    ]


def _cpu_note(tracker: WrkResult, bare: WrkResult) -> str:
    """Whether the server or wrk was the busy one (see README: is wrk the bottleneck?)."""
    return f"tracker: {tracker.cpu_note()}; bare: {bare.cpu_note()}"
