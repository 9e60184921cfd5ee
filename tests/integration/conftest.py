"""Real servers on real stores: the fixtures every integration test stands on.

Nothing here builds the app in-process. `Server` runs `python -m tracker serve`
as a child process on a free port, and every HTTP client it hands out checks
each response against the contract's error rules (never a 500, always the
`{"error": {"code", "message"}}` body).

Every test that uses a server (`server`, `start_server`) runs once per store:
`test_x[sqlite]` on an SQLite file, `test_x[postgres]` on a database of its own in
the run's PostgreSQL cluster. A test about the SQLite file itself is marked
`sqlite_only` and gets the SQLite variant alone.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.pgcluster import PostgresCluster

SECRET_KEY = "integration-test-signing-key-0123456789abcdefghi"
"""The 48-character key the servers sign tokens with (unless a test wants a generated one)."""
assert len(SECRET_KEY) == 48

STORES = ("sqlite", "postgres")
"""The stores every server test runs on (the `store_kind` parameter)."""
STARTUP_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0
TIMESTAMP = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$"
"""RFC 3339, UTC, millisecond precision, `Z` suffix."""

ERROR_CODES = {
    400: {"bad_request"},
    401: {"unauthorized", "invalid_credentials"},
    403: {"forbidden"},
    404: {"not_found"},
    405: {"method_not_allowed"},
    409: {"username_taken", "invalid_state"},
    412: {"version_conflict"},
    413: {"payload_too_large"},
    415: {"unsupported_media_type"},
    422: {"validation_error"},
    429: {"rate_limited"},
    503: {"unavailable"},
}


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def clean_env(secret_key: str | None = SECRET_KEY, **extra: str) -> dict[str, str]:
    """The process environment without any TRACKER_* setting of the caller's, plus ours."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("TRACKER_")}
    env["TRACKER_ACCESS_LOG"] = "0"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    if secret_key is not None:
        env["TRACKER_SECRET_KEY"] = secret_key
    env.update(extra)
    return env


def check_error_body(response: httpx.Response) -> dict[str, Any]:
    """Assert `response` is a contract error; return its `error` object."""
    assert response.headers.get("content-type", "").startswith("application/json"), (
        response.headers,
        response.content[:200],
    )
    body = response.json()
    assert isinstance(body, dict)
    assert set(body) == {"error"}, body
    error = body["error"]
    assert isinstance(error, dict)
    assert set(error) <= {"code", "message", "details"}, error
    assert isinstance(error["code"], str)
    assert isinstance(error["message"], str)
    assert error["message"]
    if response.status_code in ERROR_CODES:
        assert error["code"] in ERROR_CODES[response.status_code], (response.status_code, error)
    if "details" in error:
        assert isinstance(error["details"], list)
        for detail in error["details"]:
            assert set(detail) == {"field", "message"}, detail
            assert isinstance(detail["field"], str)
            assert isinstance(detail["message"], str)
    return error


def check_response(response: httpx.Response) -> None:
    """An httpx response hook: no 5xx but 503, and every error in the contract's shape."""
    response.read()
    request = response.request
    assert response.status_code < 500 or response.status_code == 503, (
        f"{request.method} {request.url} answered {response.status_code}: {response.text[:300]}"
    )
    if response.status_code >= 400:
        check_error_body(response)


