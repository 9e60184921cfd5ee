"""Credentials against a real server: bearer tokens, forged JWTs, the session cookie, CSRF."""

from __future__ import annotations

import base64
import json
import stat
import time
import warnings
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from tests.integration.conftest import (
    SECRET_KEY,
    Guest,
    Server,
    ServerFactory,
    error_of,
)

COOKIE = "tracker_session"
GUEST_TTL = 30 * 24 * 3600


def claims_for(guest: Guest, **changes: Any) -> dict[str, Any]:
    """Claims shaped like the server's own, for `guest`."""
    now = int(time.time())
    claims: dict[str, Any] = {
        "sub": guest.id,
        "kind": "guest",
        "jti": "crafted-by-the-tests",
        "iat": now,
        "exp": now + 3600,
    }
    claims.update(changes)
    return {name: value for name, value in claims.items() if value is not None}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned_token(claims: dict[str, Any], alg: str = "none") -> str:
    header = b64(json.dumps({"alg": alg, "typ": "JWT"}).encode())
    return f"{header}.{b64(json.dumps(claims).encode())}."


def cookie_client(server: Server, token: str, **headers: str) -> httpx.Client:
    """A client that authenticates with the session cookie only (as a browser does)."""
    return server.client(headers={"Cookie": f"{COOKIE}={token}", **headers})


def same_origin(server: Server) -> str:
    return server.url


# The guest session itself


def test_guest_start_answers_an_auth_result(guest: Guest) -> None:
    response = guest.login
    assert response.status_code == 201
    body = response.json()
    assert set(body) == {"user", "access_token", "token_type", "expires_at"}
    assert body["token_type"] == "bearer"
    assert body["user"] == {"id": guest.id, "kind": "guest", "username": None}
    assert response.headers["cache-control"] == "no-store"


def test_guest_token_lasts_thirty_days(guest: Guest) -> None:
    claims = jwt.decode(guest.token, SECRET_KEY, algorithms=["HS256"])
    assert claims["exp"] - claims["iat"] == GUEST_TTL
    expires_at = guest.login.json()["expires_at"]
    assert expires_at == time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(claims["exp"]))


def test_guest_token_is_hs256(guest: Guest) -> None:
    assert jwt.get_unverified_header(guest.token)["alg"] == "HS256"


def test_every_guest_is_a_new_principal(server: Server) -> None:
    assert server.guest().id != server.guest().id


def test_me_returns_the_principal(guest: Guest) -> None:
    response = guest.client.get("/api/auth/me")
    assert response.status_code == 200
    assert response.json() == {"id": guest.id, "kind": "guest", "username": None}


def test_session_cookie_is_httponly_lax_root_path_with_max_age(guest: Guest) -> None:
    headers = guest.login.headers.get_list("set-cookie")
    assert len(headers) == 1
    parts = [part.strip() for part in headers[0].split(";")]
    assert parts[0] == f"{COOKIE}={guest.token}"
    attributes = {
        name.lower(): value for name, _, value in (part.partition("=") for part in parts[1:])
    }
    assert "httponly" in attributes
    assert attributes["samesite"].lower() in ("lax", "strict")
    assert attributes["path"] == "/"
    assert int(attributes["max-age"]) == GUEST_TTL
    assert "secure" not in attributes  # plain http, TRACKER_COOKIE_SECURE unset


def test_cookie_session_works_for_get(server: Server, guest: Guest) -> None:
    task = guest.create("seen through the cookie")
    client = cookie_client(server, guest.token)
    assert client.get("/api/auth/me").json()["id"] == guest.id
    response = client.get("/api/tasks")
    assert response.status_code == 200
    assert response.json()["tasks"] == [task]
    assert client.get(f"/api/tasks/{task['id']}").status_code == 200


def test_cookie_jar_from_guest_start_authenticates(server: Server) -> None:
    client = server.client(headers={"Origin": server.url})
    started = client.post("/api/auth/guest")
    assert started.status_code == 201
    assert client.cookies.get(COOKIE) == started.json()["access_token"]
    assert client.get("/api/auth/me").json() == started.json()["user"]
    assert client.post("/api/tasks", json={"title": "from the browser"}).status_code == 201


# No credentials


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/auth/me"),
        ("GET", "/api/tasks"),
        ("GET", "/api/tasks?as_of=0"),
        ("POST", "/api/tasks"),
        ("GET", "/api/tasks/someTask"),
        ("PATCH", "/api/tasks/someTask"),
        ("DELETE", "/api/tasks/someTask"),
        ("GET", "/api/tasks/someTask/history"),
    ],
)
def test_no_credentials_is_unauthorized(server: Server, method: str, path: str) -> None:
    client = server.client()
    body = {"title": "x"} if method in ("POST", "PATCH") else None
    response = client.request(method, path, json=body)
    error_of(response, 401, "unauthorized")
    assert response.headers["www-authenticate"].lower().startswith("bearer")


def test_no_credentials_cannot_create_anything(server: Server) -> None:
    before = httpx.get(f"{server.url}/healthz").json()["position"]
    server.client().post("/api/tasks", json={"title": "x"})
    assert httpx.get(f"{server.url}/healthz").json()["position"] == before


