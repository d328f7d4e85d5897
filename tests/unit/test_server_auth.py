"""Token verification of the dev server: every refusal has the official status and message."""

from __future__ import annotations

import time
import warnings

import jwt
import pytest

from aiolivekit.server.auth import AuthError, join_grant, token_from_request, verify_token

KEYS = {"devkey": "secret", "other": "othersecret"}
NOW = 1_800_000_000.0


def mint(claims: dict, secret: str = "secret", alg: str = "HS256") -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return jwt.encode(claims, secret, algorithm=alg)


def base(**over: object) -> dict:
    claims: dict = {"iss": "devkey", "sub": "alice", "nbf": NOW - 10, "exp": NOW + 3600,
                    "name": "Alice", "metadata": "m", "attributes": {"a": "1"},
                    "video": {"roomJoin": True, "room": "r1"}}
    claims.update(over)
    return {k: v for k, v in claims.items() if v is not None}


def refused(token: str, keys: dict = KEYS, now: float = NOW) -> AuthError:
    with pytest.raises(AuthError) as info:
        join_grant(verify_token(token, keys, now))
    return info.value


def test_valid_token_gives_claims_and_defaults() -> None:
    claims = verify_token(mint(base()), KEYS, NOW)
    grant = join_grant(claims)
    assert (claims.identity, claims.name, claims.metadata) == ("alice", "Alice", "m")
    assert claims.attributes == {"a": "1"}
    assert grant.room == "r1"
    assert grant.can_publish and grant.can_subscribe and grant.can_publish_data
    assert not grant.can_update_own_metadata and not grant.room_admin


def test_can_publish_data_defaults_to_can_publish() -> None:
    claims = verify_token(mint(base(video={"roomJoin": True, "room": "r", "canPublish": False})),
                          KEYS, NOW)
    assert claims.video is not None
    assert not claims.video.can_publish and not claims.video.can_publish_data


def test_second_key_is_accepted() -> None:
    claims = verify_token(mint(base(iss="other"), secret="othersecret"), KEYS, NOW)
    assert claims.api_key == "other"


@pytest.mark.parametrize(
    "token, status, message",
    [
        ("not-a-jwt", 401, "invalid authorization token"),
        (mint(base(iss="nobody")), 401, "invalid API key: nobody"),
        (mint(base(iss=None)), 401, "invalid API key: "),
        (mint(base(), secret="wrong"), 401,
         "invalid token: {token}, error: token signature is invalid: signature is invalid"),
        (mint(base(exp=None)), 401, "invalid token: {token}, error: token has invalid claims: "
         "token is missing required claim: exp claim is required"),
        (mint(base(exp=NOW - 120)), 401,
         "invalid token: {token}, error: token has invalid claims: token is expired"),
        (mint(base(nbf=NOW + 120)), 401,
         "invalid token: {token}, error: token has invalid claims: token is not valid yet"),
        (mint(base(), alg="HS512"), 401, "invalid token: {token}, error: token signature is "
         "invalid: signing method HS512 is invalid"),
        (mint(base(video=None)), 401, "no permissions to access the room"),
        (mint(base(video={"room": "r1"})), 401, "permissions denied"),
        (mint(base(video={"roomJoin": False, "room": "r1"})), 401, "permissions denied"),
        (mint(base(sub="")), 400, "identity cannot be empty"),
        (mint(base(video={"roomJoin": True})), 400, "no room name"),
    ],
)
def test_refusals(token: str, status: int, message: str) -> None:
    err = refused(token)
    assert err.status == status
    assert err.message == message.replace("{token}", token)


def test_leeway_of_60_seconds() -> None:
    verify_token(mint(base(exp=NOW - 30)), KEYS, NOW)  # within leeway
    verify_token(mint(base(nbf=NOW + 30)), KEYS, NOW)


def test_no_token_is_permissions_denied() -> None:
    with pytest.raises(AuthError) as info:
        join_grant(None)
    assert (info.value.status, info.value.message) == (401, "no permissions to access the room")


def test_token_from_header_or_query() -> None:
    assert token_from_request("Bearer abc", {"access_token": "q"}) == "abc"
    assert token_from_request(None, {"access_token": "q"}) == "q"
    assert token_from_request(None, {}) is None
    with pytest.raises(AuthError) as info:
        token_from_request("Basic abc", {})
    assert info.value.status == 401
    assert info.value.message == "invalid authorization header. Must start with Bearer "


def test_livekit_api_token_verifies() -> None:
    from livekit import api

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tok = (api.AccessToken("devkey", "secret").with_identity("bob").with_name("Bob")
               .with_grants(api.VideoGrants(room_join=True, room="x", can_publish_sources=[
                   "microphone"])).to_jwt())
    claims = verify_token(tok, KEYS, time.time())
    grant = join_grant(claims)
    assert grant.can_publish_sources == ["microphone"] and claims.name == "Bob"


def test_refresh_token_keeps_claims_and_extends_expiry() -> None:
    from aiolivekit.server.auth import refresh_token

    claims = verify_token(mint(base(exp=NOW + 60)), KEYS, NOW)
    fresh = verify_token(refresh_token(claims, "secret", NOW + 30), KEYS, NOW + 30)
    assert (fresh.identity, fresh.name, fresh.metadata) == ("alice", "Alice", "m")
    assert fresh.video == claims.video and fresh.attributes == {"a": "1"}
    assert fresh.expires_at == NOW + 30 + 600
    later = verify_token(mint(base(exp=NOW + 7200)), KEYS, NOW)
    assert verify_token(refresh_token(later, "secret", NOW), KEYS, NOW).expires_at == NOW + 7200
