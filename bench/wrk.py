"""Load from wrk: one run against a server, with the CPU both of them used meanwhile."""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from bench.servers import Server

SCRIPT = Path(__file__).with_name("wrk.lua")
MARKER = "BENCH_JSON "
ROUNDS = 5
"""Turns of a load, alternating between Tracker and its ceiling (see `alternate`)."""


@dataclass(frozen=True)
class Load:
    """How hard wrk pushes: threads, connections, seconds."""

    threads: int = 2
    connections: int = 64
    seconds: int = 10


@dataclass(frozen=True)
class WrkResult:
    """One load against a server, or several turns of it taken together (`combined`)."""

    requests_per_second: float
    p50_ms: float
    p99_ms: float
    """Of every request of the load (all its rounds)."""
    worst_round_p99_ms: float
    """The highest p99 of any one round (of a single run: its p99)."""
    requests: int
    errors: dict[str, int]
    server_cpu: float
    """Cores the server kept busy on average (1.0 = one core all the time)."""
    wrk_cpu: float
    """Cores wrk kept busy on average."""
    seconds: float
    histogram: tuple[tuple[int, int], ...] = field(default=(), repr=False)
    """Every latency wrk recorded (us) and how often: what its percentiles count."""
    histogram_exact: bool = True
    """False if, wrk's histogram being too wide to walk, it came from its percentiles
    (to 0.01 % above p95: see wrk.lua)."""

    def cpu_note(self) -> str:
        return f"server {self.server_cpu:.2f} cores, wrk {self.wrk_cpu:.2f} cores"

    def as_json(self) -> dict[str, Any]:
        return {
            "requests_per_second": self.requests_per_second,
            "p50_ms": self.p50_ms,
            "p99_ms": self.p99_ms,
            "worst_round_p99_ms": self.worst_round_p99_ms,
            "histogram_exact": self.histogram_exact,
            "requests": self.requests,
            "errors": self.errors,
            "server_cpu_cores": round(self.server_cpu, 3),
            "wrk_cpu_cores": round(self.wrk_cpu, 3),
            "seconds": round(self.seconds, 3),
        }


def combined(rounds: Sequence[WrkResult]) -> WrkResult:
    """Several runs of one load as one: rates and CPU over their whole time, percentiles
    of all their requests (their histograms merged), and the worst p99 of any one."""
    seconds = sum(result.seconds for result in rounds)
    errors: dict[str, int] = {}
    for result in rounds:
        for kind, count in result.errors.items():
            errors[kind] = errors.get(kind, 0) + count
    merged: Counter[int] = Counter()
    for result in rounds:
        merged.update(dict(result.histogram))
    histogram = tuple(sorted(merged.items()))
    return WrkResult(
        requests_per_second=sum(result.requests for result in rounds) / seconds,
        p50_ms=percentile_us(histogram, 50) / 1000,
        p99_ms=percentile_us(histogram, 99) / 1000,
        worst_round_p99_ms=max(result.worst_round_p99_ms for result in rounds),
        requests=sum(result.requests for result in rounds),
        errors=errors,
        server_cpu=sum(result.server_cpu * result.seconds for result in rounds) / seconds,
        wrk_cpu=sum(result.wrk_cpu * result.seconds for result in rounds) / seconds,
        seconds=seconds,
        histogram=histogram,
        histogram_exact=all(result.histogram_exact for result in rounds),
    )


def percentile_us(histogram: Iterable[tuple[int, int]], percent: float) -> int:
    """The latency below which `percent` of a histogram's counts fall, ranked as wrk
    ranks them (its `stats_percentile`), so one run's figure is wrk's own."""
    buckets = sorted(histogram)
    rank = int(percent / 100 * sum(count for _, count in buckets) + 1)  # C's round(x + 0.5)
    total = 0
    for latency, count in buckets:
        total += count
        if total >= rank:
            return latency
    return 0


@dataclass(frozen=True)
class Paired:
    """A server measured beside its ceiling, in alternating rounds."""

    tracker: WrkResult
    ceiling: WrkResult
    round_ratios: list[float]

    @property
    def ratio_spread(self) -> dict[str, float]:
        return {"min": min(self.round_ratios), "max": max(self.round_ratios)}


