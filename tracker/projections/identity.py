"""Who exists: guests, accounts (with their password hashes), claims and revoked sessions."""

from __future__ import annotations

import msgspec

from tracker.errors import VersionJump
from tracker.events.types import GuestClaimed, GuestStarted, SessionRevoked, UserRegistered

PRINCIPAL_STREAM_PREFIX = "principal-"
USERNAME_STREAM_PREFIX = "username-"

IdentityEvent = GuestStarted | UserRegistered | GuestClaimed | SessionRevoked


def principal_stream(principal_id: str) -> str:
    """The stream that holds a principal's identity events."""
    return PRINCIPAL_STREAM_PREFIX + principal_id


def username_stream(username: str) -> str:
    """The stream that reserves a username (case-insensitively) for one account."""
    return USERNAME_STREAM_PREFIX + username.lower()


class Account(msgspec.Struct, array_like=True, gc=False):
    """What logging in needs: who the account is, and its password hash."""

    principal_id: str
    username: str
    password_hash: str


class Identities(msgspec.Struct):
    """Every principal the log knows, as of the read model's position."""

    kinds: dict[str, str] = msgspec.field(default_factory=dict)
    """principal id -> "guest" or "user" (a claimed guest is gone)."""
    usernames: dict[str, str] = msgspec.field(default_factory=dict)
    """user id -> username as registered."""
    accounts: dict[str, Account] = msgspec.field(default_factory=dict)
    """lower-cased username -> account."""
    claimed: dict[str, str] = msgspec.field(default_factory=dict)
    """guest id -> the user that claimed it."""
    revoked: dict[str, int] = msgspec.field(default_factory=dict)
    """jti of a logged-out token -> when it expires (epoch seconds)."""
    versions: dict[str, int] = msgspec.field(default_factory=dict)
    """identity stream (of a principal, of a username) -> its version."""

    def kind_of(self, principal_id: str) -> str | None:
        """The principal's kind, or None if the log never saw it (or it was claimed)."""
        return self.kinds.get(principal_id)

    def account(self, username: str) -> Account | None:
        """The account of `username`, whatever its case."""
        return self.accounts.get(username.lower())

    def is_revoked(self, jti: str) -> bool:
        """Whether the token with this id was logged out."""
        return jti in self.revoked

    def merged_into(self, principal_id: str) -> list[str]:
        """The principal and every guest it claimed: whose tasks it has."""
        return [principal_id, *(g for g, user in self.claimed.items() if user == principal_id)]

    def apply(self, event: IdentityEvent, stream: str, version: int) -> None:
        """Apply one identity event, the `version` of `stream` (which must be its next)."""
        expected = self.versions.get(stream, 0) + 1
        if version != expected:
            raise VersionJump(stream, version, expected)
        self.versions[stream] = version
        match event:
            case GuestStarted():
                self.kinds[event.principal_id] = "guest"
            case UserRegistered():
                self.kinds[event.principal_id] = "user"
                self.usernames[event.principal_id] = event.username
                self.accounts[event.username.lower()] = Account(
                    event.principal_id, event.username, event.password_hash
                )
            case GuestClaimed():
                self.kinds.pop(event.guest_id, None)
                self.claimed[event.guest_id] = event.user_id
            case SessionRevoked():
                self.revoked[event.jti] = event.expires_at
