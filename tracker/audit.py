"""The audit trail as people may read it: whose events a principal sees, and no secrets.

A principal reads the streams it owns: its identity, the tasks it ever had (deleted
ones too) and, once registered, the streams of the guest it was. Admins read every
stream. Whatever is shown, secrets (password hashes) are replaced by `REDACTED`:
the log keeps them, its readers never get them.
"""

from __future__ import annotations

import msgspec

from tracker.errors import BadRequest
from tracker.events.records import Recorded
from tracker.events.types import EVENT_TYPES

REDACTED = "[redacted]"
SECRET_FIELDS: dict[str, tuple[str, ...]] = {"UserRegistered": ("password_hash",)}
"""Per event type, the data fields that never leave the server."""

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000


class EventQuery(msgspec.Struct, frozen=True, kw_only=True):
    """Which events to read: after a position, of one type or stream, at most `limit`."""

    after: int = 0
    limit: int | None = None
    type: str | None = None
    stream: str | None = None

    def __post_init__(self) -> None:
        if self.after < 0:
            raise BadRequest("after must be a position, 0 or more")
        if self.limit is not None and not 1 <= self.limit <= MAX_LIMIT:
            raise BadRequest(f"limit must be from 1 to {MAX_LIMIT}")
        if self.type is not None and self.type not in EVENT_TYPES:
            raise BadRequest(f"type must be one of {', '.join(sorted(EVENT_TYPES))}")


def redacted(record: Recorded) -> Recorded:
    """The event as it may be shown: its secret fields replaced by `REDACTED`."""
    secrets = SECRET_FIELDS.get(record.type)
    if secrets is None:
        return record
    data = msgspec.json.decode(record.data)
    for name in secrets:
        if name in data:
            data[name] = REDACTED
    return msgspec.structs.replace(record, data=msgspec.Raw(msgspec.json.encode(data)))