def alternate(
    tracker: Callable[[Load], WrkResult],
    ceiling: Callable[[Load], WrkResult],
    load: Load,
    rounds: int,
) -> Paired:
    """Run `load` against the server and its ceiling in `rounds` alternating turns
    (each `load.seconds / rounds` long): on a shared machine whose speed drifts, both
    see the same conditions, where one long run each would not."""
    turn = replace(load, seconds=max(1, round(load.seconds / rounds)))
    ours: list[WrkResult] = []
    theirs: list[WrkResult] = []
    for _ in range(rounds):
        ours.append(tracker(turn))
        theirs.append(ceiling(turn))
    ratios = [
        round(mine.requests_per_second / other.requests_per_second, 3)
        for mine, other in zip(ours, theirs, strict=True)
    ]
    return Paired(combined(ours), combined(theirs), ratios)


def wrk_binary() -> str:
    """The wrk executable; a clear error when it is not installed."""
    found = shutil.which("wrk")
    if found is None:
        raise RuntimeError(
            "wrk is not installed (or not on PATH); the HTTP scenarios need it: "
            "`apt-get install wrk` (Debian/Ubuntu) or `brew install wrk`"
        )
    return found


def run_wrk(
    server: Server,
    path: str,
    load: Load,
    *,
    method: str = "GET",
    body: str | None = None,
    token: str | None = None,
    others: Sequence[Server] = (),
) -> WrkResult:
    """Run wrk against `server` for `load.seconds`; refuse results with any failed request.

    Given `others` (servers on the same host), wrk's threads are dealt out over
    `server` and `others` in turn, each thread keeping to one (so `load.threads`
    should be a multiple of their number); the latencies are those of all, and the
    server CPU is theirs together.
    """
    servers = [server, *others]
    argv = [wrk_binary(), f"-t{load.threads}", f"-c{load.connections}", f"-d{load.seconds}s"]
    argv += ["--latency", "-s", str(SCRIPT), server.url + path]
    env = {
        **os.environ,
        "BENCH_METHOD": method,
        "BENCH_BODY": body or "",
        "BENCH_TOKEN": token or "",
        "BENCH_PORTS": ",".join(str(each.port) for each in servers) if others else "",
    }
    # wrk is the only child reaped while it runs, so the children's rusage delta is its CPU time.
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    server_before = sum(each.cpu_seconds() for each in servers)
    completed = subprocess.run(
        argv, env=env, capture_output=True, text=True, timeout=load.seconds + 60, check=False
    )
    server_after = sum(each.cpu_seconds() for each in servers)
    children_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if completed.returncode != 0:
        raise RuntimeError(f"wrk failed ({completed.returncode}): {completed.stderr.strip()}")
    summary = _summary(completed.stdout)
    seconds = summary["duration_us"] / 1e6
    latency = summary["latency_us"]
    errors: dict[str, int] = summary["errors"]
    if any(errors.values()):
        raise RuntimeError(f"wrk saw failed requests against {path}: {errors}")
    wrk_cpu = (children_after.ru_utime + children_after.ru_stime) - (
        children_before.ru_utime + children_before.ru_stime
    )
    return WrkResult(
        requests_per_second=summary["requests"] / seconds,
        p50_ms=latency["p50"] / 1000,
        p99_ms=latency["p99"] / 1000,
        worst_round_p99_ms=latency["p99"] / 1000,
        requests=summary["requests"],
        errors=errors,
        server_cpu=(server_after - server_before) / seconds,
        wrk_cpu=wrk_cpu / seconds,
        seconds=seconds,
        histogram=tuple((value, count) for value, count in summary["histogram_us"]),
        histogram_exact=summary["histogram_exact"],
    )


def _summary(stdout: str) -> dict[str, Any]:
    for line in stdout.splitlines():
        if line.startswith(MARKER):
            summary: dict[str, Any] = json.loads(line.removeprefix(MARKER))
            return summary
    raise RuntimeError(f"wrk printed no summary:\n{stdout}")
