"""Principals and their tokens: HS256 JWTs with a pinned algorithm, and the key that signs them."""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Literal, TypeVar

import anyio
import bcrypt
import jwt
import msgspec

from tracker.clock import Clock
from tracker.config import ConfigError
from tracker.errors import AuthError, RateLimited

logger = logging.getLogger(__name__)

T = TypeVar("T")

ALGORITHM = "HS256"
MIN_KEY_LENGTH = 32
MAX_WAITING = 64
"""Password hashes allowed to wait for a worker before new ones are refused."""
VERIFIED_CACHE_SIZE = 10_000
Kind = Literal["user", "guest"]


class Principal(msgspec.Struct, frozen=True, kw_only=True):
    """Who is asking: a registered user or a guest."""

    id: str
    kind: Kind
    username: str | None = None


class Claims(msgspec.Struct, frozen=True):
    """What a verified token says."""

    sub: str
    kind: Kind
    jti: str
    iat: int
    exp: int


class Session(msgspec.Struct, frozen=True):
    """A principal with a fresh token, and when it was issued and expires (epoch seconds)."""

    principal: Principal
    token: str
    issued_at: int
    expires_at: int


class TokenService:
    """Issues and verifies session tokens."""

    def __init__(self, key: str, clock: Clock, *, guest_ttl: int, user_ttl: int) -> None:
        self._key = key
        self._clock = clock
        self._ttl: dict[Kind, int] = {"guest": guest_ttl, "user": user_ttl}
        self._verified: dict[str, Claims] = {}

    def issue(self, principal: Principal) -> Session:
        """A new session for `principal`."""
        now = int(self._clock())
        expires = now + self._ttl[principal.kind]
        claims = Claims(principal.id, principal.kind, secrets.token_urlsafe(16), now, expires)
        token = jwt.encode(msgspec.structs.asdict(claims), self._key, algorithm=ALGORITHM)
        return Session(principal, token, now, expires)

    def verify(self, token: str) -> Claims:
        """The token's claims; AuthError unless it is ours, intact, HS256 and unexpired.

        Tokens that verified once are remembered (by their exact text), so a client
        sending the same token with every request pays for the signature check once.
        """
        claims = self._verified.get(token)
        if claims is None:
            claims = self._decode(token)
            if len(self._verified) >= VERIFIED_CACHE_SIZE:
                del self._verified[next(iter(self._verified))]  # the oldest
            self._verified[token] = claims
        if claims.exp <= self._clock():
            raise AuthError("invalid or expired token")
        return claims

    def _decode(self, token: str) -> Claims:
        try:
            payload = jwt.decode(
                token,
                self._key,
                algorithms=[ALGORITHM],
                # Expiry is checked below against the injected clock, not PyJWT's own.
                options={
                    "require": ["sub", "kind", "jti", "iat", "exp"],
                    "verify_exp": False,
                    "verify_iat": False,
                },
            )
            return msgspec.convert(payload, Claims)
        except (jwt.PyJWTError, msgspec.ValidationError) as exc:
            raise AuthError("invalid or expired token") from exc


def load_or_create_secret(db_path: Path) -> str:
    """The key kept beside the database, created (mode 0600) on first use.

    It is written to a temporary file and linked into place, so a crash never
    leaves a partial key; a key file that is too short is refused, not used.
    Blocking file I/O: call it from a worker thread.
    """
    key_path = db_path.with_name(db_path.name + ".secret")
    if not key_path.exists():
        key = secrets.token_urlsafe(48)
        temporary = key_path.with_name(f"{key_path.name}.{secrets.token_hex(4)}.tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as file:
            file.write(key + "\n")
            file.flush()
            os.fsync(file.fileno())
        try:
            os.link(temporary, key_path)  # fails if another process linked one first
            logger.warning(
                "TRACKER_SECRET_KEY is not set: generated a signing key and kept it in %s",
                key_path,
            )
        except FileExistsError:
            pass
        finally:
            temporary.unlink()
    key = key_path.read_text().strip()
    if len(key) < MIN_KEY_LENGTH:
        raise ConfigError(
            f"{key_path} holds no usable key (under {MIN_KEY_LENGTH} characters):"
            " remove it to have a new one made, or set TRACKER_SECRET_KEY"
        )
    return key


class Passwords:
    """bcrypt at a configured cost, in worker threads (it is slow on purpose).

    At most one core less than the machine has hashes at a time, so the event
    loop always keeps a core for everything else; past `MAX_WAITING` waiting
    hashes, new ones are refused at once (429) instead of queueing for ever.
    """

    def __init__(self, rounds: int, workers: int | None = None) -> None:
        self._rounds = rounds
        self._decoy: bytes | None = None
        self._limiter = anyio.CapacityLimiter(workers or max(1, (os.cpu_count() or 2) - 1))

    async def _run(self, function: Callable[[bytes, bytes], T], password: str, other: bytes) -> T:
        if self._limiter.statistics().tasks_waiting >= MAX_WAITING:
            raise RateLimited(1)
        return await anyio.to_thread.run_sync(
            function, password.encode(), other, limiter=self._limiter
        )

    async def prepare(self) -> bytes:
        """Make the decoy hash (at startup, so no login pays for it)."""
        self._decoy = (await self.hash(secrets.token_urlsafe(16))).encode("ascii")
        return self._decoy

    async def hash(self, password: str) -> str:
        """A new salted bcrypt hash of `password` (at most 72 bytes: checked before)."""
        hashed = await self._run(bcrypt.hashpw, password, bcrypt.gensalt(self._rounds))
        return hashed.decode("ascii")

    async def check(self, password: str, hashed: str | None) -> bool:
        """Whether `password` matches `hashed`. Without a hash (an unknown username) the
        same bcrypt work is done against a decoy, so both cost the same time."""
        if hashed is None:
            await self._run(bcrypt.checkpw, password, self._decoy or await self.prepare())
            return False
        return await self._run(bcrypt.checkpw, password, hashed.encode("ascii"))
