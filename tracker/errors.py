"""The error family every layer raises; `tracker.http.errors` maps it to HTTP."""

from __future__ import annotations


class TrackerError(Exception):
    """Base of every error Tracker raises on purpose."""


class DomainError(TrackerError):
    """A command was refused by the rules of the domain."""


class NotFound(DomainError):
    """The thing does not exist, or belongs to someone else."""


class InvalidState(DomainError):
    """The command does not apply to the thing's current state."""


class VersionConflict(DomainError):
    """The expected stream version is not the current one."""

    def __init__(self, stream: str, expected: int, actual: int) -> None:
        super().__init__(f"stream {stream!r} is at version {actual}, not {expected}")
        self.stream = stream
        self.expected = expected
        self.actual = actual


class UsernameTaken(DomainError):
    """Another account already has that username (whatever its case)."""


class Invalid(DomainError):
    """A field's value breaks a rule of the contract."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class BadRequest(TrackerError):
    """A query parameter or header cannot be understood."""


class AuthError(TrackerError):
    """Missing, expired, revoked or forged credentials."""


class InvalidCredentials(AuthError):
    """Login failed: unknown username or wrong password (never saying which)."""


class RateLimited(TrackerError):
    """Too many failed attempts: try again after `retry_after` seconds."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"too many failed attempts: try again in {retry_after} s")
        self.retry_after = retry_after


class Forbidden(TrackerError):
    """Authenticated, but not allowed (failed CSRF check, not an admin)."""


class StorageError(TrackerError):
    """The log cannot be written or read right now (read-only, disk full, locked)."""


class CorruptLog(TrackerError):
    """The database is not a Tracker log, or its history does not verify."""


class VersionJump(CorruptLog):
    """An event of the log is not the next of its stream."""

    def __init__(self, stream: str, version: int, expected: int) -> None:
        super().__init__(f"stream {stream!r} jumps to version {version}, expected {expected}")


class BadEvent(CorruptLog):
    """The log is wrong at `position`, for `reason`."""

    def __init__(self, position: int, reason: str) -> None:
        super().__init__(f"position {position}: {reason}")
        self.position = position
        self.reason = reason
