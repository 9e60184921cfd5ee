"""ws-fanout: ticks and finished timers on thousands of live sockets of one `tracker serve`.

Every guest creates a task and starts a timer: most run for an hour, a few fall
due a few seconds into the measured window, spread over one second so that some
fall due while a tick is being sent to every socket. One asyncio process (uvloop) holds
one WebSocket per guest (bearer header, permessage-deflate offered as browsers
do) and notes when each message arrives. Over the window: how far each
client's interval between consecutive ticks is from 1 s, how late each
`timer_finished` arrives after its timer's `ends_at`, the server's CPU, and its
RSS growth per connection. The client process runs no cyclic GC during the
window and notes how late its own event loop wakes, so that its share of the
delays can be told apart; the CPU that other processes used meanwhile is noted
too (the machine may be shared).
"""

from __future__ import annotations

import gc
import itertools
import json
import math
import os
import resource
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import msgspec
from anyio.abc import TaskGroup
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from bench.common import Figure, Goal, Options, run_async
from bench.servers import HOST, Server, request, start_guest, tracker_server
from tracker.clock import parse_timestamp

NAME = "ws-fanout"
JITTER_GOAL = Goal("<", 100)
LATENESS_GOAL = Goal("<", 50)
LONG_SECONDS = 3600
CONNECTING = 200
"""Handshakes in flight at once."""
GRACE = 3.0
"""Seconds to wait after the window for a due timer's message that has not come."""


@dataclass(frozen=True)
class Size:
    clients: int
    due: int
    """Of the clients, how many have a timer that falls due during the window."""
    due_seconds: int
    """The due timers' duration: they start just before the window."""
    window: float


FULL = Size(clients=5000, due=200, due_seconds=4, window=10.0)
SMOKE = Size(clients=50, due=10, due_seconds=1, window=3.0)


@dataclass
class Guest:
    token: str
    task_id: str
    ends_at: float | None = None
    """When the timer falls due, for the guests whose timer starts just before the window."""


@dataclass
class Inbox:
    """What one client received (receive times are `time.time()`)."""

    ticks: list[tuple[float, str]] = field(default_factory=list)
    """(received, server_time) of every tick."""
    finished: list[tuple[float, str]] = field(default_factory=list)
    """(received, finished_at) of every timer_finished."""
    closed: str | None = None
    """Why the connection ended, if the server ended it."""


@dataclass
class Measured:
    inboxes: list[Inbox]
    window: tuple[float, float]
    rss_before_kib: int
    rss_after_kib: int
    connect_seconds: float
    server_cpu_seconds: float
    client_cpu_seconds: float
    machine_cpu_seconds: float
    """CPU time of the whole machine, these two processes and any other."""
    deflate: bool
    client_lag_ms: list[float]


def run(options: Options) -> list[Figure]:
    size = SMOKE if options.smoke else FULL
    fd_limit = raise_fd_limit(2 * size.clients + 1000)  # the server inherits it too
    with tracker_server(options.workdir / "ws-fanout.db", options.workdir) as server:
        started = time.perf_counter()
        guests = _create_guests(server.url, size)
        setup_seconds = time.perf_counter() - started
        measured = run_async(_measure, server, guests, size)
    problems = log_problems(options.workdir / f"tracker-{server.port}.log")
    return _figures(size, guests, measured, setup_seconds, fd_limit, problems)


def _create_guests(url: str, size: Size) -> list[Guest]:
    """Every guest with one task; all but the due ones with a long timer running."""

    def one(number: int) -> Guest:
        token = start_guest(url)
        auth = {"Authorization": f"Bearer {token}"}
        task = _ok(request(url, "POST", "/api/tasks", {"title": f"Task {number}"}, auth))
        guest = Guest(token, task["id"])
        if number >= size.due:
            _start_timer(url, guest, LONG_SECONDS)
        return guest

    with ThreadPoolExecutor(max_workers=16) as pool:
        return list(pool.map(one, range(size.clients)))