def error_of(response: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    """Assert the response is the error `status` (and `code`); return the error object."""
    assert response.status_code == status, (response.status_code, response.text[:500])
    error = check_error_body(response)
    if code is not None:
        assert error["code"] == code, error
    return error


@dataclass(frozen=True)
class Store:
    """Where a log lives: the SQLite file `db`, or, with `url`, the PostgreSQL database
    there (`db` then only places what goes beside the log: server output, working
    directory)."""

    db: Path
    url: str | None = None

    @property
    def kind(self) -> str:
        return "sqlite" if self.url is None else "postgres"

    def env(self) -> dict[str, str]:
        """What a `tracker` process needs in its environment to use this store."""
        return {} if self.url is None else {"TRACKER_DATABASE_URL": self.url}


@dataclass
class Guest:
    """A guest session on a server: its token, principal and a bearer-authenticated client."""

    token: str
    principal: dict[str, Any]
    client: httpx.Client
    login: httpx.Response

    @property
    def id(self) -> str:
        principal_id: str = self.principal["id"]
        return principal_id

    def create(self, title: str = "a task", **fields: Any) -> dict[str, Any]:
        """A new task of this guest (asserting 201)."""
        response = self.client.post("/api/tasks", json={"title": title, **fields})
        assert response.status_code == 201, response.text
        task: dict[str, Any] = response.json()
        return task


@dataclass
class Server:
    """`tracker serve` on `db` (or, with `database_url`, on that PostgreSQL database), as a
    child process. Start, stop and restart it at will: it keeps its store."""

    db: Path
    secret_key: str | None = SECRET_KEY
    env: dict[str, str] = field(default_factory=dict)
    database_url: str | None = None
    port: int = 0
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    starts: int = 0
    _clients: list[httpx.Client] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def store(self) -> Store:
        """The log this server runs on (for `run_cli(..., db=server.store)`)."""
        return Store(self.db, self.database_url)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, *, same_port: bool = False) -> Server:
        """Start a new server process on the same database and wait until it is healthy
        (on the port it had before, when `same_port`, as a restarted server would)."""
        assert not self.running, "the server is already running"
        self.starts += 1
        if not (same_port and self.port):
            self.port = free_port()
        self.log_path = self.db.with_name(f"{self.db.name}.server{self.starts}.log")
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tracker",
                    "serve",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--db",
                    str(self.db),
                ],
                env=clean_env(self.secret_key, **{**self.store.env(), **self.env}),
                cwd=self.db.parent,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self._wait_healthy()
        return self

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                pytest.fail(f"the server exited with {self.process.returncode}:\n{self.log()}")
            try:
                response = httpx.get(f"{self.url}/healthz", timeout=1.0)
            except httpx.TransportError:
                time.sleep(0.05)
                continue
            if response.status_code == 200:
                return
            time.sleep(0.05)
        self.kill()
        pytest.fail(f"the server did not become healthy:\n{self.log()}")

    def stop(self) -> int:
        """SIGTERM, then SIGKILL after 10 s; assert it exited. Returns its exit status."""
        self._close_clients()
        process = self.process
        assert process is not None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
                pytest.fail(f"the server ignored SIGTERM for {STOP_TIMEOUT} s:\n{self.log()}")
        assert process.poll() is not None, "the server did not exit"
        return process.returncode

    def kill(self) -> None:
        """SIGKILL: no shutdown at all, as in a power cut of the process."""
        process = self.process
        assert process is not None
        if process.poll() is None:
            process.kill()
        process.wait(5)
        assert process.poll() is not None
        self._close_clients()

    def log(self) -> str:
        """Everything the server process wrote so far."""
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")

    def client(self, token: str | None = None, **kwargs: Any) -> httpx.Client:
        """An httpx client for this server (bearer-authenticated with `token`)."""
        headers = dict(kwargs.pop("headers", {}))
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        client = httpx.Client(
            base_url=self.url,
            headers=headers,
            timeout=kwargs.pop("timeout", 10.0),
            event_hooks={"response": [check_response]},
            **kwargs,
        )
        self._clients.append(client)
        return client

    def guest(self) -> Guest:
        """Start a new guest session; a bearer client for it."""
        with httpx.Client(base_url=self.url, timeout=10.0) as anonymous:
            response = anonymous.post("/api/auth/guest")
        assert response.status_code == 201, response.text
        result = response.json()
        assert result["token_type"] == "bearer"
        token: str = result["access_token"]
        return Guest(token, result["user"], self.client(token), response)

    def _close_clients(self) -> None:
        for client in self._clients:
            client.close()
        self._clients.clear()


@dataclass
class ServerFactory:
    """Starts servers for one test (or module) and stops every one still running at
    teardown. They run on SQLite files in `directory`, or, given `databases` (which makes
    a new PostgreSQL database and returns its URL), on PostgreSQL databases."""

    directory: Path
    databases: Callable[[], str] | None = None
    servers: list[Server] = field(default_factory=list)
    _store: Store | None = None

    @property
    def kind(self) -> str:
        return "sqlite" if self.databases is None else "postgres"

    @property
    def store(self) -> Store:
        """Where a server goes unless told otherwise: `directory/tracker.db`, or one
        PostgreSQL database (made on first use) for all such servers of this factory."""
        if self._store is None:
            url = None if self.databases is None else self.databases()
            self._store = Store(self.directory / "tracker.db", url)
        return self._store

    def new_store(self, name: str) -> Store:
        """Another, empty store of this factory's kind: `directory/name/tracker.db` (the
        directory is made, and also holds a PostgreSQL store's files), or a new database."""
        directory = self.directory / name
        directory.mkdir()
        url = None if self.databases is None else self.databases()
        return Store(directory / "tracker.db", url)

    def __call__(
        self,
        db: Path | Store | None = None,
        *,
        secret_key: str | None = SECRET_KEY,
        start: bool = True,
        **env: str,
    ) -> Server:
        """A server on `db` (default: `self.store`), started unless `start` is False.
        A bare path is an SQLite file: only a `sqlite_only` test can choose one."""
        if db is None:
            store = self.store
        elif isinstance(db, Store):
            store = db
        else:
            assert self.databases is None, f"an SQLite file ({db}) for a {self.kind} test"
            store = Store(db)
        server = Server(store.db, secret_key, env, database_url=store.url)
        self.servers.append(server)
        if start:
            server.start()
        return server

    def close(self) -> None:
        failures = []
        for server in self.servers:
            if server.process is None:
                continue
            if server.running:
                status = server.stop()
                if status != 0:
                    failures.append(f"exit status {status}:\n{server.log()[-3000:]}")
            assert server.process.poll() is not None
        assert not failures, failures


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A test on a store (anything that needs `store_kind`) runs once per store, or on
    SQLite alone when marked `sqlite_only`. The parameter is module-scoped, so a module's
    tests run on one store, then on the other, each with its own module server."""
    if "store_kind" in metafunc.fixturenames:
        sqlite_only = metafunc.definition.get_closest_marker("sqlite_only") is not None
        kinds = ["sqlite"] if sqlite_only else list(STORES)
        metafunc.parametrize("store_kind", kinds, indirect=True, scope="module")


@pytest.fixture(scope="module")
def store_kind(request: pytest.FixtureRequest) -> str:
    """`"sqlite"` or `"postgres"`: the store of this test's servers."""
    kind: str = getattr(request, "param", "sqlite")
    assert kind in STORES, kind
    return kind


