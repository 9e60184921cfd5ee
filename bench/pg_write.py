"""pg-write: POST /api/tasks under wrk on PostgreSQL, through one `tracker serve` and
through two sharing one database, beside pgbench's one-row INSERTs on the same cluster.

A throwaway cluster, durable like production defaults (fsync, synchronous_commit
and full_page_writes on), with a fresh database for each of the three loads:

- one instance: `wrk -t2 -c64`, one guest, bearer token, as http-write does on SQLite;
- two instances on one database: one wrk process, `-t2 -c64`, whose first thread
  keeps to instance A and second to instance B (32 connections each), so one
  latency histogram covers both; the guest was started on A, and B knows it from
  the log;
- the ceiling: `pgbench -c64 -j2` committing one-row INSERT transactions into
  Tracker's own `events` table (see bench/pgbench.py).

The three take turns under the load (like http-write and its bare app), so a
drifting machine weighs on all of them alike. Each turn records where the CPU
went: the Tracker processes, the cluster (postmaster and every backend), wrk or
pgbench, and the rest of the machine. After the servers stop, each log's
statistics tell how many events its commits carried on average.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from bench import pg, pgbench
from bench.common import Figure, Options
from bench.cpu import CpuSplit, children_seconds, combined, measured
from bench.pg_sessions import HELD, sampling, writer_states
from bench.pgbench import PgbenchResult, run_pgbench
from bench.servers import Server, request, start_guest, tracker_servers
from bench.wrk import ROUNDS, Load, WrkResult, run_wrk, wrk_binary
from bench.wrk import combined as combined_wrk
from bench.ws_fanout import log_problems
from tests.pgcluster import PostgresCluster

NAME = "pg-write"
PATH = "/api/tasks"
BODY = '{"title":"bench"}'
LOAD = Load(threads=2, connections=64, seconds=10)
"""Per configuration, over all its turns; the two wrk threads are also the two instances'."""
KNOWN_TIMEOUT = 10.0
"""Seconds for instance B to learn of the guest started on A."""


@dataclass(frozen=True)
class Http:
    """One configuration's wrk turns, taken together, with where the CPU went."""

    wrk: WrkResult
    cpu: CpuSplit
    log: dict[str, Any]
    """Events and commits of its database over the whole scenario (see `_commits`), and
    what its writer sessions did during the warm-up (see bench/pg_sessions.py)."""

    @property
    def rate(self) -> float:
        return self.wrk.requests_per_second

    def as_json(self) -> dict[str, Any]:
        return {
            **self.wrk.as_json(),
            **self.log,
            "cpu_cores": self.cpu.as_json(),
            "cpu_ms_per_request": _per_request(self.cpu, self.rate),
        }


def run(options: Options) -> list[Figure]:
    wrk_binary()  # fail before starting anything if it is missing
    pg.require_driver()
    load = replace(LOAD, seconds=1) if options.smoke else LOAD
    warmup = None if options.smoke else replace(LOAD, seconds=2)
    rounds = 1 if options.smoke else ROUNDS
    turn = replace(load, seconds=max(1, round(load.seconds / rounds)))
    ones: list[tuple[WrkResult, CpuSplit]] = []
    twos: list[tuple[WrkResult, CpuSplit]] = []
    benches: list[tuple[PgbenchResult, CpuSplit]] = []
    with pg.cluster(tools=("pgbench",)) as cluster:
        settings = pg.settings(cluster)
        one_url, two_url, bench_url = (cluster.create_database() for _ in range(3))
        script = pgbench.prepare(cluster, bench_url, options.workdir)
        logs = itertools.count(1)
        with tracker_servers([one_url, two_url, two_url], options.workdir) as servers:
            one, a, b = servers
            one_token, two_token = _guest(one), _guest(a, b)

            def postgres() -> float:
                return pg.cpu_seconds(cluster)

            def single(load: Load) -> tuple[WrkResult, CpuSplit]:
                meters = {"tracker": one.cpu_seconds, "postgres": postgres, "wrk": children_seconds}
                return measured(
                    meters,
                    lambda: run_wrk(one, PATH, load, method="POST", body=BODY, token=one_token),
                )

            def double(load: Load) -> tuple[WrkResult, CpuSplit]:
                meters = {
                    "tracker A": a.cpu_seconds,
                    "tracker B": b.cpu_seconds,
                    "postgres": postgres,
                    "wrk": children_seconds,
                }
                return measured(
                    meters,
                    lambda: run_wrk(
                        a, PATH, load, method="POST", body=BODY, token=two_token, others=[b]
                    ),
                )

            def ceiling(load: Load) -> tuple[PgbenchResult, CpuSplit]:
                meters = {"postgres": postgres, "pgbench": children_seconds}
                prefix = options.workdir / f"pgbench-{next(logs)}"
                return measured(
                    meters,
                    lambda: run_pgbench(
                        cluster,
                        bench_url,
                        script,
                        clients=load.connections,
                        threads=load.threads,
                        seconds=load.seconds,
                        log_prefix=prefix,
                    ),
                )

            # The writers' sessions are sampled during the warm-up, so that the sampling
            # weighs on no measured turn (in --smoke, with no warm-up, on the only one).
            with sampling(one_url) as one_sessions:
                sampled_one = single(warmup or turn)
            with sampling(two_url) as two_sessions:
                sampled_two = double(warmup or turn)
            sampled_bench = ceiling(warmup or turn)
            if warmup is None:
                ones, twos, benches = [sampled_one], [sampled_two], [sampled_bench]
            for _ in range(rounds - len(ones)):
                ones.append(single(turn))
                twos.append(double(turn))
                benches.append(ceiling(turn))
            problems = [line for server in servers for line in log_problems(server.log)]
        one_log = {
            **_commits(cluster, one_url),
            **writer_states(one_sessions),
            "sampled_requests_per_second": sampled_one[0].requests_per_second,
        }
        two_log = {
            **_commits(cluster, two_url),
            **writer_states(two_sessions),
            "sampled_requests_per_second": sampled_two[0].requests_per_second,
        }
    first = Http(combined_wrk([r for r, _ in ones]), combined([c for _, c in ones]), one_log)
    second = Http(combined_wrk([r for r, _ in twos]), combined([c for _, c in twos]), two_log)
    bench = pgbench.combined([r for r, _ in benches])
    bench_cpu = combined([c for _, c in benches])
    ratios = {
        "two_over_one": _ratios(twos, ones),
        "one_over_pgbench": _ratios(ones, benches),
        "two_over_pgbench": _ratios(twos, benches),
    }
    details = {
        "load": vars(load),
        "rounds": rounds,
        "postgres": settings,
        "round_ratios": ratios,
        "one_instance": first.as_json(),
        "two_instances": second.as_json(),
        "pgbench": {
            **bench.as_json(),
            "cpu_cores": bench_cpu.as_json(),
            "cpu_ms_per_transaction": _per_request(bench_cpu, bench.transactions_per_second),
        },
        "server_log_problems": problems,
    }
    tps = bench.transactions_per_second
    return [
        Figure(
            NAME,
            "POST /api/tasks, 1 instance",
            first.rate,
            "req/s",
            ceiling=tps,
            details=details,
            note=f"1 instance, {first.cpu.note()}; {_log_note(one_log)}",
        ),
        Figure(
            NAME,
            "POST /api/tasks, 2 instances",
            second.rate,
            "req/s",
            ceiling=tps,
            note=f"2 instances, {second.cpu.note()}; {_log_note(two_log)}",
        ),
        Figure(
            NAME,
            "2 instances / 1 instance",
            second.rate / first.rate,
            "x",
            details={"per_round": ratios["two_over_one"]},
        ),
        Figure(
            NAME,
            "p99, 1 instance (worst round)",
            first.wrk.worst_round_p99_ms,
            "ms",
            details={"p50_ms": first.wrk.p50_ms},
        ),
        Figure(
            NAME,
            "p99, 2 instances (worst round)",
            second.wrk.worst_round_p99_ms,
            "ms",
            details={"p50_ms": second.wrk.p50_ms},
        ),
        Figure(
            NAME,
            f"pgbench 1-row INSERT, -c{bench.clients} -j{bench.threads}",
            tps,
            "tps",
            details={"p50_ms": bench.p50_ms, "p99_ms": bench.p99_ms},
            note=f"pgbench, {bench_cpu.note()}; p99 {bench.p99_ms:.1f} ms",
        ),
    ]


