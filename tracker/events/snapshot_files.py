"""The snapshots of an SQLite log, each in a file of its own beside the database.

A snapshot is tens of megabytes for a few hundred thousand tasks. Written into the
database, it held SQLite's only write lock as long as that took (commits waited
100-230 ms behind it, in the busy handler's sleeps), grew the WAL by its size, and
left the next commit to copy it into the file. In a file beside the log, a worker
thread writes it while commits go on.

A file holds a header (the snapshot's name, the log position and hash it is valid
for, and its format) and then the data. It is written whole under a temporary name,
synced and renamed into place, so a crash leaves the previous snapshot, and a
temporary file that a crash left behind is removed by the next save.

Blocking file I/O: call these from a worker thread.
"""

from __future__ import annotations

import glob
import logging
import os
import re
import secrets
from pathlib import Path
from typing import BinaryIO

import msgspec

from tracker.events.store import Snapshot

logger = logging.getLogger(__name__)

_NAME = re.compile(r"[a-z0-9-]{1,64}")
_HEADER_LENGTH_BYTES = 4
_HEADER_MAX_BYTES = 1024
"""Far more than a header takes (a name of up to 64 characters, a hash, two numbers)."""


class _Header(msgspec.Struct, array_like=True, frozen=True):
    name: str
    position: int
    hash: str
    format: int


def snapshot_path(db: Path, name: str) -> Path:
    """Where the snapshot `name` of the log in `db` is kept: `<db>-snapshot-<name>`."""
    if not _NAME.fullmatch(name):
        raise ValueError(f"not a snapshot name: {name!r}")
    return db.with_name(f"{db.name}-snapshot-{name}")


def write_snapshot(db: Path, snapshot: Snapshot) -> None:
    """Keep `snapshot` beside `db`, replacing the one of the same name, durably."""
    path = snapshot_path(db, snapshot.name)
    for stale in path.parent.glob(f"{glob.escape(path.name)}.*.tmp"):
        stale.unlink(missing_ok=True)
    header = msgspec.msgpack.encode(
        _Header(snapshot.name, snapshot.position, snapshot.hash, snapshot.format)
    )
    temporary = path.with_name(f"{path.name}.{secrets.token_hex(4)}.tmp")
    # Readable by this user alone, like the database's secret: it holds password hashes.
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with open(descriptor, "wb") as file, memoryview(snapshot.data) as data:
            file.write(len(header).to_bytes(_HEADER_LENGTH_BYTES, "big"))
            file.write(header)
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    _sync_directory(path.parent)


def read_snapshot(db: Path, name: str) -> Snapshot | None:
    """The snapshot `name` kept beside `db`; None if there is none, or if its file cannot
    be read or is not one (logged: a snapshot is a cache, and the log is replayed
    without it)."""
    path = snapshot_path(db, name)
    try:
        with path.open("rb") as file:
            length = int.from_bytes(file.read(_HEADER_LENGTH_BYTES), "big")
            header = _read_header(file, length)
            if header is None:
                logger.warning("ignoring %s: it is not a snapshot", path)
                return None
            if header.name != name:
                logger.warning("ignoring %s: it holds the snapshot %r", path, header.name)
                return None
            data = file.read()  # tens of megabytes: read once, not copied out of the whole
    except FileNotFoundError:
        return None
    except OSError as exc:
        logger.warning("ignoring the snapshot %s: %s", path, exc)
        return None
    return Snapshot(header.name, header.position, header.hash, header.format, data)


def _read_header(file: BinaryIO, length: int) -> _Header | None:
    if length > _HEADER_MAX_BYTES:
        return None
    try:
        return msgspec.msgpack.decode(file.read(length), type=_Header)
    except msgspec.DecodeError:
        return None


def delete_snapshots(db: Path) -> None:
    """Remove every snapshot kept beside `db` (and any temporary file of one)."""
    for path in db.parent.glob(f"{glob.escape(db.name)}-snapshot-*"):
        path.unlink(missing_ok=True)
    _sync_directory(db.parent)


def _sync_directory(directory: Path) -> None:
    """Make a rename or removal in `directory` durable."""
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
