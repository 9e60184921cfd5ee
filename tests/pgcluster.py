"""A throwaway PostgreSQL cluster for one test run: `initdb` in a temporary directory,
`postgres` on 127.0.0.1 and a free port, a fresh database per `create_database()`.

PostgreSQL refuses to run as root, so as root its programs run as the `postgres`
system user (through `setpriv`), which then owns the temporary directory.
"""

from __future__ import annotations

import itertools
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

SUPERUSER = "tracker"
MAX_CONNECTIONS = 300
"""Room for two servers' pools at once, plus the command-line tools beside them."""
READY_TIMEOUT = 30.0
STOP_TIMEOUT = 30.0
START_ATTEMPTS = 3
"""A free port may be taken between choosing it and PostgreSQL binding it: try again."""


class PostgresUnavailable(RuntimeError):
    """This machine has no PostgreSQL server programs (or no user to run them as)."""


def find_bindir() -> Path | None:
    """The newest `/usr/lib/postgresql/*/bin` with `initdb` and `postgres`, else
    `pg_config --bindir`, else None."""

    def usable(bindir: Path) -> bool:
        return (bindir / "initdb").is_file() and (bindir / "postgres").is_file()

    def version(bindir: Path) -> tuple[int, ...]:
        return tuple(int(part) for part in re.findall(r"\d+", bindir.parent.name))

    candidates = sorted(
        (path for path in Path("/usr/lib/postgresql").glob("*/bin") if usable(path)),
        key=version,
    )
    if candidates:
        return candidates[-1]
    pg_config = shutil.which("pg_config")
    if pg_config is not None:
        result = subprocess.run(
            [pg_config, "--bindir"], capture_output=True, text=True, check=False
        )
        bindir = Path(result.stdout.strip())
        if result.returncode == 0 and usable(bindir):
            return bindir
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _client_env() -> dict[str, str]:
    """The environment without libpq's PG* settings, which would override ours."""
    return {name: value for name, value in os.environ.items() if not name.startswith("PG")}


class PostgresCluster:
    """A private PostgreSQL server: `start()` it, `create_database()` as often as needed,
    `stop()` it (which also deletes every file it had)."""

    def __init__(self, bindir: Path | None = None) -> None:
        found = bindir or find_bindir()
        if found is None:
            raise PostgresUnavailable(
                "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb, no "
                "pg_config): .ci/run installs Debian's `postgresql` package"
            )
        self.bindir = found
        self.as_postgres: list[str] = []
        if os.geteuid() == 0:
            setpriv = shutil.which("setpriv")
            if setpriv is None:
                raise PostgresUnavailable(
                    "PostgreSQL does not run as root, and there is no `setpriv` to switch users"
                )
            try:
                pwd.getpwnam("postgres")
            except KeyError:
                raise PostgresUnavailable(
                    "PostgreSQL does not run as root, and there is no `postgres` user to run it as"
                ) from None
            self.as_postgres = [
                setpriv,
                "--reuid=postgres",
                "--regid=postgres",
                "--init-groups",
                "--",
            ]
        self.directory: Path | None = None
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self._names = itertools.count(1)

    # Starting and stopping

    def start(self) -> PostgresCluster:
        """`initdb` a new cluster in a temporary directory and start it; wait until it
        accepts connections."""
        assert self.process is None, "the cluster is already running"
        self.directory = Path(tempfile.mkdtemp(prefix="tracker-pg-"))
        try:
            if self.as_postgres:
                shutil.chown(self.directory, "postgres", "postgres")
            self._run_as_postgres(
                "initdb",
                f"--pgdata={self.data}",
                f"--username={SUPERUSER}",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
                "--no-instructions",
            )
            for _attempt in range(START_ATTEMPTS):
                if self._start_server():
                    break
            else:
                raise RuntimeError(f"PostgreSQL did not start:\n{self.log()}")
        except BaseException:
            self.stop()
            raise
        return self

    def _start_server(self) -> bool:
        """Start `postgres` on a free port; True once it is ready, False if it exited."""
        assert self.directory is not None
        self.port = _free_port()
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    *self.as_postgres,
                    str(self.bindir / "postgres"),
                    "-D",
                    str(self.data),
                    "-c",
                    "listen_addresses=127.0.0.1",
                    "-c",
                    f"port={self.port}",
                    "-c",
                    f"unix_socket_directories={self.directory}",
                    "-c",
                    f"max_connections={MAX_CONNECTIONS}",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.directory,
                env=_client_env(),
            )
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            ready = subprocess.run(
                [
                    str(self.bindir / "pg_isready"),
                    *self._connection_args("postgres"),
                    "--timeout=1",
                    "--quiet",
                ],
                env=_client_env(),
                check=False,
            )
            if ready.returncode == 0:
                return True
            time.sleep(0.05)
        raise RuntimeError(f"PostgreSQL did not become ready in {READY_TIMEOUT} s:\n{self.log()}")

    def stop(self) -> None:
        """Stop the server at once and delete its directory. Safe to call more than once.
        (An immediate shutdown: a fast one would first write every database back to disk,
        seconds of fsync for files about to be deleted.)"""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGQUIT)
            try:
                process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None

    def __enter__(self) -> PostgresCluster:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # Using it

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def data(self) -> Path:
        assert self.directory is not None
        return self.directory / "data"

    @property
    def log_path(self) -> Path:
        assert self.directory is not None
        return self.directory / "postgres.log"

    def log(self) -> str:
        """What the server (and `initdb`) wrote so far."""
        if self.directory is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")

    def url(self, database: str) -> str:
        """The URL of `database` on this cluster (as the superuser, no password)."""
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        """A new, empty database (a copy of `template0`); its URL. Every call a new name."""
        assert self.running, "the cluster is not running"
        name = f"tracker_{next(self._names)}"
        self.psql(f'CREATE DATABASE "{name}" TEMPLATE template0')
        return self.url(name)

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run `sql` with `psql` as the superuser; its output (unaligned, no headers)."""
        result = subprocess.run(
            [
                str(self.bindir / "psql"),
                "--no-psqlrc",
                "--quiet",
                "--tuples-only",
                "--no-align",
                "--set=ON_ERROR_STOP=1",
                *self._connection_args(database),
                f"--command={sql}",
            ],
            capture_output=True,
            text=True,
            env=_client_env(),
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"psql failed on {sql!r}: {result.stderr.strip()}")
        return result.stdout

    def _connection_args(self, database: str) -> list[str]:
        return [
            "--host=127.0.0.1",
            f"--port={self.port}",
            f"--username={SUPERUSER}",
            f"--dbname={database}",
        ]

    def _run_as_postgres(self, program: str, *args: str) -> None:
        assert self.directory is not None
        with self.log_path.open("ab") as log:
            result = subprocess.run(
                [*self.as_postgres, str(self.bindir / program), *args],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.directory,
                env=_client_env(),
                check=False,
            )
        if result.returncode != 0:
            raise RuntimeError(f"{program} exited with {result.returncode}:\n{self.log()}")
