"""The `tracker` command: serve the app, and read, check, back up and restore its log."""

from __future__ import annotations

import argparse
import contextlib
import logging
import re
import signal
import sys
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO, TextIO, TypeVar

import anyio
import msgspec

from tracker import __version__
from tracker.clock import format_timestamp, parse_timestamp, system_clock
from tracker.config import ConfigError, Settings
from tracker.errors import BadEvent, CorruptLog, TrackerError
from tracker.events.records import Recorded, ReplayRow
from tracker.events.store import Snapshot
from tracker.events.verify import ChainChecker, ChainReport
from tracker.progress import Progress
from tracker.projections.board import Task
from tracker.projections.model import (
    SNAPSHOT_NAME,
    ReadModel,
    replaying,
    snapshot_problem,
)
from tracker.storage import Store, log_name, open_store

EXPORT_FORMAT = 1
FOLLOW_INTERVAL = 0.5
IMPORT_CHUNK = 5000

T = TypeVar("T")

_encoder = msgspec.json.Encoder()


class ExportHeader(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The first line of a backup."""

    tracker_export: int
    exported_at: str


class ExportEnd(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The last line of a backup: how many events it holds and the hash of the last one."""

    events: int
    head: int
    hash: str


class ExportTrailer(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    end: ExportEnd


class ReplayResult(msgspec.Struct):
    """The state at a position: every owner's tasks."""

    position: int
    owners: dict[str, list[Task]]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
        if getattr(args, "db", None) is not None:
            settings = settings.replace(db=Path(args.db))
        command: Callable[[argparse.Namespace, Settings], int] = args.command
        return command(args, settings)
    except ConfigError as exc:
        print(f"tracker: {exc}", file=sys.stderr)
        return 2
    except BadEvent as exc:
        print(f"FAILED at position {exc.position}: {exc.reason}", file=sys.stderr)
        return 1
    except TrackerError as exc:
        print(f"tracker: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"tracker: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        sys.stderr.close()  # the reader went away (e.g. `| head`): not an error
        return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tracker", description="A task tracker with live countdown timers."
    )
    parser.add_argument("--version", action="version", version=f"tracker {__version__}")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    def command(name: str, run: Callable[[argparse.Namespace, Settings], int], help_: str) -> Any:
        sub = commands.add_parser(name, help=help_, description=help_)
        sub.add_argument("--db", help="the SQLite log (default: $TRACKER_DB or ./tracker.db)")
        sub.set_defaults(command=run)
        return sub

    serve = command("serve", _serve, "run the server")
    serve.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to listen on (default 6969)")

    events = command("events", _events, "print events as NDJSON")
    events.add_argument("--after", type=int, default=0, metavar="N", help="start after position N")
    events.add_argument("--stream", help="only this stream's events")
    events.add_argument("--follow", action="store_true", help="keep printing new events")

    replay = command("replay", _replay, "print the state as it stood at a position, as JSON")
    replay.add_argument("--until", help="a position, or an RFC 3339 time (default: the head)")
    replay.add_argument(
        "--owner", help="only this owner's tasks (an id that starts with - is given as --owner=ID)"
    )

    command("verify", _verify, "check the hash chain, stream versions and the snapshot")

    export = command("export", _export, "write an NDJSON backup of the whole log")
    export.add_argument("file", help="the backup to write ('-' for standard output)")

    import_ = command("import", _import, "restore a backup into an empty database")
    import_.add_argument("file", help="the backup to read ('-' for standard input)")
    return parser


def _run(coroutine: Callable[[], Coroutine[Any, Any, int]]) -> int:
    return anyio.run(coroutine)


# serve


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    from tracker.app import create_app

    if args.host is not None:
        settings = settings.replace(host=args.host)
    if args.port is not None:
        settings = settings.replace(port=args.port)
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # Refuse what cannot work (a foreign or newer database, one in use, a bad key file)
    # with one clear line here, before uvicorn would report it with a traceback.
    _run(lambda: _preflight(settings))
    config = uvicorn.Config(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=settings.access_log,
        proxy_headers=settings.trust_proxy,
        forwarded_allow_ips="*" if settings.trust_proxy else None,
        server_header=False,
        timeout_graceful_shutdown=10,
        ws_max_size=4096,
        # Live messages are a hundred bytes or so: compressing them saves next to nothing,
        # and costs every socket its zlib buffers and every message a deflate call.
        ws_per_message_deflate=False,
    )
    server = _server_class()(config)
    # uvicorn shuts down gracefully on SIGTERM, then re-raises it to the handler it
    # found: make that one a no-op, so a graceful stop exits 0 rather than -15.
    signal.signal(signal.SIGTERM, lambda signum, frame: None)
    server.run()
    return 0 if server.started and not server.failed else 1


async def _preflight(settings: Settings) -> int:
    from tracker.auth import load_or_create_secret

    async with open_store(settings):
        pass
    if settings.secret_key is None:
        await anyio.to_thread.run_sync(load_or_create_secret, settings.db)
    return 0


def _server_class() -> type:
    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn, but live sockets are closed with 1001 (going away) before it closes
        the rest of its connections (it would say 1012, service restart), and the
        process stops if the application itself fails."""

        failed = False

        async def on_tick(self, counter: int) -> bool:
            # The lifespan ended by itself: a background task (timers, ticks, snapshots)
            # failed and the store is closed. Answering 503 for ever helps nobody: stop,
            # so that whatever runs the server starts it again.
            if getattr(self.lifespan, "error_occurred", False) and not self.should_exit:
                logging.getLogger("tracker").critical("the application failed: stopping")
                self.failed = self.should_exit = True
            should_exit: bool = await super().on_tick(counter)
            return should_exit

        async def shutdown(self, sockets: Any = None) -> None:
            app = self.config.app
            hub = getattr(getattr(app, "state", None), "hub", None)
            if hub is not None and hub.connections:
                hub.close_all()
                await anyio.sleep(0.2)  # let each socket send its close frame
            await super().shutdown(sockets)

    return Server


# events


def _events(args: argparse.Namespace, settings: Settings) -> int:
    async def run() -> int:
        async with open_store(settings, create=False, exclusive=False) as store:
            after = args.after
            while True:
                async for recorded in _read(store, after, args.stream):
                    _print_line(_encoder.encode(recorded))
                    after = recorded.position
                sys.stdout.flush()
                if not args.follow:
                    return 0
                await anyio.sleep(FOLLOW_INTERVAL)

    return _run(run)


async def _read(store: Store, after: int, stream: str | None) -> AsyncIterator[Recorded]:
    if stream is None:
        async for recorded in store.read_all(after=after):
            yield recorded
    else:
        for recorded in await store.read_stream(stream):
            if recorded.position > after:
                yield recorded


def _print_line(line: bytes, out: TextIO = sys.stdout) -> None:
    out.buffer.write(line + b"\n")


# replay


def _replay(args: argparse.Namespace, settings: Settings) -> int:
    async def run() -> int:
        async with open_store(settings, create=False, exclusive=False) as store:
            until, until_time = _until(args.until)
            model = ReadModel()
            total = store.head if until is None else min(until, store.head)
            with Progress("replay", total) as progress:

                def apply(rows: Iterable[ReplayRow]) -> None:
                    before = model.position
                    try:
                        model.apply_rows(rows if until_time is None else _up_to(until_time, rows))
                    finally:
                        progress.advance(model.position - before)

                with contextlib.suppress(_UntilReached), replaying():
                    await store.replay(apply, until=until)
        owners = model.board.tasks
        if args.owner is not None:
            owners = {args.owner: owners.get(args.owner, {})}
        result = ReplayResult(
            model.position, {owner: list(tasks.values()) for owner, tasks in owners.items()}
        )
        _print_line(_encoder.encode(result))
        return 0

    return _run(run)


class _UntilReached(Exception):
    """The replay came to the first event after `--until`."""


def _up_to(moment: str, rows: Iterable[ReplayRow]) -> Iterator[ReplayRow]:
    """`rows` up to the first one recorded after `moment` (which raises `_UntilReached`)."""
    for row in rows:
        if row[3] > moment:
            raise _UntilReached
        yield row


def _until(text: str | None) -> tuple[int | None, str | None]:
    """`--until` as a position, or as a time in the log's own timestamp form (which sorts)."""
    if text is None:
        return None, None
    if re.fullmatch(r"[0-9]{1,18}", text):
        return int(text), None
    try:
        moment = parse_timestamp(text)
    except ValueError:
        raise ConfigError(f"--until must be a position or an RFC 3339 time, not {text!r}") from None
    return None, format_timestamp(moment)


# verify


def _verify(args: argparse.Namespace, settings: Settings) -> int:
    async def run() -> int:
        async with open_store(settings, create=False, exclusive=False) as store:
            head = store.head
            snapshot = await store.load_snapshot(SNAPSHOT_NAME)
            problems: list[BadEvent] = []
            if snapshot is not None and (reason := await snapshot_problem(store, snapshot)):
                reason = f"the snapshot is not of this log: {reason}"
                problems.append(BadEvent(snapshot.position, reason))
            chain: list[ChainReport] = []

            async def check_chain() -> None:
                chain.append(await store.check_chain(head))

            # The chain is checked in another process while this one replays.
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(check_chain)
                try:
                    await _replay_against(store, head, snapshot)
                except BadEvent as replay_problem:
                    problems.append(replay_problem)
            [report] = chain
            if (chain_problem := report.problem()) is not None:
                problems.insert(0, chain_problem)
            if problems:  # the first bad event, whoever found it (the chain check wins ties)
                raise min(problems, key=lambda problem: problem.position)
        note = f", snapshot at {snapshot.position} matches" if snapshot is not None else ""
        print(f"ok: {report.position} events, chain tip {report.hash}{note}")
        return 0

    return _run(run)


async def _replay_against(store: Store, head: int, snapshot: Snapshot | None) -> None:
    """Replay the log up to `head`; the projections must accept every event, and equal the
    stored snapshot at its position."""
    model = ReadModel()
    with Progress("verify", head) as progress, replaying():

        def apply(rows: Iterable[ReplayRow]) -> None:
            before = model.position
            try:
                model.apply_rows(rows)
            finally:
                progress.advance(model.position - before)

        if snapshot is not None and snapshot.position <= head:
            await store.replay(apply, until=snapshot.position)
            if model.position == snapshot.position and snapshot.data != model.dump():
                raise BadEvent(
                    snapshot.position, "the stored snapshot differs from a full replay of the log"
                )
        await store.replay(apply, after=model.position, until=head)


# export and import


def _export(args: argparse.Namespace, settings: Settings) -> int:
    async def run() -> int:
        out = sys.stdout.buffer if args.file == "-" else None
        target = None if out is not None else Path(args.file)
        if target is not None and target.exists():
            raise ConfigError(f"{target} exists: choose a new file for the backup")
        async with open_store(settings, create=False, exclusive=False) as store:
            lines = [_encoder.encode(ExportHeader(EXPORT_FORMAT, format_timestamp(system_clock())))]
            count, last = 0, None
            partial = target.with_name(target.name + ".partial") if target else None
            sink = await anyio.to_thread.run_sync(partial.open, "wb") if partial else out
            assert sink is not None
            try:
                with Progress("export", store.head) as progress:
                    async for recorded in store.read_all():
                        lines.append(_encoder.encode(recorded))
                        count, last = count + 1, recorded
                        progress.advance()
                        if len(lines) >= IMPORT_CHUNK:
                            await anyio.to_thread.run_sync(_write_lines, sink, lines)
                            lines = []
                end = ExportEnd(count, last.position if last else 0, last.hash if last else "")
                lines.append(_encoder.encode(ExportTrailer(end)))
                await anyio.to_thread.run_sync(_write_lines, sink, lines)
                await anyio.to_thread.run_sync(_sync, sink)
            finally:
                if partial is not None:
                    sink.close()
            if partial is not None and target is not None:
                partial.rename(target)
        print(f"exported {count} events", file=sys.stderr)
        return 0

    return _run(run)


def _remove_database(db: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        db.with_name(db.name + suffix).unlink(missing_ok=True)


def _write_lines(sink: Any, lines: list[bytes]) -> None:
    sink.write(b"".join(line + b"\n" for line in lines))


def _sync(sink: Any) -> None:
    sink.flush()
    if sink.fileno() > 2:
        import os

        os.fsync(sink.fileno())


def _import(args: argparse.Namespace, settings: Settings) -> int:
    async def run() -> int:
        source = sys.stdin.buffer if args.file == "-" else None
        path = Path(args.file)
        if source is None and not await anyio.to_thread.run_sync(path.is_file):
            raise ConfigError(f"{args.file} is not a file")
        local = settings.database_url is None
        created = local and not await anyio.to_thread.run_sync(settings.db.exists)
        try:
            async with open_store(settings) as store:
                if store.head != 0:
                    raise CorruptLog(
                        f"{log_name(settings)} is not empty: import restores into a new database"
                    )
                stream: BinaryIO = (
                    source
                    if source is not None
                    else await anyio.to_thread.run_sync(path.open, "rb")
                )
                size = 0 if source is not None else await anyio.to_thread.run_sync(_size, path)
                try:
                    with Progress("import", size, unit="bytes") as progress:
                        count = await store.import_log(_verified_chunks(stream, progress))
                finally:
                    if stream is not source:
                        stream.close()
        except BaseException:
            if created:  # leave nothing behind: not even an empty log
                await anyio.to_thread.run_sync(_remove_database, settings.db)
            raise
        print(f"imported {count} events into {log_name(settings)}", file=sys.stderr)
        return 0

    return _run(run)


def _size(path: Path) -> int:
    return path.stat().st_size


async def _verified_chunks(stream: Any, progress: Progress) -> AsyncIterator[list[Recorded]]:
    """The backup's events in chunks, each checked; BadEvent or CorruptLog at the first fault."""
    checker = ChainChecker()
    model = ReadModel()  # the projections must accept the backup too, as `verify` demands
    line_number = 0
    header_seen = False
    trailer: ExportEnd | None = None
    chunk: list[Recorded] = []
    while True:
        lines: list[bytes] = await anyio.to_thread.run_sync(stream.readlines, 1 << 20)
        if not lines:
            break
        for line in lines:
            line_number += 1
            progress.advance(len(line))
            if trailer is not None:
                raise CorruptLog(f"line {line_number}: data after the end of the backup")
            if not line.endswith(b"\n"):
                raise CorruptLog(f"line {line_number}: the backup is truncated")
            if not header_seen:
                _read_header(line, line_number)
                header_seen = True
                continue
            if line.startswith(b'{"end"'):
                trailer = _decode_line(line, line_number, ExportTrailer).end
                continue
            recorded = _decode_line(line, line_number, Recorded)
            try:
                checker.check(recorded)
                model.apply(recorded)
            except CorruptLog as exc:
                raise CorruptLog(f"line {line_number}: {exc}") from exc
            chunk.append(recorded)
            if len(chunk) >= IMPORT_CHUNK:
                yield chunk
                chunk = []
    if not header_seen:
        raise CorruptLog("the backup is empty")
    if trailer is None:
        raise CorruptLog(f"line {line_number + 1}: the backup is truncated (no end line)")
    if (trailer.events, trailer.head, trailer.hash) != (
        checker.position,
        checker.position,
        checker.hash if checker.position else "",
    ):
        raise CorruptLog("the backup's end line does not match its events")
    if chunk:
        yield chunk


def _read_header(line: bytes, line_number: int) -> None:
    header = _decode_line(line, line_number, ExportHeader)
    if header.tracker_export != EXPORT_FORMAT:
        raise CorruptLog(f"line {line_number}: backup format {header.tracker_export} is unknown")


def _decode_line(line: bytes, line_number: int, type_: type[T]) -> T:
    try:
        return msgspec.json.decode(line, type=type_)
    except msgspec.DecodeError as exc:
        raise CorruptLog(f"line {line_number}: {exc}") from exc