def _start_timer(url: str, guest: Guest, seconds: int) -> float:
    """Start the guest's timer; its `ends_at`."""
    auth = {"Authorization": f"Bearer {guest.token}"}
    path = f"/api/tasks/{guest.task_id}/timer/start"
    task = _ok(request(url, "POST", path, {"duration_seconds": seconds}, auth))
    return parse_timestamp(task["timer"]["ends_at"])


def _start_due(url: str, guests: Sequence[Guest], seconds: int) -> None:
    """Start the due timers one after another over a second, so that their due times fall
    at every point of the tick's second: on a tick's fan-out as well as between two."""
    first = time.perf_counter() + 0.1
    spacing = 1.0 / len(guests)

    def one(number: int, guest: Guest) -> None:
        time.sleep(max(0.0, first + number * spacing - time.perf_counter()))
        guest.ends_at = _start_timer(url, guest, seconds)

    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(one, itertools.count(), guests))


def _ok(answer: tuple[int, dict[str, str], bytes]) -> Any:
    status, _, body = answer
    if status not in (200, 201):
        raise RuntimeError(f"the server answered {status}: {body[:200]!r}")
    return json.loads(body)


async def _measure(server: Server, guests: list[Guest], size: Size) -> Measured:
    pid = server.process.pid
    url = f"ws://{HOST}:{server.port}/ws"
    limiter = anyio.Semaphore(CONNECTING)
    sockets: dict[int, ClientConnection] = {}
    inboxes = [Inbox() for _ in guests]
    all_finished = anyio.Event()
    closing = False
    lags: list[float] = []

    async def read(socket: ClientConnection, inbox: Inbox) -> None:
        try:
            async for message in socket:
                received = time.time()
                parsed = msgspec.json.decode(message)
                kind = parsed.get("type")
                if kind == "tick":
                    inbox.ticks.append((received, parsed["server_time"]))
                elif kind == "timer_finished":
                    inbox.finished.append((received, parsed["task"]["timer"]["finished_at"]))
                    if all(inbox.finished for inbox in inboxes[: size.due]):
                        all_finished.set()
        except ConnectionClosed as exc:
            if not closing:
                inbox.closed = str(exc)
            return
        if not closing:
            inbox.closed = "closed by the server"

    async def open_one(index: int, readers: TaskGroup) -> None:
        async with limiter:
            headers = {"Authorization": f"Bearer {guests[index].token}"}
            socket = await connect(url, additional_headers=headers, ping_interval=None)
            first = msgspec.json.decode(await socket.recv(decode=False))
            if first.get("type") != "snapshot":
                raise RuntimeError(f"the first message was not a snapshot: {first!r}")
        sockets[index] = socket
        readers.start_soon(read, socket, inboxes[index])

    rss_before = rss_kib(pid)
    async with anyio.create_task_group() as readers:
        started = time.perf_counter()
        async with anyio.create_task_group() as opening:
            for index in range(len(guests)):
                opening.start_soon(open_one, index, readers)
        connect_seconds = time.perf_counter() - started
        await anyio.sleep(0.5)  # let the server settle before reading its RSS
        rss_after = rss_kib(pid)
        # This process's own collections of its thousands of sockets would delay the
        # receive times: no cyclic GC during the window. The last one takes a few hundred
        # ms, so it runs before the due timers start: what it held up is read by then.
        gc.collect()
        gc.disable()
        try:
            await anyio.to_thread.run_sync(
                _start_due, server.url, guests[: size.due], size.due_seconds
            )
            server_threads, client_cpu, machine_cpu = thread_cpu_ns(pid), _own_cpu(), machine_busy()
            begin = time.time()
            with anyio.move_on_after(size.window):
                await _watch_lag(lags)
            end = time.time()
            server_cpu = cpu_seconds_since(pid, server_threads)
            client_cpu = _own_cpu() - client_cpu
            machine_cpu = machine_busy() - machine_cpu
        finally:
            gc.enable()
        with anyio.move_on_after(GRACE):
            await all_finished.wait()
        closing = True
        for socket in sockets.values():
            readers.start_soon(socket.close)
    response = sockets[0].response
    extensions = response.headers.get("Sec-WebSocket-Extensions", "") if response else ""
    return Measured(
        inboxes=inboxes,
        window=(begin, end),
        rss_before_kib=rss_before,
        rss_after_kib=rss_after,
        connect_seconds=connect_seconds,
        server_cpu_seconds=server_cpu,
        client_cpu_seconds=client_cpu,
        machine_cpu_seconds=machine_cpu,
        deflate="permessage-deflate" in extensions,
        client_lag_ms=lags,
    )


