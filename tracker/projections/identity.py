"""Who exists: the principals the log has seen start."""

from __future__ import annotations

from tracker.events.types import GuestStarted

PRINCIPAL_STREAM_PREFIX = "principal-"


def principal_stream(principal_id: str) -> str:
    """The stream that holds a principal's identity events."""
    return PRINCIPAL_STREAM_PREFIX + principal_id


class Identities:
    """Every known principal and its kind."""

    def __init__(self) -> None:
        self.kinds: dict[str, str] = {}
        """principal id -> "guest" or "user"."""

    def kind_of(self, principal_id: str) -> str | None:
        """The principal's kind, or None if the log never saw it."""
        return self.kinds.get(principal_id)

    def apply(self, event: GuestStarted) -> None:
        """Apply one identity event."""
        self.kinds[event.principal_id] = "guest"