def _log_note(log: dict[str, Any]) -> str:
    """Events per commit, and how long the head row was held and waited for by Tracker."""
    note = f"{log['mean_batch']:.1f} events/commit"
    states = log["writer_states"]
    if states:
        waiting = states[f"{HELD}: waiting for Tracker's next statement"]
        note += f"; head row held {log['head_row_held']:.0%} of the time"
        note += f" (at {log['sampled_requests_per_second']:,.0f} req/s while sampled)"
        note += f", writers idle in it waiting for Tracker {waiting:.0%}"
    return note


def _per_request(split: CpuSplit, rate: float) -> dict[str, float]:
    """CPU ms each meter spent per request (or transaction) served."""
    return {name: round(cores * 1000 / rate, 4) for name, cores in split.as_json().items()}


def _ratios(
    mine: Sequence[tuple[WrkResult, CpuSplit]],
    theirs: Sequence[tuple[WrkResult | PgbenchResult, CpuSplit]],
) -> list[float]:
    """Round by round, the rate of `mine` over that of `theirs`."""
    return [
        round(m.requests_per_second / _rate(t), 3)
        for (m, _), (t, _) in zip(mine, theirs, strict=True)
    ]


def _rate(result: WrkResult | PgbenchResult) -> float:
    if isinstance(result, WrkResult):
        return result.requests_per_second
    return result.transactions_per_second


def _guest(first: Server, *others: Server) -> str:
    """A guest started on `first` whose first task was created on every server; its token."""
    token = start_guest(first.url)
    auth = {"Authorization": f"Bearer {token}"}
    for server in (first, *others):
        deadline = time.monotonic() + KNOWN_TIMEOUT
        while True:
            status, _, body = request(server.url, "POST", PATH, {"title": "bench"}, auth)
            if status == 201:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"POST {PATH} answered {status}: {body[:200]!r}")
            time.sleep(0.05)
    return token


def _commits(cluster: PostgresCluster, url: str) -> dict[str, float]:
    """How many events the servers wrote to `url`'s log and in how many commits (each
    moves the head row once), over the whole scenario (warm-up included). Read once
    every session on it has ended, so that the statistics are complete."""
    database = pg.database_name(url)
    deadline = time.monotonic() + 10
    sessions = f"SELECT count(*) FROM pg_stat_activity WHERE datname = '{database}'"
    while int(cluster.psql(sessions)) > 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    query = (
        "SELECT (SELECT position FROM log_head),"
        " (SELECT n_tup_upd FROM pg_stat_user_tables WHERE relname = 'log_head')"
    )
    events, commits = (int(value) for value in cluster.psql(query, database).strip().split("|"))
    return {"events": events, "commits": commits, "mean_batch": events / max(1, commits)}
