"""Session tokens: HS256 JWTs, algorithm pinned, claims required; and the key beside the DB."""

from __future__ import annotations

import stat
import time
from pathlib import Path
from typing import Any

import jwt
import pytest

from tests.unit.support import FakeClock
from tracker.auth import Principal, TokenService, load_or_create_secret
from tracker.config import ConfigError
from tracker.errors import AuthError

KEY = "a-signing-key-that-is-long-enough-for-hs512-" + "k" * 40
GUEST = Principal(id="g1", kind="guest")
USER = Principal(id="u1", kind="user", username="ada")


@pytest.fixture
def now() -> FakeClock:
    """A fake clock that starts at the wall clock's time."""
    return FakeClock(float(int(time.time())))


@pytest.fixture
def tokens(now: FakeClock) -> TokenService:
    return TokenService(KEY, now, guest_ttl=30 * 86400, user_ttl=86400)


def claims(now: FakeClock, **changes: Any) -> dict[str, Any]:
    base = {"sub": "g1", "kind": "guest", "jti": "j", "iat": int(now()), "exp": int(now()) + 60}
    return {name: value for name, value in (base | changes).items() if value is not None}


@pytest.mark.parametrize(
    ("principal", "ttl"), [(GUEST, 30 * 86400), (USER, 86400)], ids=["guest", "user"]
)
def test_an_issued_token_verifies_to_its_principal(
    tokens: TokenService, now: FakeClock, principal: Principal, ttl: int
) -> None:
    session = tokens.issue(principal)

    verified = tokens.verify(session.token)

    assert session.principal == principal
    assert (session.issued_at, session.expires_at) == (int(now()), int(now()) + ttl)
    assert (verified.sub, verified.kind, verified.iat, verified.exp) == (
        principal.id,
        principal.kind,
        session.issued_at,
        session.expires_at,
    )


def test_every_token_has_its_own_id(tokens: TokenService) -> None:
    first, second = tokens.issue(GUEST), tokens.issue(GUEST)

    assert tokens.verify(first.token).jti != tokens.verify(second.token).jti


def test_tokens_are_hs256(tokens: TokenService) -> None:
    assert jwt.get_unverified_header(tokens.issue(GUEST).token)["alg"] == "HS256"


def test_a_token_is_valid_until_the_second_before_it_expires(
    tokens: TokenService, now: FakeClock
) -> None:
    session = tokens.issue(USER)

    now.now = session.expires_at - 1
    assert tokens.verify(session.token).sub == USER.id


@pytest.mark.parametrize("past_expiry", [0, 1, 3600])
def test_an_expired_token_is_refused(
    tokens: TokenService, now: FakeClock, past_expiry: int
) -> None:
    session = tokens.issue(USER)

    now.now = session.expires_at + past_expiry

    with pytest.raises(AuthError):
        tokens.verify(session.token)


def test_verification_follows_the_injected_clock() -> None:
    clock = FakeClock(1_700_000_000.0)  # November 2023
    tokens = TokenService(KEY, clock, guest_ttl=3600, user_ttl=3600)

    assert tokens.verify(tokens.issue(GUEST).token).sub == GUEST.id


def _wrong_key(now: FakeClock) -> str:
    return jwt.encode(claims(now), "another-key-" + "x" * 60, algorithm="HS256")


def _alg_none(now: FakeClock) -> str:
    return jwt.encode(claims(now), None, algorithm="none")


def _hs512(now: FakeClock) -> str:
    return jwt.encode(claims(now), KEY, algorithm="HS512")


def _tampered(now: FakeClock) -> str:
    header, _, signature = jwt.encode(claims(now), KEY, algorithm="HS256").split(".")
    other = jwt.encode(claims(now, sub="admin"), KEY, algorithm="HS256").split(".")[1]
    return f"{header}.{other}.{signature}"


def _missing(name: str) -> Any:
    def make(now: FakeClock) -> str:
        return jwt.encode(claims(now, **{name: None}), KEY, algorithm="HS256")

    make.__name__ = f"missing_{name}"
    return make


def _claim(**changes: Any) -> Any:
    def make(now: FakeClock) -> str:
        return jwt.encode(claims(now, **changes), KEY, algorithm="HS256")

    make.__name__ = "bad_" + "_".join(changes)
    return make


def _empty(now: FakeClock) -> str:
    return ""


def _not_a_jwt(now: FakeClock) -> str:
    return "not-a-jwt"


def _three_garbage_parts(now: FakeClock) -> str:
    return "a.b.c"


@pytest.mark.parametrize(
    "forge",
    [
        _wrong_key,
        _alg_none,
        _hs512,
        _tampered,
        *(_missing(name) for name in ("sub", "kind", "jti", "iat", "exp")),
        _claim(kind="admin"),
        _claim(sub=42),
        _claim(exp="tomorrow"),
        _empty,
        _not_a_jwt,
        _three_garbage_parts,
    ],
    ids=lambda forge: forge.__name__,
)
def test_a_token_that_is_not_ours_intact_and_complete_is_refused(
    tokens: TokenService, now: FakeClock, forge: Any
) -> None:
    with pytest.raises(AuthError):
        tokens.verify(forge(now))


def test_the_claims_check_itself_accepts_a_hand_made_token(
    tokens: TokenService, now: FakeClock
) -> None:
    """The refusals above are for the flaw they name, not for how the tokens were made."""
    assert tokens.verify(jwt.encode(claims(now), KEY, algorithm="HS256")).sub == "g1"


# The signing key


def test_a_secret_is_created_beside_the_database_readable_only_by_its_owner(
    tmp_path: Path,
) -> None:
    key = load_or_create_secret(tmp_path / "tracker.db")

    path = tmp_path / "tracker.db.secret"
    assert path.read_text() == key + "\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(key) >= 32


def test_the_secret_is_created_once_and_then_reused(tmp_path: Path) -> None:
    first = load_or_create_secret(tmp_path / "tracker.db")
    second = load_or_create_secret(tmp_path / "tracker.db")

    assert first == second
    assert [p.name for p in tmp_path.iterdir()] == ["tracker.db.secret"]


def test_an_existing_secret_file_is_used_as_it_is(tmp_path: Path) -> None:
    (tmp_path / "tracker.db.secret").write_text("my-own-key-of-at-least-32-characters\n")

    assert load_or_create_secret(tmp_path / "tracker.db") == "my-own-key-of-at-least-32-characters"


@pytest.mark.parametrize("content", ["", "\n", "short-key"])
def test_a_secret_file_without_a_usable_key_is_refused(tmp_path: Path, content: str) -> None:
    (tmp_path / "tracker.db.secret").write_text(content)

    with pytest.raises(ConfigError, match="no usable key"):
        load_or_create_secret(tmp_path / "tracker.db")


def test_each_database_gets_its_own_secret(tmp_path: Path) -> None:
    assert load_or_create_secret(tmp_path / "a.db") != load_or_create_secret(tmp_path / "b.db")