async def _watch_lag(lags: list[float]) -> None:
    """Note how late this event loop wakes from 5 ms sleeps (it delays receive times)."""
    while True:
        started = time.perf_counter()
        await anyio.sleep(0.005)
        lags.append((time.perf_counter() - started - 0.005) * 1000)


def _figures(
    size: Size,
    guests: list[Guest],
    measured: Measured,
    setup_seconds: float,
    fd_limit: int,
    problems: list[str],
) -> list[Figure]:
    begin, end = measured.window
    seconds = end - begin
    closed = [inbox.closed for inbox in measured.inboxes if inbox.closed is not None]
    if closed:
        raise RuntimeError(f"the server closed {len(closed)} sockets early, e.g. {closed[0]}")
    jitter: list[float] = []
    distinct: list[float] = []  # the same, without a repeated tick of the same second
    delivery: list[float] = []
    by_second: dict[str, list[float]] = {}
    for inbox in measured.inboxes:
        ticks = [(at, sent) for at, sent in inbox.ticks if begin <= at <= end]
        for (earlier, sent_earlier), (later, sent_later) in itertools.pairwise(ticks):
            jitter.append(abs(later - earlier - 1.0) * 1000)
            if round(parse_timestamp(sent_earlier)) != round(parse_timestamp(sent_later)):
                distinct.append(jitter[-1])
        for at, sent in ticks:
            by_second.setdefault(sent, []).append(at)
    duplicates = len(jitter) - len(distinct)
    for sent, times in by_second.items():
        delivery += [(at - parse_timestamp(sent)) * 1000 for at in times]
    spread = [(max(times) - min(times)) * 1000 for times in by_second.values()]
    lateness: list[float] = []
    missing = wrong = 0
    for guest, inbox in zip(guests[: size.due], measured.inboxes, strict=False):
        assert guest.ends_at is not None
        if len(inbox.finished) != 1:
            missing += 1
            continue
        received, finished_at = inbox.finished[0]
        wrong += abs(parse_timestamp(finished_at) - guest.ends_at) > 0.001
        lateness.append((received - guest.ends_at) * 1000)
    if missing or wrong or not lateness or not jitter:
        raise RuntimeError(
            f"of {size.due} due timers, {missing} did not give exactly one timer_finished and "
            f"{wrong} had a finished_at other than their ends_at; {len(jitter)} tick intervals"
        )
    rss_per_connection = (measured.rss_after_kib - measured.rss_before_kib) / size.clients
    server_cores = measured.server_cpu_seconds / seconds
    client_cores = measured.client_cpu_seconds / seconds
    other_cores = max(0.0, measured.machine_cpu_seconds / seconds - server_cores - client_cores)
    common = {
        "clients": size.clients,
        "due_timers": size.due,
        "window_seconds": round(seconds, 3),
        "permessage_deflate": measured.deflate,
        "setup_seconds": round(setup_seconds, 3),
        "connect_seconds": round(measured.connect_seconds, 3),
        "fd_soft_limit": fd_limit,
        "server_log_problems": problems[:20],
    }
    note = f"{size.clients} sockets; server {server_cores:.2f} cores, client {client_cores:.2f}"
    note += f" (its loop late by max {max(measured.client_lag_ms):.0f} ms)"
    note += f", other processes {other_cores:.2f}"
    note += f"; tick delivery p99 {percentile(delivery, 99):.0f} ms after server_time"
    if duplicates:
        note += f"; {duplicates} ticks repeated a second (p99 without them "
        note += f"{percentile(distinct, 99):.1f} ms)"
    if problems:
        note += f"; {len(problems)} warnings/errors in the server log"
    return [
        Figure(
            NAME,
            "tick interval |dt - 1 s| p50",
            percentile(jitter, 50),
            "ms",
            details={**common, "intervals": len(jitter), "ticks": len(delivery)},
        ),
        Figure(
            NAME,
            "tick interval |dt - 1 s| p99",
            percentile(jitter, 99),
            "ms",
            goal=JITTER_GOAL,
            details={
                "max_ms": round(max(jitter), 3),
                "same_second_ticks": duplicates,
                "without_same_second_ticks_ms": _summary(distinct),
                "delivery_after_server_time_ms": _summary(delivery),
                "first_to_last_client_per_tick_ms": _summary(spread),
                "client_loop_lag_ms": _summary(measured.client_lag_ms),
            },
            note=note,
        ),
        Figure(
            NAME,
            "timer_finished after ends_at p99",
            percentile(lateness, 99),
            "ms",
            goal=LATENESS_GOAL,
            details=_summary(lateness),
        ),
        Figure(
            NAME,
            "server CPU during the window",
            server_cores,
            "cores",
            details={"client_cores": round(client_cores, 3), "other_cores": round(other_cores, 3)},
        ),
        Figure(
            NAME,
            "server RSS per connection",
            rss_per_connection,
            "KiB",
            details={
                "rss_before_mib": round(measured.rss_before_kib / 1024, 1),
                "rss_after_mib": round(measured.rss_after_kib / 1024, 1),
            },
        ),
    ]


