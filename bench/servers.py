"""Server processes under test: `tracker serve` and the bare ceiling app, on free loopback ports."""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
SECRET_KEY = "bench-only-secret-key-0123456789abcdefghijklmnop"
READY_TIMEOUT = 60.0
STOP_TIMEOUT = 15.0


@dataclass
class Server:
    """A running server process and how long it took to answer its first request."""

    process: subprocess.Popen[bytes]
    port: int
    log: Path
    """Where its output goes."""
    ready_after: float = 0.0
    """Seconds from starting the process to the first successful readiness probe (of
    servers started together, all but the first may have been ready sooner)."""

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def cpu_seconds(self) -> float:
        """User + system CPU time the process (all its threads) has used so far."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass(frozen=True)
class Command:
    """A server process to start, `python argv...`, and the port it will answer on."""

    argv: list[str]
    port: int
    env: Mapping[str, str]
    cwd: Path
    log: Path


def tracker_server(
    db: Path, workdir: Path, *, log_level: str = "warning", database_url: str | None = None
) -> AbstractContextManager[Server]:
    """`tracker serve` on `db` (or, given `database_url`, on that PostgreSQL database,
    and `db` is unused), access log off, with a fixed secret key."""
    return running(tracker_command(db, workdir, log_level=log_level, database_url=database_url))


def tracker_servers(urls: Sequence[str], workdir: Path) -> AbstractContextManager[list[Server]]:
    """`tracker serve` on each PostgreSQL database of `urls` (the same URL twice: two
    instances sharing it), all started at once."""
    unused = workdir / "unused.db"
    return running_together([tracker_command(unused, workdir, database_url=url) for url in urls])


def tracker_command(
    db: Path, workdir: Path, *, log_level: str = "warning", database_url: str | None = None
) -> Command:
    """How `tracker_server` starts `tracker serve` (on a free port)."""
    port = free_port()
    env = {
        "TRACKER_SECRET_KEY": SECRET_KEY,
        "TRACKER_ACCESS_LOG": "0",
        "TRACKER_LOG_LEVEL": log_level,
    }
    if database_url is not None:
        env["TRACKER_DATABASE_URL"] = database_url
    argv = ["-m", "tracker", "serve", "--host", HOST, "--port", str(port), "--db", str(db)]
    # The working directory is the scratch one, so no stray `.env` is read.
    return Command(argv, port, env, cwd=workdir, log=workdir / f"tracker-{port}.log")


def bare_server(
    workdir: Path, *, post_bytes: int = 200, get_bytes: int = 200
) -> AbstractContextManager[Server]:
    """The bare Starlette app of bench/bare.py, under the same uvicorn settings."""
    port = free_port()
    argv = ["-m", "bench.bare", "--port", str(port)]
    argv += ["--post-bytes", str(post_bytes), "--get-bytes", str(get_bytes)]
    return running(Command(argv, port, {}, cwd=REPO, log=workdir / f"bare-{port}.log"))


@contextmanager
def running(command: Command) -> Iterator[Server]:
    """Start the command, wait until GET /healthz answers 200, stop it on leaving."""
    with running_together([command]) as servers:
        yield servers[0]


@contextmanager
def running_together(commands: Sequence[Command]) -> Iterator[list[Server]]:
    """Start every command at once, wait until each answers GET /healthz with 200; on
    leaving, stop them all at once."""
    with ExitStack() as stack:
        servers: list[Server] = []
        starts: list[float] = []
        stack.callback(_stop, servers)
        for command in commands:
            output = stack.enter_context(command.log.open("wb"))
            starts.append(time.perf_counter())
            process = subprocess.Popen(
                [sys.executable, *command.argv],
                cwd=command.cwd,
                env={**os.environ, **command.env},
                stdout=output,
                stderr=subprocess.STDOUT,
            )
            servers.append(Server(process, command.port, command.log))
        for server, started in zip(servers, starts, strict=True):
            _wait_ready(server)
            server.ready_after = time.perf_counter() - started
        yield servers


def _wait_ready(server: Server) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"the server exited early:\n{_tail(server.log)}")
        try:
            status, _, _ = request(server.url, "GET", "/healthz", timeout=1.0)
        except OSError:
            time.sleep(0.002)
            continue
        if status == 200:
            return
        time.sleep(0.002)
    raise RuntimeError(f"the server did not answer within {READY_TIMEOUT} s:\n{_tail(server.log)}")


def _stop(servers: Sequence[Server]) -> None:
    """Ask every server to stop, then wait for each (killing it after `STOP_TIMEOUT`)."""
    for server in servers:
        if server.process.poll() is None:
            server.process.terminate()
    for server in servers:
        try:
            server.process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait()


def _tail(log: Path, lines: int = 30) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def request(
    base_url: str,
    method: str,
    path: str,
    body: Any = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = 10.0,
) -> tuple[int, dict[str, str], bytes]:
    """One HTTP request on a new connection: (status, headers, body)."""
    host, port = base_url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        all_headers = dict(headers or {})
        payload = None
        if body is not None:
            payload = json.dumps(body).encode()
            all_headers["Content-Type"] = "application/json"
        connection.request(method, path, payload, all_headers)
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def start_guest(base_url: str) -> str:
    """A new guest's bearer token."""
    status, _, body = request(base_url, "POST", "/api/auth/guest")
    if status != 201:
        raise RuntimeError(f"POST /api/auth/guest answered {status}: {body[:200]!r}")
    token: str = json.loads(body)["access_token"]
    return token
