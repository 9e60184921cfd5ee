"""Turning events into stored bytes and back, upcasting old schema versions on the way.

An upcaster takes the JSON object of one schema version of a type and returns
the object of the next version. Reading an old event runs every upcaster from
its stored version up to the current one, then validates the result.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec

from tracker.errors import CorruptLog
from tracker.events.records import Recorded
from tracker.events.types import EVENT_TYPES, BaseEvent, Event

Upcaster = Callable[[dict[str, Any]], dict[str, Any]]

UPCASTERS: dict[tuple[str, int], Upcaster] = {}
"""(type, stored schema version) -> the function lifting it one version up."""

_encoder = msgspec.json.Encoder()
_decoders: dict[str, msgspec.json.Decoder[Any]] = {
    name: msgspec.json.Decoder(cls) for name, cls in EVENT_TYPES.items()
}
"""One decoder per type: the stored `type` column says which, so no union dispatch is needed."""
_object_decoder = msgspec.json.Decoder(dict[str, Any])


def encode(event: BaseEvent) -> bytes:
    """The event's data as stored: compact JSON, with its `type` tag."""
    return _encoder.encode(event)


def decode(recorded: Recorded) -> Event:
    """The typed event a stored record holds, upcast to the current schema."""
    cls = EVENT_TYPES.get(recorded.type)
    if cls is None:
        raise CorruptLog(f"event {recorded.position} has unknown type {recorded.type!r}")
    try:
        if recorded.schema == cls.schema:
            event: Event = _decoders[recorded.type].decode(recorded.data)
        else:
            event = msgspec.convert(_upcast(recorded, cls.schema), Event)
    except msgspec.DecodeError as exc:  # ValidationError is a subclass
        raise CorruptLog(f"event {recorded.position} cannot be read: {exc}") from exc
    if type(event) is not cls:  # an upcaster that changed the tag
        raise CorruptLog(f"event {recorded.position} is stored as {recorded.type}")
    return event


def _upcast(recorded: Recorded, current: int) -> dict[str, Any]:
    if recorded.schema > current:
        raise CorruptLog(
            f"event {recorded.position} is schema {recorded.schema} of {recorded.type}, "
            f"newer than this version of Tracker reads ({current})"
        )
    data = _object_decoder.decode(recorded.data)
    for version in range(recorded.schema, current):
        upcaster = UPCASTERS.get((recorded.type, version))
        if upcaster is None:
            raise CorruptLog(f"no upcaster for {recorded.type} schema {version}")
        data = upcaster(data)
    return data