@pytest.mark.parametrize(
    "authorization",
    ["Bearer", "Basic dXNlcjpwYXNz", "Token abc", "abc", "Bearer not.a.jwt", "Bearer a b"],
)
def test_malformed_authorization_is_unauthorized(server: Server, authorization: str) -> None:
    client = server.client(headers={"Authorization": authorization})
    error_of(client.get("/api/tasks"), 401, "unauthorized")


def test_non_ascii_bearer_token_is_unauthorized(server: Server, guest: Guest) -> None:
    client = server.client(headers={"Authorization": b"Bearer \xff\xfe" + guest.token.encode()})
    error_of(client.get("/api/tasks"), 401, "unauthorized")
    cookie = server.client(headers={"Cookie": b"tracker_session=\xff" + guest.token.encode()})
    error_of(cookie.get("/api/tasks"), 401, "unauthorized")


def test_lowercase_bearer_scheme_is_accepted(server: Server, guest: Guest) -> None:
    client = server.client(headers={"Authorization": f"bearer {guest.token}"})
    assert client.get("/api/auth/me").status_code == 200


def test_bad_bearer_wins_over_a_good_cookie(server: Server, guest: Guest) -> None:
    client = cookie_client(server, guest.token, Authorization="Bearer forged")
    error_of(client.get("/api/tasks"), 401, "unauthorized")


# Forged and foreign tokens


def _bad_tokens(guest: Guest) -> dict[str, str]:
    header, payload, signature = guest.token.split(".")
    other_claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    other_claims["sub"] = "somebodyElse123"
    swapped = f"{header}.{b64(json.dumps(other_claims).encode())}.{signature}"
    flipped = signature[:-2] + ("AA" if signature[-2:] != "AA" else "BB")
    now = int(time.time())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PyJWT: a 48-byte key is short for HS512
        hs512 = jwt.encode(claims_for(guest), SECRET_KEY, algorithm="HS512")
    return {
        "garbage": "garbage",
        "empty-segments": "..",
        "payload-swapped": swapped,
        "signature-flipped": f"{header}.{payload}.{flipped}",
        "signature-dropped": f"{header}.{payload}.",
        "other-key": jwt.encode(claims_for(guest), "x" * 48, algorithm="HS256"),
        "alg-none": unsigned_token(claims_for(guest)),
        "alg-None": unsigned_token(claims_for(guest), "None"),
        "hs512-same-key": hs512,
        "expired": jwt.encode(
            claims_for(guest, iat=now - 7200, exp=now - 60), SECRET_KEY, algorithm="HS256"
        ),
        "expires-now": jwt.encode(claims_for(guest, exp=now), SECRET_KEY, algorithm="HS256"),
        "no-exp": jwt.encode(claims_for(guest, exp=None), SECRET_KEY, algorithm="HS256"),
        "no-jti": jwt.encode(claims_for(guest, jti=None), SECRET_KEY, algorithm="HS256"),
        "no-kind": jwt.encode(claims_for(guest, kind=None), SECRET_KEY, algorithm="HS256"),
        "wrong-kind": jwt.encode(claims_for(guest, kind="user"), SECRET_KEY, algorithm="HS256"),
        "bad-kind": jwt.encode(claims_for(guest, kind="admin"), SECRET_KEY, algorithm="HS256"),
        "unknown-subject": jwt.encode(
            claims_for(guest, sub="neverStarted0001"), SECRET_KEY, algorithm="HS256"
        ),
        "string-exp": jwt.encode(claims_for(guest, exp="never"), SECRET_KEY, algorithm="HS256"),
        "numeric-sub": jwt.encode(claims_for(guest, sub=12345), SECRET_KEY, algorithm="HS256"),
    }


BAD_TOKENS = [
    "garbage",
    "empty-segments",
    "payload-swapped",
    "signature-flipped",
    "signature-dropped",
    "other-key",
    "alg-none",
    "alg-None",
    "hs512-same-key",
    "expired",
    "expires-now",
    "no-exp",
    "no-jti",
    "no-kind",
    "wrong-kind",
    "bad-kind",
    "unknown-subject",
    "string-exp",
    "numeric-sub",
]


@pytest.mark.parametrize("kind", BAD_TOKENS)
def test_forged_or_expired_token_is_unauthorized(server: Server, guest: Guest, kind: str) -> None:
    guest.create("the real owner's")
    tokens = _bad_tokens(guest)
    assert list(tokens) == BAD_TOKENS
    token = tokens[kind]
    bearer = server.client(token)
    response = bearer.get("/api/tasks")
    error_of(response, 401, "unauthorized")
    error_of(cookie_client(server, token).get("/api/tasks"), 401, "unauthorized")
    error_of(bearer.get("/api/auth/me"), 401, "unauthorized")


def test_crafted_token_with_the_right_key_is_accepted(server: Server, guest: Guest) -> None:
    """The control for the forgeries above: the same claims, properly signed, do work."""
    token = jwt.encode(claims_for(guest), SECRET_KEY, algorithm="HS256")
    assert server.client(token).get("/api/auth/me").json()["id"] == guest.id