def server_factory(
    request: pytest.FixtureRequest, store_kind: str, directory: Path
) -> ServerFactory:
    """A factory of servers on `store_kind` stores (PostgreSQL ones from the run's cluster)."""
    if store_kind == "postgres":
        cluster: PostgresCluster = request.getfixturevalue("postgres_cluster")
        return ServerFactory(directory, cluster.create_database)
    return ServerFactory(directory)


@pytest.fixture
def start_server(
    request: pytest.FixtureRequest, store_kind: str, tmp_path: Path
) -> Iterator[ServerFactory]:
    """`start_server(db=None, secret_key=..., **env)`: a started `Server`, stopped at
    teardown, on the test's store kind (and `start_server.new_store(name)`: an empty one)."""
    factory = server_factory(request, store_kind, tmp_path)
    yield factory
    factory.close()


@pytest.fixture(scope="module")
def module_servers(
    request: pytest.FixtureRequest, store_kind: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerFactory]:
    """Servers that last the whole module (on its store kind), stopped after its last test."""
    factory = server_factory(request, store_kind, tmp_path_factory.mktemp("server"))
    yield factory
    factory.close()


@pytest.fixture(scope="module")
def server(module_servers: ServerFactory) -> Server:
    """One server per test module (tests isolate themselves by each using a new guest)."""
    return module_servers()


@pytest.fixture
def guest(server: Server) -> Guest:
    """A new guest on the module's server."""
    return server.guest()


@pytest.fixture
def other(server: Server) -> Guest:
    """A second, unrelated guest on the module's server."""
    return server.guest()


# The command line


def cli_invocation(*args: str, db: Path | Store | None) -> tuple[list[str], dict[str, str]]:
    """The command line and environment of `python -m tracker ARGS` on `db`: an SQLite
    file (`--db DB`) or a store (a PostgreSQL one through `TRACKER_DATABASE_URL`)."""
    store = Store(db) if isinstance(db, Path) else db
    command = [sys.executable, "-m", "tracker", *args]
    if store is None:
        return command, clean_env(None)
    if store.url is None:
        return [*command, "--db", str(store.db)], clean_env(None)
    # The key is not the log tools' business, but a PostgreSQL setup requires one.
    return command, clean_env(SECRET_KEY, **store.env())


def run_cli(
    *args: str,
    db: Path | Store | None = None,
    input: bytes | None = None,
    cwd: Path | None = None,
    timeout: float = 60.0,
    preexec_fn: Callable[[], object] | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """`python -m tracker ARGS` on `db` (an SQLite file, or a `Store` such as
    `server.store`), for real; never a traceback on stderr. (`preexec_fn` runs in the
    child before the command, e.g. to set a resource limit.)"""
    store = Store(db) if isinstance(db, Path) else db
    command, env = cli_invocation(*args, db=store)
    result = subprocess.run(
        command,
        input=input,
        capture_output=True,
        env=env,
        cwd=cwd or (store.db.parent if store is not None else None),
        timeout=timeout,
        check=False,
        preexec_fn=preexec_fn,
    )
    assert b"Traceback" not in result.stderr, result.stderr.decode(errors="replace")
    assert b"\r" not in result.stderr, "a progress bar was drawn on a pipe"
    return result


def cli_events(db: Path | Store, *args: str) -> list[dict[str, Any]]:
    """`tracker events` on `db` (a file or a store), each line parsed."""
    result = run_cli("events", *args, db=db)
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def assert_nothing_written(store: Store) -> None:
    """`store` holds no log: no file whose name starts with the SQLite file's (database,
    WAL, journal, key), or a PostgreSQL database in which `tracker events` finds nothing."""
    if store.url is None:
        left = [path.name for path in store.db.parent.iterdir()]
        assert [name for name in left if name.startswith(store.db.name)] == [], left
    else:
        result = run_cli("events", db=store)
        assert result.stdout == b"", result.stdout[:500]
