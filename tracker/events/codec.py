"""Turning events into stored bytes and back, upcasting old schema versions on the way.

An upcaster takes the JSON object of one schema version of a type and returns
the object of the next version. Reading an old event runs every upcaster from
its stored version up to the current one, then validates the result.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec

from tracker.errors import BadEvent
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
    return decode_data(recorded.type, recorded.schema, recorded.data, recorded.position)


def decode_data(type_: str, schema: int, data: bytes | str, position: int) -> Event:
    """The typed event of stored `data` of `type_` at `schema` (upcast to the current one);
    `BadEvent` at `position` if it cannot be read."""
    cls = EVENT_TYPES.get(type_)
    if cls is None:
        raise BadEvent(position, f"it has unknown type {type_!r}")
    try:
        if schema == cls.schema:
            event: Event = _decoders[type_].decode(data)
        else:
            event = msgspec.convert(_upcast(type_, schema, data, position, cls.schema), Event)
    except msgspec.DecodeError as exc:  # ValidationError is a subclass
        raise BadEvent(position, f"it cannot be read: {exc}") from exc
    if type(event) is not cls:  # an upcaster that changed the tag
        raise BadEvent(position, f"it is stored as {type_}")
    return event


def _upcast(
    type_: str, schema: int, data: bytes | str, position: int, current: int
) -> dict[str, Any]:
    if schema > current:
        raise BadEvent(
            position,
            f"it is schema {schema} of {type_}, newer than this version of Tracker reads"
            f" ({current})",
        )
    fields = _object_decoder.decode(data)
    for version in range(schema, current):
        upcaster = UPCASTERS.get((type_, version))
        if upcaster is None:
            raise BadEvent(position, f"no upcaster for {type_} schema {version}")
        fields = upcaster(fields)
    return fields