# CSRF: state-changing requests authenticated by cookie


def test_cookie_post_with_a_foreign_origin_is_forbidden(server: Server, guest: Guest) -> None:
    client = cookie_client(server, guest.token, Origin="https://evil.example")
    error_of(client.post("/api/tasks", json={"title": "csrf"}), 403, "forbidden")
    assert guest.client.get("/api/tasks").json()["tasks"] == []


def test_cookie_post_with_a_same_origin_origin_is_created(server: Server, guest: Guest) -> None:
    client = cookie_client(server, guest.token, Origin=same_origin(server))
    response = client.post("/api/tasks", json={"title": "from my page"})
    assert response.status_code == 201
    assert guest.client.get("/api/tasks").json()["tasks"] == [response.json()]


def test_cookie_post_with_a_same_origin_referer_is_created(server: Server, guest: Guest) -> None:
    client = cookie_client(server, guest.token, Referer=f"{server.url}/some/page?q=1")
    assert client.post("/api/tasks", json={"title": "from my page"}).status_code == 201


def test_cookie_post_without_origin_or_referer_is_forbidden(server: Server, guest: Guest) -> None:
    client = cookie_client(server, guest.token)
    error_of(client.post("/api/tasks", json={"title": "csrf"}), 403, "forbidden")
    assert guest.client.get("/api/tasks").json()["tasks"] == []


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "null"},
        {"Referer": "https://evil.example/page"},
        {"Origin": "http://127.0.0.1:1"},
        {"Origin": "http://localhost.evil.example"},
        {"Origin": "https://evil.example", "Referer": "SAME/page"},
    ],
    ids=["null-origin", "foreign-referer", "other-port", "lookalike", "foreign-origin-wins"],
)
def test_cookie_post_from_another_site_is_forbidden(
    server: Server, guest: Guest, headers: dict[str, str]
) -> None:
    headers = {name: value.replace("SAME", server.url) for name, value in headers.items()}
    client = cookie_client(server, guest.token, **headers)
    error_of(client.post("/api/tasks", json={"title": "csrf"}), 403, "forbidden")


@pytest.mark.parametrize("method", ["PATCH", "DELETE"])
def test_cookie_change_without_origin_is_forbidden(
    server: Server, guest: Guest, method: str
) -> None:
    task = guest.create("target")
    client = cookie_client(server, guest.token)
    body = {"title": "csrf"} if method == "PATCH" else None
    error_of(client.request(method, f"/api/tasks/{task['id']}", json=body), 403, "forbidden")
    assert guest.client.get(f"/api/tasks/{task['id']}").json() == task


@pytest.mark.parametrize("method", ["PATCH", "DELETE"])
def test_cookie_change_with_a_same_origin_origin_succeeds(
    server: Server, guest: Guest, method: str
) -> None:
    task = guest.create("target")
    client = cookie_client(server, guest.token, Origin=same_origin(server))
    body = {"title": "changed"} if method == "PATCH" else None
    response = client.request(method, f"/api/tasks/{task['id']}", json=body)
    assert response.status_code in (200, 204)


def test_bearer_post_without_origin_is_fine(guest: Guest) -> None:
    response = guest.client.post("/api/tasks", json={"title": "api client"})
    assert response.status_code == 201


def test_guest_start_from_a_foreign_origin_is_forbidden(server: Server) -> None:
    client = server.client(headers={"Origin": "https://evil.example"})
    error_of(client.post("/api/auth/guest"), 403, "forbidden")


# The signing key


@pytest.mark.sqlite_only  # the key file beside the SQLite file (PostgreSQL requires a set key)
def test_generated_key_is_kept_beside_the_db_and_survives_a_restart(
    start_server: ServerFactory, tmp_path: Path
) -> None:
    server = start_server(secret_key=None)
    key_file = tmp_path / "tracker.db.secret"
    assert key_file.is_file()
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    key = key_file.read_text().strip()
    assert len(key) >= 32
    guest = server.guest()
    task = guest.create("survives")
    assert jwt.decode(guest.token, key, algorithms=["HS256"])["sub"] == guest.id
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(guest.token, SECRET_KEY, algorithms=["HS256"])

    assert server.stop() == 0
    server.start()
    assert key_file.read_text().strip() == key
    client = server.client(guest.token)
    assert client.get("/api/auth/me").json()["id"] == guest.id
    assert client.get("/api/tasks").json()["tasks"] == [task]


def test_tokens_stay_valid_across_a_restart_with_the_same_key(
    start_server: ServerFactory,
) -> None:
    server = start_server()
    guest = server.guest()
    task = guest.create("still mine")
    assert server.stop() == 0
    server.start()
    assert server.client(guest.token).get("/api/tasks").json()["tasks"] == [task]


def test_tokens_of_the_old_key_fail_after_the_key_changes(start_server: ServerFactory) -> None:
    server = start_server()
    guest = server.guest()
    assert server.stop() == 0
    server.secret_key = "a-completely-different-signing-key-0123456789ab"
    server.start()
    error_of(server.client(guest.token).get("/api/tasks"), 401, "unauthorized")