def _summary(values: list[float]) -> dict[str, float]:
    return {
        "count": len(values),
        "p50": round(percentile(values, 50), 3),
        "p99": round(percentile(values, 99), 3),
        "max": round(max(values), 3),
    }


def percentile(values: Sequence[float], percent: float) -> float:
    """The nearest-rank percentile of `values` (not empty)."""
    ordered = sorted(values)
    rank = max(1, math.ceil(percent / 100 * len(ordered)))
    return ordered[rank - 1]


def raise_fd_limit(wanted: int) -> int:
    """Raise this process's soft limit on open files towards `wanted` (children inherit
    it); the soft limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        soft = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    return soft


def rss_kib(pid: int) -> int:
    """The process's resident set (VmRSS), in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS in /proc/{pid}/status")


def thread_cpu_ns(pid: int) -> dict[int, int]:
    """CPU time each thread of the process has used so far, in ns (schedstat: finer than
    /proc/<pid>/stat's 10 ms)."""
    used: dict[int, int] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            used[int(task.name)] = int((task / "schedstat").read_text().split()[0])
        except (OSError, IndexError, ValueError):
            continue  # a thread that just ended
    return used


def cpu_seconds_since(pid: int, before: dict[int, int]) -> float:
    """CPU seconds the process's threads used since `before` (a thread that ended
    meanwhile is left out, not counted negative)."""
    now = thread_cpu_ns(pid)
    return sum(used - before.get(tid, 0) for tid, used in now.items()) / 1e9


def machine_busy() -> float:
    """CPU seconds the whole machine has been busy (all but idle and iowait), from
    /proc/stat: other work on a shared machine shows as more than server + client."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def log_problems(log: Path) -> list[str]:
    """The server log's lines that are warnings, errors or tracebacks."""
    markers = (" WARNING ", " ERROR ", " CRITICAL ", "Traceback", "WARNING:", "ERROR:")
    lines = log.read_text(errors="replace").splitlines() if log.exists() else []
    return [line for line in lines if any(marker in line for marker in markers)]
